import { resolve } from "node:path";
import { DatabaseSync, type SQLInputValue } from "node:sqlite";
import { z } from "zod";
import { type Clock, systemClock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import { type Logger, silentLogger } from "../logger.js";
import { TASK_STATUSES } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import { parseOrThrow } from "../task/validation.js";
import {
  attemptFromRow,
  checkClaim,
  checkEventQuery,
  checkKv,
  checkPaging,
  checkRetention,
  claimedRecord,
  isTerminal,
  partitionFilter,
  queryStatuses,
  toJson,
  usageFromRow,
} from "./common.js";
import { checkPath, prepareFile, sqliteError } from "./sqlite-file.js";
import { SqliteQueue } from "./sqlite-queue.js";
import {
  conflictError,
  INSERT_TASK,
  insertDeps,
  moveSeq,
  prepareWrite,
  trackAttempt,
  UPDATE_TASK,
  UPDATE_TASK_STATE,
} from "./sqlite-rows.js";
import type {
  AttemptRecord,
  DeleteFinishedOptions,
  Store,
  StoreClaim,
  StoredEvent,
  TaskQuery,
  UnfinishedQuery,
  UsageEntry,
} from "./types.js";

/** Options of {@link SqliteStore}. */
export interface SqliteStoreOptions {
  /** The database file. Created (with its schema) when missing; its directory must exist. */
  path: string;
  /** Time source for retention ages. @default systemClock */
  clock?: Clock;
  /** Where open/migration messages go. @default silentLogger */
  logger?: Logger;
  /** How long a statement waits for a lock held by another connection. @default 5000 */
  busyTimeoutMs?: number;
  /**
   * `"full"` fsyncs the write-ahead log at every commit: an acknowledged write survives
   * power loss. `"normal"` survives a crash of the process (SIGKILL, OOM) but the last
   * commits may be lost if the machine loses power. @default "full"
   */
  synchronous?: "full" | "normal";
  /**
   * Coalesce the writes issued in the same turn of the event loop into one transaction
   * (one fsync); each write still resolves only after that transaction commits.
   * @default true
   */
  batchWrites?: boolean;
  /**
   * Hold the file for this process only (SQLite exclusive locking): a second process
   * opening the same file fails at `open()` instead of both running the same tasks.
   * @default true
   */
  exclusive?: boolean;
  /**
   * Run SQLite's `quick_check` at `open()`, so a damaged file stops start-up instead of
   * failing at the first query that touches the damage (≈ 100 ms per 100 MB).
   * @default true
   */
  verifyOnOpen?: boolean;
}

const SqliteStoreOptionsSchema = z.object({
  path: z.string().min(1, "expected a file path"),
  clock: z
    .custom((c) => typeof (c as { now?: unknown })?.now === "function", "expected a Clock")
    .optional(),
  logger: z
    .custom((l) => typeof (l as { info?: unknown })?.info === "function", "expected a Logger")
    .optional(),
  busyTimeoutMs: z.number().int().nonnegative().optional(),
  synchronous: z.enum(["full", "normal"]).optional(),
  batchWrites: z.boolean().optional(),
  exclusive: z.boolean().optional(),
  verifyOnOpen: z.boolean().optional(),
});

/** Events written per multi-row INSERT. */
const EVENT_CHUNK = 32;
/** One event row; `task_seq` is the task's `seq`, by which the task's events are indexed. */
const EVENT_VALUES = "(?, ?, ?, ?, (SELECT seq FROM tasks WHERE id = ?))";
const INSERT_EVENT = `INSERT INTO events (type, task_id, at, data, task_seq) VALUES ${EVENT_VALUES}`;
const INSERT_EVENTS_CHUNK = `INSERT INTO events (type, task_id, at, data, task_seq) VALUES ${Array.from(
  { length: EVENT_CHUNK },
  () => EVENT_VALUES,
).join(", ")}`;
/** Statuses of unfinished tasks (found through the status index). */
const UNFINISHED = TASK_STATUSES.filter((s) => !isTerminal(s))
  .map((s) => `'${s}'`)
  .join(", ");

/**
 * A durable `Store` in one SQLite file, on Node's built-in `node:sqlite` (no native
 * dependency). Write-ahead logging, versioned schema migrations, and every write resolves
 * only after the transaction holding it has committed (and, with the default
 * `synchronous: "full"`, reached the disk).
 *
 * A file that is not a Flotilla database, a corrupt file, a schema newer than this code, or
 * a path that cannot be written stops `open()` with a `STORE_ERROR` naming the file and the
 * problem; the file is left as it was.
 *
 * @example
 * ```ts
 * import { Orchestrator } from "@flotilla/core";
 * import { SqliteStore } from "@flotilla/core/sqlite";
 *
 * const store = new SqliteStore({ path: "./flotilla.db" });
 * const orchestrator = new Orchestrator({ store });
 * ```
 */
export class SqliteStore implements Store {
  /** The absolute path of the database file. */
  readonly path: string;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #busyTimeoutMs: number;
  readonly #synchronous: "full" | "normal";
  readonly #batch: boolean;
  readonly #exclusive: boolean;
  readonly #verify: boolean;
  readonly #q: SqliteQueue;

  constructor(options: SqliteStoreOptions) {
    parseOrThrow(SqliteStoreOptionsSchema, options, "SqliteStore options");
    this.path = options.path === ":memory:" ? options.path : resolve(options.path);
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
    this.#busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    this.#synchronous = options.synchronous ?? "full";
    this.#batch = options.batchWrites ?? true;
    this.#exclusive = options.exclusive ?? true;
    this.#verify = options.verifyOnOpen ?? true;
    this.#q = new SqliteQueue(this.path, this.#logger, this.#batch);
  }

  // ---------------------------------------------------------------- open / close

  async open(): Promise<void> {
    if (this.#q.db) return;
    checkPath(this.path);
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(this.path, { timeout: this.#busyTimeoutMs });
    } catch (err) {
      throw sqliteError(this.path, "cannot open the file", err);
    }
    try {
      prepareFile(db, {
        path: this.path,
        verify: this.#verify,
        exclusive: this.#exclusive,
        synchronous: this.#synchronous,
        clock: this.#clock,
        logger: this.#logger,
      });
    } catch (err) {
      try {
        db.close();
      } catch {
        // already failing; the first error is the one to report
      }
      throw err instanceof FlotillaError
        ? err
        : sqliteError(this.path, "cannot open the database", err);
    }
    this.#q.db = db;
  }

  /**
   * Commits pending writes, checkpoints the write-ahead log into the main file and closes
   * it. Calls made after `close()` reject with `STORE_ERROR`.
   */
  async close(): Promise<void> {
    const q = this.#q;
    const db = q.db;
    if (!db) return;
    q.flush();
    q.db = undefined;
    q.clearStatements();
    try {
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch (err) {
      this.#logger.warn({ path: this.path, err }, "checkpoint at close failed");
    }
    try {
      db.close();
    } catch (err) {
      throw sqliteError(this.path, "cannot close the database", err);
    }
  }

  // ---------------------------------------------------------------- tasks

  async insertTasks(tasks: readonly TaskRecord[]): Promise<void> {
    if (!Array.isArray(tasks)) {
      throw new FlotillaError("VALIDATION", "insertTasks: expected an array of task records");
    }
    const writes = tasks.map((t) => prepareWrite(t, "insertTasks"));
    if (writes.length === 0) return;
    await this.#q.write(
      (db) => {
        const insert = this.#q.stmt(db, INSERT_TASK);
        for (const write of writes) {
          try {
            insert.run(write.row);
          } catch (err) {
            throw conflictError(err, {
              id: write.row.id as string,
              idempotencyKey: write.idempotencyKey,
            });
          }
          insertDeps(this.#q, db, write);
          trackAttempt(this.#q, db, write);
        }
        // One task with no edges and no attempt yet is one statement: no savepoint needed.
      },
      { savepoint: !(writes.length === 1 && writes[0]!.deps.length === 0 && !writes[0]!.attempt) },
    );
  }

  async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
    const write = prepareWrite(task, "saveTask");
    const row = write.row;
    const who = { id: task.id, idempotencyKey: task.idempotencyKey };
    const q = this.#q;
    return q.write(
      (db) => {
        // The usual case, one statement: the task exists and only its state changed.
        if (
          expectedVersion === undefined &&
          Number(q.stmt(db, UPDATE_TASK_STATE).run(row).changes) === 1
        ) {
          trackAttempt(q, db, write);
          return true;
        }
        // Otherwise several statements, all or none.
        q.stmt(db, "SAVEPOINT save_task").run();
        try {
          const before = q.stmt(db, "SELECT seq FROM tasks WHERE id = ?").get(task.id) as
            | { seq: number }
            | undefined;
          if (expectedVersion !== undefined) {
            const changed = q
              .stmt(db, `${UPDATE_TASK} AND version = :expected`)
              .run({ ...row, expected: expectedVersion }).changes;
            if (Number(changed) === 0) {
              q.stmt(db, "RELEASE save_task").run();
              return false;
            }
          } else {
            const changed = q.stmt(db, UPDATE_TASK).run(row).changes;
            if (Number(changed) === 0) {
              q.stmt(db, INSERT_TASK).run(row);
              insertDeps(q, db, write);
            }
          }
          if (before !== undefined && before.seq !== row.seq) {
            moveSeq(q, db, task.id, before.seq, row.seq as number);
          }
          trackAttempt(q, db, write);
          q.stmt(db, "RELEASE save_task").run();
          return true;
        } catch (err) {
          db.exec("ROLLBACK TO save_task");
          db.exec("RELEASE save_task");
          throw conflictError(err, who);
        }
      },
      { savepoint: false },
    );
  }

  /**
   * Claims the best due queued task inside one write transaction (the file is this
   * process's alone, so the transaction is the lock).
   */
  async claimTask(claim: StoreClaim): Promise<TaskRecord | undefined> {
    checkClaim(claim);
    const types = claim.taskTypes;
    if (types !== undefined && types.length === 0) return undefined;
    const byType = types === undefined ? "" : ` AND type IN (${types.map(() => "?").join(", ")})`;
    const sql = `SELECT body FROM tasks WHERE status = 'queued'${byType}
      AND coalesce(json_extract(body, '$.notBefore'), 0) <= ? ORDER BY priority DESC, seq ASC LIMIT 1`;
    return this.#q.write((db) => {
      const now = this.#clock.now();
      const row = this.#q.stmt(db, sql).get(...(types ?? []), now) as { body: string } | undefined;
      if (!row) return undefined;
      const task = JSON.parse(row.body) as TaskRecord;
      const write = prepareWrite(claimedRecord(task, claim, now), "claimTask");
      const changed = this.#q
        .stmt(db, `${UPDATE_TASK} AND version = :expected`)
        .run({ ...write.row, expected: task.version }).changes;
      if (Number(changed) === 0) return undefined;
      trackAttempt(this.#q, db, write);
      return JSON.parse(write.row.body as string) as TaskRecord;
    });
  }

  /** The store's time: its clock's (the file belongs to one process). */
  async now(): Promise<number> {
    return this.#clock.now();
  }

  async getTask(id: string): Promise<TaskRecord | undefined> {
    return this.#q.read((db) => {
      const row = this.#q.stmt(db, "SELECT body FROM tasks WHERE id = ?").get(String(id)) as
        | { body: string }
        | undefined;
      return row ? (JSON.parse(row.body) as TaskRecord) : undefined;
    });
  }

  async getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined> {
    return this.#q.read((db) => {
      const row = this.#q
        .stmt(db, "SELECT body FROM tasks WHERE idempotency_key = ?")
        .get(String(key)) as { body: string } | undefined;
      return row ? (JSON.parse(row.body) as TaskRecord) : undefined;
    });
  }

  #where(query: TaskQuery | undefined): { sql: string; params: SQLInputValue[] } {
    checkPaging(query);
    const clauses: string[] = [];
    const params: SQLInputValue[] = [];
    const statuses = queryStatuses(query);
    if (statuses) {
      if (statuses.length === 0) clauses.push("0");
      else {
        clauses.push(`status IN (${statuses.map(() => "?").join(", ")})`);
        params.push(...statuses);
      }
    }
    if (query?.type !== undefined) {
      clauses.push("type = ?");
      params.push(query.type);
    }
    if (query?.tenant !== undefined) {
      clauses.push("tenant = ?");
      params.push(query.tenant);
    }
    if (query?.workerId !== undefined) {
      clauses.push("worker_id = ?");
      params.push(query.workerId);
    }
    return { sql: clauses.length ? ` WHERE ${clauses.join(" AND ")}` : "", params };
  }

  async listTasks(query?: TaskQuery): Promise<TaskRecord[]> {
    const { sql, params } = this.#where(query);
    const dir = (query?.newestFirst ?? true) ? "DESC" : "ASC";
    let tail = "";
    if (query?.limit !== undefined || query?.offset !== undefined) {
      tail = " LIMIT ? OFFSET ?";
      params.push(query.limit ?? -1, query.offset ?? 0);
    }
    return this.#q.read((db) =>
      (
        this.#q
          .stmt(db, `SELECT body FROM tasks${sql} ORDER BY seq ${dir}, id ${dir}${tail}`)
          .all(...params) as Array<{ body: string }>
      ).map((r) => JSON.parse(r.body) as TaskRecord),
    );
  }

  async countTasks(query?: TaskQuery): Promise<number> {
    const { sql, params } = this.#where(query);
    return this.#q.read((db) =>
      Number(
        (this.#q.stmt(db, `SELECT count(*) AS n FROM tasks${sql}`).get(...params) as { n: number })
          .n,
      ),
    );
  }

  async loadUnfinished(query?: UnfinishedQuery): Promise<TaskRecord[]> {
    const inQuery = partitionFilter(query);
    return this.#q.read((db) =>
      (
        this.#q
          .stmt(db, `SELECT body FROM tasks WHERE status IN (${UNFINISHED}) ORDER BY seq, id`)
          .all() as Array<{
          body: string;
        }>
      )
        .map((r) => JSON.parse(r.body) as TaskRecord)
        .filter(inQuery),
    );
  }

  /**
   * Every attempt of a task, oldest first.
   *
   * @example
   * ```ts
   * const attempts = await store.listAttempts("task-1"); // [{ attempt: 1, status: "queued", … }, …]
   * ```
   */
  async listAttempts(taskId: string): Promise<AttemptRecord[]> {
    return this.#q.read((db) =>
      (
        this.#q
          .stmt(
            db,
            `SELECT * FROM attempts WHERE task_seq = coalesce((SELECT seq FROM tasks WHERE id = ?), -1)
              AND task_id = ? ORDER BY attempt`,
          )
          .all(String(taskId), String(taskId)) as Array<Record<string, SQLInputValue>>
      ).map(attemptFromRow),
    );
  }

  // ---------------------------------------------------------------- events and usage

  async appendEvents(events: readonly StoredEvent[]): Promise<void> {
    if (!Array.isArray(events)) {
      throw new FlotillaError("VALIDATION", "appendEvents: expected an array of events");
    }
    const rows = events.map((event) => {
      if (typeof event?.type !== "string" || !Number.isFinite(event.at)) {
        throw new FlotillaError("VALIDATION", "appendEvents: every event needs a type and `at`");
      }
      return [
        event.type,
        event.taskId ?? null,
        event.at,
        event.data === undefined ? null : toJson(event.data, `appendEvents: event ${event.type}`),
        event.taskId ?? null,
      ] as SQLInputValue[];
    });
    if (rows.length === 0) return;
    const q = this.#q;
    // EVENT_CHUNK rows per statement: one call into SQLite instead of EVENT_CHUNK.
    await q.write(
      (db) => {
        let i = 0;
        if (rows.length >= EVENT_CHUNK) {
          const many = q.stmt(db, INSERT_EVENTS_CHUNK);
          for (; i + EVENT_CHUNK <= rows.length; i += EVENT_CHUNK) {
            many.run(...rows.slice(i, i + EVENT_CHUNK).flat());
          }
        }
        const one = q.stmt(db, INSERT_EVENT);
        for (; i < rows.length; i++) one.run(...rows[i]!);
      },
      { savepoint: rows.length > 1 },
    );
  }

  async listEvents(
    query: { taskId?: string; afterSeq?: number; limit?: number } = {},
  ): Promise<StoredEvent[]> {
    checkEventQuery(query);
    const taskId = query.taskId;
    const limit = query.limit ?? -1;
    const after = query.afterSeq ?? 0;
    const cols = "SELECT seq, type, task_id, at, data FROM events";
    return this.#q.read((db) => {
      let rows: unknown[];
      if (taskId === undefined) {
        rows = this.#q.stmt(db, `${cols} WHERE seq > ? ORDER BY seq LIMIT ?`).all(after, limit);
      } else {
        const task = this.#q.stmt(db, "SELECT seq FROM tasks WHERE id = ?").get(taskId) as
          | { seq: number }
          | undefined;
        // A stored task's events through its `seq` (indexed); the events of a task the store
        // does not hold (written by other code without the task) by a scan.
        rows =
          task === undefined
            ? this.#q
                .stmt(db, `${cols} WHERE seq > ? AND task_id = ? ORDER BY seq LIMIT ?`)
                .all(after, taskId, limit)
            : this.#q
                .stmt(
                  db,
                  `${cols} WHERE task_seq = ? AND task_id = ? AND seq > ? ORDER BY seq LIMIT ?`,
                )
                .all(task.seq, taskId, after, limit);
      }
      return (rows as Array<Record<string, SQLInputValue>>).map((r) => {
        const event: StoredEvent = {
          seq: Number(r.seq),
          type: String(r.type),
          at: Number(r.at),
          data: r.data === null ? undefined : JSON.parse(String(r.data)),
        };
        if (r.task_id !== null) event.taskId = String(r.task_id);
        if (event.data === undefined) delete (event as { data?: unknown }).data;
        return event;
      });
    });
  }

  async recordUsage(entry: UsageEntry): Promise<void> {
    if (!entry || !Number.isFinite(entry.at) || typeof entry.usage !== "object") {
      throw new FlotillaError("VALIDATION", "recordUsage: an entry needs `at` and `usage`");
    }
    const row: SQLInputValue[] = [
      entry.at,
      entry.taskId ?? null,
      entry.workerId ?? null,
      entry.provider ?? null,
      entry.model ?? null,
      entry.tenant ?? null,
      entry.apiKey ?? null,
      toJson(entry.usage, "recordUsage: usage"),
    ];
    await this.#q.write((db) => {
      this.#q
        .stmt(
          db,
          "INSERT INTO usage (at, task_id, worker_id, provider, model, tenant, api_key, usage) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .run(...row);
    });
  }

  /**
   * The usage ledger between `since` and `until`, summed per 15 minutes and per worker,
   * provider, model, tenant and API key: one line per group, at the time of its latest line,
   * with the sums of its tokens and cost and `requests` = how many lines. Lines already rolled
   * up by {@link SqliteStore.rollUpUsage} are read as kept; newer ones are summed now. Lines
   * without a cost and lines with one are summed apart (the former are priced later).
   *
   * @example
   * ```ts
   * const today = await store.listUsageRollup({ since: Date.now() - 86_400_000 });
   * ```
   */
  async listUsageRollup(query: { since?: number; until?: number } = {}): Promise<UsageEntry[]> {
    const since = query.since ?? Number.MIN_SAFE_INTEGER;
    const until = query.until ?? Number.MAX_SAFE_INTEGER;
    const sql = `SELECT at, worker_id, provider, model, tenant, api_key, requests, input_tokens,
        output_tokens, total_tokens, cost_usd FROM usage_rollup WHERE at >= ? AND at < ?
      UNION ALL
      SELECT max(at), coalesce(worker_id, ''), coalesce(provider, ''), coalesce(model, ''),
        coalesce(tenant, ''), coalesce(api_key, ''), count(*),
        sum(coalesce(json_extract(usage, '$.inputTokens'), 0)),
        sum(coalesce(json_extract(usage, '$.outputTokens'), 0)),
        sum(coalesce(json_extract(usage, '$.totalTokens'),
          coalesce(json_extract(usage, '$.inputTokens'), 0) + coalesce(json_extract(usage, '$.outputTokens'), 0))),
        sum(json_extract(usage, '$.costUsd'))
      FROM usage WHERE at >= ? AND at < ?
      GROUP BY at / ${USAGE_BUCKET_MS}, worker_id, provider, model, tenant, api_key,
        json_extract(usage, '$.costUsd') IS NULL
      ORDER BY 1`;
    return this.#q.read((db) =>
      (
        this.#q.stmt(db, sql).all(since, until, since, until) as Array<
          Record<string, SQLInputValue>
        >
      ).map(rolledLine),
    );
  }

  /**
   * Sums the usage lines recorded before `before` (rounded down to 15 minutes) into 15-minute
   * groups per worker, provider, model, tenant and API key, and deletes the lines: the ledger
   * stays one row per group instead of one per task, and a restart reads sums. `listUsage`
   * then returns such a group as one line without a task. Retention calls it (lines older
   * than 2 hours). Resolves how many lines were summed.
   *
   * @example
   * ```ts
   * await store.rollUpUsage(Date.now() - 2 * 3_600_000);
   * ```
   */
  async rollUpUsage(before: number): Promise<number> {
    const edge = Math.floor(before / USAGE_BUCKET_MS) * USAGE_BUCKET_MS;
    return this.#q.write((db) => {
      this.#q
        .stmt(
          db,
          `INSERT INTO usage_rollup (bucket, worker_id, provider, model, tenant, api_key, has_cost,
             at, requests, input_tokens, output_tokens, total_tokens, cost_usd)
           SELECT at / ${USAGE_BUCKET_MS}, coalesce(worker_id, ''), coalesce(provider, ''),
             coalesce(model, ''), coalesce(tenant, ''), coalesce(api_key, ''),
             json_extract(usage, '$.costUsd') IS NOT NULL, max(at), count(*),
             sum(coalesce(json_extract(usage, '$.inputTokens'), 0)),
             sum(coalesce(json_extract(usage, '$.outputTokens'), 0)),
             sum(coalesce(json_extract(usage, '$.totalTokens'),
               coalesce(json_extract(usage, '$.inputTokens'), 0) + coalesce(json_extract(usage, '$.outputTokens'), 0))),
             sum(json_extract(usage, '$.costUsd'))
           FROM usage WHERE at < ?
           GROUP BY 1, 2, 3, 4, 5, 6, 7
           ON CONFLICT (bucket, worker_id, provider, model, tenant, api_key, has_cost) DO UPDATE SET
             at = max(at, excluded.at),
             requests = requests + excluded.requests,
             input_tokens = input_tokens + excluded.input_tokens,
             output_tokens = output_tokens + excluded.output_tokens,
             total_tokens = total_tokens + excluded.total_tokens,
             cost_usd = CASE WHEN excluded.cost_usd IS NULL THEN cost_usd
               ELSE coalesce(cost_usd, 0) + excluded.cost_usd END`,
        )
        .run(edge);
      return Number(this.#q.stmt(db, "DELETE FROM usage WHERE at < ?").run(edge).changes);
    });
  }

  async listUsage(query: { since?: number; until?: number } = {}): Promise<UsageEntry[]> {
    const params: SQLInputValue[] = [
      query.since ?? Number.MIN_SAFE_INTEGER,
      query.until ?? Number.MAX_SAFE_INTEGER,
    ];
    return this.#q.read((db) => {
      // Lines summed by `rollUpUsage` come back as one line per group (no task).
      const rolled = (
        this.#q
          .stmt(
            db,
            `SELECT at, worker_id, provider, model, tenant, api_key, requests, input_tokens,
               output_tokens, total_tokens, cost_usd FROM usage_rollup WHERE at >= ? AND at < ? ORDER BY at`,
          )
          .all(...params) as Array<Record<string, SQLInputValue>>
      ).map(rolledLine);
      const lines = (
        this.#q
          .stmt(db, "SELECT * FROM usage WHERE at >= ? AND at < ? ORDER BY at, id")
          .all(...params) as Array<Record<string, SQLInputValue>>
      ).map(usageFromRow);
      return rolled.length === 0 ? lines : [...rolled, ...lines].sort((a, b) => a.at - b.at);
    });
  }

  // ---------------------------------------------------------------- retention

  async deleteFinished(options: DeleteFinishedOptions): Promise<number> {
    checkRetention(options);
    const now = this.#clock.now();
    return this.#q.write((db) => {
      db.exec("CREATE TEMP TABLE IF NOT EXISTS doomed (id TEXT PRIMARY KEY) WITHOUT ROWID");
      db.exec("DELETE FROM temp.doomed");
      // Selected oldest first and at most `limit` at a time (SQLite's LIMIT -1: no limit), on
      // the finished-at index, so a batch costs its own size, not the whole history's.
      const cap = options.limit ?? -1;
      if (options.olderThan !== undefined) {
        this.#q
          .stmt(
            db,
            `INSERT OR IGNORE INTO temp.doomed (id) SELECT id FROM tasks
             WHERE finished_at IS NOT NULL AND finished_at < ? ORDER BY finished_at, seq LIMIT ?`,
          )
          .run(now - options.olderThan, cap);
      }
      if (options.keep !== undefined) {
        const finished = Number(
          (
            this.#q
              .stmt(db, "SELECT count(*) AS n FROM tasks WHERE finished_at IS NOT NULL")
              .get() as { n: number }
          ).n,
        );
        const over = finished - options.keep;
        if (over > 0) {
          this.#q
            .stmt(
              db,
              `INSERT OR IGNORE INTO temp.doomed (id) SELECT id FROM tasks
               WHERE finished_at IS NOT NULL ORDER BY finished_at, seq LIMIT ?`,
            )
            .run(cap === -1 ? over : Math.min(over, cap));
        }
      }
      // A finished task an unfinished one depends on stays: its output is still needed.
      db.exec(`DELETE FROM temp.doomed WHERE id IN (
        SELECT d.depends_on FROM dependencies d JOIN tasks u ON u.id = d.task_id
        WHERE u.finished_at IS NULL)`);
      if (options.limit !== undefined) {
        // Both criteria together may have picked up to twice the batch: keep the oldest.
        this.#q
          .stmt(
            db,
            `DELETE FROM temp.doomed WHERE id NOT IN (
              SELECT t.id FROM tasks t JOIN temp.doomed d ON d.id = t.id
              ORDER BY t.finished_at ASC, t.seq ASC LIMIT ?)`,
          )
          .run(options.limit);
      }
      if (options.usageBefore !== undefined) {
        this.#q.stmt(db, "DELETE FROM usage WHERE at < ?").run(options.usageBefore);
        this.#q.stmt(db, "DELETE FROM usage_rollup WHERE at < ?").run(options.usageBefore);
      }
      // Through the task's seq (indexed), while the task rows are still there.
      db.exec(`DELETE FROM events WHERE task_seq IN (
          SELECT t.seq FROM tasks t JOIN temp.doomed d ON d.id = t.id)
        AND task_id IN (SELECT id FROM temp.doomed)`);
      if (options.olderThan !== undefined) {
        this.#q
          .stmt(db, "DELETE FROM events WHERE task_id IS NULL AND at < ?")
          .run(now - options.olderThan);
      }
      db.exec(`DELETE FROM attempts WHERE task_seq IN (
          SELECT t.seq FROM tasks t JOIN temp.doomed d ON d.id = t.id)
        AND task_id IN (SELECT id FROM temp.doomed)`);
      db.exec("DELETE FROM dependencies WHERE task_id IN (SELECT id FROM temp.doomed)");
      const removed = Number(
        db.prepare("DELETE FROM tasks WHERE id IN (SELECT id FROM temp.doomed)").run().changes,
      );
      db.exec("DELETE FROM temp.doomed");
      return removed;
    });
  }

  /**
   * Releases free pages to the file system (`PRAGMA incremental_vacuum`, at most `pages` at a
   * time, 4 MiB by default) when the file was created with incremental auto-vacuum (files
   * made by this version are); resolves how many pages were released. An older file keeps
   * its free pages for reuse: `VACUUM` it once, offline, to switch it.
   *
   * @example
   * ```ts
   * await store.deleteFinished({ olderThan: 30 * 86_400_000 });
   * await store.compact();
   * ```
   */
  async compact(pages = 1024): Promise<number> {
    return this.#q.write((db) => {
      const mode = (db.prepare("PRAGMA auto_vacuum").get() as { auto_vacuum?: number })
        ?.auto_vacuum;
      if (mode !== 2) return 0;
      const before = (db.prepare("PRAGMA freelist_count").get() as { freelist_count: number })
        .freelist_count;
      db.prepare(`PRAGMA incremental_vacuum(${Math.max(1, Math.floor(pages))})`).all();
      const after = (db.prepare("PRAGMA freelist_count").get() as { freelist_count: number })
        .freelist_count;
      return before - after;
    });
  }

  // ---------------------------------------------------------------- kv

  async kvGet<T = unknown>(collection: string, key: string): Promise<T | undefined> {
    checkKv(collection, key);
    return this.#q.read((db) => {
      const row = this.#q
        .stmt(db, "SELECT value FROM kv WHERE collection = ? AND key = ?")
        .get(collection, key) as { value: string } | undefined;
      return row ? (JSON.parse(row.value) as T) : undefined;
    });
  }

  async kvPut(collection: string, key: string, value: unknown): Promise<void> {
    checkKv(collection, key);
    if (value === undefined) {
      throw new FlotillaError("VALIDATION", `kvPut ${collection}/${key}: value is undefined`);
    }
    const text = toJson(value, `kvPut ${collection}/${key}`);
    await this.#q.write((db) => {
      this.#q
        .stmt(
          db,
          "INSERT INTO kv (collection, key, value) VALUES (?, ?, ?) ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value",
        )
        .run(collection, key, text);
    });
  }

  async kvDelete(collection: string, key: string): Promise<boolean> {
    checkKv(collection, key);
    return this.#q.write(
      (db) =>
        Number(
          this.#q.stmt(db, "DELETE FROM kv WHERE collection = ? AND key = ?").run(collection, key)
            .changes,
        ) > 0,
    );
  }

  async kvList<T = unknown>(collection: string): Promise<Array<{ key: string; value: T }>> {
    checkKv(collection);
    return this.#q.read((db) =>
      (
        this.#q
          .stmt(db, "SELECT key, value FROM kv WHERE collection = ? ORDER BY key")
          .all(collection) as Array<{ key: string; value: string }>
      ).map((r) => ({ key: r.key, value: JSON.parse(r.value) as T })),
    );
  }
}

/** Width of the usage roll-up groups: 15 minutes, a divisor of every time zone's offset. */
const USAGE_BUCKET_MS = 900_000;

/** A roll-up row (empty strings for absent fields) as a usage line without a task. */
function rolledLine(r: Record<string, SQLInputValue>): UsageEntry {
  const usage: UsageEntry["usage"] = {
    requests: Number(r.requests),
    inputTokens: Number(r.input_tokens),
    outputTokens: Number(r.output_tokens),
    totalTokens: Number(r.total_tokens),
  };
  if (r.cost_usd !== null && r.cost_usd !== undefined) usage.costUsd = Number(r.cost_usd);
  const entry: UsageEntry = { at: Number(r.at), usage };
  const text = (v: SQLInputValue | undefined) =>
    v === null || v === undefined || v === "" ? undefined : String(v);
  const worker = text(r.worker_id);
  const provider = text(r.provider);
  const model = text(r.model);
  const tenant = text(r.tenant);
  const apiKey = text(r.api_key);
  if (worker !== undefined) entry.workerId = worker;
  if (provider !== undefined) entry.provider = provider;
  if (model !== undefined) entry.model = model;
  if (tenant !== undefined) entry.tenant = tenant;
  if (apiKey !== undefined) entry.apiKey = apiKey;
  return entry;
}
