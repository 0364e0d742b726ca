import type { TaskRecord } from "../task/types.js";
import type { StoredEvent } from "./types.js";

/**
 * Writes from a caller that hands over objects it never mutates again (the orchestrator
 * writes snapshots of its records): a store offering them under this symbol may keep the
 * objects as they are instead of copying them. Reads still hand out copies. Internal to
 * Flotilla; not part of the `Store` contract.
 *
 * @example
 * ```ts
 * const owned = (store as { [OWNED_WRITES]?: OwnedWrites })[OWNED_WRITES];
 * await (owned ? owned.saveTask(snapshot) : store.saveTask(snapshot));
 * ```
 */
export const OWNED_WRITES: unique symbol = Symbol("flotilla.ownedWrites");

/** The owned-write fast path a store may offer under {@link OWNED_WRITES}. */
export interface OwnedWrites {
  /** Like `insertTasks`, keeping the given records (already JSON-clean) without a copy. */
  insertTasks(tasks: readonly TaskRecord[]): Promise<void>;
  /** Like `saveTask` without compare-and-set, keeping the given record without a copy. */
  saveTask(task: TaskRecord): Promise<boolean>;
  /** Like `appendEvents`, keeping the given events without a copy. */
  appendEvents(events: readonly StoredEvent[]): Promise<void>;
}

/**
 * A snapshot of a record the orchestrator keeps mutating: top-level fields and the nested
 * objects it changes in place (lease, result and its timings) are copied; payload, output
 * and other values it never mutates are shared.
 *
 * @example
 * ```ts
 * const snap = snapshotRecord(live.rec);
 * ```
 */
export function snapshotRecord(rec: TaskRecord): TaskRecord {
  const snap = { ...rec };
  if (rec.lease) snap.lease = { ...rec.lease };
  if (rec.result) snap.result = { ...rec.result, timings: { ...rec.result.timings } };
  return snap;
}
