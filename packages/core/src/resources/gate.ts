import type { FlotillaError, SerializedError } from "../errors.js";
import type { WorkerEntry } from "../registry/types.js";
import type { UsageEntry } from "../store/types.js";
import type { TaskStatus, Usage } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";

/** A gate's answer: go, wait (the task keeps its queue position), or fail the task now. */
export type GateDecision =
  | { ok: true }
  | {
      ok: false;
      /** Human-readable reason, e.g. `rate limit "openai" (tokens/min) exhausted`. */
      reason: string;
      /** When to look again (ms since epoch). Without it, the gate calls its `wake` when things change. */
      retryAt?: number;
      /** Tasks sharing this key are blocked too, so the scheduler may skip them without asking. */
      blockKey?: string;
      /** Fail the task with this error instead of waiting (e.g. `QUOTA_EXCEEDED` under a fail policy). */
      fail?: FlotillaError;
    };

/** How an attempt ended, as a gate learns it. */
export interface SettleOutcome {
  status: TaskStatus;
  /** Actual usage reported by the worker (absent or partial when it reported none). */
  usage?: Usage;
  error?: SerializedError;
  /** Set when the worker threw `RetryAfterError` (or the provider sent Retry-After). */
  retryAfterMs?: number;
}

/**
 * A check consulted before a task is dispatched to a worker slot (push or pull). Rate
 * limiters, budgets, tenant concurrency caps and admission control are gates.
 *
 * Order of calls per attempt: `check` (may be called many times, must be side-effect free)
 * → `onDispatch` (exactly once when the task is handed to the slot) → `onStart` (at most
 * once, when the worker starts it; optional) → `onSettle` (exactly once when that attempt
 * ends, whatever the outcome).
 */
export interface DispatchGate {
  readonly name: string;
  check(task: TaskRecord, worker: WorkerEntry, now: number): GateDecision;
  onDispatch?(task: TaskRecord, worker: WorkerEntry, now: number): void;
  /**
   * The attempt really starts now (the worker is about to run it), some time after
   * `onDispatch`. Optional for both sides: a rate limiter told of the start counts the call
   * from then, so its limit holds at the provider whatever the dispatch-to-start lag.
   */
  onStart?(task: TaskRecord, worker: WorkerEntry, now: number): void;
  onSettle?(task: TaskRecord, worker: WorkerEntry, outcome: SettleOutcome, now: number): void;
  /**
   * Registers the scheduler's wake-up; the gate calls it when blocked work may now go —
   * with the `blockKey`s that freed up when only tasks held on those may go (the scheduler
   * then looks at those alone), without when any may. Returns an unsubscribe.
   */
  subscribe?(wake: (keys?: readonly string[]) => void): () => void;
  /**
   * Called once at `start()` with the store's usage ledger of the last 48 hours (oldest
   * first), so that windows, budgets and totals continue across a restart instead of
   * starting empty. `now` is the orchestrator clock's time.
   */
  restore?(entries: UsageEntry[], now: number): void;
  /**
   * How far back (ms) the usage ledger handed to `restore` must reach (e.g. a monthly
   * budget needs the month so far). The orchestrator reads the longest any gate asks for.
   * @default 48 hours
   */
  readonly restoreSpanMs?: number;
}
