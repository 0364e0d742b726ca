import { type Clock, systemClock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { TaskRecord } from "../task/types.js";
import {
  attemptOf,
  checkClaim,
  checkEventQuery,
  checkKv,
  checkPaging,
  checkRecord,
  checkRetention,
  claimable,
  claimedRecord,
  isTerminal,
  jsonCopy,
  partitionFilter,
  queryStatuses,
  selectForRetention,
} from "./common.js";
import { OWNED_WRITES, type OwnedWrites } from "./owned.js";
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

/** Options of {@link MemoryStore}. */
export interface MemoryStoreOptions {
  /** Time source for retention ages. @default systemClock */
  clock?: Clock;
  /**
   * How many of the newest events (`task:*` transition lines and others) `listEvents`
   * keeps; older ones are dropped, so a long-running process does not grow without bound.
   * Sequence numbers are never reused. `Infinity` keeps every event; `0` keeps none.
   * @default 10000
   */
  maxEvents?: number;
  /**
   * How many finished tasks (succeeded, failed, cancelled, skipped) are kept, with their
   * attempts and idempotency keys; the ones that finished longest ago are dropped first,
   * so a long-running process stays flat. Unfinished tasks are never dropped. `Infinity`
   * keeps every task (as a durable store does until `deleteFinished`).
   * @default 10000
   */
  maxFinishedTasks?: number;
  /**
   * Drops finished tasks once they finished this long ago (checked as tasks are written).
   * Unset keeps them up to `maxFinishedTasks` whatever their age.
   */
  finishedTaskMaxAgeMs?: number;
}

/** A finished task in finishing order; `n` tells a later finish of the same task apart. */
interface FinishedEntry {
  id: string;
  n: number;
  at: number;
}

const copy = <T>(value: T, where = "value"): T => jsonCopy(value, where);

/**
 * A `Store` that keeps everything in this process's memory: the library default. Fast and
 * dependency-free, but nothing survives a restart — use `SqliteStore`
 * (`@flotilla/core/sqlite`) when it must.
 *
 * Values are deep-copied (through JSON, like every store) on the way in and out, so a
 * caller mutating an object it passed in or got back never changes what is stored, and
 * what comes back has the same shape `SqliteStore` would give. (The orchestrator's own
 * writes skip the copy on the way in: it hands over snapshots it never mutates again.)
 *
 * It is bounded, so an embedding process that runs for months stays flat: the newest
 * `maxEvents` events (default 10 000) and the `maxFinishedTasks` most recently finished
 * tasks (default 10 000, optionally also `finishedTaskMaxAgeMs`) are kept; unfinished
 * tasks are always kept. A dropped task is gone as it would be after `deleteFinished`: `get`
 * answers `undefined`, its idempotency key may be used again, and a new task cannot depend
 * on it.
 *
 * @example
 * ```ts
 * import { MemoryStore, Orchestrator } from "@flotilla/core";
 * const orchestrator = new Orchestrator({ store: new MemoryStore() });
 * ```
 */
export class MemoryStore implements Store {
  readonly #clock: Clock;
  /** Tasks in submission (`seq`) order while `#ordered`; re-sorted lazily otherwise. */
  #tasks = new Map<string, TaskRecord>();
  #ordered = true;
  #last: TaskRecord | undefined;
  readonly #byIdempotencyKey = new Map<string, string>();
  readonly #attempts = new Map<string, AttemptRecord[]>();
  #events: StoredEvent[] = [];
  #eventSeq = 0;
  #usage: UsageEntry[] = [];
  readonly #kv = new Map<string, Map<string, unknown>>();
  /** Index of the first event still listed (older ones are trimmed in chunks). */
  #eventStart = 0;
  readonly #maxEvents: number;
  readonly #maxFinished: number;
  readonly #finishedMaxAgeMs: number | undefined;
  /** Finished tasks in finishing order (from `#finishedHead`), and each one's latest entry. */
  #finishedOrder: FinishedEntry[] = [];
  #finishedHead = 0;
  readonly #finishedN = new Map<string, number>();
  #finishes = 0;
  #closed = false;

  constructor(options: MemoryStoreOptions = {}) {
    this.#clock = options.clock ?? systemClock;
    const max = options.maxEvents ?? 10_000;
    if (!(max >= 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `MemoryStore.maxEvents: expected a number >= 0, got ${String(max)}`,
      );
    }
    this.#maxEvents = max;
    const maxFinished = options.maxFinishedTasks ?? 10_000;
    if (!(maxFinished >= 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `MemoryStore.maxFinishedTasks: expected a number >= 0, got ${String(maxFinished)}`,
      );
    }
    this.#maxFinished = maxFinished;
    const age = options.finishedTaskMaxAgeMs;
    if (age !== undefined && !(age >= 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `MemoryStore.finishedTaskMaxAgeMs: expected a number >= 0, got ${String(age)}`,
      );
    }
    this.#finishedMaxAgeMs = age;
  }

  /**
   * @internal The orchestrator's no-copy write path (see `OWNED_WRITES`); absent when a
   * subclass or the instance replaces a write method, so that override is always called.
   */
  get [OWNED_WRITES](): OwnedWrites | undefined {
    const proto = MemoryStore.prototype;
    if (
      this.insertTasks !== proto.insertTasks ||
      this.saveTask !== proto.saveTask ||
      this.appendEvents !== proto.appendEvents
    ) {
      return undefined;
    }
    return this.#ownedWrites;
  }

  readonly #ownedWrites: OwnedWrites = {
    insertTasks: async (tasks) => {
      this.#check();
      this.#insert(tasks, false);
    },
    saveTask: async (task) => {
      this.#check();
      return this.#save(task, undefined, false);
    },
    appendEvents: async (events) => {
      this.#check();
      this.#append(events, false);
    },
  };

  /** Nothing to open: a new `MemoryStore` is usable at once. Reopens a closed one. */
  async open(): Promise<void> {
    this.#closed = false;
  }

  /** Marks the store closed (calls reject until `open()`); the data stays. */
  async close(): Promise<void> {
    this.#closed = true;
  }

  #check(): void {
    if (this.#closed) throw new FlotillaError("STORE_ERROR", "MemoryStore: the store is closed");
  }

  async insertTasks(tasks: readonly TaskRecord[]): Promise<void> {
    this.#check();
    this.#insert(tasks, true);
  }

  #insert(tasks: readonly TaskRecord[], copyIn: boolean): void {
    if (!Array.isArray(tasks)) {
      throw new FlotillaError("VALIDATION", "insertTasks: expected an array of task records");
    }
    const ids = new Set<string>();
    const keys = new Set<string>();
    for (const task of tasks) {
      checkRecord(task, "insertTasks");
      if (this.#tasks.has(task.id) || ids.has(task.id)) {
        throw new FlotillaError("CONFLICT", `task ${task.id} already exists`, {
          details: { id: task.id },
        });
      }
      ids.add(task.id);
      const key = task.idempotencyKey;
      if (key !== undefined) {
        if (this.#byIdempotencyKey.has(key) || keys.has(key)) {
          throw new FlotillaError("CONFLICT", `idempotency key "${key}" is already used`, {
            details: { idempotencyKey: key },
          });
        }
        keys.add(key);
      }
    }
    const copies = copyIn ? tasks.map((t) => copy(t, `insertTasks: task ${t.id}`)) : tasks;
    for (const task of copies) {
      this.#noteOrder(task);
      this.#tasks.set(task.id, task);
      if (task.idempotencyKey !== undefined)
        this.#byIdempotencyKey.set(task.idempotencyKey, task.id);
      this.#trackAttempt(task);
      if (isTerminal(task.status)) this.#noteFinished(task.id);
    }
    this.#dropOldFinished();
  }

  async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
    this.#check();
    return this.#save(task, expectedVersion, true);
  }

  #save(task: TaskRecord, expectedVersion: number | undefined, copyIn: boolean): boolean {
    checkRecord(task, "saveTask");
    const current = this.#tasks.get(task.id);
    if (expectedVersion !== undefined && current?.version !== expectedVersion) return false;
    const key = task.idempotencyKey;
    if (key !== undefined) {
      const owner = this.#byIdempotencyKey.get(key);
      if (owner !== undefined && owner !== task.id) {
        throw new FlotillaError("CONFLICT", `idempotency key "${key}" is already used`, {
          details: { idempotencyKey: key },
        });
      }
    }
    if (current?.idempotencyKey !== undefined && current.idempotencyKey !== key) {
      this.#byIdempotencyKey.delete(current.idempotencyKey);
    }
    const stored = copyIn ? copy(task, `saveTask: task ${task.id}`) : task;
    if (!current) this.#noteOrder(stored);
    else if (current.seq !== stored.seq) this.#ordered = false;
    this.#tasks.set(stored.id, stored);
    if (key !== undefined) this.#byIdempotencyKey.set(key, stored.id);
    this.#trackAttempt(stored);
    const finished = isTerminal(stored.status);
    if (finished && (!current || !isTerminal(current.status))) this.#noteFinished(stored.id);
    else if (!finished && this.#finishedN.has(stored.id)) this.#finishedN.delete(stored.id);
    this.#dropOldFinished();
    return true;
  }

  #noteFinished(id: string): void {
    const n = ++this.#finishes;
    this.#finishedN.set(id, n);
    this.#finishedOrder.push({ id, n, at: this.#clock.now() });
  }

  /**
   * Drops the finished tasks over `maxFinishedTasks` or `finishedTaskMaxAgeMs`, oldest
   * first (amortised O(1): entries of tasks that finished again later are skipped).
   */
  #dropOldFinished(): void {
    const maxAge = this.#finishedMaxAgeMs;
    // Entries of tasks deleted or finished again are skipped lazily; when they outnumber
    // the live ones, they are swept, so the list stays proportional to the tasks kept.
    if (this.#finishedOrder.length - this.#finishedHead > 2 * this.#finishedN.size + 1024) {
      this.#finishedOrder = this.#finishedOrder
        .slice(this.#finishedHead)
        .filter((e) => this.#finishedN.get(e.id) === e.n);
      this.#finishedHead = 0;
    }
    // Nothing over the bound: nothing to drop.
    if (maxAge === undefined && this.#finishedN.size <= this.#maxFinished) return;
    const order = this.#finishedOrder;
    const cutoff = maxAge === undefined ? undefined : this.#clock.now() - maxAge;
    while (this.#finishedHead < order.length) {
      const entry = order[this.#finishedHead]!;
      if (this.#finishedN.get(entry.id) !== entry.n) {
        this.#finishedHead++;
        continue;
      }
      const over = this.#finishedN.size > this.#maxFinished;
      if (!over && (cutoff === undefined || entry.at > cutoff)) break;
      this.#finishedHead++;
      this.#finishedN.delete(entry.id);
      this.#forget(entry.id);
    }
    if (this.#finishedHead >= 1024 && this.#finishedHead * 2 >= order.length) {
      this.#finishedOrder = order.slice(this.#finishedHead);
      this.#finishedHead = 0;
    }
  }

  /** Removes a task, its attempts and its idempotency key. */
  #forget(id: string): void {
    const task = this.#tasks.get(id);
    if (task?.idempotencyKey !== undefined) this.#byIdempotencyKey.delete(task.idempotencyKey);
    this.#tasks.delete(id);
    this.#attempts.delete(id);
  }

  #trackAttempt(task: TaskRecord): void {
    if (task.attempt < 1) return;
    let list = this.#attempts.get(task.id);
    if (!list) {
      list = [];
      this.#attempts.set(task.id, list);
    }
    const row = attemptOf(task);
    const last = list[list.length - 1];
    // Rows are copied on the way out, so the last one can be updated in place.
    if (last && last.attempt === row.attempt) Object.assign(last, row);
    else if (!last || last.attempt < row.attempt) list.push(row);
  }

  /** Claims the best due queued task (a scan: the engine schedules from memory, not from here). */
  async claimTask(claim: StoreClaim): Promise<TaskRecord | undefined> {
    this.#check();
    checkClaim(claim);
    const now = this.#clock.now();
    let best: TaskRecord | undefined;
    for (const t of this.#tasks.values()) {
      if (!claimable(t, claim, now)) continue;
      if (
        !best ||
        t.priority > best.priority ||
        (t.priority === best.priority && t.seq < best.seq)
      ) {
        best = t;
      }
    }
    if (!best) return undefined;
    const next = claimedRecord(best, claim, now);
    this.#save(next, best.version, false);
    return copy(next);
  }

  /** The store's time: its clock's. */
  async now(): Promise<number> {
    return this.#clock.now();
  }

  async getTask(id: string): Promise<TaskRecord | undefined> {
    this.#check();
    const task = this.#tasks.get(id);
    return task && copy(task);
  }

  async getTaskByIdempotencyKey(key: string): Promise<TaskRecord | undefined> {
    this.#check();
    const id = this.#byIdempotencyKey.get(key);
    const task = id === undefined ? undefined : this.#tasks.get(id);
    return task && copy(task);
  }

  /** Tasks usually arrive in `seq` order; one that does not makes the next read sort once. */
  #noteOrder(task: TaskRecord): void {
    if (this.#last && compareSeq(task, this.#last) <= 0) this.#ordered = false;
    else this.#last = task;
  }

  /** Every task in submission order (re-sorting the map only after out-of-order writes). */
  #inOrder(): TaskRecord[] {
    const all = [...this.#tasks.values()];
    if (this.#ordered) return all;
    all.sort(compareSeq);
    this.#tasks = new Map(all.map((t) => [t.id, t]));
    this.#ordered = true;
    this.#last = all[all.length - 1];
    return all;
  }

  #filter(query: TaskQuery | undefined): ((task: TaskRecord) => boolean) | undefined {
    checkPaging(query);
    const statuses = queryStatuses(query);
    const { type, tenant, workerId } = query ?? {};
    if (!statuses && type === undefined && tenant === undefined && workerId === undefined) {
      return undefined;
    }
    return (task) =>
      (!statuses || statuses.includes(task.status)) &&
      (type === undefined || task.type === type) &&
      (tenant === undefined || task.tenant === tenant) &&
      (workerId === undefined || task.workerId === workerId);
  }

  async listTasks(query?: TaskQuery): Promise<TaskRecord[]> {
    this.#check();
    const keep = this.#filter(query);
    const all = this.#inOrder();
    const newestFirst = query?.newestFirst ?? true;
    let skip = query?.offset ?? 0;
    const limit = query?.limit ?? Number.POSITIVE_INFINITY;
    const out: TaskRecord[] = [];
    for (let k = 0; k < all.length && out.length < limit; k++) {
      const task = all[newestFirst ? all.length - 1 - k : k]!;
      if (keep && !keep(task)) continue;
      if (skip > 0) skip--;
      else out.push(copy(task));
    }
    return out;
  }

  async countTasks(query?: TaskQuery): Promise<number> {
    this.#check();
    const keep = this.#filter(query);
    if (!keep) return this.#tasks.size;
    let n = 0;
    for (const task of this.#tasks.values()) if (keep(task)) n++;
    return n;
  }

  async loadUnfinished(query?: UnfinishedQuery): Promise<TaskRecord[]> {
    this.#check();
    const inQuery = partitionFilter(query);
    return this.#inOrder()
      .filter((t) => !isTerminal(t.status) && inQuery(t))
      .map((v) => copy(v));
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
    this.#check();
    return (this.#attempts.get(taskId) ?? []).map((v) => copy(v));
  }

  async appendEvents(events: readonly StoredEvent[]): Promise<void> {
    this.#check();
    this.#append(events, true);
  }

  #append(events: readonly StoredEvent[], copyIn: boolean): void {
    if (!Array.isArray(events)) {
      throw new FlotillaError("VALIDATION", "appendEvents: expected an array of events");
    }
    for (const event of events) {
      if (typeof event?.type !== "string" || !Number.isFinite(event.at)) {
        throw new FlotillaError("VALIDATION", "appendEvents: every event needs a type and `at`");
      }
    }
    const copies = copyIn ? events.map((e) => copy(e, `appendEvents: event ${e.type}`)) : events;
    for (const event of copies) {
      event.seq = ++this.#eventSeq;
      this.#events.push(event);
    }
    this.#trimEvents();
  }

  /** Keeps the newest `maxEvents`; the array is compacted once the dropped part is as large (amortised O(1)). */
  #trimEvents(): void {
    const events = this.#events;
    if (events.length - this.#eventStart <= this.#maxEvents) return;
    this.#eventStart = Math.max(0, events.length - this.#maxEvents);
    if (this.#eventStart >= 1024 && this.#eventStart >= events.length - this.#eventStart) {
      this.#events = events.slice(this.#eventStart);
      this.#eventStart = 0;
    }
  }

  async listEvents(
    query: { taskId?: string; afterSeq?: number; limit?: number } = {},
  ): Promise<StoredEvent[]> {
    this.#check();
    checkEventQuery(query);
    const out: StoredEvent[] = [];
    const after = query.afterSeq ?? 0;
    const limit = query.limit ?? Number.POSITIVE_INFINITY;
    const events = this.#events;
    for (let i = this.#eventStart; i < events.length; i++) {
      const event = events[i]!;
      if (out.length >= limit) break;
      if ((event.seq ?? 0) <= after) continue;
      if (query.taskId !== undefined && event.taskId !== query.taskId) continue;
      out.push(copy(event));
    }
    return out;
  }

  async recordUsage(entry: UsageEntry): Promise<void> {
    this.#check();
    if (!entry || !Number.isFinite(entry.at) || typeof entry.usage !== "object") {
      throw new FlotillaError("VALIDATION", "recordUsage: an entry needs `at` and `usage`");
    }
    this.#usage.push(copy(entry, "recordUsage: entry"));
  }

  async listUsage(query: { since?: number; until?: number } = {}): Promise<UsageEntry[]> {
    this.#check();
    return this.#usage
      .map((entry, i) => ({ entry, i }))
      .filter(
        ({ entry }) =>
          (query.since === undefined || entry.at >= query.since) &&
          (query.until === undefined || entry.at < query.until),
      )
      .sort((a, b) => a.entry.at - b.entry.at || a.i - b.i)
      .map(({ entry }) => copy(entry));
  }

  async deleteFinished(options: DeleteFinishedOptions): Promise<number> {
    this.#check();
    checkRetention(options);
    const now = this.#clock.now();
    const doomed = selectForRetention([...this.#tasks.values()], options, now);
    const cutoff = options.olderThan === undefined ? undefined : now - options.olderThan;
    this.#events = this.#events
      .slice(this.#eventStart)
      .filter((e) =>
        e.taskId === undefined ? cutoff === undefined || e.at >= cutoff : !doomed.has(e.taskId),
      );
    this.#eventStart = 0;
    if (options.usageBefore !== undefined) {
      const before = options.usageBefore;
      this.#usage = this.#usage.filter((u) => u.at >= before);
    }
    for (const id of doomed) {
      this.#finishedN.delete(id);
      this.#forget(id);
    }
    return doomed.size;
  }

  async kvGet<T = unknown>(collection: string, key: string): Promise<T | undefined> {
    this.#check();
    checkKv(collection, key);
    const map = this.#kv.get(collection);
    return map?.has(key) ? copy(map.get(key) as T) : undefined;
  }

  async kvPut(collection: string, key: string, value: unknown): Promise<void> {
    this.#check();
    checkKv(collection, key);
    if (value === undefined) {
      throw new FlotillaError("VALIDATION", `kvPut ${collection}/${key}: value is undefined`);
    }
    let map = this.#kv.get(collection);
    if (!map) {
      map = new Map();
      this.#kv.set(collection, map);
    }
    map.set(key, copy(value, `kvPut ${collection}/${key}`));
  }

  async kvDelete(collection: string, key: string): Promise<boolean> {
    this.#check();
    checkKv(collection, key);
    return this.#kv.get(collection)?.delete(key) ?? false;
  }

  async kvList<T = unknown>(collection: string): Promise<Array<{ key: string; value: T }>> {
    this.#check();
    checkKv(collection);
    const map = this.#kv.get(collection);
    if (!map) return [];
    return [...map.keys()].sort().map((key) => ({ key, value: copy(map.get(key) as T) }));
  }
}

function compareSeq(a: TaskRecord, b: TaskRecord): number {
  return a.seq - b.seq || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}
