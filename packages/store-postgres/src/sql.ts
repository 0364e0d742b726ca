import { TASK_COLUMN_TYPES, TASK_COLUMNS } from "./rows.js";
import { LOCK_NAMESPACE } from "./schema.js";

/** The database's time in ms since the epoch (leases and claims run on it). @internal */
export const DB_NOW = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint";

const COLS = TASK_COLUMNS.join(", ");
const STATE_COLS = TASK_COLUMNS.slice(1);
const ATTEMPT_COLS =
  "task_id, attempt, status, worker_id, lease_id, started_at, finished_at, error, updated_at";
const ATTEMPT_TYPES = ["text", "int4", "text", "text", "text", "int8", "int8", "text", "int8"];
/** Parameters $1-$17 are the task's columns, $18-$26 its attempt (all null when none). */
const ATTEMPT_PARAMS = ATTEMPT_TYPES.map((ty, i) => `$${18 + i}::${ty}`).join(", ");

/**
 * The statements a store writes with, for one schema (`s` quoted). Each write the engine
 * makes often is one statement (its task row, attempt row and dependency edges together in
 * data-modifying CTEs), so alone it commits without BEGIN/COMMIT round trips. @internal
 */
export function statements(s: string, schema: string) {
  const t = (table: string) => `${s}.${table}`;
  const upsertAttempt = `ON CONFLICT (task_id, attempt) DO UPDATE SET status = excluded.status,
      worker_id = coalesce(excluded.worker_id, attempts.worker_id),
      lease_id = coalesce(excluded.lease_id, attempts.lease_id),
      started_at = coalesce(excluded.started_at, attempts.started_at),
      finished_at = coalesce(excluded.finished_at, attempts.finished_at),
      error = coalesce(excluded.error, attempts.error), updated_at = excluded.updated_at`;
  /** Upserts of many tasks (t), edges of the new ones (d), attempts (a): parameters $1-$28. */
  const saveManyCtes = `t AS (
      INSERT INTO ${t("tasks")} (${COLS})
      SELECT * FROM unnest(${TASK_COLUMN_TYPES.map((ty, i) => `$${i + 1}::${ty}[]`).join(", ")})
      ON CONFLICT (id) DO UPDATE SET ${STATE_COLS.map((c) => `${c} = excluded.${c}`).join(", ")}
      RETURNING id, (xmax = 0) AS inserted
    ), d AS (
      INSERT INTO ${t("dependencies")} (task_id, depends_on)
      SELECT e.task_id, e.dep FROM unnest($18::text[], $19::text[]) AS e(task_id, dep)
      JOIN t ON t.id = e.task_id AND t.inserted
      ON CONFLICT DO NOTHING
    ), a AS (
      INSERT INTO ${t("attempts")} (${ATTEMPT_COLS})
      SELECT * FROM unnest(${ATTEMPT_TYPES.map((ty, i) => `$${20 + i}::${ty}[]`).join(", ")})
      ${upsertAttempt}
    )`;
  /**
   * The events lock (l) and the events in order (e): parameters $first to $first + 5 (the
   * arrays, the lock key, the appending store's mark).
   */
  const appendCtes = (first: number) => `l AS MATERIALIZED (
      SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, hashtext($${first + 4}))
    ), e AS (
      INSERT INTO ${t("events")} (type, task_id, at, data, origin)
      SELECT u.ty, u.k, u.a, u.d, $${first + 5}::text FROM l, unnest($${first}::text[], $${first + 1}::text[],
        $${first + 2}::int8[], $${first + 3}::text[]) WITH ORDINALITY AS u(ty, k, a, d, n)
      ORDER BY u.n
    )`;
  return {
    /** Tasks ($1-$17: one array per column), edges ($18, $19), attempts ($20-$28: arrays). */
    insertTasks: {
      name: `${schema}:insert_tasks`,
      text: `WITH t AS (
          INSERT INTO ${t("tasks")} (${COLS})
          SELECT * FROM unnest(${TASK_COLUMN_TYPES.map((ty, i) => `$${i + 1}::${ty}[]`).join(", ")})
          RETURNING 1
        ), d AS (
          INSERT INTO ${t("dependencies")} (task_id, depends_on)
          SELECT * FROM unnest($18::text[], $19::text[]) ON CONFLICT DO NOTHING
        ), a AS (
          INSERT INTO ${t("attempts")} (${ATTEMPT_COLS})
          SELECT * FROM unnest(${ATTEMPT_TYPES.map((ty, i) => `$${20 + i}::${ty}[]`).join(", ")})
          ${upsertAttempt}
        )
        SELECT count(*)::int AS n FROM t`,
    },
    /** Insert or replace ($1-$17), its attempt ($18-$26), edges if it is new ($27). */
    saveTask: {
      name: `${schema}:save_task`,
      text: `WITH t AS (
          INSERT INTO ${t("tasks")} (${COLS}) VALUES (${TASK_COLUMNS.map((_, i) => `$${i + 1}`).join(", ")})
          ON CONFLICT (id) DO UPDATE SET ${STATE_COLS.map((c) => `${c} = excluded.${c}`).join(", ")}
          RETURNING (xmax = 0) AS inserted
        ), d AS (
          INSERT INTO ${t("dependencies")} (task_id, depends_on)
          SELECT $1, dep FROM unnest($27::text[]) AS dep WHERE EXISTS (SELECT 1 FROM t WHERE inserted)
          ON CONFLICT DO NOTHING
        ), a AS (
          INSERT INTO ${t("attempts")} (${ATTEMPT_COLS}) SELECT ${ATTEMPT_PARAMS}
          WHERE $18::text IS NOT NULL AND EXISTS (SELECT 1 FROM t)
          ${upsertAttempt}
        )
        SELECT count(*)::int AS n FROM t`,
    },
    /**
     * Many saves at once: tasks ($1-$17, one array per column, one row per task), the edges
     * of those that turn out new ($18, $19), attempts ($20-$28, arrays).
     */
    saveTasks: {
      name: `${schema}:save_tasks`,
      text: `WITH ${saveManyCtes} SELECT count(*)::int AS n FROM t`,
    },
    /** Replace ($1-$17) if the stored version is $27, and its attempt ($18-$26). */
    saveTaskIfVersion: {
      name: `${schema}:save_task_cas`,
      text: `WITH t AS (
          UPDATE ${t("tasks")} SET (${STATE_COLS.join(", ")}) = (${STATE_COLS.map((_, i) => `$${i + 2}`).join(", ")})
          WHERE id = $1 AND version = $27::int8 RETURNING 1
        ), a AS (
          INSERT INTO ${t("attempts")} (${ATTEMPT_COLS}) SELECT ${ATTEMPT_PARAMS}
          WHERE $18::text IS NOT NULL AND EXISTS (SELECT 1 FROM t)
          ${upsertAttempt}
        )
        SELECT count(*)::int AS n FROM t`,
    },
    /**
     * Events in order (arrays $1-$4, lock key $5, origin $6). Appends from every process sharing the
     * schema take turns on a transaction-scoped advisory lock, taken before any row gets its
     * number, so numbers grow in commit order.
     */
    appendEvents: {
      name: `${schema}:append_events`,
      text: `WITH ${appendCtes(1)} SELECT 0 AS n`,
    },
    /**
     * A batch of saves ($1-$28 as in `saveTasks`) and appends ($29-$34 as in `appendEvents`)
     * as one statement: one round trip, and one commit, for the whole batch.
     */
    saveTasksAndAppendEvents: {
      name: `${schema}:save_tasks_append_events`,
      text: `WITH ${saveManyCtes}, ${appendCtes(29)} SELECT count(*)::int AS n FROM t`,
    },
  };
}
