import type { ProgressEvent } from "../task/events.js";

/**
 * One telemetry sample of a task: what a worker reported as progress, with the figures an
 * operator looks at pulled out (CPU, memory, current tool or step) and the rest kept as
 * `data` when small.
 */
export interface TelemetrySample {
  /** When it was reported (ms since epoch, orchestrator clock). */
  at: number;
  /** The attempt that reported it. */
  attempt: number;
  /** What kind of report: `stats` (resource sample), `tool`, `step`, `pull`, … or `progress`. */
  kind: string;
  /** CPU use in percent of one core (Docker stats: can exceed 100 on several cores). */
  cpuPercent?: number;
  /** Memory in use, in MB (MiB). */
  memoryMb?: number;
  /** Memory limit, in MB (MiB). */
  memoryLimitMb?: number;
  /** The tool being called. */
  tool?: string;
  /** The current step, as the worker names it. */
  step?: string;
  /** The report itself when it is small (≤ 2 KB as JSON) and not only the fields above. */
  data?: unknown;
}

/** What a task's telemetry holds: the newest samples, the latest figures and token counts. */
export interface TaskTelemetry {
  taskId: string;
  /** The newest samples, oldest first (at most the per-task bound). */
  samples: TelemetrySample[];
  /** Samples dropped from the front to keep the bound. */
  dropped: number;
  /** Streamed token chunks reported (`{type: "token"}` progress), counted, not kept. */
  tokenChunks: number;
  /** Output chunks reported (`{type: "output"}` progress), counted, not kept. */
  outputChunks: number;
  /** The latest value of each figure, whichever sample carried it. */
  latest: Pick<TelemetrySample, "cpuPercent" | "memoryMb" | "memoryLimitMb" | "tool" | "step"> & {
    at?: number;
  };
}

/** Bounds of {@link TaskTelemetryLog}. */
export interface TelemetryBounds {
  /** Samples kept per task (the newest). @default 200 */
  samplesPerTask?: number;
  /** Tasks whose telemetry is kept (the most recently reporting). @default 1000 */
  tasks?: number;
}

const MB = 1024 * 1024;
const MAX_DATA_CHARS = 2048;

function num(v: unknown): number | undefined {
  return typeof v === "number" && Number.isFinite(v) ? v : undefined;
}

function str(v: unknown): string | undefined {
  return typeof v === "string" && v.length > 0 ? v.slice(0, 256) : undefined;
}

/**
 * Per-task telemetry, in memory and bounded: each task keeps its newest samples, and only the
 * most recently reporting tasks are kept. Progress reports are read for the figures operators
 * watch (ICARUS's job telemetry: CPU usage, RAM in MB, current tool): Docker's `stats`
 * samples (`cpuPercent`, `memoryBytes`), `{ tool }` / `{ step }` (or `currentTool`,
 * `current_step`), `cpu_percent` / `memory_mb`. Streamed tokens and output chunks are only
 * counted. @internal
 */
export class TaskTelemetryLog {
  readonly #perTask: number;
  readonly #maxTasks: number;
  readonly #byTask = new Map<string, TaskTelemetry>();

  constructor(bounds: TelemetryBounds = {}) {
    this.#perTask = Math.max(1, bounds.samplesPerTask ?? 200);
    this.#maxTasks = Math.max(1, bounds.tasks ?? 1000);
  }

  /** Records one progress report. */
  record(ev: ProgressEvent): void {
    let t = this.#byTask.get(ev.taskId);
    if (t) {
      // Most recently reporting last, so the oldest is evicted first.
      this.#byTask.delete(ev.taskId);
    } else {
      t = {
        taskId: ev.taskId,
        samples: [],
        dropped: 0,
        tokenChunks: 0,
        outputChunks: 0,
        latest: {},
      };
      if (this.#byTask.size >= this.#maxTasks) {
        const oldest = this.#byTask.keys().next().value;
        if (oldest !== undefined) this.#byTask.delete(oldest);
      }
    }
    this.#byTask.set(ev.taskId, t);
    const d = ev.data;
    const o =
      d !== null && typeof d === "object" && !Array.isArray(d)
        ? (d as Record<string, unknown>)
        : undefined;
    const type = str(o?.type);
    if (type === "token") {
      t.tokenChunks++;
      return;
    }
    if (type === "output") {
      t.outputChunks++;
      return;
    }
    const sample: TelemetrySample = { at: ev.at, attempt: ev.attempt, kind: type ?? "progress" };
    if (o) {
      const cpu = num(o.cpuPercent) ?? num(o.cpu_percent) ?? num(o.cpu);
      const memBytes = num(o.memoryBytes);
      const mem =
        memBytes !== undefined
          ? memBytes / MB
          : (num(o.memoryMb) ?? num(o.memory_mb) ?? num(o.ram_mb));
      const limBytes = num(o.memoryLimitBytes);
      const tool = str(o.tool) ?? str(o.currentTool) ?? str(o.current_tool);
      const step = str(o.step) ?? str(o.currentStep) ?? str(o.current_step);
      if (cpu !== undefined) sample.cpuPercent = cpu;
      if (mem !== undefined) sample.memoryMb = Math.round(mem * 10) / 10;
      if (limBytes !== undefined) sample.memoryLimitMb = Math.round((limBytes / MB) * 10) / 10;
      if (tool !== undefined) sample.tool = tool;
      if (step !== undefined) sample.step = step;
    }
    if (d !== undefined) {
      let json: string | undefined;
      try {
        json = JSON.stringify(d);
      } catch {
        json = undefined;
      }
      if (json !== undefined && json.length <= MAX_DATA_CHARS) sample.data = JSON.parse(json);
    }
    t.samples.push(sample);
    if (t.samples.length > this.#perTask) {
      t.samples.shift();
      t.dropped++;
    }
    const latest = t.latest;
    latest.at = ev.at;
    if (sample.cpuPercent !== undefined) latest.cpuPercent = sample.cpuPercent;
    if (sample.memoryMb !== undefined) latest.memoryMb = sample.memoryMb;
    if (sample.memoryLimitMb !== undefined) latest.memoryLimitMb = sample.memoryLimitMb;
    if (sample.tool !== undefined) latest.tool = sample.tool;
    if (sample.step !== undefined) latest.step = sample.step;
  }

  /** A copy of a task's telemetry, or `undefined` when it reported nothing (or was evicted). */
  get(taskId: string): TaskTelemetry | undefined {
    const t = this.#byTask.get(taskId);
    return t ? structuredClone(t) : undefined;
  }
}
