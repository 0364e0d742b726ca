import type { TimerHandle } from "../clock.js";
import { FlotillaError } from "../errors.js";
import { toJsonSafe } from "../registry/json-safe.js";
import { snapshotRecord } from "../store/owned.js";
import type { StoredEvent, UsageEntry } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import { deferred } from "../util/deferred.js";
import type { EngineContext } from "./context.js";

/** A pending write of a task's record; `resolve` acknowledges it once stored. */
interface DirtyWrite {
  rec: TaskRecord;
  resolve: () => void;
  reject: (err: unknown) => void;
  promise: Promise<void>;
  failures: number;
  sanitized?: boolean;
}

/** History lines kept for a retry while the store refuses them (beyond: the oldest dropped). */
const MAX_REFUSED_EVENTS = 100_000;

/** First and longest wait before a refused task write is tried again. */
const WRITE_RETRY_MIN_MS = 50;
const WRITE_RETRY_MAX_MS = 5_000;

/**
 * Writes to the store, behind the engine: task records (changes of one task in one tick
 * share one write; a refused write is retried, never acknowledged until stored), the event
 * history (buffered per tick) and usage lines. `flush()` waits for all of it. @internal
 */
export class Persistence {
  readonly #ctx: EngineContext;
  readonly #pending = new Set<Promise<unknown>>();
  readonly #dirty = new Map<string, DirtyWrite>();
  /** Writes the store refused, waiting for the retry timer (by task id). */
  readonly #retrying = new Map<string, DirtyWrite>();
  /** Promises of task writes refused at least once (flush does not wait for them). */
  readonly #unacked = new Set<Promise<unknown>>();
  #retryTimer: TimerHandle | undefined;
  #retryDelayMs = WRITE_RETRY_MIN_MS;
  #dirtyFlushScheduled = false;
  #events: StoredEvent[] = [];
  #eventFlushScheduled = false;
  /** History lines the store refused, appended again on a timer (oldest first, bounded). */
  #refusedEvents: StoredEvent[] = [];
  #eventRetryTimer: TimerHandle | undefined;
  #eventRetryDelayMs = WRITE_RETRY_MIN_MS;
  /**
   * Versioned writes (several orchestrators on one store): the version of each task's last
   * stored write, which its next write expects, and that write while it is in flight (a
   * task's writes then go one after another).
   */
  readonly #versioned: boolean;
  readonly #stored = new WeakMap<TaskRecord, number>();
  readonly #inFlight = new WeakMap<TaskRecord, Promise<unknown>>();
  /**
   * Records that left this process (their partition was released or moved on): their
   * writes still waiting or refused are dropped, and none of them is settled any more — the
   * rest of their life here goes no further. Another record of the same id may be taken in
   * later (the partition comes back): its writes are its own.
   */
  readonly #gone = new WeakSet<TaskRecord>();
  /** What waits for a record to leave (see {@link orGone}). */
  readonly #leaving = new WeakMap<TaskRecord, { promise: Promise<void>; resolve: () => void }>();
  /** Told when a versioned write finds the task changed by another orchestrator. */
  onConflict: (rec: TaskRecord) => void = () => {};

  constructor(ctx: EngineContext, options: { versioned?: boolean } = {}) {
    this.#ctx = ctx;
    this.#versioned = options.versioned ?? false;
  }

  /** Inserts new records (all or none); rejects with the store's error as `STORE_ERROR`. */
  async insert(records: TaskRecord[]): Promise<void> {
    const { owned, store } = this.#ctx;
    try {
      if (owned) await owned.insertTasks(records.map(snapshotRecord));
      else await store.insertTasks(records);
    } catch (err) {
      throw err instanceof FlotillaError ? err : FlotillaError.from(err, "STORE_ERROR");
    }
    if (this.#versioned) for (const rec of records) this.#stored.set(rec, rec.version);
  }

  /**
   * With versioned writes: whether the store holds a version of `rec` this process did not
   * write (another orchestrator changed it), judged only when no write of it is pending.
   */
  changedElsewhere(rec: TaskRecord, storedVersion: number): boolean {
    if (!this.#versioned || this.busy(rec)) return false;
    const mine = this.#stored.get(rec);
    if (mine === undefined) return false;
    // This process's writes only raise the version: a lower one than its last stored write
    // is a read older than them. Higher: written by another. Between them (nothing pending,
    // yet the record is ahead of the store): a change of it was lost, the store's state
    // is the one to go on from.
    return storedVersion > mine || (storedVersion === mine && rec.version > mine);
  }

  /**
   * `p` (a change of `rec` being stored), or `undefined` once `rec` leaves this process
   * first: a change of a record let go is never settled, and whatever waits for it in bulk
   * (taking partitions in, handing them over, `flush`) must not wait for ever.
   */
  orGone<T>(rec: TaskRecord, p: Promise<T>): Promise<T | undefined> {
    if (this.#gone.has(rec)) return Promise.resolve(undefined);
    let leaving = this.#leaving.get(rec);
    if (!leaving) {
      const d = deferred<void>();
      leaving = { promise: d.promise, resolve: d.resolve };
      this.#leaving.set(rec, leaving);
    }
    return Promise.race([p, leaving.promise.then(() => undefined)]);
  }

  /** Whether a write of `rec` is waiting, in flight or refused for a retry. */
  busy(rec: TaskRecord): boolean {
    return (
      this.#dirty.get(rec.id)?.rec === rec ||
      this.#retrying.get(rec.id)?.rec === rec ||
      this.#inFlight.has(rec)
    );
  }

  /**
   * `rec` left this process (released, or let go after another orchestrator changed it):
   * its writes not yet stored are dropped without being settled, and a write of it still
   * in flight settles nothing either. A record taken in later under the same id (its
   * partition comes back) is written on its own, from what the store then holds.
   */
  forget(rec: TaskRecord): void {
    this.#gone.add(rec);
    this.#leaving.get(rec)?.resolve();
    for (const map of [this.#dirty, this.#retrying]) {
      const w = map.get(rec.id);
      if (w?.rec !== rec) continue;
      map.delete(rec.id);
      this.#pending.delete(w.promise);
      this.#unacked.delete(w.promise);
    }
  }

  /**
   * With versioned writes: whether the last change of `rec` was dropped unstored (the record
   * left this process before it could be written), so the store does not know it.
   */
  unstored(rec: TaskRecord): boolean {
    return this.#versioned && this.#gone.has(rec) && (this.#stored.get(rec) ?? -1) < rec.version;
  }

  /** A record as it is in the store now (inserted, or read to be taken in): its next write expects this version. */
  noteStored(rec: TaskRecord): void {
    if (this.#versioned) this.#stored.set(rec, rec.version);
  }

  /**
   * Writes a task's record. Changes of one task within the same tick share one write (the
   * latest state includes the earlier ones); every caller's promise resolves once it is stored.
   */
  save(rec: TaskRecord): Promise<void> {
    rec.version++;
    if (this.#gone.has(rec)) return new Promise<void>(() => {}); // left: settles nothing
    const pending = this.#dirty.get(rec.id);
    if (pending?.rec === rec) return pending.promise;
    // A waiting or refused write of an earlier record of this id (it left this process):
    // that record's life here is over; it must not be stored over this one.
    if (pending) this.forget(pending.rec);
    const stale = this.#retrying.get(rec.id);
    if (stale && stale.rec !== rec) this.forget(stale.rec);
    const d = deferred<void>();
    const w: DirtyWrite = {
      rec,
      resolve: d.resolve,
      reject: d.reject,
      promise: d.promise,
      failures: 0,
    };
    // A refused earlier write of this task is covered by this one (it holds the latest state).
    const refused = this.#retrying.get(rec.id);
    if (refused) {
      this.#retrying.delete(rec.id);
      w.failures = refused.failures;
      d.promise.then(refused.resolve, refused.reject);
    }
    this.#dirty.set(rec.id, w);
    if (!this.#dirtyFlushScheduled) {
      this.#dirtyFlushScheduled = true;
      queueMicrotask(() => this.#flushDirty());
    }
    return this.track(d.promise);
  }

  /** Buffers one history line; the lines of one tick are appended together. */
  appendEvent(event: StoredEvent): void {
    this.#events.push(event);
    if (!this.#eventFlushScheduled) {
      this.#eventFlushScheduled = true;
      queueMicrotask(() => this.#flushEvents());
    }
  }

  /** Appends the buffered history lines now and waits for the store to take them. */
  flushHistory(): Promise<void> {
    return this.#flushEvents();
  }

  /** Records an attempt's usage in the ledger (not awaited by the engine; flushed at stop). */
  recordUsage(line: UsageEntry): void {
    this.track(this.#ctx.store.recordUsage(line));
  }

  /** Keeps `p` among the writes that `flush()` waits for. */
  track<T>(p: Promise<T>): Promise<T> {
    this.#pending.add(p);
    void p.then(
      () => this.#pending.delete(p),
      () => this.#pending.delete(p),
    );
    return p;
  }

  /** Waits for every write issued so far, except task writes the store keeps refusing. */
  async flush(): Promise<void> {
    for (;;) {
      await this.#flushEvents();
      const waiting = [...this.#pending].filter((p) => !this.#unacked.has(p));
      if (waiting.length === 0 && this.#events.length === 0) return;
      await Promise.allSettled(waiting);
    }
  }

  /** (Re)arms the retry of refused writes, e.g. on start. */
  armRetry(): void {
    const state = this.#ctx.state;
    if (this.#retryTimer !== undefined || this.#retrying.size === 0) return;
    if (state === "stopped" || state === "idle") return;
    const delay = this.#retryDelayMs;
    this.#retryDelayMs = Math.min(WRITE_RETRY_MAX_MS, delay * 2);
    this.#retryTimer = this.#ctx.timers.set(() => {
      this.#retryTimer = undefined;
      for (const [id, w] of this.#retrying) {
        const newer = this.#dirty.get(id);
        if (!newer) this.#dirty.set(id, w);
        else if (newer.rec === w.rec) newer.promise.then(w.resolve, w.reject);
        else this.forget(w.rec);
      }
      this.#retrying.clear();
      this.#flushDirty();
    }, delay);
  }

  /**
   * At stop: the task writes the store refused are tried once more at once (the store may
   * be back, and the retry timer may be seconds away), and waited for; those refused again
   * are given up (never acknowledged) and rejected.
   */
  async retryOnceThenGiveUp(): Promise<void> {
    await this.#retryEventsOnce();
    this.#ctx.timers.clear(this.#retryTimer);
    this.#retryTimer = undefined;
    if (this.#retrying.size > 0) {
      const last = [...this.#retrying.values()];
      this.#retrying.clear();
      for (const w of last) {
        const newer = this.#dirty.get(w.rec.id);
        if (!newer) this.#dirty.set(w.rec.id, w);
        else if (newer.rec === w.rec) newer.promise.then(w.resolve, w.reject);
      }
      this.#flushDirty();
      // Not running any more: a write refused again is rejected, not retried.
      await Promise.allSettled(last.map((w) => w.promise));
    }
    for (const w of this.#retrying.values()) {
      w.reject(
        new FlotillaError("STORE_ERROR", `task ${w.rec.id}: the store refused its last change`),
      );
    }
    this.#retrying.clear();
  }

  #flushDirty(): void {
    this.#dirtyFlushScheduled = false;
    if (this.#dirty.size === 0) return;
    const batch = [...this.#dirty.values()];
    this.#dirty.clear();
    for (const w of batch) this.#write(w);
  }

  /**
   * Writes a task's latest state expecting the version its last stored write carried, after
   * that write; a task changed meanwhile by another orchestrator of the store (its partition
   * moved on) is refused with `CONFLICT` and handed to `onConflict`.
   */
  #writeVersioned(w: DirtyWrite): Promise<unknown> {
    const rec = w.rec;
    const store = this.#ctx.store;
    const write = async () => {
      if (this.#gone.has(rec)) return; // left meanwhile: its state is not this process's to store
      const expected = this.#stored.get(rec);
      const snap = snapshotRecord(rec);
      if (!(await store.saveTask(snap, expected))) {
        throw new FlotillaError(
          "CONFLICT",
          `task ${rec.id} was changed in the store by another orchestrator (its partition moved on); this one lets it go`,
          { details: { taskId: rec.id, expectedVersion: expected } },
        );
      }
      this.#stored.set(rec, snap.version);
    };
    const before = this.#inFlight.get(rec);
    const p = before ? before.then(write, write) : write();
    this.#inFlight.set(rec, p);
    const done = () => {
      if (this.#inFlight.get(rec) === p) this.#inFlight.delete(rec);
    };
    p.then(done, done);
    return p;
  }

  /** Writes one task's latest state (a snapshot the store may keep as is). */
  #write(w: DirtyWrite): void {
    const { owned, store } = this.#ctx;
    let p: Promise<unknown>;
    try {
      p = this.#versioned
        ? this.#writeVersioned(w)
        : owned
          ? owned.saveTask(snapshotRecord(w.rec))
          : store.saveTask(w.rec);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      () => {
        this.#retryDelayMs = WRITE_RETRY_MIN_MS;
        if (this.#gone.has(w.rec)) this.#pending.delete(w.promise);
        else w.resolve();
      },
      (err) => this.#writeFailed(w, err),
    );
  }

  #writeFailed(w: DirtyWrite, err: unknown): void {
    const id = w.rec.id;
    if (this.#gone.has(w.rec)) {
      this.#pending.delete(w.promise);
      return;
    }
    if (this.#versioned && (err as { code?: unknown })?.code === "CONFLICT") {
      // Not this orchestrator's any more: nothing to retry, and nothing acknowledged. The
      // write is never settled, so whatever waited on it (the rest of the task's life here)
      // goes no further; stop() does not wait for it.
      this.#pending.delete(w.promise);
      this.#ctx.logger.warn({ taskId: id, err: String(err) }, "versioned write refused");
      this.onConflict(w.rec);
      return;
    }
    w.failures++;
    // Refused: not waited for by flush() from now on. (A write that took over a refused
    // one starts with its failure count, so it is marked on its own first failure.)
    if (!this.#unacked.has(w.promise)) {
      this.#unacked.add(w.promise);
      const forget = () => this.#unacked.delete(w.promise);
      w.promise.then(forget, forget);
    }
    if (w.failures === 1) {
      this.#ctx.internalError(
        err,
        `store failed to save task ${id}; retrying (the change is not acknowledged until stored)`,
      );
    }
    const newer = this.#dirty.get(id);
    if (newer?.rec === w.rec) {
      newer.promise.then(w.resolve, w.reject);
      return;
    }
    if (newer) {
      this.forget(w.rec); // a later record of this id took over
      return;
    }
    if (!this.#ctx.running) {
      // Stopping (or not started): give up without acknowledging; the store keeps its last state.
      w.reject(FlotillaError.from(err, "STORE_ERROR"));
      return;
    }
    if ((err as { code?: unknown })?.code === "VALIDATION" && !w.sanitized) {
      // Something JSON cannot hold slipped into the record: store a JSON-safe version.
      w.sanitized = true;
      const rec = w.rec as unknown as Record<string, unknown>;
      for (const key of ["progress", "result", "metadata", "payload"]) {
        if (rec[key] !== undefined) rec[key] = toJsonSafe(rec[key]);
      }
      this.#dirty.set(id, w);
      this.#flushDirty();
      return;
    }
    this.#retrying.set(id, w);
    this.armRetry();
  }

  #flushEvents(): Promise<void> {
    this.#eventFlushScheduled = false;
    if (this.#events.length === 0) return Promise.resolve();
    const batch = this.#events;
    this.#events = [];
    return this.track(this.#append(batch));
  }

  /**
   * Appends history lines; lines the store refuses (it is unreachable) are kept and appended
   * again on a timer with backoff — at most {@link MAX_REFUSED_EVENTS}, the oldest dropped
   * beyond — and once more at stop. Lines the store can never take (not JSON) are dropped.
   */
  async #append(batch: StoredEvent[]): Promise<void> {
    try {
      await this.#appendToStore(batch);
      this.#eventRetryDelayMs = WRITE_RETRY_MIN_MS;
    } catch (err) {
      if ((err as { code?: unknown })?.code === "VALIDATION" || !this.#ctx.running) {
        this.#ctx.internalError(err, "store failed to append events");
        return;
      }
      if (this.#refusedEvents.length === 0) {
        this.#ctx.internalError(
          err,
          "store failed to append events; retrying (history lines are kept until stored)",
        );
      }
      this.#refusedEvents = this.#refusedEvents.concat(batch); // (a spread of a long batch overflows)
      const over = this.#refusedEvents.length - MAX_REFUSED_EVENTS;
      if (over > 0) this.#refusedEvents.splice(0, over);
      this.#armEventRetry();
    }
  }

  #appendToStore(batch: readonly StoredEvent[]): Promise<void> {
    const { owned, store } = this.#ctx;
    return owned ? owned.appendEvents(batch) : store.appendEvents(batch);
  }

  #armEventRetry(): void {
    if (this.#eventRetryTimer !== undefined || this.#refusedEvents.length === 0) return;
    const delay = this.#eventRetryDelayMs;
    this.#eventRetryDelayMs = Math.min(WRITE_RETRY_MAX_MS, delay * 2);
    this.#eventRetryTimer = this.#ctx.timers.set(() => {
      this.#eventRetryTimer = undefined;
      const batch = this.#refusedEvents;
      this.#refusedEvents = [];
      void this.#append(batch);
    }, delay);
  }

  /** At stop: refused history lines are tried once more, then given up. */
  async #retryEventsOnce(): Promise<void> {
    this.#ctx.timers.clear(this.#eventRetryTimer);
    this.#eventRetryTimer = undefined;
    const batch = this.#refusedEvents;
    this.#refusedEvents = [];
    if (batch.length === 0) return;
    try {
      await this.#appendToStore(batch);
    } catch (err) {
      this.#ctx.internalError(err, `store failed to append ${batch.length} history lines; dropped`);
    }
  }
}
