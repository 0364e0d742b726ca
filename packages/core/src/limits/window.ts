import type { RateLimit } from "./rate.js";

/** One admitted call in a sliding log; `w` changes when the call is reconciled. */
export interface LogEntry {
  t: number;
  w: number;
  /** Set once the entry has left the window. */
  gone?: boolean;
}

/** Smallest cost used for checks, so that a zero-cost call still waits while a limit is in debt. */
const MIN_COST = 1e-9;
const EPS = 1e-7;
/**
 * Resolution of a millisecond clock: `Date.now()` floors, so two calls read `t` and `t + W`
 * may be less than `W` apart in real time. An entry is held one tick longer, which makes the
 * limit hold in real time too.
 */
const TICK_MS = 1;

/**
 * The state of one limit of one key: a GCRA (virtual scheduling) bucket for smoothness and
 * bursts, intersected with an exact sliding log, so that no window of `windowMs` ever holds
 * more than `limit` units, whatever the burst setting.
 *
 * Entries older than the window are dropped from the front of the log; the log holds one
 * entry per admitted call inside the window, so memory is bounded by calls per window.
 */
export class LimitWindow {
  readonly spec: RateLimit;
  /** Milliseconds one unit occupies at the sustained rate. */
  readonly interval: number;
  /** Theoretical arrival time of the next unit (GCRA). */
  tat = Number.NEGATIVE_INFINITY;
  #log: LogEntry[] = [];
  #head = 0;
  #sum = 0;

  /** Extra time an admitted call stays in the log (absorbs dispatch-to-request latency). */
  readonly marginMs: number;
  /** How long an admitted call stays in the log: `windowMs + marginMs + 1` (clock tick). */
  readonly holdMs: number;

  constructor(spec: RateLimit, previous?: LimitWindow, now = 0, marginMs = 0) {
    this.spec = spec;
    this.marginMs = marginMs;
    this.holdMs = spec.windowMs + marginMs + TICK_MS;
    this.interval = spec.windowMs / spec.limit;
    if (previous && previous.spec.unit === spec.unit && previous.spec.windowMs === spec.windowMs) {
      previous.#prune(now);
      this.#log = previous.#log.slice(previous.#head);
      this.#sum = previous.#sum;
      if (previous.tat > now)
        this.tat = now + ((previous.tat - now) / previous.interval) * this.interval;
    }
  }

  /**
   * Drops the entries that left the window. An entry that leaves while the window holds more
   * than the limit (calls that used more than they were admitted for, or one call larger than
   * the limit) leaves its share of the excess behind as a debt entry for one more window, so
   * the sustained rate converges to the limit instead of overrunning it by an under-estimate
   * every window.
   */
  #prune(now: number): void {
    const edge = now - this.holdMs;
    const log = this.#log;
    const limit = this.spec.limit;
    let debts: LogEntry[] | undefined; // made only when a debt is left (rare)
    while (this.#head < log.length && log[this.#head]!.t <= edge) {
      const e = log[this.#head]!;
      const over = this.#sum - limit;
      this.#sum -= e.w;
      e.gone = true;
      this.#head++;
      // (A debt whose own window has also passed by now, the key being idle, was paid.)
      const t = e.t + this.holdMs;
      if (over > EPS && e.w > 0 && t > edge) {
        debts ??= [];
        debts.push({ t, w: Math.min(e.w, over) });
      }
    }
    if (this.#head === log.length) {
      this.#log = [];
      this.#head = 0;
      this.#sum = 0;
    } else if (this.#head > 1024 && this.#head * 2 > log.length) {
      this.#log = log.slice(this.#head);
      this.#head = 0;
    }
    if (debts) {
      // In time order, so that each debt leaves the log when its window has passed.
      const rest = this.#log;
      for (const d of debts) {
        let i = rest.length;
        while (i > this.#head && rest[i - 1]!.t > d.t) i--;
        rest.splice(i, 0, d);
        this.#sum += d.w;
      }
    }
  }

  /** Units counted in the window ending at `now`. */
  used(now: number): number {
    this.#prune(now);
    return Math.max(0, this.#sum);
  }

  /**
   * The earliest time (ms, ≥ `now`) at which a call costing `cost` units can be admitted.
   * A call larger than the burst or the limit is admitted when the key is idle (it cannot
   * fit otherwise) and leaves the key in debt.
   */
  readyAt(cost: number, now: number): number {
    const { burst, limit } = this.spec;
    const c = Math.max(MIN_COST, cost);
    let at = now;
    const gcra = this.tat + (Math.min(c, burst) - burst) * this.interval;
    if (gcra > now + EPS) at = Math.ceil(gcra - EPS);
    this.#prune(now);
    const need = Math.min(c, limit);
    let sum = this.#sum;
    if (sum + need > limit + EPS) {
      const log = this.#log;
      // The log is ordered by time except after a `retime` to an earlier clock reading;
      // the latest time among the entries that must leave is when they have all left.
      let leaveAt = Number.NEGATIVE_INFINITY;
      for (let i = this.#head; i < log.length; i++) {
        const e = log[i]!;
        sum -= e.w;
        if (e.t > leaveAt) leaveAt = e.t;
        if (sum + need <= limit + EPS) break;
      }
      at = Math.max(at, leaveAt + this.holdMs);
    }
    return at;
  }

  /** Admits a call of `cost` units at `now` (whether or not it fits) and returns its log entry. */
  take(cost: number, now: number): LogEntry {
    this.tat = Math.max(this.tat, now) + cost * this.interval;
    this.#prune(now);
    const entry = { t: now, w: cost };
    this.#log.push(entry);
    this.#sum += cost;
    return entry;
  }

  /**
   * Counts calls admitted before this window existed (a restart): each `{ t, w }` held as if
   * taken at `t`. Entries that already left the window are ignored; the GCRA state is
   * replayed so a burst spent before the restart is not granted again.
   */
  restore(entries: ReadonlyArray<{ t: number; w: number }>, now: number): void {
    const edge = now - this.holdMs;
    const fresh = entries
      .filter((e) => e.t > edge && Number.isFinite(e.w) && e.w >= 0)
      .map((e) => ({ t: Math.min(e.t, now), w: e.w }))
      .sort((a, b) => a.t - b.t);
    if (fresh.length === 0) return;
    this.#prune(now);
    const merged = [...fresh, ...this.#log.slice(this.#head)].sort((a, b) => a.t - b.t);
    let tat = Number.NEGATIVE_INFINITY;
    for (const e of merged) tat = Math.max(tat, e.t) + e.w * this.interval;
    this.tat = Math.max(this.tat, tat);
    this.#log = merged;
    this.#head = 0;
    this.#sum += sumOf(fresh);
  }

  /**
   * Counts an admitted call from `now` (when it really started) instead of from when it was
   * taken: the old entry is emptied and a new one appended. (Starts reported out of clock
   * order leave the log slightly unordered; pruning then keeps an entry longer, never
   * shorter, and `readyAt` waits for the latest entry that must leave.) A call whose entry already left the window is counted again from
   * `now`. Returns the entry that now holds the call.
   */
  retime(entry: LogEntry, now: number): LogEntry {
    if (entry.t >= now) return entry;

    this.#prune(now);
    if (!entry.gone) {
      this.#sum -= entry.w;
      entry.gone = true;
    }
    const moved = { t: now, w: entry.w };
    entry.w = 0;
    this.#log.push(moved);
    this.#sum += moved.w;
    return moved;
  }

  /** Changes an admitted call's cost by `delta` (refund when negative, debt when positive). */
  adjust(entry: LogEntry, delta: number, now: number): void {
    this.tat += delta * this.interval;
    this.#prune(now);
    const w = Math.max(0, entry.w + delta);
    if (!entry.gone) this.#sum += w - entry.w;
    entry.w = w;
  }
}

function sumOf(entries: ReadonlyArray<{ w: number }>): number {
  let n = 0;
  for (const e of entries) n += e.w;
  return n;
}
