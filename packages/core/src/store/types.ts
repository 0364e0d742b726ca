import type { SerializedError } from "../errors.js";
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

/** A persisted event (the append-only history). */
export interface StoredEvent {
  /** Assigned by the store, increasing. */
  seq?: number;
  type: string;
  taskId?: string;
  at: number;
  data: unknown;
}

/** One usage/cost ledger line. */
export interface UsageEntry {
  at: number;
  taskId?: string;
  workerId?: string;
  provider?: string;
  model?: string;
  tenant?: string;
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

/**
 * Where task state lives. `MemoryStore` is the library default; `SqliteStore`
 * (`@flotilla/core/sqlite`) is durable. Every method that writes resolves only once the
 * write is durable for that store, so the orchestrator acknowledges nothing it could lose.
 * `@flotilla/testing` has a conformance suite a new store runs first.
 */
export interface Store {
  /** Opens the store (migrations, checks). Rejects with a clear message on a bad file. */
  open(): Promise<void>;
  close(): Promise<void>;
  /** Inserts new tasks atomically: all or none. Rejects with `CONFLICT` on a duplicate id. */
  insertTasks(tasks: readonly TaskRecord[]): Promise<void>;
  /**
   * Saves a task. With `expectedVersion`, saves only if the stored version equals it
   * (compare-and-set) and resolves `false` otherwise.
   */
  saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean>;
  getTask(id: string): Promise<TaskRecord | undefined>;
  getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined>;
  listTasks(query?: TaskQuery): Promise<TaskRecord[]>;
  countTasks(query?: TaskQuery): Promise<number>;
  /** Every task not in a terminal status, in submission order (for recovery). */
  loadUnfinished(): Promise<TaskRecord[]>;
  appendEvents(events: readonly StoredEvent[]): Promise<void>;
  listEvents(query?: {
    taskId?: string;
    afterSeq?: number;
    limit?: number;
  }): Promise<StoredEvent[]>;
  recordUsage(entry: UsageEntry): Promise<void>;
  listUsage(query?: { since?: number; until?: number }): Promise<UsageEntry[]>;
  /**
   * Deletes finished tasks (and their events and attempts): those that finished more than
   * `olderThan` ms ago (by the store's clock), and those beyond the newest `keep` finished
   * ones. Never an unfinished task, nor a finished one an unfinished task depends on.
   * With `olderThan`, events not tied to a task (worker and node events) older than that
   * go too. Returns how many tasks were deleted.
   */
  deleteFinished(options: { olderThan?: number; keep?: number }): Promise<number>;
  /** A small durable key-value space for adapters (nodes, API keys, files, logs), by collection. */
  kvGet<T = unknown>(collection: string, key: string): Promise<T | undefined>;
  kvPut(collection: string, key: string, value: unknown): Promise<void>;
  kvDelete(collection: string, key: string): Promise<boolean>;
  kvList<T = unknown>(collection: string): Promise<Array<{ key: string; value: T }>>;
  /** Every attempt of a task, oldest first (optional: stores that keep attempt history). */
  listAttempts?(taskId: string): Promise<AttemptRecord[]>;
}
