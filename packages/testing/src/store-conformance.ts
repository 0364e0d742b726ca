import type { Clock, Store, TaskRecord } from "@flotilla/core";

/** What the suite hands a store factory. */
export interface StoreConformanceContext {
  /** The clock the store must use for retention ages (the suite moves it). */
  clock: Clock;
}

/** Options of `describeStoreConformance` (from `@flotilla/testing/vitest`). */
export interface StoreConformanceOptions {
  /**
   * Returns a new store over the same data as `closed` (which the suite has just closed).
   * When given, the suite checks that everything survives a close and reopen.
   */
  reopen?: (closed: Store, ctx: StoreConformanceContext) => Store | Promise<Store>;
  /** Called after each test with the last store instance (remove files, drop schemas). */
  cleanup?: (store: Store) => void | Promise<void>;
}

/** The time `storeTestRecord` dates records from (ms since the epoch). */
export const STORE_TEST_BASE_TIME = 1_700_000_000_000;
const BASE_TIME = STORE_TEST_BASE_TIME;

/**
 * A task record as an orchestrator would store it, with `overrides` applied.
 *
 * @example
 * ```ts
 * await store.insertTasks([storeTestRecord({ id: "a", seq: 1 })]);
 * ```
 */
export function storeTestRecord(overrides: Partial<TaskRecord> & { id: string }): TaskRecord {
  const seq = overrides.seq ?? 1;
  return {
    type: "custom",
    payload: { value: overrides.id, nested: { list: [1, 2, 3] } },
    priority: 20,
    seq,
    status: "queued",
    dependsOn: [],
    onDependencyFailure: "skip",
    retry: { maxAttempts: 3, initialDelayMs: 10, maxDelayMs: 100, factor: 2, jitter: 0 },
    rateLimitKeys: [],
    approval: "none",
    metadata: {},
    attempt: 0,
    createdAt: BASE_TIME + seq,
    updatedAt: BASE_TIME + seq,
    version: 1,
    ...overrides,
  };
}
