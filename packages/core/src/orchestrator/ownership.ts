import { FlotillaError } from "../errors.js";
import type { TaskRecord } from "../task/types.js";
import { partitionOf } from "../util/partition.js";

/**
 * Which tasks this orchestrator schedules when several share one store (`partitions`
 * option): the partitions it holds now. Without partitions it schedules every task. A
 * task's partition is its record's `partition` (set at submission), or its id's hash for a
 * record written without one. @internal
 */
export class Ownership {
  /** How many partitions the store's tasks are hashed into (undefined: not partitioned). */
  readonly count: number | undefined;
  readonly #held = new Set<number>();

  constructor(count: number | undefined) {
    this.count = count;
  }

  /** The partition of a record (0 when not partitioned). */
  partitionOf(rec: Pick<TaskRecord, "id" | "partition">): number {
    const count = this.count;
    if (count === undefined) return 0;
    const p = rec.partition;
    return typeof p === "number" && Number.isInteger(p) && p >= 0 && p < count
      ? p
      : partitionOf(rec.id, count);
  }

  /** Whether this orchestrator schedules `rec` now. */
  owns(rec: Pick<TaskRecord, "id" | "partition">): boolean {
    return this.count === undefined || this.#held.has(this.partitionOf(rec));
  }

  /**
   * Gives the records of one batch their partition: that of a task outside the batch that
   * one of them depends on (so a chain submitted step by step stays in one partition), else
   * that of the batch's first task.
   */
  assign(batch: readonly TaskRecord[], external: ReadonlyMap<string, TaskRecord>): void {
    const count = this.count;
    if (count === undefined || batch.length === 0) return;
    let p: number | undefined;
    for (const rec of batch) {
      for (const dep of rec.dependsOn) {
        const outside = external.get(dep);
        if (outside) {
          p = this.partitionOf(outside);
          break;
        }
      }
      if (p !== undefined) break;
    }
    p ??= partitionOf(batch[0]!.id, count);
    for (const rec of batch) rec.partition = p;
  }

  /** The partitions held now, ascending. */
  held(): number[] {
    return [...this.#held].sort((a, b) => a - b);
  }

  /** Checks a list of partitions against the count (`VALIDATION` naming the problem). */
  check(partitions: readonly number[], where: string): number[] {
    const count = this.count;
    if (count === undefined) {
      throw new FlotillaError(
        "INVALID_STATE",
        `${where}: the orchestrator is not partitioned (set the partitions option)`,
      );
    }
    if (!Array.isArray(partitions)) {
      throw new FlotillaError("VALIDATION", `${where}: expected an array of partition numbers`);
    }
    for (const p of partitions) {
      if (!Number.isInteger(p) || p < 0 || p >= count) {
        throw new FlotillaError(
          "VALIDATION",
          `${where}: partition ${String(p)} is not an integer in [0, ${count - 1}]`,
          { details: { partition: p, count } },
        );
      }
    }
    return [...new Set(partitions)];
  }

  add(partitions: readonly number[]): void {
    for (const p of partitions) this.#held.add(p);
  }

  remove(partitions: readonly number[]): void {
    for (const p of partitions) this.#held.delete(p);
  }
}
