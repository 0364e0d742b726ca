import type { AttemptRecord, TaskRecord } from "@flotilla/core";
import { attemptOf, checkRecord, finishedAt, isTerminal, toJson } from "@flotilla/core/store";

/** The columns of a task row, in the order of {@link TASK_COLUMNS}. @internal */
export type TaskRow = [
  id: string,
  seq: number,
  status: string,
  type: string,
  tenant: string | null,
  workerId: string | null,
  idempotencyKey: string | null,
  priority: number,
  attempt: number,
  version: number,
  createdAt: number,
  updatedAt: number,
  finishedAt: number | null,
  notBefore: number | null,
  leaseHolder: string | null,
  leaseExpiresAt: number | null,
  body: string,
];

/** @internal */
export const TASK_COLUMNS = [
  "id",
  "seq",
  "status",
  "type",
  "tenant",
  "worker_id",
  "idempotency_key",
  "priority",
  "attempt",
  "version",
  "created_at",
  "updated_at",
  "finished_at",
  "not_before",
  "lease_holder",
  "lease_expires_at",
  "body",
] as const;

/** SQL array types of the columns, for `unnest` of many rows. @internal */
export const TASK_COLUMN_TYPES = [
  "text",
  "float8",
  "text",
  "text",
  "text",
  "text",
  "text",
  "float8",
  "int4",
  "int8",
  "int8",
  "int8",
  "int8",
  "int8",
  "text",
  "int8",
  "text",
] as const;

/** Everything a task write needs, computed when the call is made (callers may mutate after). @internal */
export interface PreparedWrite {
  row: TaskRow;
  deps: string[];
  attempt: AttemptRecord | undefined;
  idempotencyKey: string | undefined;
}

/** A task record as a row, validated, with its dependency edges and attempt. @internal */
export function prepareWrite(task: TaskRecord, where: string): PreparedWrite {
  checkRecord(task, where);
  const row: TaskRow = [
    task.id,
    task.seq,
    task.status,
    String(task.type),
    task.tenant ?? null,
    task.workerId ?? null,
    task.idempotencyKey ?? null,
    Number.isFinite(task.priority) ? task.priority : 0,
    task.attempt ?? 0,
    task.version,
    task.createdAt ?? 0,
    task.updatedAt ?? 0,
    isTerminal(task.status) ? finishedAt(task) : null,
    task.notBefore ?? null,
    task.lease?.holder ?? null,
    task.lease?.expiresAt ?? null,
    toJson(task, `${where}: task ${task.id}`),
  ];
  return {
    row,
    deps: Array.isArray(task.dependsOn) ? task.dependsOn.map(String) : [],
    attempt: task.attempt >= 1 ? attemptOf(task) : undefined,
    idempotencyKey: task.idempotencyKey,
  };
}
