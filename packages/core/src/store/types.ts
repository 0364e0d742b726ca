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
  listEvents(query?: { taskId?: string; afterSeq?: number; limit?: number }): Promise<StoredEvent[]>;
  recordUsage(entry: UsageEntry): Promise<void>;
  listUsage(query?: { since?: number; until?: number }): Promise<UsageEntry[]>;
  /** Deletes finished tasks (and their events) older than `olderThan` and/or beyond the newest `keep`. Returns how many. */
  deleteFinished(options: { olderThan?: number; keep?: number }): Promise<number>;
  /** A small durable key-value space for adapters (nodes, API keys, files, logs), by collection. */
  kvGet<T = unknown>(collection: string, key: string): Promise<T | undefined>;
  kvPut(collection: string, key: string, value: unknown): Promise<void>;
  kvDelete(collection: string, key: string): Promise<boolean>;
  kvList<T = unknown>(collection: string): Promise<Array<{ key: string; value: T }>>;
}
