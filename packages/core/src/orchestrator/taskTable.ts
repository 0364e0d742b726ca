import { TASK_STATUSES, type TaskStatus } from "../task/schema.js";
import type { TaskResult } from "../task/types.js";
import type { Attempt } from "./attempt.js";
import { settleResult, type TaskHandle, type TaskState } from "./handle.js";

/** Live state of one task in this process. @internal */
export interface Live extends TaskState {
  attempt?: Attempt;
  firstQueuedAt?: number;
  startedAt?: number;
  /** The kind of the last `task:waiting` emitted since it last started (no repeats). */
  waitingKind?: string;
  /**
   * Claimed here by a remote holder although another orchestrator of the store holds its
   * partition: this one serves the attempt's lease calls, and lets the task go once the
   * attempt has settled.
   */
  foreign?: boolean;
}

/**
 * The one holder of live task state in this process: unfinished tasks, a bounded cache of
 * recently finished ones, idempotency reservations and counts by status. Nothing else in
 * the engine keeps a task map; the store is the durable log behind it. @internal
 */
export class TaskTable {
  readonly #live = new Map<string, Live>();
  readonly #finished = new Map<string, Live>();
  readonly #ring: string[] = [];
  #head = 0;
  readonly #cacheSize: number;
  readonly #idem = new Map<string, Promise<TaskHandle>>();
  readonly #counts = new Map<TaskStatus, number>();

  constructor(finishedCacheSize: number) {
    this.#cacheSize = finishedCacheSize;
    for (const s of TASK_STATUSES) this.#counts.set(s, 0);
  }

  /** An unfinished task. */
  live(id: string): Live | undefined {
    return this.#live.get(id);
  }

  /** An unfinished task, or a finished one still in the cache. */
  known(id: string): Live | undefined {
    return this.#live.get(id) ?? this.#finished.get(id);
  }

  /** A finished task still in the cache. */
  finished(id: string): Live | undefined {
    return this.#finished.get(id);
  }

  /** Unfinished tasks. */
  lives(): IterableIterator<Live> {
    return this.#live.values();
  }

  /** Adds a task (new or recovered) under its current status. */
  add(live: Live): void {
    this.#live.set(live.rec.id, live);
    this.count(undefined, live.rec.status);
  }

  /**
   * The task has reached a terminal status: it leaves the live map for the finished cache,
   * its idempotency key is released, its handles get `result` and its progress streams end.
   */
  finish(live: Live, result: TaskResult): void {
    live.finished = true;
    const rec = live.rec;
    this.#live.delete(rec.id);
    if (rec.idempotencyKey !== undefined) this.#idem.delete(rec.idempotencyKey);
    this.#remember(live);
    settleResult(live, result);
    if (live.subscribers) {
      for (const ch of live.subscribers) ch.close();
      live.subscribers.clear();
    }
  }

  /**
   * The task is no longer this process's to run (its partition went to another
   * orchestrator of the store): it leaves the live map unfinished, uncounted, its
   * idempotency key released. Its handles are kept by whoever holds them.
   */
  drop(live: Live): void {
    const rec = live.rec;
    if (this.#live.get(rec.id) !== live) return;
    this.#live.delete(rec.id);
    this.#counts.set(rec.status, (this.#counts.get(rec.status) ?? 1) - 1);
    if (rec.idempotencyKey !== undefined) this.#idem.delete(rec.idempotencyKey);
  }

  /** Moves one task's count from `from` (none for a new task) to `to`. */
  count(from: TaskStatus | undefined, to: TaskStatus): void {
    if (from !== undefined) this.#counts.set(from, (this.#counts.get(from) ?? 1) - 1);
    this.#counts.set(to, (this.#counts.get(to) ?? 0) + 1);
  }

  /** Tasks known to this process, by status. */
  counts(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [s, n] of this.#counts) out[s] = n;
    return out;
  }

  /** The handle (or its promise, while a submit is storing it) of an idempotency key in use. */
  reservation(key: string): Promise<TaskHandle> | undefined {
    return this.#idem.get(key);
  }

  /** Reserves an idempotency key for a submission in progress (or a recovered task). */
  reserve(key: string, handle: Promise<TaskHandle>): void {
    this.#idem.set(key, handle);
  }

  /** Releases a key; with `only`, only when that reservation still holds it. */
  release(key: string, only?: Promise<TaskHandle>): void {
    if (only === undefined || this.#idem.get(key) === only) this.#idem.delete(key);
  }

  /**
   * Keeps the newest finished tasks in memory. Eviction order is a ring of ids: asking a
   * Map for its oldest key walks the holes earlier deletions left, which made this O(cache).
   */
  #remember(live: Live): void {
    const size = this.#cacheSize;
    if (size === 0) return;
    const id = live.rec.id;
    this.#finished.set(id, live);
    if (!Number.isFinite(size)) return;
    const ring = this.#ring;
    if (ring.length < size) {
      ring.push(id);
      return;
    }
    const oldest = ring[this.#head]!;
    ring[this.#head] = id;
    this.#head = (this.#head + 1) % size;
    if (oldest !== id) this.#finished.delete(oldest);
  }
}
