import type { Clock } from "../clock.js";
import type { Logger } from "../logger.js";
import type { Estimate, Usage } from "../task/schema.js";

/** The view of a task a worker receives. `payload` has templates already resolved. */
export interface WorkerTask<TPayload = unknown> {
  id: string;
  type: string;
  payload: TPayload;
  priority: number;
  /** 1 for the first attempt. */
  attempt: number;
  timeoutMs?: number;
  estimate?: Estimate;
  tenant?: string;
  metadata: Record<string, unknown>;
  /** Outputs of the task's dependencies, by task id. */
  dependencies: Record<string, unknown>;
  /** Resolved `inputs` mapping. */
  inputs: Record<string, unknown>;
}

/** What a worker gets besides the task. */
export interface ExecutionContext {
  /** Aborted on cancellation, timeout, or orchestrator stop: stop work and reject promptly. */
  signal: AbortSignal;
  /** Reports progress (a streamed token, a log line, a percentage): becomes a `task:progress` event. */
  progress(data: unknown): void;
  /** Reports usage before the call returns (e.g. from a streamed response); merged into the result. */
  reportUsage(usage: Usage): void;
  logger: Logger;
  clock: Clock;
}

/** What `execute` resolves to. Anything else is malformed and fails the task with `WORKER_ERROR`. */
export interface WorkerResult<TOutput = unknown> {
  output: TOutput;
  usage?: Usage;
  /** The upstream's raw response, kept for callers who need provider-specific fields. */
  raw?: unknown;
}

/** Health of a worker as a check reports it. */
export type HealthStatus = "healthy" | "degraded" | "unhealthy";

/** The answer of {@link Worker.healthCheck}. */
export interface HealthReport {
  status: HealthStatus;
  message?: string;
  details?: Record<string, unknown>;
}

/**
 * A worker: anything that can execute tasks. Implement it directly, extend `BaseWorker`,
 * or wrap a function with `FunctionWorker`.
 *
 * @example
 * ```ts
 * import type { Worker } from "@flotilla/core";
 *
 * const worker: Worker = {
 *   id: "echo-1",
 *   kind: "echo",
 *   taskTypes: ["echo"],
 *   maxConcurrency: 4,
 *   async execute(task) {
 *     return { output: task.payload };
 *   },
 * };
 * ```
 */
export interface Worker {
  /** Unique among registered workers. */
  readonly id: string;
  /** What it is (`function`, `openai`, `docker`, `remote-node`, ...). */
  readonly kind: string;
  /** Name matched by target globs. @default id */
  readonly name?: string;
  /** Task types it executes; `"*"` for any. */
  readonly taskTypes: readonly string[];
  /** Capabilities a task may require (`gpu`, `vision`, a model name, ...). */
  readonly capabilities?: readonly string[];
  /** Labels/tags matched by `requirements.labels` and `target.tags`. */
  readonly labels?: Readonly<Record<string, string>>;
  /** Slots: tasks it runs at once. */
  readonly maxConcurrency: number;
  /** Runs on this host (admission control applies). @default true */
  readonly local?: boolean;
  start?(): Promise<void>;
  /** Stops the worker. Must be idempotent. */
  stop?(): Promise<void>;
  /**
   * Runs one task and resolves to its output (and usage). Reject to fail the attempt (retried
   * unless the error is an `UnrecoverableError`); stop promptly when `ctx.signal` aborts.
   *
   * @example
   * ```ts
   * async execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult> {
   *   ctx.progress("starting");
   *   const res = await fetch("http://127.0.0.1:8080/run", { signal: ctx.signal, method: "POST", body: JSON.stringify(task.payload) });
   *   return { output: await res.json(), usage: { requests: 1 } };
   * }
   * ```
   */
  execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult>;
  /**
   * A check that costs nothing (list models, ping). Must honour `signal`.
   *
   * @example
   * ```ts
   * async healthCheck(signal: AbortSignal): Promise<HealthReport> {
   *   const res = await fetch("http://127.0.0.1:8080/health", { signal });
   *   return res.ok ? { status: "healthy" } : { status: "unhealthy", message: `HTTP ${res.status}` };
   * }
   * ```
   */
  healthCheck?(signal: AbortSignal): Promise<HealthReport>;
  /**
   * Estimated cost in USD of running `task` here, for cost-aware routing.
   *
   * @example
   * ```ts
   * estimateCost(task: WorkerTask): number | undefined {
   *   const chars = JSON.stringify(task.payload).length;
   *   return (chars / 4) * 0.000_001; // USD, about $1 per million input tokens
   * }
   * ```
   */
  estimateCost?(task: WorkerTask): number | undefined;
}
