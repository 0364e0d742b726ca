import type { SerializedError } from "../errors.js";
import type { ProgressEvent } from "../task/events.js";
import type { TaskStatus, Usage } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";

/** A query over stored tasks. */
export interface TaskQuery {
  status?: TaskStatus | TaskStatus[];
  type?: string;
  tenant?: string;
  workerId?: string;
  /** Newest first when true. @default true */
  newestFirst?: boolean;
  limit?: number;
  offset?: number;
}

/** What {@link Store.loadUnfinished} may narrow its read to. */
export interface UnfinishedQuery {
  /** Only tasks of these partitions (and any record without a `partition`). */
  partitions?: readonly number[];
}

/** A persisted event (the append-only history). */
export interface StoredEvent {
  /** Assigned by the store, increasing. */
  seq?: number;
  type: string;
  taskId?: string;
  at: number;
  data: unknown;
}

/** A subscription of {@link EventFeed.followEvents}. */
export interface EventFollow {
  /**
   * Resolves once the subscription's starting point is fixed: every event committed after
   * it is delivered. Read the history after this to miss nothing in between.
   */
  readonly ready: Promise<void>;
  /** Stops delivering to this subscription. */
  close(): void;
}

/**
 * The events other processes sharing a store append, delivered as they are committed: how
 * a server learns what happened to tasks run by another (for its WebSocket and SSE clients).
 * `PostgresStore` implements it.
 *
 * @example
 * ```ts
 * import { PostgresStore } from "@flotilla/store-postgres";
 *
 * const shared = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
 * await shared.open();
 * const follow = shared.followEvents((events) => {
 *   for (const e of events) console.log(e.seq, e.type, e.taskId);
 * });
 * await follow.ready;
 * // later
 * follow.close();
 * ```
 */
export interface EventFeed {
  /**
   * Calls `listener` with the events appended by other processes from now on, in commit
   * (and `seq`) order, in runs, without the ones this process appended.
   */
  followEvents(listener: (events: readonly StoredEvent[]) => void): EventFollow;
  /**
   * Calls `listener` with the progress reports (streamed tokens, samples) of one task while
   * another process runs it and relays them; best effort. Optional. Returns a remover.
   */
  watchProgress?(taskId: string, listener: (reports: readonly ProgressEvent[]) => void): () => void;
}

/** What {@link Store.deleteFinished} removes. */
export interface DeleteFinishedOptions {
  /** Finished tasks that finished more than this many ms ago. */
  olderThan?: number;
  /** Keep at most this many finished tasks (the newest). */
  keep?: number;
  /** Remove at most this many tasks in this call, oldest first (small batches keep the store responsive). */
  limit?: number;
  /** Also remove usage lines recorded before this time (ms since epoch). */
  usageBefore?: number;
}

/** One usage/cost ledger line. */
export interface UsageEntry {
  at: number;
  taskId?: string;
  workerId?: string;
  provider?: string;
  model?: string;
  tenant?: string;
  /** The API key (its id) that submitted the task. */
  apiKey?: string;
  usage: Usage;
}

/**
 * One attempt of a task as the store saw it (derived from the saved task records: the
 * worker or lease holder, when it started, how it ended).
 */
export interface AttemptRecord {
  taskId: string;
  /** 1 for the first attempt. */
  attempt: number;
  /** The task's status when this attempt was last saved. */
  status: TaskStatus;
  workerId?: string;
  leaseId?: string;
  startedAt?: number;
  finishedAt?: number;
  error?: SerializedError;
  updatedAt: number;
}

/** What {@link Store.claimTask} claims for, and how long. */
export interface StoreClaim {
  /** Who takes the task (a worker id, a node id, an instance id). */
  holder: string;
  /** The new lease's id. */
  leaseId: string;
  /** The lease's length from the store's time, ms. */
  leaseMs: number;
  /** Only tasks of these types. @default every type */
  taskTypes?: readonly string[];
}

/**
 * Where task state lives. `MemoryStore` is the library default; `SqliteStore`
 * (`@flotilla/core/sqlite`) is durable. Every method that writes resolves only once the
 * write is durable for that store, so the orchestrator acknowledges nothing it could lose.
 * `@flotilla/testing` has a conformance suite a new store runs first.
 */
export interface Store {
  /**
   * Opens the store (migrations, checks). Rejects with a clear message on a bad file.
   *
   * @example
   * ```ts
   * const store = new MemoryStore();
   * await store.open();
   * ```
   */
  open(): Promise<void>;
  /**
   * Closes the store; pending writes are durable once it resolves. Idempotent.
   *
   * @example
   * ```ts
   * await store.close();
   * ```
   */
  close(): Promise<void>;
  /**
   * Inserts new tasks atomically: all or none. Rejects with `CONFLICT` on a duplicate id.
   *
   * @example
   * ```ts
   * await store.insertTasks([taskA, taskB]); // both or neither
   * ```
   */
  insertTasks(tasks: readonly TaskRecord[]): Promise<void>;
  /**
   * Saves a task. With `expectedVersion`, saves only if the stored version equals it
   * (compare-and-set) and resolves `false` otherwise.
   *
   * @example
   * ```ts
   * const saved = await store.saveTask({ ...task, status: "running", version: task.version + 1 }, task.version);
   * if (!saved) console.log("someone else changed it first");
   * ```
   */
  saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean>;
  /**
   * Atomically claims the best ready task: the highest priority, then the earliest
   * submitted, among `queued` tasks that are due (no `notBefore` after the store's time) of
   * `taskTypes`. The task is saved `leased` to `holder` under a new lease from the store's
   * time (attempt + 1, version + 1) and returned; `undefined` when there is none. Two
   * claims, from any number of processes sharing the store, never get the same task.
   * (One orchestrator alone schedules from memory; this is the seam for several sharing a
   * database.)
   *
   * @example
   * ```ts
   * const task = await store.claimTask({ holder: "node-7", leaseId: "l-1", leaseMs: 60_000 });
   * ```
   */
  claimTask(claim: StoreClaim): Promise<TaskRecord | undefined>;
  /**
   * The store's time, ms since the epoch: what leases are measured against when several
   * processes share the store (a database server's clock, not each process's own).
   *
   * @example
   * ```ts
   * const expired = (task.lease?.expiresAt ?? 0) <= (await store.now());
   * ```
   */
  now(): Promise<number>;
  /**
   * The task with this id, or `undefined`.
   *
   * @example
   * ```ts
   * const task = await store.getTask("t1");
   * console.log(task?.status);
   * ```
   */
  getTask(id: string): Promise<TaskRecord | undefined>;
  /**
   * The task submitted with this idempotency key, or `undefined`.
   *
   * @example
   * ```ts
   * const earlier = await store.getTaskByIdempotencyKey("order-42");
   * ```
   */
  getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined>;
  /**
   * Tasks matching `query` (newest first by default).
   *
   * @example
   * ```ts
   * const failed = await store.listTasks({ status: "failed", limit: 20 });
   * ```
   */
  listTasks(query?: TaskQuery): Promise<TaskRecord[]>;
  /**
   * How many tasks match `query`.
   *
   * @example
   * ```ts
   * const active = await store.countTasks({ status: ["queued", "leased", "running"] });
   * ```
   */
  countTasks(query?: TaskQuery): Promise<number>;
  /**
   * Every task not in a terminal status, in submission order (for recovery). With
   * `partitions`, only those of these partitions are needed (a record's `partition`): a
   * store may return more (records without a partition always), never fewer, and the caller
   * keeps what it asked for.
   *
   * @example
   * ```ts
   * for (const task of await store.loadUnfinished()) console.log(task.id, task.status);
   * const some = await store.loadUnfinished({ partitions: [3, 17] });
   * ```
   */
  loadUnfinished(query?: UnfinishedQuery): Promise<TaskRecord[]>;
  /**
   * Appends events to the history; the store assigns each its `seq`.
   *
   * @example
   * ```ts
   * await store.appendEvents([{ type: "task:transition", taskId: "t1", at: Date.now(), data: { to: "running" } }]);
   * ```
   */
  appendEvents(events: readonly StoredEvent[]): Promise<void>;
  /**
   * Stored events in `seq` order, optionally of one task and after a `seq` (for resuming a stream).
   *
   * @example
   * ```ts
   * const events = await store.listEvents({ taskId: "t1", afterSeq: 0, limit: 100 });
   * ```
   */
  listEvents(query?: {
    taskId?: string;
    afterSeq?: number;
    limit?: number;
  }): Promise<StoredEvent[]>;
  /**
   * Appends a line to the usage/cost ledger.
   *
   * @example
   * ```ts
   * await store.recordUsage({ at: Date.now(), taskId: "t1", model: "gpt-4o-mini", usage: { inputTokens: 120, outputTokens: 40, costUsd: 0.0001 } });
   * ```
   */
  recordUsage(entry: UsageEntry): Promise<void>;
  /**
   * Ledger lines with `since <= at < until` (both optional), oldest first.
   *
   * @example
   * ```ts
   * const today = await store.listUsage({ since: Date.now() - 86_400_000 });
   * ```
   */
  listUsage(query?: { since?: number; until?: number }): Promise<UsageEntry[]>;
  /**
   * The usage ledger summed per time bucket and per worker, provider, model, tenant and API
   * key (optional: stores that can; restarts then read older usage rolled up). Each line is
   * at its group's latest time, with `requests` = lines summed.
   *
   * @example
   * ```ts
   * const lines = await store.listUsageRollup?.({ since: Date.now() - 32 * 86_400_000 });
   * ```
   */
  listUsageRollup?(query?: { since?: number; until?: number }): Promise<UsageEntry[]>;
  /**
   * Sums the usage lines recorded before `before` into groups and deletes the lines
   * (optional: stores that keep a roll-up). Resolves how many lines were summed.
   *
   * @example
   * ```ts
   * await store.rollUpUsage?.(Date.now() - 2 * 3_600_000);
   * ```
   */
  rollUpUsage?(before: number): Promise<number>;
  /**
   * Deletes finished tasks (and their events and attempts): those that finished more than
   * `olderThan` ms ago (by the store's clock), and those beyond the newest `keep` finished
   * ones. Never an unfinished task, nor a finished one an unfinished task depends on.
   * With `olderThan`, events not tied to a task (worker and node events) older than that
   * go too. Returns how many tasks were deleted.
   *
   * @example
   * ```ts
   * const deleted = await store.deleteFinished({ olderThan: 7 * 86_400_000, keep: 10_000 });
   * ```
   */
  deleteFinished(options: DeleteFinishedOptions): Promise<number>;
  /**
   * Gives space freed by deletions back to the file system, a little at a time (optional:
   * stores that can). Resolves how many pages were released.
   *
   * @example
   * ```ts
   * await store.compact?.();
   * ```
   */
  compact?(): Promise<number>;
  /**
   * A small durable key-value space for adapters (nodes, API keys, files, logs), by collection.
   *
   * @example
   * ```ts
   * await store.kvPut("nodes", "gpu-1", { status: "online" });
   * const node = await store.kvGet<{ status: string }>("nodes", "gpu-1");
   * ```
   */
  kvGet<T = unknown>(collection: string, key: string): Promise<T | undefined>;
  /**
   * Stores a JSON-serialisable value under `collection`/`key`, replacing any previous one.
   *
   * @example
   * ```ts
   * await store.kvPut("nodes", "gpu-1", { status: "online" });
   * ```
   */
  kvPut(collection: string, key: string, value: unknown): Promise<void>;
  /**
   * Deletes a key; resolves whether it existed.
   *
   * @example
   * ```ts
   * const existed = await store.kvDelete("nodes", "gpu-1");
   * ```
   */
  kvDelete(collection: string, key: string): Promise<boolean>;
  /**
   * Every key and value of a collection.
   *
   * @example
   * ```ts
   * for (const { key, value } of await store.kvList("nodes")) console.log(key, value);
   * ```
   */
  kvList<T = unknown>(collection: string): Promise<Array<{ key: string; value: T }>>;
  /** Every attempt of a task, oldest first (optional: stores that keep attempt history). */
  listAttempts?(taskId: string): Promise<AttemptRecord[]>;
}
