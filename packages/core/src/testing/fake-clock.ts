import type { Clock, TimerHandle } from "../clock.js";

/** Options for {@link FakeClock}. */
export interface FakeClockOptions {
  /**
   * Starting time, ms since the epoch (or a `Date`).
   * @default 1_700_000_000_000 (a fixed instant, so runs are reproducible)
   */
  now?: number | Date;
  /**
   * Macrotask turns given to pending promise continuations before each timer fires and
   * after time has moved. One turn runs every queued microtask (however deeply chained);
   * raise it only for code that hops through real I/O callbacks between timers.
   * @default 1
   */
  flushTurns?: number;
}

/** Node's largest timer delay; longer ones fire after 1 ms. */
const MAX_DELAY = 2 ** 31 - 1;

class FakeTimer {
  constructor(
    readonly seq: number,
    readonly at: number,
    readonly fn: () => void,
  ) {}
  cancelled = false;
}

/** Timers run in time order; timers due at the same instant run in the order they were set. */
function before(a: FakeTimer, b: FakeTimer): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}

/**
 * A {@link Clock} whose time moves only when a test says so. Timers fire in time order
 * (ties in the order they were set), each at its own due time, and promise continuations
 * queued by one timer run before the next timer fires, so async code driven by timers
 * (a retry loop, a health monitor, a lease renewal) progresses as it would in real time.
 *
 * Timers live in a binary min-heap: setting or firing one is O(log n); a cleared timer is
 * dropped lazily when it reaches the top.
 *
 * @example
 * ```ts
 * import { FakeClock } from "@flotilla/core/testing";
 *
 * const clock = new FakeClock();
 * const registry = new WorkerRegistry({ clock, health: { intervalMs: 1000 } });
 * registry.start();
 * await clock.advance(1000); // the first health round has run and its checks have settled
 * registry.stop();
 * expect(clock.pendingTimers).toBe(0);
 * ```
 */
export class FakeClock implements Clock {
  #now: number;
  #seq = 0;
  #heap: FakeTimer[] = [];
  #live = 0;
  #flushTurns: number;
  #advancing = false;

  constructor(options: FakeClockOptions = {}) {
    const start = options.now ?? 1_700_000_000_000;
    this.#now = start instanceof Date ? start.getTime() : start;
    if (!Number.isFinite(this.#now)) throw new TypeError("FakeClock: now must be a finite number");
    this.#flushTurns = Math.max(0, Math.floor(options.flushTurns ?? 1));
  }

  /**
   * The fake current time, ms since the epoch.
   *
   * @example
   * ```ts
   * const t0 = clock.now();
   * await clock.advance(50);
   * clock.now() - t0; // 50
   * ```
   */
  now(): number {
    return this.#now;
  }

  /**
   * Schedules `fn` at `now() + ms`. A negative, `NaN` or missing delay means 0; a delay
   * above 2³¹−1 ms (`Infinity` included) means 1 ms, as in Node, so a test shows what such a
   * timer would really do.
   *
   * @example
   * ```ts
   * clock.setTimeout(() => console.log("later"), 500);
   * await clock.advance(500); // logs "later"
   * ```
   */
  setTimeout(fn: () => void, ms: number): TimerHandle {
    const delay = ms > MAX_DELAY ? 1 : Number.isNaN(ms) ? 0 : Math.max(ms, 0);
    const timer = new FakeTimer(this.#seq++, this.#now + delay, fn);
    this.#push(timer);
    this.#live++;
    return timer as unknown as TimerHandle;
  }

  /**
   * Cancels a timer; unknown, foreign or already-fired handles are ignored.
   *
   * @example
   * ```ts
   * const t = clock.setTimeout(() => {}, 100);
   * clock.clearTimeout(t);
   * clock.pendingTimers; // 0
   * ```
   */
  clearTimeout(handle: TimerHandle): void {
    if (!(handle instanceof FakeTimer) || handle.cancelled) return;
    handle.cancelled = true;
    this.#live--;
  }

  /**
   * Timers set and not yet fired or cleared.
   *
   * @example
   * ```ts
   * await orchestrator.stop();
   * expect(clock.pendingTimers).toBe(0);
   * ```
   */
  get pendingTimers(): number {
    return this.#live;
  }

  /**
   * Due time of the next timer, or `undefined` when none is pending.
   *
   * @example
   * ```ts
   * if (clock.nextTimerAt !== undefined) await clock.advanceTo(clock.nextTimerAt);
   * ```
   */
  get nextTimerAt(): number | undefined {
    this.#dropCancelled();
    return this.#heap[0]?.at;
  }

  /**
   * Moves time forward by `ms`, firing every timer that falls due on the way (including
   * timers set by those timers) at its own due time, and letting promise continuations run
   * between timers and at the end.
   *
   * @example
   * ```ts
   * const done = sleepThenWork(clock); // awaits a 1 s timer, then another 1 s timer
   * await clock.advance(2000);
   * await done;
   * ```
   */
  async advance(ms: number): Promise<void> {
    if (!Number.isFinite(ms) || ms < 0) {
      throw new RangeError(`FakeClock.advance: ms must be a finite number >= 0, got ${ms}`);
    }
    await this.advanceTo(this.#now + ms);
  }

  /**
   * Moves time forward to `time` (ms since the epoch); a time in the past only flushes
   * pending continuations and fires timers already due.
   *
   * @example
   * ```ts
   * await clock.advanceTo(clock.now() + 60_000);
   * ```
   */
  async advanceTo(time: number | Date): Promise<void> {
    const target = time instanceof Date ? time.getTime() : time;
    if (!Number.isFinite(target)) throw new RangeError("FakeClock.advanceTo: time must be finite");
    await this.#exclusive("advance", async () => {
      await this.flush();
      for (;;) {
        const next = this.#peek();
        if (next === undefined || next.at > target) break;
        this.#fire(next);
        await this.flush();
      }
      if (target > this.#now) this.#now = target;
      await this.flush();
    });
  }

  /** Time moves in one place at a time: a second concurrent advance is a missing `await`. */
  async #exclusive<T>(what: string, body: () => Promise<T>): Promise<T> {
    if (this.#advancing) {
      throw new Error(
        `FakeClock.${what}: time is already being advanced; await the previous advance/runUntilIdle first`,
      );
    }
    this.#advancing = true;
    try {
      return await body();
    } finally {
      this.#advancing = false;
    }
  }

  /**
   * Fires pending timers one after another, jumping time to each, until none is left.
   * Throws when more than `limit` timers fire, which catches code that re-arms a timer
   * forever (an interval, a polling loop).
   *
   * @param limit most timers to fire. @default 10_000
   * @returns how many timers fired.
   * @example
   * ```ts
   * orchestrator.stop();
   * await clock.runUntilIdle();
   * ```
   */
  runUntilIdle(limit = 10_000): Promise<number> {
    return this.#exclusive("runUntilIdle", async () => {
      let fired = 0;
      await this.flush();
      for (;;) {
        const next = this.#peek();
        if (next === undefined) return fired;
        if (fired >= limit) {
          throw new Error(
            `FakeClock.runUntilIdle: still ${this.#live} timer(s) pending after firing ${limit}; is something re-arming a timer forever?`,
          );
        }
        this.#fire(next);
        fired++;
        await this.flush();
      }
    });
  }

  /**
   * Same as {@link FakeClock.runUntilIdle}.
   *
   * @example
   * ```ts
   * await clock.runAll();
   * ```
   */
  runAll(limit = 10_000): Promise<number> {
    return this.runUntilIdle(limit);
  }

  /**
   * Lets queued promise continuations run without moving time.
   *
   * @example
   * ```ts
   * void registry.checkNow();
   * await clock.flush(); // checks that answer synchronously have been recorded
   * ```
   */
  async flush(): Promise<void> {
    for (let i = 0; i < this.#flushTurns; i++) {
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }

  #fire(timer: FakeTimer): void {
    this.#pop();
    timer.cancelled = true;
    this.#live--;
    if (timer.at > this.#now) this.#now = timer.at;
    timer.fn();
  }

  #peek(): FakeTimer | undefined {
    this.#dropCancelled();
    return this.#heap[0];
  }

  #dropCancelled(): void {
    while (this.#heap.length > 0 && this.#heap[0]!.cancelled) this.#pop();
  }

  #push(timer: FakeTimer): void {
    const heap = this.#heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(heap[i]!, heap[parent]!)) break;
      [heap[i], heap[parent]] = [heap[parent]!, heap[i]!];
      i = parent;
    }
  }

  #pop(): void {
    const heap = this.#heap;
    const last = heap.pop();
    if (last === undefined || heap.length === 0) return;
    heap[0] = last;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < heap.length && before(heap[l]!, heap[min]!)) min = l;
      if (r < heap.length && before(heap[r]!, heap[min]!)) min = r;
      if (min === i) break;
      [heap[i], heap[min]] = [heap[min]!, heap[i]!];
      i = min;
    }
  }
}
