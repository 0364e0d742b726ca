import { FlotillaError } from "../errors.js";
import { type TaskStatus, TERMINAL_STATUSES } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import type {
  AttemptRecord,
  DeleteFinishedOptions,
  StoreClaim,
  TaskQuery,
  UnfinishedQuery,
  UsageEntry,
} from "./types.js";

/**
 * Whether a status is terminal (the task will never change again).
 *
 * @example
 * ```ts
 * isTerminal("succeeded"); // true
 * isTerminal("running"); // false
 * ```
 */
export function isTerminal(status: TaskStatus): boolean {
  return TERMINAL_STATUSES.has(status);
}

/**
 * When a finished task finished: its result's `finishedAt`, else its last update.
 *
 * @example
 * ```ts
 * const age = Date.now() - finishedAt(task);
 * ```
 */
export function finishedAt(task: TaskRecord): number {
  return task.result?.timings.finishedAt ?? task.updatedAt;
}

/**
 * Statuses a query asks for, or `undefined` for all.
 *
 * @example
 * ```ts
 * queryStatuses({ status: "queued" }); // ["queued"]
 * ```
 */
export function queryStatuses(query: TaskQuery | undefined): TaskStatus[] | undefined {
  if (query?.status === undefined) return undefined;
  return Array.isArray(query.status) ? query.status : [query.status];
}

/**
 * Checks the paging numbers of a query (non-negative integers).
 *
 * @example
 * ```ts
 * checkPaging({ limit: 20, offset: 40 }); // throws VALIDATION for { limit: -1 }
 * ```
 */
export function checkPaging(query: TaskQuery | undefined): void {
  for (const field of ["limit", "offset"] as const) {
    const value = query?.[field];
    if (value !== undefined && (!Number.isInteger(value) || value < 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `TaskQuery.${field}: expected a non-negative integer, got ${String(value)}`,
      );
    }
  }
}

/**
 * Checks the numbers of an event query (non-negative integers).
 *
 * @example
 * ```ts
 * checkEventQuery({ afterSeq: 10, limit: 100 });
 * ```
 */
export function checkEventQuery(query: { afterSeq?: number; limit?: number }): void {
  for (const field of ["afterSeq", "limit"] as const) {
    const value = query?.[field];
    if (value !== undefined && (!Number.isInteger(value) || value < 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `listEvents.${field}: expected a non-negative integer, got ${String(value)}`,
      );
    }
  }
}

/**
 * Checks the shape a store needs from a record before writing it.
 *
 * @example
 * ```ts
 * checkRecord(task, "saveTask"); // throws VALIDATION naming what is missing
 * ```
 */
export function checkRecord(task: TaskRecord, where: string): void {
  if (task === null || typeof task !== "object") {
    throw new FlotillaError("VALIDATION", `${where}: expected a task record, got ${String(task)}`);
  }
  if (typeof task.id !== "string" || task.id.length === 0) {
    throw new FlotillaError("VALIDATION", `${where}: task.id must be a non-empty string`);
  }
  if (typeof task.status !== "string") {
    throw new FlotillaError("VALIDATION", `${where}: task ${task.id} has no status`);
  }
  if (!Number.isFinite(task.seq)) {
    throw new FlotillaError("VALIDATION", `${where}: task ${task.id} has no numeric seq`);
  }
  if (!Number.isFinite(task.version)) {
    throw new FlotillaError("VALIDATION", `${where}: task ${task.id} has no numeric version`);
  }
}

/**
 * Checks the options of `deleteFinished`.
 *
 * @example
 * ```ts
 * checkRetention({ olderThan: 86_400_000, limit: 500 });
 * ```
 */
export function checkRetention(options: DeleteFinishedOptions): void {
  const { olderThan, keep, limit, usageBefore } = options ?? {};
  if (limit !== undefined && !(Number.isInteger(limit) && limit >= 1)) {
    throw new FlotillaError(
      "VALIDATION",
      `deleteFinished.limit: expected an integer >= 1, got ${String(limit)}`,
    );
  }
  if (usageBefore !== undefined && !Number.isFinite(usageBefore)) {
    throw new FlotillaError(
      "VALIDATION",
      `deleteFinished.usageBefore: expected a time in ms, got ${String(usageBefore)}`,
    );
  }
  if (olderThan !== undefined && !(Number.isFinite(olderThan) && olderThan >= 0)) {
    throw new FlotillaError(
      "VALIDATION",
      `deleteFinished.olderThan: expected an age in ms >= 0, got ${String(olderThan)}`,
    );
  }
  if (keep !== undefined && !(Number.isInteger(keep) && keep >= 0)) {
    throw new FlotillaError(
      "VALIDATION",
      `deleteFinished.keep: expected an integer >= 0, got ${String(keep)}`,
    );
  }
}

/**
 * Checks a key-value collection and key (non-empty strings).
 *
 * @example
 * ```ts
 * checkKv("nodes", "gpu-1");
 * ```
 */
export function checkKv(collection: string, key?: string): void {
  if (typeof collection !== "string" || collection.length === 0) {
    throw new FlotillaError("VALIDATION", "kv collection: expected a non-empty string");
  }
  if (key !== undefined && (typeof key !== "string" || key.length === 0)) {
    throw new FlotillaError("VALIDATION", `kv key in "${collection}": expected a non-empty string`);
  }
}

/**
 * The attempt row a task record implies (for the attempt history).
 *
 * @example
 * ```ts
 * const row = attemptOf(task); // { taskId, attempt, status, workerId, startedAt, … }
 * ```
 */
export function attemptOf(task: TaskRecord): AttemptRecord {
  const row: AttemptRecord = {
    taskId: task.id,
    attempt: task.attempt,
    status: task.status,
    updatedAt: task.updatedAt,
  };
  const workerId = task.workerId ?? task.lease?.holder;
  if (workerId !== undefined) row.workerId = workerId;
  if (task.lease) row.leaseId = task.lease.id;
  const startedAt = task.result?.timings.startedAt ?? task.lease?.acquiredAt;
  if (startedAt !== undefined) row.startedAt = startedAt;
  if (isTerminal(task.status)) {
    row.finishedAt = finishedAt(task);
    if (task.result?.error) row.error = task.result.error;
  }
  return row;
}

/**
 * The finished tasks `deleteFinished` removes: those finished more than `olderThan` ms
 * before `now`, and those beyond the newest `keep` finished ones. A finished task that an
 * unfinished task depends on is kept (its output is still needed).
 *
 * @example
 * ```ts
 * const doomed = selectForRetention(tasks, { olderThan: 86_400_000 }, Date.now());
 * ```
 */
export function selectForRetention(
  tasks: Iterable<TaskRecord>,
  options: DeleteFinishedOptions,
  now: number,
): Set<string> {
  const finished: TaskRecord[] = [];
  const needed = new Set<string>();
  for (const task of tasks) {
    if (isTerminal(task.status)) finished.push(task);
    else for (const dep of task.dependsOn) needed.add(dep);
  }
  const doomed = new Set<string>();
  if (options.olderThan !== undefined) {
    const cutoff = now - options.olderThan;
    for (const task of finished) if (finishedAt(task) < cutoff) doomed.add(task.id);
  }
  if (options.keep !== undefined) {
    finished.sort((a, b) => finishedAt(b) - finishedAt(a) || b.seq - a.seq);
    for (const task of finished.slice(options.keep)) doomed.add(task.id);
  }
  for (const id of needed) doomed.delete(id);
  if (options.limit !== undefined && doomed.size > options.limit) {
    const byAge = finished.filter((t) => doomed.has(t.id));
    byAge.sort((a, b) => finishedAt(a) - finishedAt(b) || a.seq - b.seq);
    return new Set(byAge.slice(0, options.limit).map((t) => t.id));
  }
  return doomed;
}

/**
 * Serialises a value the way every store keeps it (JSON). Values JSON cannot represent
 * (a cycle, a BigInt) are rejected with `VALIDATION` naming where they were found.
 *
 * @example
 * ```ts
 * const text = toJson(task.payload, `task ${task.id}: payload`);
 * ```
 */
export function toJson(value: unknown, where: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(value);
  } catch (err) {
    throw new FlotillaError(
      "VALIDATION",
      `${where}: cannot be stored as JSON (${err instanceof Error ? err.message : String(err)})`,
      { cause: err },
    );
  }
  if (text === undefined) {
    throw new FlotillaError("VALIDATION", `${where}: cannot be stored as JSON (${typeof value})`);
  }
  return text;
}

/**
 * A deep copy through JSON, so every store returns the same shapes.
 *
 * @example
 * ```ts
 * const copy = jsonCopy(task, "getTask");
 * ```
 */
export function jsonCopy<T>(value: T, where: string): T {
  return JSON.parse(toJson(value, where)) as T;
}

/**
 * Checks a claim's arguments (`VALIDATION` naming the field).
 *
 * @example
 * ```ts
 * checkClaim({ holder: "node-1", leaseId: "l-1", leaseMs: 30_000 });
 * ```
 */
export function checkClaim(claim: StoreClaim): void {
  if (claim === null || typeof claim !== "object") {
    throw new FlotillaError("VALIDATION", "claimTask: expected a claim object");
  }
  for (const f of ["holder", "leaseId"] as const) {
    if (typeof claim[f] !== "string" || claim[f].length === 0) {
      throw new FlotillaError("VALIDATION", `claimTask: ${f}: expected a non-empty string`);
    }
  }
  if (!Number.isInteger(claim.leaseMs) || claim.leaseMs <= 0) {
    throw new FlotillaError("VALIDATION", "claimTask: leaseMs: expected a positive integer");
  }
  const types = claim.taskTypes;
  if (types !== undefined && (!Array.isArray(types) || types.some((t) => typeof t !== "string"))) {
    throw new FlotillaError("VALIDATION", "claimTask: taskTypes: expected an array of strings");
  }
}

/**
 * Whether a queued task is a candidate for `claim` at `now` (type and due time).
 *
 * @example
 * ```ts
 * const ready = claimable(task, { holder: "n", leaseId: "l", leaseMs: 1000 }, Date.now());
 * ```
 */
export function claimable(task: TaskRecord, claim: StoreClaim, now: number): boolean {
  if (task.status !== "queued") return false;
  if (claim.taskTypes !== undefined && !claim.taskTypes.includes(task.type)) return false;
  return task.notBefore === undefined || task.notBefore <= now;
}

/**
 * `task` as a claim leaves it: leased to the holder from `now`, attempt and version bumped.
 *
 * @example
 * ```ts
 * const leased = claimedRecord(task, { holder: "node-1", leaseId: "l-1", leaseMs: 30_000 }, now);
 * ```
 */
export function claimedRecord(task: TaskRecord, claim: StoreClaim, now: number): TaskRecord {
  const next: TaskRecord = {
    ...task,
    status: "leased",
    attempt: task.attempt + 1,
    version: task.version + 1,
    updatedAt: now,
    workerId: claim.holder,
    lease: {
      id: claim.leaseId,
      holder: claim.holder,
      acquiredAt: now,
      expiresAt: now + claim.leaseMs,
    },
  };
  delete next.notBefore;
  return next;
}

/**
 * A row of an `attempts` table (columns `task_id`, `attempt`, `status`, `worker_id`,
 * `lease_id`, `started_at`, `finished_at`, `error` as JSON, `updated_at`; NULL for absent) as a
 * record, as the SQL stores keep them.
 *
 * @example
 * ```ts
 * const attempts = rows.map(attemptFromRow);
 * ```
 */
export function attemptFromRow(r: Record<string, unknown>): AttemptRecord {
  const a: AttemptRecord = {
    taskId: String(r.task_id),
    attempt: Number(r.attempt),
    status: r.status as AttemptRecord["status"],
    updatedAt: Number(r.updated_at),
  };
  if (r.worker_id != null) a.workerId = String(r.worker_id);
  if (r.lease_id != null) a.leaseId = String(r.lease_id);
  if (r.started_at != null) a.startedAt = Number(r.started_at);
  if (r.finished_at != null) a.finishedAt = Number(r.finished_at);
  if (r.error != null) a.error = JSON.parse(String(r.error));
  return a;
}

/**
 * A row of a `usage` table (columns `at`, `task_id`, `worker_id`, `provider`, `model`,
 * `tenant`, `api_key`, `usage` as JSON; NULL for absent) as a ledger line.
 *
 * @example
 * ```ts
 * const lines = rows.map(usageFromRow);
 * ```
 */
export function usageFromRow(r: Record<string, unknown>): UsageEntry {
  const entry: UsageEntry = { at: Number(r.at), usage: JSON.parse(String(r.usage)) };
  if (r.task_id != null) entry.taskId = String(r.task_id);
  if (r.worker_id != null) entry.workerId = String(r.worker_id);
  if (r.provider != null) entry.provider = String(r.provider);
  if (r.model != null) entry.model = String(r.model);
  if (r.tenant != null) entry.tenant = String(r.tenant);
  if (r.api_key != null) entry.apiKey = String(r.api_key);
  return entry;
}

/**
 * An attempt as the values of an attempts row, in column order: `task_id`, `attempt`,
 * `status`, `worker_id`, `lease_id`, `started_at`, `finished_at`, `error` (JSON), `updated_at`
 * (NULL for absent), as the SQL stores write them.
 *
 * @example
 * ```ts
 * const values = attemptRowValues(attemptOf(task));
 * ```
 */
export function attemptRowValues(a: AttemptRecord): Array<string | number | null> {
  return [
    a.taskId,
    a.attempt,
    a.status,
    a.workerId ?? null,
    a.leaseId ?? null,
    a.startedAt ?? null,
    a.finishedAt ?? null,
    a.error === undefined ? null : JSON.stringify(a.error),
    a.updatedAt ?? 0,
  ];
}

/**
 * Whether a record is among those an {@link UnfinishedQuery} asks for (every record without
 * `partitions`; a record without a partition always). `VALIDATION` for partitions that are
 * not integers.
 *
 * @example
 * ```ts
 * const keep = partitionFilter({ partitions: [3] });
 * keep({ ...task, partition: 3 }); // true; partition 4: false
 * ```
 */
export function partitionFilter(query: UnfinishedQuery | undefined): (rec: TaskRecord) => boolean {
  const ps = query?.partitions;
  if (ps === undefined) return () => true;
  if (!Array.isArray(ps) || !ps.every((n) => Number.isInteger(n))) {
    throw new FlotillaError(
      "VALIDATION",
      "loadUnfinished: partitions: expected an array of integers",
    );
  }
  const set = new Set(ps);
  return (rec) => typeof rec.partition !== "number" || set.has(rec.partition);
}
