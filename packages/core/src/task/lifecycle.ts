import { FlotillaError } from "../errors.js";
import { type TaskStatus, TERMINAL_STATUSES } from "./schema.js";

/**
 * The task lifecycle: every allowed transition, and nothing else.
 *
 * @example
 * ```ts
 * TRANSITIONS.running; // ["queued", "succeeded", "failed", "cancelled", "timed_out", "awaiting_approval"]
 * ```
 *
 * ```
 * pending ─▶ queued ─▶ leased ─▶ running ─▶ succeeded | failed | cancelled | timed_out
 *    │ ▲        ▲         │          │
 *    ▼ │        └─────────┴──────────┘  (retry, lease expiry, release: a new attempt)
 * awaiting_approval ─▶ rejected        (before_run, or after_run holding a result)
 * pending | awaiting_approval ─▶ skipped (a dependency failed)
 * ```
 */
export const TRANSITIONS: Readonly<Record<TaskStatus, readonly TaskStatus[]>> = {
  pending: ["queued", "awaiting_approval", "cancelled", "skipped"],
  awaiting_approval: ["pending", "queued", "succeeded", "rejected", "cancelled", "skipped"],
  queued: ["leased", "cancelled", "failed"],
  leased: [
    "running",
    "queued",
    "succeeded",
    "failed",
    "cancelled",
    "timed_out",
    "awaiting_approval",
  ],
  running: ["queued", "succeeded", "failed", "cancelled", "timed_out", "awaiting_approval"],
  succeeded: [],
  failed: [],
  cancelled: [],
  timed_out: [],
  rejected: [],
  skipped: [],
};

/**
 * Whether `from → to` is an allowed transition.
 *
 * @example
 * ```ts
 * canTransition("queued", "leased"); // true
 * canTransition("succeeded", "running"); // false
 * ```
 */
export function canTransition(from: TaskStatus, to: TaskStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/**
 * Throws `FlotillaError("INVALID_STATE")` naming both states unless `from → to` is allowed.
 *
 * @example
 * ```ts
 * assertTransition("queued", "leased", "task-1");
 * ```
 */
export function assertTransition(from: TaskStatus, to: TaskStatus, taskId?: string): void {
  if (!canTransition(from, to)) {
    const who = taskId === undefined ? "task" : `task ${taskId}`;
    throw new FlotillaError("INVALID_STATE", `${who} cannot go from "${from}" to "${to}"`, {
      details: { taskId, from, to },
    });
  }
}

/**
 * Whether `status` is terminal (the task never changes again).
 *
 * @example
 * ```ts
 * isTerminalStatus("skipped"); // true
 * ```
 */
export function isTerminalStatus(status: TaskStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

/**
 * Terminal statuses that count as a dependency failure for dependents (all but `succeeded`).
 *
 * @example
 * ```ts
 * isFailureStatus("timed_out"); // true
 * ```
 */
export function isFailureStatus(status: TaskStatus): boolean {
  return isTerminalStatus(status) && status !== "succeeded";
}
