import { randomUUID } from "node:crypto";
import {
  type AttemptRecord,
  type Clock,
  type DeleteFinishedOptions,
  type EventFeed,
  type EventFollow,
  FlotillaError,
  type Logger,
  type ProgressEvent,
  parseOrThrow,
  type Store,
  type StoreClaim,
  type StoredEvent,
  silentLogger,
  systemClock,
  TASK_STATUSES,
  type TaskQuery,
  type TaskRecord,
  type UnfinishedQuery,
  type UsageEntry,
} from "@flotilla/core";
import {
  attemptFromRow,
  attemptRowValues,
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
} from "@flotilla/core/store";
import pg from "pg";
import { z } from "zod";
import { conflictError, describeDatabase, pgError } from "./errors.js";
import { EVENTS_TOPIC, LogFollower, USAGE_TOPIC } from "./follow.js";
import { Notifications } from "./notifications.js";
import { type PartitionLeaseOptions, PartitionLeases } from "./partitions.js";
import { ProgressRelay, type ProgressSource } from "./progress.js";
import { isConnectionError, PgQueue } from "./queue.js";
import { type PreparedWrite, prepareWrite, TASK_COLUMNS } from "./rows.js";
import { LOCK_NAMESPACE, migrate, PARTITION_EXPR, quoteIdent, UNFINISHED_SQL } from "./schema.js";
import { DB_NOW, statements } from "./sql.js";

/** Options of {@link PostgresStore}. */
export interface PostgresStoreOptions {
  /**
   * The database, as a `postgres://user:password@host:port/database` URL (libpq's
   * `sslmode` and other parameters as `pg` reads them). When absent, `pg` reads the
   * standard `PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD` and `PGDATABASE` variables.
   */
  connectionString?: string;
  /**
   * The PostgreSQL schema that holds Flotilla's tables (created when missing). Several
   * independent Flotilla deployments can share one database under different schemas.
   * @default "flotilla"
   */
  schema?: string;
  /** Time source for retention ages (leases and claims use the database's time). @default systemClock */
  clock?: Clock;
  /** Where open/migration/connection messages go. @default silentLogger */
  logger?: Logger;
  /** Connections for reads (writes use one more, of their own). @default 8 */
  poolSize?: number;
  /** How long to wait for a connection before a call fails with `STORE_ERROR`, ms. @default 10000 */
  connectTimeoutMs?: number;
  /**
   * Hold the schema for this store only (a PostgreSQL advisory lock kept on a connection of
   * its own): a second store opening the same schema with `exclusive` fails at `open()`
   * instead of both running the same tasks. Stores that coordinate through
   * {@link Store.claimTask} alone (fleet nodes' claims, tests) pass `false`.
   * @default true
   */
  exclusive?: boolean;
  /**
   * With `exclusive`: when another instance holds the schema, wait at `open()` until it lets
   * go (it stops, crashes, or its host is lost and the server drops its connection) instead
   * of failing — a hot standby that takes over. `close()` while waiting makes `open()` reject.
   * @default false
   */
  standby?: boolean;
  /** The `application_name` of this store's connections (what `pg_stat_activity` shows). @default "flotilla" */
  applicationName?: string;
  /**
   * How often {@link PostgresStore.followEvents} reads the event log when no writer's hint
   * arrived (hints come within ~50 ms from stores sharing the schema with partition leases),
   * ms. @default 500
   */
  followPollMs?: number;
}

const OptionsSchema = z.object({
  connectionString: z.string().min(1, "expected a postgres:// URL").optional(),
  schema: z
    .string()
    .regex(
      /^[a-z_][a-z0-9_]{0,62}$/,
      "expected a lower-case PostgreSQL identifier (letters, digits, _; at most 63)",
    )
    .optional(),
  clock: z
    .custom((c) => typeof (c as { now?: unknown })?.now === "function", "expected a Clock")
    .optional(),
  logger: z
    .custom((l) => typeof (l as { info?: unknown })?.info === "function", "expected a Logger")
    .optional(),
  poolSize: z.number().int().min(1).max(1000).optional(),
  connectTimeoutMs: z.number().int().positive().optional(),
  exclusive: z.boolean().optional(),
  standby: z.boolean().optional(),
  applicationName: z.string().max(63).optional(),
  followPollMs: z.number().int().min(10).max(60_000).optional(),
});

/** `int8` (bigint, counts) as a JavaScript number: every value Flotilla stores fits. */
const types = {
  getTypeParser: ((oid: number, format?: string) =>
    oid === 20
      ? (v: string) => Number(v)
      : pg.types.getTypeParser(oid, format as "text")) as typeof pg.types.getTypeParser,
};

/** Events as columns: types, task ids, times, data (JSON). */
type EventColumns = [string[], Array<string | null>, number[], Array<string | null>];

/** A row of the events table as read. */
interface EventRow {
  seq: number;
  type: string;
  task_id: string | null;
  at: number;
  data: string | null;
}

/** An events-table row as a `StoredEvent`. */
function eventFromRow(row: EventRow): StoredEvent {
  const event: StoredEvent = {
    seq: Number(row.seq),
    type: row.type,
    at: Number(row.at),
    data: row.data === null ? undefined : JSON.parse(row.data),
  };
  if (row.task_id !== null) event.taskId = row.task_id;
  if (event.data === undefined) delete (event as { data?: unknown }).data;
  return event;
}

/** The attempt parameters of a write without an attempt. */
const NO_ATTEMPT: readonly null[] = Array.from({ length: 9 }, () => null);

const UNFINISHED = TASK_STATUSES.filter((s) => !isTerminal(s));

/**
 * A durable `Store` on PostgreSQL (through `pg`, the driver the Node queue ecosystem uses).
 * Versioned schema migrations run under an advisory lock; writes issued together share one
 * transaction and one commit, and each resolves only after that commit; claims take the best
 * due task with `FOR UPDATE SKIP LOCKED`, so any number of processes sharing the database
 * never get the same task; leases are measured on the database's clock.
 *
 * A schema that is not Flotilla's, one written by a newer version, a wrong password or an
 * unreachable server stops `open()` with a `STORE_ERROR` that names the database (never its
 * password); a lost connection fails the calls made meanwhile with `STORE_ERROR`, and the
 * next call connects again.
 *
 * @example
 * ```ts
 * import { Orchestrator } from "@flotilla/core";
 * import { PostgresStore } from "@flotilla/store-postgres";
 *
 * const store = new PostgresStore({ connectionString: "postgres://flotilla:secret@127.0.0.1/flotilla" });
 * const orchestrator = new Orchestrator({ store });
 * await orchestrator.start();
 * ```
 */
export class PostgresStore implements Store, EventFeed {
  /** The schema holding this store's tables. */
  readonly schema: string;
  /** The database as messages name it (no password). */
  readonly where: string;
  readonly #options: PostgresStoreOptions;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #exclusive: boolean;
  readonly #t: (table: string) => string;
  readonly #sql: ReturnType<typeof statements>;
  #writer: pg.Pool | undefined;
  #readers: pg.Pool | undefined;
  #q: PgQueue | undefined;
  #lock: pg.Client | undefined;
  /** The lock connection while `open()` waits for the schema (standby). */
  #waiting: pg.Client | undefined;
  #lockLost = false;
  /** The lock being taken again after its connection was lost (one attempt at a time). */
  #relocking: Promise<void> | undefined;
  /** The last refusal to take the lock again (another instance holds it), kept 2 s. */
  #refused: { err: unknown; until: number } | undefined;
  /** `close()` was called before `open()` finished (a standby waiting). */
  #abandoned = false;
  #notifications: Notifications | undefined;
  /** Why this store's writes are refused for good: another instance took the schema. */
  #fenced: FlotillaError | undefined;
  readonly #fencedListeners = new Set<(err: FlotillaError) => void>();
  /** Marks the events this store appends, so its own are passed over when following. */
  readonly #origin = randomUUID();
  #progress: ProgressRelay | undefined;
  #follower: LogFollower<StoredEvent> | undefined;
  #usageFollower: LogFollower<UsageEntry> | undefined;
  /** Whether appends are announced to the others sharing the schema (partition leases made). */
  #announce = false;
  readonly #announcing = new Map<string, ReturnType<typeof setTimeout>>();
  readonly #announceAgain = new Set<string>();

  constructor(options: PostgresStoreOptions = {}) {
    parseOrThrow(OptionsSchema, options ?? {}, "PostgresStore options");
    this.#options = options ?? {};
    this.schema = this.#options.schema ?? "flotilla";
    this.where = describeDatabase(this.#options.connectionString, this.schema);
    this.#clock = this.#options.clock ?? systemClock;
    this.#logger = this.#options.logger ?? silentLogger;
    this.#exclusive = this.#options.exclusive ?? true;
    const s = quoteIdent(this.schema);
    this.#t = (table) => `${s}.${table}`;
    this.#sql = statements(s, this.schema);
  }

  // ---------------------------------------------------------------- open / close

  #config(max: number): pg.PoolConfig {
    return {
      ...(this.#options.connectionString
        ? { connectionString: this.#options.connectionString }
        : {}),
      max,
      connectionTimeoutMillis: this.#options.connectTimeoutMs ?? 10_000,
      application_name: this.#options.applicationName ?? "flotilla",
      types,
    };
  }

  #pool(max: number, role: string): pg.Pool {
    const pool = new pg.Pool(this.#config(max));
    // A connection the server closes (a restart) must not end the process: idle ones are
    // reported by the pool, one in use by the client itself (its query fails too, and the
    // pool drops it when it is released).
    pool.on("connect", (client) =>
      client.on("error", (err) =>
        this.#logger.debug(
          { database: this.where, err: err.message },
          `postgres ${role} connection closed`,
        ),
      ),
    );
    pool.on("error", (err) =>
      this.#logger.warn(
        { database: this.where, err: err.message },
        `postgres ${role} connection lost`,
      ),
    );
    return pool;
  }

  async open(): Promise<void> {
    if (this.#q) return;
    this.#abandoned = false;
    const writer = this.#pool(1, "writer");
    const readers = this.#pool(this.#options.poolSize ?? 8, "reader");
    try {
      const client = await writer.connect().catch((err: unknown) => {
        throw pgError(this.where, "cannot connect", err);
      });
      try {
        await migrate(client, this.schema, this.where, this.#logger).catch((err: unknown) => {
          throw pgError(this.where, "cannot prepare the schema", err);
        });
      } finally {
        client.release();
      }
      if (this.#exclusive) await this.#lockForOpen();
    } catch (err) {
      await Promise.allSettled([writer.end(), readers.end()]);
      throw err;
    }
    this.#writer = writer;
    this.#readers = readers;
    this.#q = new PgQueue(writer, readers, this.where, this.#logger, () => this.#checkLock(), {
      kinds: {
        save: (c, items) => this.#saveMany(c, items as PreparedWrite[]),
        events: (c, items) => this.#appendMany(c, items as EventColumns[]),
      },
      all: (c, groups) => this.#writeMerged(c, groups),
    });
  }

  /**
   * Takes the schema's instance lock on a connection of its own (exclusive mode); `wait`:
   * until the holder lets go. The server checks that connection with TCP keepalives every few
   * seconds, so the lock of an instance whose host is lost is released in about 25 s, not
   * after the operating system's default of hours.
   */
  async #takeLock(wait = false): Promise<void> {
    const client = new pg.Client({ ...this.#config(1), keepAlive: true });
    let held = false;
    client.on("error", (err) => {
      if (!held || this.#lock !== client) return; // the call in progress fails with it
      this.#logger.error(
        { database: this.where, err: err.message },
        "postgres connection holding the schema lock was lost; taking it again",
      );
      this.#lockLost = true;
      this.#retakeSoon();
    });
    const key = [LOCK_NAMESPACE, `${this.schema}:instance`];
    try {
      await client.connect();
      await client.query(
        "SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; SET tcp_keepalives_count = 3",
      );
      let got = (
        await client.query<{ ok: boolean }>(
          "SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok",
          key,
        )
      ).rows[0]?.ok;
      if (!got && wait) {
        this.#logger.info(
          { database: this.where },
          "standby: another instance holds the schema; waiting for it to let go",
        );
        this.#waiting = client;
        try {
          await client.query("SELECT pg_advisory_lock($1, hashtext($2))", key);
          got = true;
        } catch (err) {
          if (this.#waiting !== client) {
            throw new FlotillaError(
              "STORE_ERROR",
              `${this.where}: closed while waiting for the schema`,
            );
          }
          throw err;
        } finally {
          this.#waiting = undefined;
        }
      }
      if (!got) {
        throw new FlotillaError(
          "STORE_ERROR",
          `${this.where}: the schema is in use by another Flotilla instance (an advisory lock is held); stop it, or give this instance another schema`,
          { details: { database: this.where, heldByAnother: true } },
        );
      }
    } catch (err) {
      await client.end().catch(() => {});
      throw pgError(this.where, "cannot lock the schema", err);
    }
    held = true;
    const old = this.#lock;
    this.#lock = client;
    this.#lockLost = false;
    await old?.end().catch(() => {});
  }

  /**
   * The lock at `open()`. A standby that loses the database while it waits (a restart)
   * connects again every 2 s and goes on waiting; `close()` ends the wait.
   */
  async #lockForOpen(): Promise<void> {
    const standby = this.#options.standby ?? false;
    for (;;) {
      try {
        await this.#takeLock(standby);
        return;
      } catch (err) {
        const cause = (err as { cause?: unknown }).cause ?? err;
        if (!standby || this.#abandoned || !isConnectionError(cause)) throw err;
        this.#logger.warn(
          { database: this.where, err: String((cause as Error)?.message ?? cause) },
          "standby: lost the database while waiting for the schema; connecting again",
        );
        await new Promise((r) => setTimeout(r, 2_000));
        if (this.#abandoned) {
          throw new FlotillaError(
            "STORE_ERROR",
            `${this.where}: closed while waiting for the schema`,
          );
        }
      }
    }
  }

  /** Takes the lock again (one attempt at a time, shared by whoever asks). */
  #relock(): Promise<void> {
    // Another instance holds the schema: answer from the last try for a while rather than
    // open a connection for every refused write.
    if (this.#refused && Date.now() < this.#refused.until) return Promise.reject(this.#refused.err);
    this.#relocking ??= this.#takeLock()
      .then(
        () => {
          this.#refused = undefined;
        },
        (err: unknown) => {
          const cause = (err as { cause?: unknown }).cause ?? err;
          if (!isConnectionError(cause)) {
            this.#refused = { err, until: Date.now() + 2_000 };
            // Only a lock another instance holds fences this store for good; any other
            // failure is tried again at the next write.
            const held =
              (err as { details?: { heldByAnother?: unknown } }).details?.heldByAnother === true;
            if (held) this.#fence(err);
          }
          throw err;
        },
      )
      .finally(() => {
        this.#relocking = undefined;
      });
    return this.#relocking;
  }

  /**
   * After the lock's connection was lost (a database restart), takes it again at once rather
   * than at the next write, so this store keeps the schema ahead of a standby (which waits
   * 2 s before it tries again). Tries every 500 ms while the database is unreachable; stops
   * when another instance holds the schema (this store's writes are then refused).
   */
  #retakeSoon(): void {
    const attempt = () => {
      if (!this.#q || !this.#lockLost) return;
      this.#relock().then(
        () => this.#logger.info({ database: this.where }, "postgres schema lock taken again"),
        (err: unknown) => {
          const cause = (err as { cause?: unknown }).cause ?? err;
          if (isConnectionError(cause)) {
            setTimeout(attempt, 500).unref();
            return;
          }
          this.#logger.error(
            { database: this.where, err: String((err as Error)?.message ?? err) },
            "another instance holds the schema now: this store's writes are refused (restart this server; it can come back as a standby)",
          );
        },
      );
    };
    setTimeout(attempt, 200).unref();
  }

  /**
   * Whether another instance took the schema after this store lost its lock (a standby
   * that got in first after a database restart or a lost connection): every write of this
   * store is refused from then on, and the server using it should stop.
   *
   * @example
   * ```ts
   * const store = new PostgresStore({ connectionString: process.env.DATABASE_URL });
   * await store.open();
   * if (store.fenced) process.exitCode = 3;
   * ```
   */
  get fenced(): boolean {
    return this.#fenced !== undefined;
  }

  /**
   * Calls `listener` once, when this store finds that another instance took its schema
   * (see {@link PostgresStore.fenced}). Returns a remover.
   *
   * @example
   * ```ts
   * const store = new PostgresStore({ connectionString: process.env.DATABASE_URL });
   * await store.open();
   * store.onFenced((err) => {
   *   console.error(err.message);
   *   process.exit(3);
   * });
   * ```
   */
  onFenced(listener: (err: FlotillaError) => void): () => void {
    this.#fencedListeners.add(listener);
    return () => this.#fencedListeners.delete(listener);
  }

  #fence(err: unknown): void {
    if (this.#fenced || !this.#lockLost) return;
    this.#fenced = err instanceof FlotillaError ? err : FlotillaError.from(err, "STORE_ERROR");
    for (const l of [...this.#fencedListeners]) {
      try {
        l(this.#fenced);
      } catch (e) {
        this.#logger.error({ err: String(e) }, "a fenced listener threw");
      }
    }
  }

  /** Before each write transaction: the schema lock is still ours (taken again after a reconnect). */
  async #checkLock(): Promise<void> {
    if (!this.#exclusive || !this.#lockLost) return;
    await this.#relock();
  }

  /** Waits for pending writes, then closes every connection. Idempotent. */
  async close(): Promise<void> {
    this.#abandoned = true;
    const waiting = this.#waiting;
    if (waiting) {
      this.#waiting = undefined;
      await waiting.end().catch(() => {});
    }
    this.#follower?.stop();
    this.#usageFollower?.stop();
    this.#progress?.close();
    this.#progress = undefined;
    for (const t of this.#announcing.values()) clearTimeout(t);
    this.#announcing.clear();
    await this.#notifications?.stop();
    const q = this.#q;
    if (!q) return;
    this.#q = undefined;
    await q.close();
    const pools = [this.#writer, this.#readers];
    this.#writer = undefined;
    this.#readers = undefined;
    const lock = this.#lock;
    this.#lock = undefined;
    await Promise.allSettled([...pools.map((p) => p?.end()), lock?.end()]);
  }

  /**
   * Messages between the instances sharing this schema (LISTEN/NOTIFY on a connection of
   * its own, made on first use and closed with the store): see {@link Notifications}.
   *
   * @example
   * ```ts
   * const store = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
   * await store.open();
   * const n = store.notifications();
   * n.on("wake", () => void poll());
   * await n.start();
   * ```
   */
  notifications(): Notifications {
    this.#notifications ??= new Notifications(
      this.schema,
      () => this.#config(1),
      () => this.#openReaders(),
      this.where,
      this.#logger,
    );
    return this.#notifications;
  }

  /**
   * Leases on this schema's virtual partitions, for one instance among several sharing the
   * schema (open the store with `exclusive: false`): see {@link PartitionLeases}. Uses the
   * store's connections; stop the leases before closing the store.
   *
   * @example
   * ```ts
   * const store = new PostgresStore({ connectionString, exclusive: false });
   * await store.open();
   * const leases = store.partitionLeases({ instanceId: "api-1" });
   * await leases.start();
   * ```
   */
  partitionLeases(options?: PartitionLeaseOptions): PartitionLeases {
    this.#announce = true;
    return new PartitionLeases(
      () => this.#openReaders(),
      this.#t,
      this.where,
      { logger: this.#logger, ...options },
      this.notifications(),
    );
  }

  /** The read pool, or `STORE_ERROR` when the store is not open. */
  #openReaders(): pg.Pool {
    if (!this.#readers) {
      throw new FlotillaError("STORE_ERROR", `${this.where}: the store is not open (call open())`);
    }
    return this.#readers;
  }

  #queue(): PgQueue {
    if (!this.#q) {
      throw new FlotillaError("STORE_ERROR", `${this.where}: the store is not open (call open())`);
    }
    return this.#q;
  }

  #read<T>(run: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    try {
      return this.#queue().read(run);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  #write<T>(
    run: (c: pg.PoolClient) => Promise<T>,
    single = false,
    merge?: { kind: string; item: unknown; value: unknown },
  ): Promise<T> {
    try {
      return this.#queue().write(run, { single, merge });
    } catch (err) {
      return Promise.reject(err);
    }
  }

  // ---------------------------------------------------------------- tasks

  async insertTasks(tasks: readonly TaskRecord[]): Promise<void> {
    if (!Array.isArray(tasks)) {
      throw new FlotillaError("VALIDATION", "insertTasks: expected an array of task records");
    }
    const writes = tasks.map((t) => prepareWrite(t, "insertTasks"));
    if (writes.length === 0) return;
    // One statement for the whole batch: one array per column.
    const values: unknown[] = TASK_COLUMNS.map((_, i) => writes.map((w) => w.row[i]));
    const edges = writes.flatMap((w) => w.deps.map((d) => [w.row[0], d] as const));
    values.push(
      edges.map((e) => e[0]),
      edges.map((e) => e[1]),
    );
    const attempts = writes.flatMap((w) => (w.attempt ? [attemptRowValues(w.attempt)] : []));
    for (let i = 0; i < 9; i++) values.push(attempts.map((a) => a[i]));
    await this.#write(async (c) => {
      try {
        await c.query({ ...this.#sql.insertTasks, values });
      } catch (err) {
        throw conflictOf(err, writes);
      }
    }, true);
  }

  async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
    const write = prepareWrite(task, "saveTask");
    if (expectedVersion !== undefined && !Number.isFinite(expectedVersion)) {
      throw new FlotillaError("VALIDATION", "saveTask: expectedVersion must be a number");
    }
    const values: unknown[] = [
      ...write.row,
      ...(write.attempt ? attemptRowValues(write.attempt) : NO_ATTEMPT),
      expectedVersion ?? write.deps,
    ];
    const statement =
      expectedVersion === undefined ? this.#sql.saveTask : this.#sql.saveTaskIfVersion;
    return this.#write(
      async (c) => {
        try {
          const r = await c.query<{ n: number }>({ ...statement, values });
          return r.rows[0]!.n > 0;
        } catch (err) {
          throw conflictOf(err, [write]);
        }
      },
      true,
      // Unconditional saves of one batch go out as one statement.
      expectedVersion === undefined ? { kind: "save", item: write, value: true } : undefined,
    );
  }

  /**
   * Saves of one batch as one upsert: the last save of each task (it holds the earlier ones'
   * changes), and each attempt's row folded as consecutive upserts would leave it. Only the
   * unique idempotency key could make a superseded save fail where the last one succeeds; a
   * batch in which a task's key changes is written one save at a time.
   */
  #saveValues(writes: PreparedWrite[]): { values: unknown[]; rows: PreparedWrite[] } {
    const last = new Map<string, PreparedWrite>();
    const attempts = new Map<string, ReturnType<typeof attemptRowValues>>();
    for (const w of writes) {
      const before = last.get(w.row[0]);
      if (before && before.row[6] !== w.row[6]) {
        // A superseded save could fail on its own (another task's idempotency key): write
        // this batch one save at a time instead, so each gets its own answer.
        throw new Error(`task ${w.row[0]}: saves with different idempotency keys in one batch`);
      }
      last.delete(w.row[0]);
      last.set(w.row[0], w);
      if (!w.attempt) continue;
      const key = `${w.row[0]}\u0000${w.attempt.attempt}`;
      const next = attemptRowValues(w.attempt);
      const prev = attempts.get(key);
      if (prev) {
        // worker, lease, start, finish and error keep an earlier value the later one lacks.
        for (const i of [3, 4, 5, 6, 7]) if (next[i] === null) next[i] = prev[i] ?? null;
      }
      attempts.set(key, next);
    }
    const rows = [...last.values()];
    const values: unknown[] = TASK_COLUMNS.map((_, i) => rows.map((w) => w.row[i]));
    const edges = rows.flatMap((w) => w.deps.map((d) => [w.row[0], d] as const));
    values.push(
      edges.map((e) => e[0]),
      edges.map((e) => e[1]),
    );
    const attemptRows = [...attempts.values()];
    for (let i = 0; i < 9; i++) values.push(attemptRows.map((a) => a[i]));
    return { values, rows };
  }

  async #saveMany(c: pg.PoolClient, writes: PreparedWrite[]): Promise<void> {
    const { values, rows } = this.#saveValues(writes);
    try {
      await c.query({ ...this.#sql.saveTasks, values });
    } catch (err) {
      throw conflictOf(err, rows);
    }
  }

  /**
   * Claims the best due queued task with `FOR UPDATE SKIP LOCKED`: concurrent claims from
   * any number of processes skip each other's rows instead of waiting, and never get the same
   * task. The lease starts at the database's time.
   */
  async claimTask(claim: StoreClaim): Promise<TaskRecord | undefined> {
    checkClaim(claim);
    const types = claim.taskTypes;
    if (types !== undefined && types.length === 0) return undefined;
    const t = this.#t;
    return this.#write(async (c) => {
      const found = await c.query<{ body: string; now: number }>({
        name: `${this.schema}:claim_select`,
        text: `WITH n AS (SELECT ${DB_NOW} AS now)
          SELECT tasks.body, n.now FROM ${t("tasks")} tasks, n
          WHERE tasks.status = 'queued' AND ($1::text[] IS NULL OR tasks.type = ANY($1))
            AND coalesce(tasks.not_before, 0) <= n.now
          ORDER BY tasks.priority DESC, tasks.seq ASC LIMIT 1 FOR UPDATE OF tasks SKIP LOCKED`,
        values: [types ?? null],
      });
      const row = found.rows[0];
      if (!row) return undefined;
      const task = JSON.parse(row.body) as TaskRecord;
      const next = claimedRecord(task, claim, Number(row.now));
      const write = prepareWrite(next, "claimTask");
      const updated = await c.query<{ n: number }>({
        ...this.#sql.saveTaskIfVersion,
        values: [
          ...write.row,
          ...(write.attempt ? attemptRowValues(write.attempt) : NO_ATTEMPT),
          task.version,
        ],
      });
      if (updated.rows[0]!.n === 0) return undefined;
      return JSON.parse(write.row[16]) as TaskRecord;
    });
  }

  /** The database server's time (what leases are measured against), ms since the epoch. */
  async now(): Promise<number> {
    return this.#read(async (c) => {
      const r = await c.query<{ now: number }>(`SELECT ${DB_NOW} AS now`);
      return Number(r.rows[0]!.now);
    });
  }

  async getTask(id: string): Promise<TaskRecord | undefined> {
    return this.#read(async (c) => {
      const r = await c.query<{ body: string }>({
        name: `${this.schema}:get_task`,
        text: `SELECT body FROM ${this.#t("tasks")} WHERE id = $1`,
        values: [String(id)],
      });
      return r.rows[0] ? (JSON.parse(r.rows[0].body) as TaskRecord) : undefined;
    });
  }

  async getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined> {
    return this.#read(async (c) => {
      const r = await c.query<{ body: string }>(
        `SELECT body FROM ${this.#t("tasks")} WHERE idempotency_key = $1`,
        [String(key)],
      );
      return r.rows[0] ? (JSON.parse(r.rows[0].body) as TaskRecord) : undefined;
    });
  }

  #where(query: TaskQuery | undefined): { sql: string; params: unknown[] } {
    checkPaging(query);
    const clauses: string[] = [];
    const params: unknown[] = [];
    const statuses = queryStatuses(query);
    if (statuses) {
      params.push(statuses);
      clauses.push(`status = ANY($${params.length}::text[])`);
    }
    for (const [field, col] of [
      ["type", "type"],
      ["tenant", "tenant"],
      ["workerId", "worker_id"],
    ] as const) {
      const value = query?.[field];
      if (value !== undefined) {
        params.push(String(value));
        clauses.push(`${col} = $${params.length}`);
      }
    }
    return { sql: clauses.length ? ` WHERE ${clauses.join(" AND ")}` : "", params };
  }

  async listTasks(query?: TaskQuery): Promise<TaskRecord[]> {
    const { sql, params } = this.#where(query);
    const dir = (query?.newestFirst ?? true) ? "DESC" : "ASC";
    let tail = "";
    if (query?.limit !== undefined) {
      params.push(query.limit);
      tail += ` LIMIT $${params.length}`;
    }
    if (query?.offset !== undefined) {
      params.push(query.offset);
      tail += ` OFFSET $${params.length}`;
    }
    return this.#read(async (c) => {
      const r = await c.query<{ body: string }>(
        `SELECT body FROM ${this.#t("tasks")}${sql} ORDER BY seq ${dir}, id ${dir}${tail}`,
        params,
      );
      return r.rows.map((row) => JSON.parse(row.body) as TaskRecord);
    });
  }

  async countTasks(query?: TaskQuery): Promise<number> {
    const { sql, params } = this.#where(query);
    return this.#read(async (c) => {
      const r = await c.query<{ n: number }>(
        `SELECT count(*) AS n FROM ${this.#t("tasks")}${sql}`,
        params,
      );
      return Number(r.rows[0]!.n);
    });
  }

  async loadUnfinished(query?: UnfinishedQuery): Promise<TaskRecord[]> {
    const inQuery = partitionFilter(query); // checks the partitions
    const partitions = query?.partitions;
    return this.#read(async (c) => {
      const r =
        partitions === undefined
          ? await c.query<{ body: string }>(
              `SELECT body FROM ${this.#t("tasks")} WHERE status = ANY($1::text[]) ORDER BY seq, id`,
              [UNFINISHED],
            )
          : await c.query<{ body: string }>(
              `SELECT body FROM ${this.#t("tasks")} WHERE status IN (${UNFINISHED_SQL})
               AND (${PARTITION_EXPR} = ANY($1::integer[]) OR ${PARTITION_EXPR} IS NULL)
               ORDER BY seq, id`,
              [[...partitions]],
            );
      return r.rows.map((row) => JSON.parse(row.body) as TaskRecord).filter(inQuery);
    });
  }

  /**
   * Every attempt of a task, oldest first.
   *
   * @example
   * ```ts
   * const attempts = await store.listAttempts("task-1"); // [{ attempt: 1, status: "failed", … }, …]
   * ```
   */
  async listAttempts(taskId: string): Promise<AttemptRecord[]> {
    return this.#read(async (c) => {
      const r = await c.query(
        `SELECT * FROM ${this.#t("attempts")} WHERE task_id = $1 ORDER BY attempt`,
        [String(taskId)],
      );
      return r.rows.map(attemptFromRow);
    });
  }

  // ---------------------------------------------------------------- events and usage

  /**
   * Appends events in order. Appends from every process sharing the schema take turns
   * (a transaction-scoped advisory lock), so sequence numbers grow in commit order and a
   * reader resuming after a `seq` misses nothing.
   */
  async appendEvents(events: readonly StoredEvent[]): Promise<void> {
    if (!Array.isArray(events)) {
      throw new FlotillaError("VALIDATION", "appendEvents: expected an array of events");
    }
    const cols: EventColumns = [[], [], [], []];
    for (const event of events) {
      if (typeof event?.type !== "string" || !Number.isFinite(event.at)) {
        throw new FlotillaError("VALIDATION", "appendEvents: every event needs a type and `at`");
      }
      cols[0].push(event.type);
      cols[1].push(event.taskId ?? null);
      cols[2].push(event.at);
      cols[3].push(
        event.data === undefined ? null : toJson(event.data, `appendEvents: event ${event.type}`),
      );
    }
    if (events.length === 0) return;
    await this.#write((c) => this.#appendMany(c, [cols]), true, {
      kind: "events",
      item: cols,
      value: undefined,
    });
    if (this.#announce) this.#announceNew(EVENTS_TOPIC);
  }

  /**
   * Tells the stores following `topic` (the event log, the usage ledger) that rows were
   * appended: at most one message per 50 ms and topic (a follower reads everything new on
   * one), never holding up the write.
   */
  #announceNew(topic: string): void {
    if (this.#announcing.has(topic)) {
      this.#announceAgain.add(topic);
      return;
    }
    this.#announceAgain.delete(topic);
    this.notifications()
      .notify(topic)
      .catch(() => {}); // a hint: followers poll too
    const timer = setTimeout(() => {
      this.#announcing.delete(topic);
      if (this.#announceAgain.has(topic)) this.#announceNew(topic);
    }, 50);
    timer.unref?.();
    this.#announcing.set(topic, timer);
  }

  /**
   * Calls `listener` with the events that other processes sharing the schema append from
   * now on, in `seq` order, within ~50 ms of their commit when the writer holds partition
   * leases (a notification), else within `followPollMs`. One reader serves every
   * subscription of this store and runs only while there is one. A server uses it to show
   * its WebSocket and SSE clients what happens to tasks run by another.
   *
   * @example
   * ```ts
   * const shared = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
   * await shared.open();
   * const follow = shared.followEvents((events) => {
   *   for (const e of events) if (e.type === "task:succeeded") console.log(e.taskId, "done elsewhere");
   * });
   * await follow.ready; // events committed from here on are delivered
   * follow.close();
   * ```
   */
  followEvents(listener: (events: readonly StoredEvent[]) => void): EventFollow {
    // Own rows are passed over without their data.
    this.#follower ??= this.#logFollower("events", "seq", EVENTS_TOPIC, eventFromRow, [
      "seq, type, task_id, at, CASE WHEN origin IS DISTINCT FROM $2 THEN data END AS data",
    ]);
    return this.#follower.follow(listener);
  }

  /**
   * Calls `listener` with the usage lines that other processes sharing the schema record from
   * now on, in order (recording takes turns, so line numbers grow in commit order), within
   * ~50 ms of their commit when the writer holds partition leases, else within
   * `followPollMs`. Servers sharing the schema count each other's spend against their
   * budgets with it.
   *
   * @example
   * ```ts
   * const shared = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
   * await shared.open();
   * const follow = shared.followUsage((lines) => {
   *   for (const l of lines) console.log(l.taskId, l.usage.totalTokens, l.costUsd);
   * });
   * await follow.ready;
   * follow.close();
   * ```
   */
  followUsage(listener: (lines: readonly UsageEntry[]) => void): EventFollow {
    this.#usageFollower ??= this.#logFollower("usage", "id", USAGE_TOPIC, usageFromRow, ["*"]);
    return this.#usageFollower.follow(listener);
  }

  /**
   * Calls `listener` with the progress reports (streamed tokens, samples) of `taskId` while
   * another process sharing the schema runs it and relays them (`relayProgress`): the
   * processes are told at once, and every 5 s while anyone watches, which tasks this one
   * watches. Best effort (LISTEN/NOTIFY): a report sent while the listening connection
   * reconnects is lost, one over ~6.5 KB is not relayed. Returns a remover.
   *
   * @example
   * ```ts
   * const stop = shared.watchProgress(taskId, (reports) => {
   *   for (const r of reports) process.stdout.write(String((r.data as { token?: string }).token ?? ""));
   * });
   * stop();
   * ```
   */
  watchProgress(taskId: string, listener: (reports: readonly ProgressEvent[]) => void): () => void {
    return this.#progressRelay().watch(String(taskId), listener);
  }

  /**
   * Relays the progress reports of the tasks `source` (an orchestrator on this store) runs
   * to the processes that watch them (`watchProgress`), at most one message per 50 ms.
   * Returns what stops it.
   *
   * @example
   * ```ts
   * const stop = shared.relayProgress(orchestrator);
   * stop();
   * ```
   */
  relayProgress(source: ProgressSource): () => void {
    return this.#progressRelay().relay(source);
  }

  #progressRelay(): ProgressRelay {
    if (!this.#progress) {
      const messages = this.notifications();
      this.#progress = new ProgressRelay(messages, this.#origin, this.#clock, this.#logger);
      messages
        .start()
        .catch((err: unknown) =>
          this.#logger.warn(
            { database: this.where, err: String(err) },
            "no notifications: progress of tasks run elsewhere is not relayed until they connect",
          ),
        );
    }
    return this.#progress;
  }

  /**
   * A follower of an append-only table whose `key` numbers grow in commit order: reads the
   * rows after a position (`columns`, and whether each is this store's own by its `origin`
   * mark), delivering the others' as `toItem` makes them.
   */
  #logFollower<T>(
    table: "events" | "usage",
    key: "seq" | "id",
    topic: string,
    toItem: (row: never) => T,
    columns: readonly string[],
  ): LogFollower<T> {
    const t = this.#t(table);
    return new LogFollower<T>(
      {
        last: () =>
          this.#read(async (c) => {
            const r = await c.query<{ last: number | null }>(
              `SELECT max(${key}) AS last FROM ${t}`,
            );
            return Number(r.rows[0]?.last ?? 0);
          }),
        after: (after, limit) =>
          this.#read(async (c) => {
            const r = await c.query<Record<string, unknown> & { mine: boolean }>({
              name: `${this.schema}:follow_${table}`,
              text: `SELECT ${columns.join(", ")}, origin IS NOT DISTINCT FROM $2 AS mine
                FROM ${t} WHERE ${key} > $1 ORDER BY ${key} LIMIT $3`,
              values: [after, this.#origin, limit],
            });
            const items: T[] = [];
            for (const row of r.rows) if (!row.mine) items.push(toItem(row as never));
            const last = r.rows.length > 0 ? Number(r.rows[r.rows.length - 1]![key]) : after;
            return { items, last, rows: r.rows.length };
          }),
      },
      this.notifications(),
      topic,
      this.#options.followPollMs ?? 500,
      this.#logger,
    );
  }

  /** The appends of one batch, in order, as one statement. */
  async #appendMany(c: pg.PoolClient, appends: EventColumns[]): Promise<void> {
    await c.query({
      ...this.#sql.appendEvents,
      values: [...concatEvents(appends), `${this.schema}:events`, this.#origin],
    });
  }

  /** A batch of saves and appends only: one statement (one round trip, one commit). */
  async #writeMerged(c: pg.PoolClient, groups: Map<string, unknown[]>): Promise<void> {
    const saves = groups.get("save") as PreparedWrite[] | undefined;
    const appends = groups.get("events") as EventColumns[] | undefined;
    if (!saves) return this.#appendMany(c, appends ?? []);
    if (!appends) return this.#saveMany(c, saves);
    const { values, rows } = this.#saveValues(saves);
    try {
      await c.query({
        ...this.#sql.saveTasksAndAppendEvents,
        values: [...values, ...concatEvents(appends), `${this.schema}:events`, this.#origin],
      });
    } catch (err) {
      throw conflictOf(err, rows);
    }
  }

  async listEvents(
    query: { taskId?: string; afterSeq?: number; limit?: number } = {},
  ): Promise<StoredEvent[]> {
    checkEventQuery(query);
    const params: unknown[] = [query.afterSeq ?? 0, query.limit ?? null];
    let byTask = "";
    if (query.taskId !== undefined) {
      params.push(String(query.taskId));
      byTask = " AND task_id = $3";
    }
    return this.#read(async (c) => {
      const r = await c.query<EventRow>(
        `SELECT seq, type, task_id, at, data FROM ${this.#t("events")}
         WHERE seq > $1${byTask} ORDER BY seq LIMIT $2`,
        params,
      );
      return r.rows.map(eventFromRow);
    });
  }

  async recordUsage(entry: UsageEntry): Promise<void> {
    if (!entry || !Number.isFinite(entry.at) || typeof entry.usage !== "object") {
      throw new FlotillaError("VALIDATION", "recordUsage: an entry needs `at` and `usage`");
    }
    const values = [
      entry.at,
      entry.taskId ?? null,
      entry.workerId ?? null,
      entry.provider ?? null,
      entry.model ?? null,
      entry.tenant ?? null,
      entry.apiKey ?? null,
      toJson(entry.usage, "recordUsage: usage"),
    ];
    await this.#write(async (c) => {
      // Lines take turns (a transaction-scoped advisory lock before the line gets its number),
      // so numbers grow in commit order and a store following the ledger misses none.
      await c.query({
        name: `${this.schema}:record_usage`,
        text: `WITH l AS MATERIALIZED (SELECT pg_advisory_xact_lock(${LOCK_NAMESPACE}, hashtext($9)))
          INSERT INTO ${this.#t("usage")} (at, task_id, worker_id, provider, model, tenant,
          api_key, usage, origin) SELECT $1, $2, $3, $4, $5, $6, $7, $8, $10 FROM l`,
        values: [...values, `${this.schema}:usage`, this.#origin],
      });
    }, true);
    if (this.#announce) this.#announceNew(USAGE_TOPIC);
  }

  async listUsage(query: { since?: number; until?: number } = {}): Promise<UsageEntry[]> {
    return this.#read(async (c) => {
      const r = await c.query(
        `SELECT * FROM ${this.#t("usage")} WHERE at >= $1 AND at < $2 ORDER BY at, id`,
        [query.since ?? Number.MIN_SAFE_INTEGER, query.until ?? Number.MAX_SAFE_INTEGER],
      );
      return r.rows.map(usageFromRow);
    });
  }

  // ---------------------------------------------------------------- retention

  async deleteFinished(options: DeleteFinishedOptions): Promise<number> {
    checkRetention(options);
    const now = this.#clock.now();
    const t = this.#t;
    return this.#write(async (c) => {
      const cap = options.limit ?? null;
      const picked = new Map<string, { finishedAt: number; seq: number }>();
      const pick = (rows: Array<{ id: string; finished_at: number; seq: number }>) => {
        for (const r of rows) picked.set(r.id, { finishedAt: Number(r.finished_at), seq: r.seq });
      };
      // Oldest first and at most `limit` at a time, on the finished-at index.
      if (options.olderThan !== undefined) {
        pick(
          (
            await c.query(
              `SELECT id, finished_at, seq FROM ${t("tasks")}
               WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at, seq LIMIT $2`,
              [now - options.olderThan, cap],
            )
          ).rows,
        );
      }
      if (options.keep !== undefined) {
        const finished = Number(
          (
            await c.query<{ n: number }>(
              `SELECT count(*) AS n FROM ${t("tasks")} WHERE finished_at IS NOT NULL`,
            )
          ).rows[0]!.n,
        );
        const over = finished - options.keep;
        if (over > 0) {
          pick(
            (
              await c.query(
                `SELECT id, finished_at, seq FROM ${t("tasks")}
                 WHERE finished_at IS NOT NULL ORDER BY finished_at, seq LIMIT $1`,
                [cap === null ? over : Math.min(over, cap)],
              )
            ).rows,
          );
        }
      }
      if (picked.size > 0) {
        // A finished task an unfinished one depends on stays: its output is still needed.
        const needed = await c.query<{ id: string }>(
          `SELECT DISTINCT d.depends_on AS id FROM ${t("dependencies")} d
           JOIN ${t("tasks")} u ON u.id = d.task_id
           WHERE u.finished_at IS NULL AND d.depends_on = ANY($1::text[])`,
          [[...picked.keys()]],
        );
        for (const r of needed.rows) picked.delete(r.id);
      }
      let doomed = [...picked.entries()];
      if (cap !== null && doomed.length > cap) {
        // Both criteria together may have picked up to twice the batch: keep the oldest.
        doomed.sort((a, b) => a[1].finishedAt - b[1].finishedAt || a[1].seq - b[1].seq);
        doomed = doomed.slice(0, cap);
      }
      const ids = doomed.map(([id]) => id);
      if (options.usageBefore !== undefined) {
        await c.query(`DELETE FROM ${t("usage")} WHERE at < $1`, [options.usageBefore]);
      }
      if (options.olderThan !== undefined) {
        await c.query(`DELETE FROM ${t("events")} WHERE task_id IS NULL AND at < $1`, [
          now - options.olderThan,
        ]);
      }
      if (ids.length === 0) return 0;
      await c.query(`DELETE FROM ${t("events")} WHERE task_id = ANY($1::text[])`, [ids]);
      await c.query(`DELETE FROM ${t("attempts")} WHERE task_id = ANY($1::text[])`, [ids]);
      await c.query(`DELETE FROM ${t("dependencies")} WHERE task_id = ANY($1::text[])`, [ids]);
      const removed = await c.query(`DELETE FROM ${t("tasks")} WHERE id = ANY($1::text[])`, [ids]);
      return removed.rowCount ?? 0;
    });
  }

  // ---------------------------------------------------------------- kv

  async kvGet<T = unknown>(collection: string, key: string): Promise<T | undefined> {
    checkKv(collection, key);
    return this.#read(async (c) => {
      const r = await c.query<{ value: string }>({
        name: `${this.schema}:kv_get`,
        text: `SELECT value FROM ${this.#t("kv")} WHERE collection = $1 AND key = $2`,
        values: [collection, key],
      });
      return r.rows[0] ? (JSON.parse(r.rows[0].value) as T) : undefined;
    });
  }

  async kvPut(collection: string, key: string, value: unknown): Promise<void> {
    checkKv(collection, key);
    if (value === undefined) {
      throw new FlotillaError("VALIDATION", `kvPut ${collection}/${key}: value is undefined`);
    }
    const text = toJson(value, `kvPut ${collection}/${key}`);
    await this.#write(async (c) => {
      await c.query({
        name: `${this.schema}:kv_put`,
        text: `INSERT INTO ${this.#t("kv")} (collection, key, value) VALUES ($1, $2, $3)
          ON CONFLICT (collection, key) DO UPDATE SET value = excluded.value`,
        values: [collection, key, text],
      });
    }, true);
  }

  async kvDelete(collection: string, key: string): Promise<boolean> {
    checkKv(collection, key);
    return this.#write(async (c) => {
      const r = await c.query(`DELETE FROM ${this.#t("kv")} WHERE collection = $1 AND key = $2`, [
        collection,
        key,
      ]);
      return (r.rowCount ?? 0) > 0;
    }, true);
  }

  async kvList<T = unknown>(collection: string): Promise<Array<{ key: string; value: T }>> {
    checkKv(collection);
    return this.#read(async (c) => {
      const r = await c.query<{ key: string; value: string }>(
        `SELECT key, value FROM ${this.#t("kv")} WHERE collection = $1 ORDER BY key`,
        [collection],
      );
      return r.rows.map((row) => ({ key: row.key, value: JSON.parse(row.value) as T }));
    });
  }
}

/** Several appends' columns as one append's, in order. */
function concatEvents(appends: EventColumns[]): EventColumns {
  if (appends.length === 1) return appends[0]!;
  return [
    appends.flatMap((a) => a[0]),
    appends.flatMap((a) => a[1]),
    appends.flatMap((a) => a[2]),
    appends.flatMap((a) => a[3]),
  ];
}

/** A unique violation as `CONFLICT` naming the task (from the key PostgreSQL reports). */
function conflictOf(err: unknown, writes: readonly PreparedWrite[]): unknown {
  const detail = String((err as { detail?: string })?.detail ?? "");
  const named = /=\((.*)\)/.exec(detail)?.[1];
  const write = writes.find((w) => w.row[0] === named || w.idempotencyKey === named) ?? writes[0]!;
  return conflictError(err, { id: write.row[0], idempotencyKey: write.idempotencyKey }) ?? err;
}
