import type { WorkerEntry } from "../registry/types.js";
import type { TaskRecord } from "../task/types.js";

/**
 * Picks one worker among candidates that are eligible, healthy and have a free slot.
 * Strategies are pluggable: pass any object with this shape as the orchestrator's `routing`.
 *
 * @example
 * ```ts
 * const firstFit: RoutingStrategy = { name: "first-fit", pick: (_task, candidates) => candidates[0] };
 * ```
 */
export interface RoutingStrategy {
  readonly name: string;
  /** `candidates` is never empty. Return one of them (or undefined to leave the task queued). */
  pick(task: TaskRecord, candidates: readonly WorkerEntry[]): WorkerEntry | undefined;
}
