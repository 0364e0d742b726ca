import type { DatabaseSync, SQLInputValue } from "node:sqlite";
import { FlotillaError } from "../errors.js";
import type { TaskRecord } from "../task/types.js";
import {
  attemptOf,
  attemptRowValues,
  checkRecord,
  finishedAt,
  isTerminal,
  toJson,
} from "./common.js";
import type { SqliteQueue } from "./sqlite-queue.js";
import type { AttemptRecord } from "./types.js";

/** One row of a table, by column name. @internal */
export type Row = Record<string, SQLInputValue>;

/** Everything a task write needs, computed when the call is made (callers may mutate after). @internal */
export interface PreparedWrite {
  row: Row;
  deps: string[];
  attempt: AttemptRecord | undefined;
  idempotencyKey: string | undefined;
}

/** A task record as a row of the `tasks` table (validated, body as JSON). */
export function taskRow(task: TaskRecord, where: string): Row {
  checkRecord(task, where);
  const terminal = isTerminal(task.status);
  return {
    id: task.id,
    seq: task.seq,
    status: task.status,
    type: String(task.type),
    tenant: task.tenant ?? null,
    worker_id: task.workerId ?? null,
    idempotency_key: task.idempotencyKey ?? null,
    priority: Number.isFinite(task.priority) ? task.priority : 0,
    attempt: task.attempt ?? 0,
    version: task.version,
    created_at: task.createdAt ?? 0,
    updated_at: task.updatedAt ?? 0,
    finished_at: terminal ? finishedAt(task) : null,
    lease_holder: task.lease?.holder ?? null,
    lease_expires_at: task.lease?.expiresAt ?? null,
    body: toJson(task, `${where}: task ${task.id}`),
  };
}

/** A unique-constraint failure as `CONFLICT` naming the id or idempotency key; other errors as they are. */
export function conflictError(
  err: unknown,
  task: { id: string; idempotencyKey?: string | undefined },
): unknown {
  const e = err as { errcode?: number; message?: string };
  if (typeof e?.errcode === "number" && (e.errcode & 0xff) === 19) {
    if (String(e.message).includes("idempotency_key")) {
      return new FlotillaError(
        "CONFLICT",
        `idempotency key "${task.idempotencyKey}" is already used`,
        { details: { idempotencyKey: task.idempotencyKey } },
      );
    }
    return new FlotillaError("CONFLICT", `task ${task.id} already exists`, {
      details: { id: task.id },
    });
  }
  return err;
}

export const INSERT_TASK = `INSERT INTO tasks (id, seq, status, type, tenant, worker_id,
  idempotency_key, priority, attempt, version, created_at, updated_at, finished_at,
  lease_holder, lease_expires_at, body) VALUES (:id, :seq, :status, :type, :tenant,
  :worker_id, :idempotency_key, :priority, :attempt, :version, :created_at, :updated_at,
  :finished_at, :lease_holder, :lease_expires_at, :body)`;

export const UPDATE_TASK = `UPDATE tasks SET seq = :seq, status = :status, type = :type,
  tenant = :tenant, worker_id = :worker_id, idempotency_key = :idempotency_key,
  priority = :priority, attempt = :attempt, version = :version, created_at = :created_at,
  updated_at = :updated_at, finished_at = :finished_at, lease_holder = :lease_holder,
  lease_expires_at = :lease_expires_at, body = :body WHERE id = :id`;

/**
 * The engine's usual write: only the columns a task's life changes, when those it never
 * changes (order, type, tenant, idempotency key, priority, creation) are as stored. Indexes
 * on the unchanged columns are not rewritten; no row matched means "use UPDATE_TASK".
 */
export const UPDATE_TASK_STATE = `UPDATE tasks SET status = :status, worker_id = :worker_id,
  attempt = :attempt, version = :version, updated_at = :updated_at, finished_at = :finished_at,
  lease_holder = :lease_holder, lease_expires_at = :lease_expires_at, body = :body
  WHERE id = :id AND seq = :seq AND type = :type AND tenant IS :tenant
  AND idempotency_key IS :idempotency_key AND priority = :priority AND created_at = :created_at`;

/** Records the task's dependency edges (a new task). */
export function insertDeps(q: SqliteQueue, db: DatabaseSync, write: PreparedWrite): void {
  if (write.deps.length === 0) return;
  const stmt = q.stmt(db, "INSERT OR IGNORE INTO dependencies (task_id, depends_on) VALUES (?, ?)");
  for (const dep of write.deps) stmt.run(write.row.id as string, dep);
}

/** The row, dependency edges and attempt of a task write. @internal */
export function prepareWrite(task: TaskRecord, where: string): PreparedWrite {
  const row = taskRow(task, where);
  return {
    row,
    deps: Array.isArray(task.dependsOn) ? task.dependsOn.map(String) : [],
    attempt: task.attempt >= 1 ? attemptOf(task) : undefined,
    idempotencyKey: task.idempotencyKey,
  };
}

/** Upserts the row of the task's current attempt (its timeline), keyed by the task's seq first. */
export function trackAttempt(q: SqliteQueue, db: DatabaseSync, write: PreparedWrite): void {
  const a = write.attempt;
  if (!a) return;
  q.stmt(
    db,
    `INSERT INTO attempts (task_seq, task_id, attempt, status, worker_id, lease_id, started_at,
      finished_at, error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (task_seq, task_id, attempt) DO UPDATE SET status = excluded.status,
      worker_id = coalesce(excluded.worker_id, worker_id),
      lease_id = coalesce(excluded.lease_id, lease_id),
      started_at = coalesce(excluded.started_at, started_at),
      finished_at = coalesce(excluded.finished_at, finished_at),
      error = coalesce(excluded.error, error), updated_at = excluded.updated_at`,
  ).run(write.row.seq as number, ...attemptRowValues(a));
}

/**
 * A task whose `seq` changed (only a store's direct caller can do that): its attempts and
 * events move to the new seq, which they are found by.
 */
export function moveSeq(
  q: SqliteQueue,
  db: DatabaseSync,
  id: string,
  from: number,
  to: number,
): void {
  q.stmt(db, "UPDATE attempts SET task_seq = ? WHERE task_seq = ? AND task_id = ?").run(
    to,
    from,
    id,
  );
  q.stmt(db, "UPDATE events SET task_seq = ? WHERE task_seq = ? AND task_id = ?").run(to, from, id);
}
