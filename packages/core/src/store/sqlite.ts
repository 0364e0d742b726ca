import { statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import { z } from "zod";
import { type Clock, systemClock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import { type Logger, silentLogger } from "../logger.js";
import type { TaskRecord } from "../task/types.js";
import { parseOrThrow } from "../task/validation.js";
import {
  attemptOf,
  checkEventQuery,
  checkKv,
  checkPaging,
  checkRecord,
  checkRetention,
  finishedAt,
  isTerminal,
  queryStatuses,
  toJson,
} from "./common.js";
import { APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION } from "./sqlite-schema.js";
import type { AttemptRecord, Store, StoredEvent, TaskQuery, UsageEntry } from "./types.js";

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

type Row = Record<string, SQLInputValue>;

interface PreparedWrite {
  row: Row;
  deps: string[];
  attempt: AttemptRecord | undefined;
  idempotencyKey: string | undefined;
}

interface Op {
  run: (db: DatabaseSync) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  write: boolean;
}

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
  #db: DatabaseSync | undefined;
  #statements = new Map<string, StatementSync>();
  #queue: Op[] = [];
  #scheduled = false;

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
  }

  // ---------------------------------------------------------------- open / close

  async open(): Promise<void> {
    if (this.#db) return;
    this.#checkPath();
    let db: DatabaseSync;
    try {
      db = new DatabaseSync(this.path, { timeout: this.#busyTimeoutMs });
    } catch (err) {
      throw this.#error("cannot open the file", err);
    }
    try {
      this.#prepareFile(db);
    } catch (err) {
      try {
        db.close();
      } catch {
        // already failing; the first error is the one to report
      }
      throw err instanceof FlotillaError ? err : this.#error("cannot open the database", err);
    }
    this.#db = db;
  }

  /** Clear messages for paths SQLite would only call "unable to open database file". */
  #checkPath(): void {
    if (this.path === ":memory:") return;
    let stat: ReturnType<typeof statSync>;
    try {
      stat = statSync(this.path, { throwIfNoEntry: false });
    } catch (err) {
      throw this.#error("cannot reach the file", err);
    }
    if (stat?.isDirectory()) {
      throw new FlotillaError("STORE_ERROR", `${this.path}: is a directory, not a database file`, {
        details: { path: this.path },
      });
    }
    if (stat && !stat.isFile()) {
      throw new FlotillaError("STORE_ERROR", `${this.path}: is not a regular file`, {
        details: { path: this.path },
      });
    }
    if (!stat) {
      const dir = dirname(this.path);
      let dirStat: ReturnType<typeof statSync>;
      try {
        dirStat = statSync(dir, { throwIfNoEntry: false });
      } catch (err) {
        throw this.#error(`cannot reach the directory ${dir}`, err);
      }
      if (!dirStat) {
        throw new FlotillaError(
          "STORE_ERROR",
          `${this.path}: the directory ${dir} does not exist`,
          {
            details: { path: this.path },
          },
        );
      }
      if (!dirStat.isDirectory()) {
        throw new FlotillaError("STORE_ERROR", `${this.path}: ${dir} is not a directory`, {
          details: { path: this.path },
        });
      }
    }
  }

  #prepareFile(db: DatabaseSync): void {
    // Only reads until the file is known to be ours: a foreign, corrupt or newer file is
    // left exactly as it was.
    const appId = this.#pragma(db, "application_id");
    const version = this.#pragma(db, "user_version");
    const tables = (
      db
        .prepare(
          "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
        )
        .all() as Array<{ name: string }>
    ).map((r) => r.name);
    const fresh = appId === 0 && version === 0 && tables.length === 0;
    if (!fresh && appId !== APPLICATION_ID) {
      const shown = tables.slice(0, 5).join(", ") + (tables.length > 5 ? ", …" : "");
      throw new FlotillaError(
        "STORE_ERROR",
        `${this.path}: not a Flotilla database (application_id ${appId}, tables: ${shown || "none"}); refusing to use or change it`,
        { details: { path: this.path, applicationId: appId, tables } },
      );
    }
    if (version > SCHEMA_VERSION) {
      throw new FlotillaError(
        "STORE_ERROR",
        `${this.path}: schema version ${version} is newer than this version of Flotilla supports (${SCHEMA_VERSION}); upgrade Flotilla to open it`,
        { details: { path: this.path, schemaVersion: version, supported: SCHEMA_VERSION } },
      );
    }

    if (this.#verify && !fresh) {
      const problems = (db.prepare("PRAGMA quick_check(5)").all() as Array<Record<string, unknown>>)
        .map((r) => String(Object.values(r)[0]))
        .filter((m) => m !== "ok");
      if (problems.length > 0) {
        throw new FlotillaError(
          "STORE_ERROR",
          `${this.path}: the database file is corrupt (${problems.join("; ")}); restore a backup or recover it with the sqlite3 tool's .recover`,
          { details: { path: this.path, problems } },
        );
      }
    }

    if (this.#exclusive) db.exec("PRAGMA locking_mode = EXCLUSIVE");
    const mode = (db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode?: string })
      ?.journal_mode;
    if (this.path !== ":memory:" && mode !== "wal") {
      throw new FlotillaError(
        "STORE_ERROR",
        `${this.path}: cannot switch to write-ahead logging (journal_mode is ${String(mode)}); is the directory writable?`,
        { details: { path: this.path } },
      );
    }
    db.exec(`PRAGMA synchronous = ${this.#synchronous.toUpperCase()}`);
    db.exec("PRAGMA foreign_keys = OFF");

    db.exec("BEGIN IMMEDIATE");
    try {
      if (fresh) db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
      for (let v = version; v < SCHEMA_VERSION; v++) {
        this.#logger.info({ path: this.path, from: v, to: v + 1 }, "migrating flotilla database");
        MIGRATIONS[v]!(db);
      }
      if (version !== SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
      // A real write, so a read-only file fails here rather than at the first task.
      db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?)").run(
        String(this.#clock.now()),
      );
      db.exec("COMMIT");
    } catch (err) {
      try {
        db.exec("ROLLBACK");
      } catch {
        // the transaction may already be gone
      }
      throw err;
    }
    this.#logger.debug({ path: this.path, schemaVersion: SCHEMA_VERSION }, "store opened");
  }

  #pragma(db: DatabaseSync, name: string): number {
    const row = db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown> | undefined;
    return Number(row?.[name] ?? 0);
  }

  /**
   * Commits pending writes, checkpoints the write-ahead log into the main file and closes
   * it. Calls made after `close()` reject with `STORE_ERROR`.
   */
  async close(): Promise<void> {
    const db = this.#db;
    if (!db) return;
    this.#flush();
    this.#db = undefined;
    this.#statements.clear();
    try {
      db.exec("PRAGMA wal_checkpoint(TRUNCATE)");
    } catch (err) {
      this.#logger.warn({ path: this.path, err }, "checkpoint at close failed");
    }
    try {
      db.close();
    } catch (err) {
      throw this.#error("cannot close the database", err);
    }
  }

  // ---------------------------------------------------------------- plumbing

  #error(problem: string, err: unknown): FlotillaError {
    if (err instanceof FlotillaError) return err;
    const e = err as { errcode?: number; errstr?: string; message?: string; code?: string };
    const primary = typeof e?.errcode === "number" ? e.errcode & 0xff : undefined;
    const why =
      primary === 26
        ? "not a SQLite database, or the file is corrupt"
        : primary === 11
          ? "the database file is corrupt"
          : primary === 8
            ? "the database is read-only (check file and directory permissions)"
            : primary === 14
              ? "unable to open the file (check the path exists and is writable)"
              : primary === 5 || primary === 6
                ? "the database is locked by another process or connection"
                : primary === 13
                  ? "the disk is full"
                  : primary === 10
                    ? "an I/O error"
                    : undefined;
    const detail = e?.message ?? String(err);
    return new FlotillaError(
      "STORE_ERROR",
      `${this.path}: ${problem}: ${why ? `${why} (${detail})` : detail}`,
      { cause: err, details: { path: this.path, sqliteCode: e?.errcode } },
    );
  }

  #stmt(db: DatabaseSync, sql: string): StatementSync {
    let stmt = this.#statements.get(sql);
    if (!stmt) {
      stmt = db.prepare(sql);
      this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  #dbOrThrow(): DatabaseSync {
    if (!this.#db) {
      throw new FlotillaError("STORE_ERROR", `${this.path}: the store is not open (call open())`, {
        details: { path: this.path },
      });
    }
    return this.#db;
  }

  /** Reads run at once unless writes are pending, in which case they run after them. */
  #read<T>(run: (db: DatabaseSync) => T): Promise<T> {
    let db: DatabaseSync;
    try {
      db = this.#dbOrThrow();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#queue.length === 0) {
      try {
        return Promise.resolve(run(db));
      } catch (err) {
        return Promise.reject(this.#error("read failed", err));
      }
    }
    return this.#enqueue(run, false);
  }

  #write<T>(run: (db: DatabaseSync) => T): Promise<T> {
    try {
      this.#dbOrThrow();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue(run, true);
  }

  #enqueue<T>(run: (db: DatabaseSync) => T, write: boolean): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ run, resolve: resolve as (v: unknown) => void, reject, write });
      if (!this.#batch) {
        this.#flush();
      } else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  /**
   * Runs every queued operation in one transaction. Each write runs in its own savepoint,
   * so one failing write (a duplicate id) is undone alone; all of them are settled only
   * after COMMIT returns. If COMMIT fails, every write of the batch rejects.
   */
  #flush(): void {
    this.#scheduled = false;
    const ops = this.#queue;
    if (ops.length === 0) return;
    this.#queue = [];
    const db = this.#db;
    if (!db) {
      const err = new FlotillaError("STORE_ERROR", `${this.path}: the store was closed`);
      for (const op of ops) op.reject(err);
      return;
    }
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    const single = ops.length === 1;
    let inTransaction = false;
    try {
      db.exec("BEGIN IMMEDIATE");
      inTransaction = true;
      for (const op of ops) {
        if (!op.write || single) {
          try {
            outcomes.push({ ok: true, value: op.run(db) });
          } catch (error) {
            if (single && op.write) throw error;
            outcomes.push({ ok: false, error });
          }
          continue;
        }
        // Prepared once: parsing two SQL strings per write showed in profiles.
        this.#stmt(db, "SAVEPOINT op").run();
        try {
          const value = op.run(db);
          this.#stmt(db, "RELEASE op").run();
          outcomes.push({ ok: true, value });
        } catch (error) {
          db.exec("ROLLBACK TO op");
          db.exec("RELEASE op");
          outcomes.push({ ok: false, error });
        }
      }
      db.exec("COMMIT");
      inTransaction = false;
    } catch (error) {
      if (inTransaction) {
        try {
          db.exec("ROLLBACK");
        } catch {
          // nothing more to undo
        }
      }
      if (single && error instanceof FlotillaError) {
        ops[0]!.reject(error);
        return;
      }
      const failure = this.#error("write failed", error);
      this.#logger.error({ path: this.path, err: error }, "store transaction failed");
      for (const op of ops) op.reject(failure);
      return;
    }
    ops.forEach((op, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) op.resolve(outcome.value);
      else op.reject(this.#error(op.write ? "write failed" : "read failed", outcome.error));
    });
  }

  // ---------------------------------------------------------------- tasks

  #taskRow(task: TaskRecord, where: string): Row {
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

  #conflict(err: unknown, task: { id: string; idempotencyKey?: string | undefined }): unknown {
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

  static readonly #INSERT_TASK = `INSERT INTO tasks (id, seq, status, type, tenant, worker_id,
    idempotency_key, priority, attempt, version, created_at, updated_at, finished_at,
    lease_holder, lease_expires_at, body) VALUES (:id, :seq, :status, :type, :tenant,
    :worker_id, :idempotency_key, :priority, :attempt, :version, :created_at, :updated_at,
    :finished_at, :lease_holder, :lease_expires_at, :body)`;

  static readonly #UPDATE_TASK = `UPDATE tasks SET seq = :seq, status = :status, type = :type,
    tenant = :tenant, worker_id = :worker_id, idempotency_key = :idempotency_key,
    priority = :priority, attempt = :attempt, version = :version, created_at = :created_at,
    updated_at = :updated_at, finished_at = :finished_at, lease_holder = :lease_holder,
    lease_expires_at = :lease_expires_at, body = :body WHERE id = :id`;

  #insertDeps(db: DatabaseSync, write: PreparedWrite): void {
    if (write.deps.length === 0) return;
    const stmt = this.#stmt(
      db,
      "INSERT OR IGNORE INTO dependencies (task_id, depends_on) VALUES (?, ?)",
    );
    for (const dep of write.deps) stmt.run(write.row.id as string, dep);
  }

  /** Everything a task write needs, computed when the call is made (callers may mutate after). */
  #prepare(task: TaskRecord, where: string): PreparedWrite {
    const row = this.#taskRow(task, where);
    return {
      row,
      deps: Array.isArray(task.dependsOn) ? task.dependsOn.map(String) : [],
      attempt: task.attempt >= 1 ? attemptOf(task) : undefined,
      idempotencyKey: task.idempotencyKey,
    };
  }

  #trackAttempt(db: DatabaseSync, write: PreparedWrite): void {
    const a = write.attempt;
    if (!a) return;
    this.#stmt(
      db,
      `INSERT INTO attempts (task_id, attempt, status, worker_id, lease_id, started_at,
        finished_at, error, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
       ON CONFLICT (task_id, attempt) DO UPDATE SET status = excluded.status,
        worker_id = coalesce(excluded.worker_id, worker_id),
        lease_id = coalesce(excluded.lease_id, lease_id),
        started_at = coalesce(excluded.started_at, started_at),
        finished_at = coalesce(excluded.finished_at, finished_at),
        error = coalesce(excluded.error, error), updated_at = excluded.updated_at`,
    ).run(
      a.taskId,
      a.attempt,
      a.status,
      a.workerId ?? null,
      a.leaseId ?? null,
      a.startedAt ?? null,
      a.finishedAt ?? null,
      a.error === undefined ? null : JSON.stringify(a.error),
      a.updatedAt ?? 0,
    );
  }

  async insertTasks(tasks: readonly TaskRecord[]): Promise<void> {
    if (!Array.isArray(tasks)) {
      throw new FlotillaError("VALIDATION", "insertTasks: expected an array of task records");
    }
    const writes = tasks.map((t) => this.#prepare(t, "insertTasks"));
    if (writes.length === 0) return;
    await this.#write((db) => {
      const insert = this.#stmt(db, SqliteStore.#INSERT_TASK);
      for (const write of writes) {
        try {
          insert.run(write.row);
        } catch (err) {
          throw this.#conflict(err, {
            id: write.row.id as string,
            idempotencyKey: write.idempotencyKey,
          });
        }
        this.#insertDeps(db, write);
        this.#trackAttempt(db, write);
      }
    });
  }

  async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
    const write = this.#prepare(task, "saveTask");
    const row = write.row;
    const who = { id: task.id, idempotencyKey: task.idempotencyKey };
    return this.#write((db) => {
      try {
        if (expectedVersion !== undefined) {
          const changed = this.#stmt(db, `${SqliteStore.#UPDATE_TASK} AND version = :expected`).run(
            { ...row, expected: expectedVersion },
          ).changes;
          if (Number(changed) === 0) return false;
        } else {
          const changed = this.#stmt(db, SqliteStore.#UPDATE_TASK).run(row).changes;
          if (Number(changed) === 0) {
            this.#stmt(db, SqliteStore.#INSERT_TASK).run(row);
            this.#insertDeps(db, write);
          }
        }
      } catch (err) {
        throw this.#conflict(err, who);
      }
      this.#trackAttempt(db, write);
      return true;
    });
  }

  async getTask(id: string): Promise<TaskRecord | undefined> {
    return this.#read((db) => {
      const row = this.#stmt(db, "SELECT body FROM tasks WHERE id = ?").get(String(id)) as
        | { body: string }
        | undefined;
      return row ? (JSON.parse(row.body) as TaskRecord) : undefined;
    });
  }

  async getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined> {
    return this.#read((db) => {
      const row = this.#stmt(db, "SELECT body FROM tasks WHERE idempotency_key = ?").get(
        String(key),
      ) as { body: string } | undefined;
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
    return this.#read((db) =>
      (
        this.#stmt(db, `SELECT body FROM tasks${sql} ORDER BY seq ${dir}, id ${dir}${tail}`).all(
          ...params,
        ) as Array<{ body: string }>
      ).map((r) => JSON.parse(r.body) as TaskRecord),
    );
  }

  async countTasks(query?: TaskQuery): Promise<number> {
    const { sql, params } = this.#where(query);
    return this.#read((db) =>
      Number(
        (this.#stmt(db, `SELECT count(*) AS n FROM tasks${sql}`).get(...params) as { n: number }).n,
      ),
    );
  }

  async loadUnfinished(): Promise<TaskRecord[]> {
    return this.#read((db) =>
      (
        this.#stmt(
          db,
          "SELECT body FROM tasks WHERE finished_at IS NULL ORDER BY seq, id",
        ).all() as Array<{
          body: string;
        }>
      ).map((r) => JSON.parse(r.body) as TaskRecord),
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
    return this.#read((db) =>
      (
        this.#stmt(db, "SELECT * FROM attempts WHERE task_id = ? ORDER BY attempt").all(
          String(taskId),
        ) as Array<Record<string, SQLInputValue>>
      ).map((r) => {
        const a: AttemptRecord = {
          taskId: String(r.task_id),
          attempt: Number(r.attempt),
          status: r.status as AttemptRecord["status"],
          updatedAt: Number(r.updated_at),
        };
        if (r.worker_id !== null) a.workerId = String(r.worker_id);
        if (r.lease_id !== null) a.leaseId = String(r.lease_id);
        if (r.started_at !== null) a.startedAt = Number(r.started_at);
        if (r.finished_at !== null) a.finishedAt = Number(r.finished_at);
        if (r.error !== null) a.error = JSON.parse(String(r.error));
        return a;
      }),
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
      ] as SQLInputValue[];
    });
    if (rows.length === 0) return;
    await this.#write((db) => {
      const stmt = this.#stmt(
        db,
        "INSERT INTO events (type, task_id, at, data) VALUES (?, ?, ?, ?)",
      );
      for (const row of rows) stmt.run(...row);
    });
  }

  async listEvents(
    query: { taskId?: string; afterSeq?: number; limit?: number } = {},
  ): Promise<StoredEvent[]> {
    checkEventQuery(query);
    const params: SQLInputValue[] = [query.afterSeq ?? 0];
    let sql = "SELECT seq, type, task_id, at, data FROM events WHERE seq > ?";
    if (query.taskId !== undefined) {
      sql += " AND task_id = ?";
      params.push(query.taskId);
    }
    sql += " ORDER BY seq LIMIT ?";
    params.push(query.limit ?? -1);
    return this.#read((db) =>
      (this.#stmt(db, sql).all(...params) as Array<Record<string, SQLInputValue>>).map((r) => {
        const event: StoredEvent = {
          seq: Number(r.seq),
          type: String(r.type),
          at: Number(r.at),
          data: r.data === null ? undefined : JSON.parse(String(r.data)),
        };
        if (r.task_id !== null) event.taskId = String(r.task_id);
        if (event.data === undefined) delete (event as { data?: unknown }).data;
        return event;
      }),
    );
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
      toJson(entry.usage, "recordUsage: usage"),
    ];
    await this.#write((db) => {
      this.#stmt(
        db,
        "INSERT INTO usage (at, task_id, worker_id, provider, model, tenant, usage) VALUES (?, ?, ?, ?, ?, ?, ?)",
      ).run(...row);
    });
  }

  async listUsage(query: { since?: number; until?: number } = {}): Promise<UsageEntry[]> {
    const params: SQLInputValue[] = [
      query.since ?? Number.MIN_SAFE_INTEGER,
      query.until ?? Number.MAX_SAFE_INTEGER,
    ];
    return this.#read((db) =>
      (
        this.#stmt(db, "SELECT * FROM usage WHERE at >= ? AND at < ? ORDER BY at, id").all(
          ...params,
        ) as Array<Record<string, SQLInputValue>>
      ).map((r) => {
        const entry: UsageEntry = { at: Number(r.at), usage: JSON.parse(String(r.usage)) };
        if (r.task_id !== null) entry.taskId = String(r.task_id);
        if (r.worker_id !== null) entry.workerId = String(r.worker_id);
        if (r.provider !== null) entry.provider = String(r.provider);
        if (r.model !== null) entry.model = String(r.model);
        if (r.tenant !== null) entry.tenant = String(r.tenant);
        return entry;
      }),
    );
  }

  // ---------------------------------------------------------------- retention

  async deleteFinished(options: { olderThan?: number; keep?: number }): Promise<number> {
    checkRetention(options);
    const now = this.#clock.now();
    return this.#write((db) => {
      db.exec("CREATE TEMP TABLE IF NOT EXISTS doomed (id TEXT PRIMARY KEY) WITHOUT ROWID");
      db.exec("DELETE FROM temp.doomed");
      if (options.olderThan !== undefined) {
        this.#stmt(
          db,
          "INSERT OR IGNORE INTO temp.doomed (id) SELECT id FROM tasks WHERE finished_at IS NOT NULL AND finished_at < ?",
        ).run(now - options.olderThan);
      }
      if (options.keep !== undefined) {
        this.#stmt(
          db,
          `INSERT OR IGNORE INTO temp.doomed (id) SELECT id FROM tasks WHERE finished_at IS NOT NULL
           ORDER BY finished_at DESC, seq DESC LIMIT -1 OFFSET ?`,
        ).run(options.keep);
      }
      // A finished task an unfinished one depends on stays: its output is still needed.
      db.exec(`DELETE FROM temp.doomed WHERE id IN (
        SELECT d.depends_on FROM dependencies d JOIN tasks u ON u.id = d.task_id
        WHERE u.finished_at IS NULL)`);
      db.exec("DELETE FROM events WHERE task_id IN (SELECT id FROM temp.doomed)");
      if (options.olderThan !== undefined) {
        this.#stmt(db, "DELETE FROM events WHERE task_id IS NULL AND at < ?").run(
          now - options.olderThan,
        );
      }
      db.exec("DELETE FROM attempts WHERE task_id IN (SELECT id FROM temp.doomed)");
      db.exec("DELETE FROM dependencies WHERE task_id IN (SELECT id FROM temp.doomed)");
      const removed = Number(
        db.prepare("DELETE FROM tasks WHERE id IN (SELECT id FROM temp.doomed)").run().changes,
      );
      db.exec("DELETE FROM temp.doomed");
      return removed;
    });
  }

  // ---------------------------------------------------------------- kv

  async kvGet<T = unknown>(collection: string, key: string): Promise<T | undefined> {
    checkKv(collection, key);
    return this.#read((db) => {
      const row = this.#stmt(db, "SELECT value FROM kv WHERE collection = ? AND key = ?").get(
        collection,
        key,
      ) as { value: string } | undefined;
      return row ? (JSON.parse(row.value) as T) : undefined;
    });
  }

  async kvPut(collection: string, key: string, value: unknown): Promise<void> {
    checkKv(collection, key);
    if (value === undefined) {
      throw new FlotillaError("VALIDATION", `kvPut ${collection}/${key}: value is undefined`);
    }
    const text = toJson(value, `kvPut ${collection}/${key}`);
    await this.#write((db) => {
      this.#stmt(
        db,
        "INSERT INTO kv (collection, key, value) VALUES (?, ?, ?) ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value",
      ).run(collection, key, text);
    });
  }

  async kvDelete(collection: string, key: string): Promise<boolean> {
    checkKv(collection, key);
    return this.#write(
      (db) =>
        Number(
          this.#stmt(db, "DELETE FROM kv WHERE collection = ? AND key = ?").run(collection, key)
            .changes,
        ) > 0,
    );
  }

  async kvList<T = unknown>(collection: string): Promise<Array<{ key: string; value: T }>> {
    checkKv(collection);
    return this.#read((db) =>
      (
        this.#stmt(db, "SELECT key, value FROM kv WHERE collection = ? ORDER BY key").all(
          collection,
        ) as Array<{ key: string; value: string }>
      ).map((r) => ({ key: r.key, value: JSON.parse(r.value) as T })),
    );
  }
}
