import { FlotillaError, type SerializedError } from "../errors.js";
import { backoffDelay } from "../scheduler/backoff.js";
import type { RetryPolicy, TaskStatus } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import type { WorkerResult } from "../worker/types.js";

/** How one attempt ended, whatever ended it first. @internal */
export type AttemptEnd =
  | { kind: "success"; result: WorkerResult }
  | { kind: "error"; error: FlotillaError; retryAfterMs?: number }
  | { kind: "timeout" }
  | { kind: "cancelled"; reason: string }
  | { kind: "lost"; reason: string }
  | { kind: "requeue"; reason: string };

/** The facts about an attempt that its verdict depends on. */
export interface AttemptFacts {
  taskId: string;
  /** The attempt's number (1 for the first). */
  attempt: number;
  /** The worker or remote holder that ran it. */
  holder: string;
  timeoutMs?: number | undefined;
}

/** What an attempt's end means for the attempt itself. */
export interface AttemptVerdict {
  /** How the attempt ended, as the dispatch gates are told. */
  status: TaskStatus;
  /** The error the attempt ended with (none for a success or a hand-back). */
  error?: SerializedError;
  /** Why the worker's signal is aborted, when the engine (not the worker) ended the attempt. */
  abort?: FlotillaError;
  /** For the worker's health: `true` a good run, `false` a failure, absent when not counted. */
  healthy?: boolean;
}

/**
 * What an attempt's end says about the attempt: its status for the gates, its error, the
 * abort reason handed to the worker's signal, and whether it counts for the worker's
 * health (a task's own fault, such as bad input, does not count against the worker, and a
 * rate-limit signal does not count at all). Pure.
 *
 * @internal
 */
export function judgeAttempt(end: AttemptEnd, f: AttemptFacts): AttemptVerdict {
  switch (end.kind) {
    case "success":
      return { status: "succeeded", healthy: true };
    case "error": {
      const verdict: AttemptVerdict = { status: "failed", error: end.error.toJSON() };
      // "Slow down" (a 429, Retry-After) pauses the key; it says nothing about the worker's
      // health, so it neither opens its circuit nor counts as a good run.
      if (end.retryAfterMs !== undefined || end.error.code === "RATE_LIMITED") return verdict;
      const taskFault =
        end.error.code === "VALIDATION" ||
        (end.error.cause instanceof Error && end.error.cause.name === "UnrecoverableError");
      verdict.healthy = taskFault;
      return verdict;
    }
    case "timeout":
      return {
        status: "timed_out",
        error: new FlotillaError(
          "TIMEOUT",
          `task ${f.taskId} timed out after ${f.timeoutMs} ms (attempt ${f.attempt})`,
          { retryable: true },
        ).toJSON(),
        abort: new FlotillaError("TIMEOUT", `task ${f.taskId} timed out after ${f.timeoutMs} ms`),
        healthy: false,
      };
    case "cancelled":
      return {
        status: "cancelled",
        error: new FlotillaError("CANCELLED", end.reason).toJSON(),
        abort: new FlotillaError("CANCELLED", end.reason),
      };
    case "lost":
      return {
        status: "failed",
        error: new FlotillaError("WORKER_LOST", `${end.reason} (holder ${f.holder})`, {
          retryable: true,
        }).toJSON(),
        abort: new FlotillaError("WORKER_LOST", end.reason),
        healthy: false,
      };
    case "requeue":
      return { status: "cancelled", abort: new FlotillaError("WORKER_LOST", end.reason) };
  }
}

/** The facts about a task that decide what follows an attempt. */
export interface RetryFacts {
  /** The attempt's number (1 for the first). */
  attempt: number;
  /** Earlier attempts that ended without failing (hand-backs): they do not count. */
  freeAttempts: number;
  /** Earlier attempts cut off by the orchestrator's own stop: they do not count either. */
  interruptions?: number;
  retry: RetryPolicy;
  approval: TaskRecord["approval"];
  now: number;
  /** Random source for backoff jitter, in [0, 1). */
  random: () => number;
}

/** What happens to the task after an attempt. */
export type NextStep =
  /** The task ends in `status`. */
  | { kind: "finish"; status: "succeeded" | "failed" | "timed_out" | "cancelled" }
  /** The result is held until someone approves it (`awaiting_approval`). */
  | { kind: "hold" }
  /**
   * Back to `queued`, from `notBefore` on (at once when absent). `free`: the attempt does
   * not count against `maxAttempts` (it was handed back, not failed).
   */
  | { kind: "requeue"; reason: string; free: boolean; notBefore?: number };

/**
 * The outcome policy: how an attempt's end moves the task on — succeed (or hold for an
 * after-run approval), retry with backoff (at least the Retry-After the worker asked
 * for; at once after a lost lease), or end failed, timed out or cancelled. Pure; tested
 * as a table.
 *
 * @internal
 */
export function nextStep(end: AttemptEnd, f: RetryFacts): NextStep {
  switch (end.kind) {
    case "success":
      return f.approval === "after_run"
        ? { kind: "hold" }
        : { kind: "finish", status: "succeeded" };
    case "requeue":
      return { kind: "requeue", reason: end.reason, free: true };
    case "cancelled":
      return { kind: "finish", status: "cancelled" };
    default:
      break;
  }
  const retryable =
    end.kind === "timeout" ||
    end.kind === "lost" ||
    (end.error.retryable && end.error.code !== "VALIDATION" && end.error.code !== "CANCELLED");
  const counted = f.attempt - f.freeAttempts - (f.interruptions ?? 0);
  if (retryable && counted < f.retry.maxAttempts) {
    let delay = end.kind === "lost" ? 0 : backoffDelay(f.retry, f.attempt, f.random);
    if (end.kind === "error" && end.retryAfterMs !== undefined) {
      // +1 ms: clocks count whole milliseconds, so never retry before Retry-After has passed.
      delay = Math.max(delay, end.retryAfterMs + 1);
    }
    const step: NextStep = {
      kind: "requeue",
      reason: `retry after ${end.kind === "error" ? end.error.code : end.kind}`,
      free: false,
    };
    if (delay > 0) step.notBefore = f.now + delay;
    return step;
  }
  return { kind: "finish", status: end.kind === "timeout" ? "timed_out" : "failed" };
}
