import {
  type Clock,
  type EngineApi,
  type EventFeed,
  type Logger,
  type ProgressEvent,
  type StoredEvent,
  type TaskRecord,
  type TaskStatus,
  TERMINAL_STATUSES,
  type TransitionEvent,
  type WaitingEvent,
} from "@flotilla/core";
import type { Context } from "hono";
import { type SSEStreamingApi, streamSSE } from "hono/streaming";
import { taskView } from "./views.js";

/** Server-Sent Events settings of {@link createFlotillaApp}. */
export interface SseOptions {
  /** A comment line is sent this often so proxies keep an idle stream open. @default 15000 */
  keepAliveMs?: number;
  /** Progress events (streamed tokens, samples) kept per task for resuming. @default 1000 */
  progressPerTask?: number;
  /** Tasks whose recent progress is kept for resuming (the most recently reporting). @default 256 */
  progressTasks?: number;
}

/** One progress report kept for resuming, numbered per task from 1. */
interface ProgressEntry {
  k: number;
  attempt: number;
  at: number;
  data: unknown;
}

interface TaskProgress {
  entries: ProgressEntry[];
  /** Number of the last entry recorded (entries before `entries[0]` were dropped). */
  last: number;
  listeners: Set<(e: ProgressEntry) => void>;
}

/** An SSE event as the stream writes it. */
interface Outgoing {
  event: string;
  data: unknown;
}

/** Position in a task's stream: lifecycle events delivered (`n`) and progress number (`k`). */
interface Position {
  n: number;
  k: number;
}

/**
 * Parses an SSE event id `"<n>.<k>"` (lifecycle events seen, last progress number).
 * Anything else starts from the beginning.
 *
 * @example
 * ```ts
 * parseEventId("4.12"); // { n: 4, k: 12 }
 * parseEventId(undefined); // { n: 0, k: 0 }
 * ```
 */
export function parseEventId(raw: string | undefined | null): Position {
  const m = /^(\d{1,9})\.(\d{1,12})$/.exec((raw ?? "").trim());
  return m ? { n: Number(m[1]), k: Number(m[2]) } : { n: 0, k: 0 };
}

const KEEP_ALIVE = ": keep-alive\n\n";

/**
 * The task event streams served as `text/event-stream`: each task's lifecycle events (from
 * the store, so a client resuming with `Last-Event-ID` gets what it missed) and its progress
 * (streamed tokens, samples) from a bounded buffer of recent reports, until the task ends.
 * @internal
 */
export class TaskStreams {
  readonly #o: EngineApi;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #keepAliveMs: number;
  readonly #perTask: number;
  readonly #maxTasks: number;
  readonly #progress = new Map<string, TaskProgress>();
  readonly #open = new Set<SSEStreamingApi>();
  readonly #onProgress: (ev: ProgressEvent) => void;
  readonly #shared: EventFeed | undefined;
  #closed = false;

  constructor(o: EngineApi, options: SseOptions, clock: Clock, logger: Logger, shared?: EventFeed) {
    this.#o = o;
    this.#shared = shared;
    this.#clock = clock;
    this.#logger = logger;
    this.#keepAliveMs = Math.max(10, options.keepAliveMs ?? 15_000);
    this.#perTask = Math.max(1, options.progressPerTask ?? 1000);
    this.#maxTasks = Math.max(1, options.progressTasks ?? 256);
    this.#onProgress = (ev) => this.#record(ev);
    o.on("task:progress", this.#onProgress);
  }

  /** Ends every open stream (shutdown) and stops recording. */
  close(): void {
    this.#closed = true;
    this.#o.off("task:progress", this.#onProgress);
    for (const s of this.#open) void s.close();
    this.#open.clear();
  }

  #record(ev: ProgressEvent): void {
    let p = this.#progress.get(ev.taskId);
    if (p) this.#progress.delete(ev.taskId);
    else {
      p = { entries: [], last: 0, listeners: new Set() };
      if (this.#progress.size >= this.#maxTasks) {
        // Evict the least recently reporting task nobody is streaming.
        for (const [id, q] of this.#progress) {
          if (q.listeners.size === 0) {
            this.#progress.delete(id);
            break;
          }
        }
      }
    }
    this.#progress.set(ev.taskId, p);
    const entry: ProgressEntry = { k: ++p.last, attempt: ev.attempt, at: ev.at, data: ev.data };
    p.entries.push(entry);
    if (p.entries.length > this.#perTask) p.entries.splice(0, p.entries.length - this.#perTask);
    for (const fn of p.listeners) fn(entry);
  }

  #progressOf(taskId: string): TaskProgress {
    let p = this.#progress.get(taskId);
    if (!p) {
      p = { entries: [], last: 0, listeners: new Set() };
      this.#progress.set(taskId, p);
    }
    return p;
  }

  /**
   * Streams a task's events as SSE from `from` (parsed `Last-Event-ID`). `final`, when
   * given, is sent as one last event once the task has ended (e.g. `/llm/request`'s answer).
   */
  stream(
    c: Context,
    taskId: string,
    from: Position,
    final?: (rec: TaskRecord) => Outgoing | Promise<Outgoing>,
  ): Response {
    return streamSSE(c, async (sse) => {
      if (this.#closed) return;
      this.#open.add(sse);
      type Item =
        | { kind: "life"; type: string; at: number; attempt: number; data: Record<string, unknown> }
        | { kind: "progress"; entry: ProgressEntry }
        | { kind: "waiting"; data: Record<string, unknown> }
        | { kind: "stored"; ev: StoredEvent };
      const queue: Item[] = [];
      let wake: (() => void) | undefined;
      const push = (item: Item) => {
        queue.push(item);
        const w = wake;
        wake = undefined;
        w?.();
      };
      const onTransition = (ev: TransitionEvent) => {
        if (ev.taskId !== taskId) return;
        push({
          kind: "life",
          type: `task:${ev.to}`,
          at: ev.at,
          attempt: ev.attempt,
          data: lifeData(ev),
        });
      };
      const onWaiting = (ev: WaitingEvent) => {
        if (ev.taskId !== taskId) return;
        push({
          kind: "waiting",
          data: {
            task_id: ev.taskId,
            kind: ev.kind,
            gate: ev.gate ?? null,
            key: ev.key ?? null,
            reason: ev.reason ?? null,
            until: ev.until === undefined ? null : new Date(ev.until).toISOString(),
          },
        });
      };
      const progress = this.#progressOf(taskId);
      const onEntry = (entry: ProgressEntry) => push({ kind: "progress", entry });
      this.#o.on("task:transition", onTransition);
      this.#o.on("task:waiting", onWaiting);
      progress.listeners.add(onEntry);
      // Progress reports of the task while another server sharing the store runs it.
      const unwatch = this.#shared?.watchProgress?.(taskId, (reports) => {
        for (const r of reports) this.#record(r);
      });
      // Transitions committed by another server sharing the store (it runs the task).
      const follow = this.#shared?.followEvents((events) => {
        for (const ev of events) {
          if (ev.taskId === taskId && ev.type.startsWith("task:")) push({ kind: "stored", ev });
        }
      });
      let timer: ReturnType<Clock["setTimeout"]> | undefined;
      const keepAlive = () => {
        timer = this.#clock.setTimeout(() => {
          void sse.write(KEEP_ALIVE).catch(() => {});
          keepAlive();
        }, this.#keepAliveMs);
      };
      keepAlive();
      const aborted = new Promise<void>((resolve) => sse.onAbort(resolve));
      aborted.then(() => {
        const w = wake;
        wake = undefined;
        w?.();
      });
      const pos: Position = { ...from };
      const send = (o: Outgoing) =>
        sse.writeSSE({ id: `${pos.n}.${pos.k}`, event: o.event, data: JSON.stringify(o.data) });
      let ended = false;
      try {
        // Following from before the history is read: nothing falls in between.
        await follow?.ready;
        // 1. What the client missed: lifecycle events from the store, progress from the buffer.
        const history = await this.#o.history(taskId);
        const seen = new Set<string>();
        const replay: Array<{
          at: number;
          life?: StoredEvent;
          index?: number;
          entry?: ProgressEntry;
        }> = [];
        history.forEach((ev, i) => {
          const d = (ev.data ?? {}) as { attempt?: number };
          seen.add(`${ev.type}|${ev.at}|${d.attempt ?? 0}`);
          if (i + 1 > pos.n) replay.push({ at: ev.at, life: ev, index: i + 1 });
        });
        let lifeCount = history.length;
        const kept = progress.entries.filter((e) => e.k > pos.k);
        const firstKept = kept[0]?.k ?? progress.last + 1;
        if (firstKept > pos.k + 1 && progress.last > pos.k) {
          await send({
            event: "gap",
            data: {
              lost_progress: firstKept - pos.k - 1,
              reason: "older progress is no longer kept",
            },
          });
        }
        for (const entry of kept) replay.push({ at: entry.at, entry });
        // On a tie in time: a task is running before its first token, and its last token comes
        // before its end (a terminal event closes the stream).
        const rank = (r: { life?: StoredEvent }) =>
          !r.life ? 1 : TERMINAL_STATUSES.has(r.life.type.slice(5) as TaskStatus) ? 2 : 0;
        replay.sort((a, b) => a.at - b.at || rank(a) - rank(b));
        for (const r of replay) {
          if (r.life) {
            pos.n = r.index!;
            const status = r.life.type.slice("task:".length);
            await send({
              event: r.life.type,
              data: await this.#storedData(taskId, r.life, status),
            });
            if (TERMINAL_STATUSES.has(status as TaskStatus)) ended = true;
          } else if (r.entry) {
            pos.k = Math.max(pos.k, r.entry.k);
            await send(progressData(taskId, r.entry));
          }
        }
        if (!ended && pos.n >= lifeCount && lifeCount > 0) {
          const lastType = history[lifeCount - 1]!.type.slice("task:".length);
          if (TERMINAL_STATUSES.has(lastType as TaskStatus)) ended = true;
        }
        // 2. Live, until the task ends or the client goes.
        while (!ended && !sse.aborted && !sse.closed && !this.#closed) {
          const item = queue.shift();
          if (!item) {
            await new Promise<void>((resolve) => {
              wake = resolve;
            });
            continue;
          }
          if (item.kind === "life") {
            if (seen.has(`${item.type}|${item.at}|${item.attempt}`)) continue;
            pos.n = ++lifeCount;
            await send({ event: item.type, data: item.data });
            if (TERMINAL_STATUSES.has(item.type.slice(5) as TaskStatus)) ended = true;
          } else if (item.kind === "stored") {
            const { ev } = item;
            const attempt = (ev.data as { attempt?: number } | undefined)?.attempt ?? 0;
            if (seen.has(`${ev.type}|${ev.at}|${attempt}`)) continue;
            const status = ev.type.slice("task:".length);
            pos.n = ++lifeCount;
            await send({ event: ev.type, data: await this.#storedData(taskId, ev, status) });
            if (TERMINAL_STATUSES.has(status as TaskStatus)) ended = true;
          } else if (item.kind === "progress") {
            if (item.entry.k <= pos.k) continue;
            pos.k = item.entry.k;
            await send(progressData(taskId, item.entry));
          } else {
            await send({ event: "task:waiting", data: item.data });
          }
        }
        if (ended && final && !sse.aborted) {
          const rec = await this.#o.get(taskId);
          if (rec) await send(await final(rec));
        }
      } catch (err) {
        this.#logger.warn({ err: String(err), taskId }, "task event stream failed");
      } finally {
        this.#o.off("task:transition", onTransition);
        this.#o.off("task:waiting", onWaiting);
        follow?.close();
        unwatch?.();
        progress.listeners.delete(onEntry);
        if (timer !== undefined) this.#clock.clearTimeout(timer);
        this.#open.delete(sse);
      }
    });
  }

  /** A stored lifecycle event in the stream's shape; a terminal one carries the task view. */
  async #storedData(
    taskId: string,
    ev: StoredEvent,
    status: string,
  ): Promise<Record<string, unknown>> {
    const out = storedTransitionData(taskId, ev, status);
    if (TERMINAL_STATUSES.has(status as TaskStatus)) {
      const rec = await this.#o.get(taskId);
      if (rec) out.task = taskView(rec);
    }
    return out;
  }
}

function lifeData(ev: TransitionEvent): Record<string, unknown> {
  const out: Record<string, unknown> = {
    task_id: ev.taskId,
    from: ev.from,
    status: ev.to,
    attempt: ev.attempt,
    reason: ev.reason ?? null,
    error: ev.error ?? null,
    worker_id: ev.workerId ?? null,
    at: new Date(ev.at).toISOString(),
  };
  if (TERMINAL_STATUSES.has(ev.to)) out.task = taskView(ev.task as TaskRecord);
  return out;
}

function progressData(taskId: string, e: ProgressEntry): Outgoing {
  const type = (e.data as { type?: unknown } | null)?.type;
  if (type === "token") {
    return {
      event: "token",
      data: {
        task_id: taskId,
        attempt: e.attempt,
        text: (e.data as { text?: unknown }).text ?? "",
      },
    };
  }
  return {
    event: "task:progress",
    data: {
      task_id: taskId,
      attempt: e.attempt,
      progress: e.data,
      at: new Date(e.at).toISOString(),
    },
  };
}

/**
 * A stored lifecycle event (`task:<status>`) in the shape of the events the API sends for
 * it: `task_id`, `from`, `status`, `attempt`, `reason`, `error`, `worker_id`, `at`. @internal
 */
export function storedTransitionData(
  taskId: string,
  ev: StoredEvent,
  status: string,
): Record<string, unknown> {
  const d = (ev.data ?? {}) as {
    from?: string | null;
    attempt?: number;
    reason?: string;
    error?: unknown;
    workerId?: string;
  };
  return {
    task_id: taskId,
    from: d.from ?? null,
    status,
    attempt: d.attempt ?? 0,
    reason: d.reason ?? null,
    error: d.error ?? null,
    worker_id: d.workerId ?? null,
    at: new Date(ev.at).toISOString(),
  };
}
