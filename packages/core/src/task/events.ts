import type { SerializedError } from "../errors.js";
import type { RegistryChange } from "../registry/registry.js";
import type { WorkerInfo } from "../registry/types.js";
import type { TaskStatus } from "./schema.js";
import type { TaskRecord } from "./types.js";

/**
 * One lifecycle transition.
 *
 * @example
 * ```ts
 * import type { TransitionEvent } from "@flotilla/core";
 *
 * orchestrator.on("task:failed", (e: TransitionEvent) => console.error(e.taskId, e.error?.code));
 * ```
 * Every transition produces exactly one of these, delivered
 * under the event named after the new status (`task:queued`, `task:succeeded`, …) and
 * under the catch-all `task:transition`.
 */
export interface TransitionEvent {
  taskId: string;
  /** `null` when the task was just created. */
  from: TaskStatus | null;
  to: TaskStatus;
  at: number;
  /** The attempt this transition belongs to (0 before the first dispatch). */
  attempt: number;
  /** Why (e.g. `retry`, `lease expired`, `dependency failed: a`). */
  reason?: string;
  error?: SerializedError;
  workerId?: string;
  /** The record after the transition (read-only; do not mutate). */
  task: Readonly<TaskRecord>;
}

/**
 * Why a ready task is not being dispatched, emitted when that reason changes kind.
 *
 * @example
 * ```ts
 * import type { WaitingEvent } from "@flotilla/core";
 *
 * orchestrator.on("task:waiting", (w: WaitingEvent) => {
 *   console.log(`${w.taskId} waits: ${w.kind}${w.gate ? ` (${w.gate} ${w.key})` : ""}`);
 * });
 * ```
 */
export interface WaitingEvent {
  taskId: string;
  /** `no_worker`, `remote_poll`, `workers_unavailable`, or the holding gate's kind (`rate_limit`, `budget`, …). */
  kind: string;
  at: number;
  /** The holding gate's name, key, reason and retry time, when a gate holds it. */
  gate?: string;
  key?: string;
  reason?: string;
  until?: number;
}

/**
 * A progress report of a running task (a streamed token, a percentage, a log line).
 *
 * @example
 * ```ts
 * import type { ProgressEvent } from "@flotilla/core";
 *
 * orchestrator.on("task:progress", (p: ProgressEvent) => {
 *   process.stdout.write(String(p.data));
 * });
 * ```
 */
export interface ProgressEvent {
  taskId: string;
  attempt: number;
  at: number;
  data: unknown;
}

/**
 * Typed events of an `Orchestrator` (eventemitter3).
 *
 * @example
 * ```ts
 * orchestrator.on("worker:circuit", (c) => console.warn(c.workerId, c.from, "->", c.to));
 * ```
 */
export interface OrchestratorEvents {
  "task:transition": [TransitionEvent];
  "task:pending": [TransitionEvent];
  "task:awaiting_approval": [TransitionEvent];
  "task:queued": [TransitionEvent];
  "task:leased": [TransitionEvent];
  "task:running": [TransitionEvent];
  "task:succeeded": [TransitionEvent];
  "task:failed": [TransitionEvent];
  "task:cancelled": [TransitionEvent];
  "task:timed_out": [TransitionEvent];
  "task:rejected": [TransitionEvent];
  "task:skipped": [TransitionEvent];
  "task:progress": [ProgressEvent];
  /**
   * A ready task cannot be dispatched, for a new kind of reason (no worker could run it,
   * every worker that could is taken, a gate holds it). Emitted for the first task of each
   * group that waits for the same thing (same type, requirements, target, rate-limit keys
   * and tenant: the tasks behind it wait for the same reason), and only when its kind
   * changes, so many waiting tasks make no storm. `explain(taskId)` has the details.
   */
  "task:waiting": [WaitingEvent];
  "worker:registered": [WorkerInfo];
  "worker:unregistered": [WorkerInfo];
  /** A worker's health state changed (from the registry's health checks or reports). */
  "worker:health": [Extract<RegistryChange, { kind: "health" }>];
  /** A worker's circuit breaker changed state. */
  "worker:circuit": [Extract<RegistryChange, { kind: "circuit" }>];
  "orchestrator:started": [];
  "orchestrator:stopped": [];
  /** Internal errors that did not belong to one caller (a failed store write, a gate that threw). */
  error: [Error];
}
