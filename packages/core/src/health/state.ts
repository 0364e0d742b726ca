import type { WorkerHealthState } from "../registry/types.js";
import type { HealthReport } from "../worker/types.js";

/** Thresholds of the health state machine. */
export interface HealthThresholds {
  /** Consecutive failed checks that make a healthy worker `degraded`. @default 1 */
  degradedAfter: number;
  /** Consecutive failed checks that make a worker `unhealthy`. @default 3 */
  unhealthyAfter: number;
  /** Consecutive good checks that bring a worker back to `healthy`. @default 2 */
  recoverAfter: number;
}

/** Streaks of check outcomes, kept per worker. Start from {@link initialHealthCounters}. */
export interface HealthCounters {
  /** Consecutive `unhealthy` outcomes (failed, timed out, malformed or reported unhealthy). */
  failed: number;
  /** Consecutive outcomes that were not `unhealthy`. */
  ok: number;
  /** Consecutive `healthy` outcomes. */
  healthy: number;
}

/**
 * Fresh counters.
 *
 * @example
 * ```ts
 * let counters = initialHealthCounters();
 * ```
 */
export function initialHealthCounters(): HealthCounters {
  return { failed: 0, ok: 0, healthy: 0 };
}

/**
 * The health state machine: given the current state, the streak counters and a new check
 * outcome, returns the next state and counters. Pure, so it is easy to reason about:
 *
 * - a failed check (`unhealthy` outcome): `unhealthyAfter` in a row → `unhealthy`;
 *   `degradedAfter` in a row → a healthy worker becomes `degraded`;
 * - a `degraded` report degrades a healthy worker at once;
 * - `degraded` → `healthy` after `recoverAfter` healthy reports in a row;
 * - `unhealthy` → after `recoverAfter` good (not unhealthy) reports in a row, `healthy` if
 *   they were all healthy, else `degraded`.
 *
 * @example
 * ```ts
 * const t = { degradedAfter: 1, unhealthyAfter: 3, recoverAfter: 2 };
 * nextHealthState("healthy", initialHealthCounters(), { status: "unhealthy" }, t).state; // "degraded"
 * ```
 */
export function nextHealthState(
  state: WorkerHealthState,
  counters: HealthCounters,
  report: HealthReport,
  thresholds: HealthThresholds,
): { state: WorkerHealthState; counters: HealthCounters } {
  if (report.status === "unhealthy") {
    const failed = counters.failed + 1;
    let next = state;
    if (failed >= thresholds.unhealthyAfter) next = "unhealthy";
    else if (failed >= thresholds.degradedAfter && state === "healthy") next = "degraded";
    return { state: next, counters: { failed, ok: 0, healthy: 0 } };
  }
  const ok = counters.ok + 1;
  const healthy = report.status === "healthy" ? counters.healthy + 1 : 0;
  let next = state;
  if (state === "unhealthy") {
    if (ok >= thresholds.recoverAfter) {
      next = healthy >= thresholds.recoverAfter ? "healthy" : "degraded";
    }
  } else if (report.status === "degraded") {
    next = "degraded";
  } else if (state === "degraded" && healthy >= thresholds.recoverAfter) {
    next = "healthy";
  }
  return { state: next, counters: { failed: 0, ok, healthy } };
}
