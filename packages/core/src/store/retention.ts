import { type Clock, systemClock, type TimerHandle } from "../clock.js";
import { FlotillaError } from "../errors.js";
import { type Logger, silentLogger } from "../logger.js";
import type { Store } from "./types.js";

/** Usage lines older than this are summed by a retention run (restarts read the last hour line by line). */
const USAGE_ROLLUP_AFTER_MS = 2 * 3_600_000;

/** Options of {@link scheduleRetention}. */
export interface RetentionOptions {
  /** Delete finished tasks that finished more than this many ms ago. @default undefined (no age limit) */
  olderThan?: number;
  /** Keep at most this many finished tasks (the newest). @default undefined (no count limit) */
  keep?: number;
  /** How often to clean up. @default 3_600_000 (hourly) */
  intervalMs?: number;
  /**
   * Tasks deleted per batch; a cleanup runs batches, letting other work in between, until
   * a batch comes back short. @default 1000
   */
  batchSize?: number;
  /**
   * Usage lines (the ledger budgets and limits restore from) older than this many ms are
   * deleted too. Keep at least the longest budget period. @default undefined (kept)
   */
  usageOlderThan?: number;
  /** @default systemClock */
  clock?: Clock;
  /** Where a failed cleanup is reported. @default silentLogger */
  logger?: Logger;
  /** Called after each cleanup with how many tasks it deleted. */
  onCleanup?: (deleted: number) => void;
}

/** A running retention schedule. */
export interface RetentionHandle {
  /** Runs a cleanup now; resolves with how many tasks were deleted. */
  runNow(): Promise<number>;
  /** Stops the schedule (a cleanup already running finishes). */
  stop(): void;
}

/**
 * Bounds the finished history of a store by age and/or count: every `intervalMs` it calls
 * `store.deleteFinished({ olderThan, keep })` in batches of `batchSize` (so the store keeps
 * answering), deletes usage lines older than `usageOlderThan`, and gives the freed space back
 * (`store.compact()`, where the store can). Every row of a deleted task goes with it
 * (events, attempts, dependencies). Unfinished tasks, and finished ones an unfinished task
 * depends on, are never deleted. A task's idempotency key is forgotten with it: a submit
 * with that key afterwards makes a new task.
 *
 * @example
 * ```ts
 * const retention = scheduleRetention(store, { olderThan: 7 * 86_400_000, keep: 100_000 });
 * // …
 * retention.stop();
 * ```
 */
export function scheduleRetention(store: Store, options: RetentionOptions): RetentionHandle {
  const { olderThan, keep } = options;
  if (olderThan === undefined && keep === undefined) {
    throw new FlotillaError("VALIDATION", "scheduleRetention: give olderThan and/or keep");
  }
  const intervalMs = options.intervalMs ?? 3_600_000;
  if (!Number.isFinite(intervalMs) || intervalMs <= 0) {
    throw new FlotillaError(
      "VALIDATION",
      `scheduleRetention: intervalMs must be a positive number, got ${String(intervalMs)}`,
    );
  }
  const clock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger;
  const batchSize = options.batchSize ?? 1000;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw new FlotillaError(
      "VALIDATION",
      `scheduleRetention: batchSize must be an integer >= 1, got ${String(batchSize)}`,
    );
  }
  const criteria: { olderThan?: number; keep?: number; limit: number } = { limit: batchSize };
  if (olderThan !== undefined) criteria.olderThan = olderThan;
  if (keep !== undefined) criteria.keep = keep;

  /** One cleanup: batches until one is short, then old usage lines, then free space back. */
  const cleanup = async (): Promise<number> => {
    let total = 0;
    for (;;) {
      const n = await store.deleteFinished(criteria);
      total += n;
      if (n < batchSize || stopped) break;
      // Let other work in between batches.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    // Usage older than two hours is kept summed per 15 minutes (the restart reads sums).
    if (store.rollUpUsage) await store.rollUpUsage(clock.now() - USAGE_ROLLUP_AFTER_MS);
    if (options.usageOlderThan !== undefined) {
      await store.deleteFinished({ usageBefore: clock.now() - options.usageOlderThan });
    }
    if (store.compact) {
      while ((await store.compact()) > 0 && !stopped) {
        await new Promise<void>((resolve) => setImmediate(resolve));
      }
    }
    return total;
  };

  let timer: TimerHandle | undefined;
  let stopped = false;
  let running: Promise<number> | undefined;

  const runNow = (): Promise<number> => {
    running ??= cleanup().then(
      (deleted) => {
        running = undefined;
        options.onCleanup?.(deleted);
        return deleted;
      },
      (err: unknown) => {
        running = undefined;
        throw err;
      },
    );
    return running;
  };
  const arm = () => {
    if (stopped) return;
    timer = clock.setTimeout(() => {
      runNow()
        .catch((err: unknown) =>
          logger.warn(
            { err: err instanceof Error ? err.message : String(err) },
            "retention failed",
          ),
        )
        .finally(arm);
    }, intervalMs);
  };
  arm();
  return {
    runNow,
    stop() {
      stopped = true;
      if (timer !== undefined) clock.clearTimeout(timer);
      timer = undefined;
    },
  };
}
