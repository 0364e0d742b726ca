import { type Clock, systemClock } from "../clock.js";
import { resolveUsageEntries } from "../cost/restore.js";
import { estimatedTokens, resolveUsage } from "../cost/usage.js";
import { FlotillaError } from "../errors.js";
import type { Logger } from "../logger.js";
import { silentLogger } from "../logger.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate, GateDecision, SettleOutcome } from "../resources/gate.js";
import { parseConfig } from "../resources/validate.js";
import { Wakers } from "../resources/wakers.js";
import type { UsageEntry } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import {
  KeyLimitsSchema,
  type LimitInput,
  type RateLimit,
  type RateLimitsConfig,
  RateLimitsConfigSchema,
} from "./rate.js";
import { LimitWindow, type LogEntry } from "./window.js";

/** Options of {@link RateLimiter}. */
export interface RateLimiterOptions {
  /** Limits per key, e.g. `{ openai: ["500/min", "90k tokens/min", "10000/day"] }`. @default {} */
  limits?: RateLimitsConfig;
  /**
   * Which keys a task is limited by on a worker (e.g. the worker's API key). When set and a
   * task has been held, the scheduler is woken when an attempt settles, since held work may
   * fit the freed worker.
   * @default the task's `rateLimitKey`(s)
   */
  keys?: (task: TaskRecord, worker: WorkerEntry) => readonly string[];
  /** Tokens charged for a task without an estimate (reconciled at settle). @default 0 */
  defaultTokens?: number;
  /**
   * Extra milliseconds an admitted call is counted in each sliding window beyond the window
   * itself. A call is admitted (and counted) when it is dispatched, but its request leaves a
   * little later: the worker starts it after the task's state is saved, and under a burst of
   * hundreds of dispatches that lag varies by tens of ms. Counting each call
   * `windowMs + marginMs` keeps the limit at the provider as long as the lag varies by less
   * than the margin, at the cost of `windowMs / (windowMs + marginMs)` of the throughput.
   *
   * `"auto"` is 2 % of each window, at most 50 ms: 20 ms for a 1 s window (≥ 97.9 % of the
   * limit used under saturation), 2 ms for 100 ms, 50 ms for a minute or longer (≥ 99.9 %).
   * `0` counts exactly at dispatch time. Every call is also held one more millisecond, the
   * resolution of a millisecond clock, so the limit holds in real time and not only in
   * clock readings.
   * @default "auto"
   */
  marginMs?: number | "auto";
  /** @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
  /** Gate name in reasons and stats. @default "rate-limit" */
  name?: string;
}

/** The answer of {@link RateLimiter.peek}. */
export type LimitCheck =
  | { ok: true }
  | { ok: false; key: string; limit: string; reason: string; retryAt: number };

/** A reservation made by {@link RateLimiter.acquire}; settle it with the actual tokens. */
export interface Reservation {
  readonly keys: readonly string[];
  readonly tokens: number;
  /** Replaces the reserved tokens by the actual count (refund or debt). Idempotent. */
  reconcile(actualTokens: number): void;
}

/** One limit of one key, as {@link RateLimiter.stats} shows it. */
export interface LimitStats {
  name: string;
  unit: "requests" | "tokens";
  limit: number;
  windowMs: number;
  burst: number;
  /** Units counted in the current sliding window. */
  used: number;
  remaining: number;
}

/** The state of one key. */
export interface KeyStats {
  pausedUntil?: number;
  limits: LimitStats[];
}

interface KeyState {
  windows: LimitWindow[];
  pausedUntil: number;
}

interface Charge {
  key: string;
  window: LimitWindow;
  entry: LogEntry;
}

/**
 * Keyed rate limits as a dispatch gate. Each key (provider, model, API key, tenant, worker)
 * may carry several limits at once — requests and tokens, per second, minute, hour or day.
 * Tokens are charged by the task's estimate before the call and reconciled with the usage
 * the worker reports (refund, or debt that delays later calls). A `RetryAfterError` pauses
 * every key of the task until the given time. `check` answers the exact time the task can
 * go, so a scheduler resumes it within one tick.
 *
 * Each limit is a GCRA bucket (smooth, optional `burst`) intersected with an exact sliding
 * log, so that no window ever holds more than the limit and there are no fixed-window
 * double bursts.
 *
 * @example
 * ```ts
 * const limiter = new RateLimiter({
 *   limits: { openai: ["500/min", "90k tokens/min", "10000/day"], anthropic: { requests: 50, per: "minute", burst: 5 } },
 * });
 * const orchestrator = new Orchestrator({ gates: [limiter] });
 * await orchestrator.submit({ type: "llm_request", rateLimitKey: "openai", estimate: { tokens: 1200 } });
 * ```
 */
export class RateLimiter implements DispatchGate {
  readonly name: string;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #keysOf: (task: TaskRecord, worker: WorkerEntry) => readonly string[];
  readonly #defaultTokens: number;
  readonly #marginMs: number | "auto";
  /** A task was held since the last settle-wake (only tracked with worker-derived keys). */
  readonly #keys = new Map<string, KeyState>();
  readonly #reservations = new Map<string, Reservation>();
  /** Every log entry a reservation made (requests and tokens), for re-timing at start. */
  readonly #charges = new WeakMap<Reservation, Charge[]>();
  readonly #wakers: Wakers;
  #timer: ReturnType<Clock["setTimeout"]> | undefined;
  #timerAt = Number.POSITIVE_INFINITY;
  /** Creation time: usage lines from then on were counted live, never restored. */
  readonly #born: number;
  #restored = false;
  /** The limits as configured, by key (the windows hold this limiter's share of them). */
  readonly #configured = new Map<string, RateLimit[]>();
  #share = 1;

  constructor(options: RateLimiterOptions = {}) {
    this.name = options.name ?? "rate-limit";
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
    this.#wakers = new Wakers(this.#logger);
    this.#keysOf = options.keys ?? ((task) => task.rateLimitKeys ?? []);
    this.#defaultTokens = options.defaultTokens ?? 0;
    const margin = options.marginMs ?? "auto";
    if (
      margin !== "auto" &&
      (typeof margin !== "number" || !Number.isFinite(margin) || margin < 0)
    ) {
      throw new FlotillaError(
        "VALIDATION",
        `marginMs: expected "auto" or a number of milliseconds >= 0, got ${String(options.marginMs)}`,
      );
    }
    this.#marginMs = margin;
    const limits = parseConfig(RateLimitsConfigSchema, options.limits ?? {}, "limits");
    const now = this.#clock.now();
    this.#born = now;
    for (const [key, list] of Object.entries(limits)) this.#install(key, list, now);
  }

  /**
   * Refills the sliding windows from the store's usage ledger after a restart, so that calls
   * made just before it still count and the first window after it cannot spend the limit a
   * second time. Each line counts one request and its total tokens on its `provider` (the
   * task's first rate-limit key), at the time it was recorded (when the attempt ended, so
   * at or after the call: never earlier than the live count). Lines of keys without limits,
   * lines older than a window, and lines recorded after this limiter was created (it counted
   * them live) are ignored; only the first call restores. The orchestrator calls it at
   * `start()`.
   *
   * @example
   * ```ts
   * limiter.restore(await store.listUsage({ since: Date.now() - 48 * 3_600_000 }), Date.now());
   * ```
   */
  restore(entries: UsageEntry[], now: number = this.#clock.now()): void {
    if (this.#restored) return;
    this.#restored = true;
    const byKey = new Map<string, Array<{ t: number; tokens: number; requests: number }>>();
    for (const line of resolveUsageEntries(entries)) {
      if (line.provider === undefined || line.at >= this.#born) continue;
      if (!this.#keys.has(line.provider)) continue;
      let list = byKey.get(line.provider);
      if (!list) {
        list = [];
        byKey.set(line.provider, list);
      }
      // A rolled-up line stands for `requests` calls.
      list.push({ t: line.at, tokens: line.totalTokens, requests: line.requests });
    }
    for (const [key, list] of byKey) {
      for (const w of this.#keys.get(key)?.windows ?? []) {
        const tokens = w.spec.unit === "tokens";
        w.restore(
          list.map((e) => ({ t: e.t, w: tokens ? e.tokens : e.requests })),
          now,
        );
      }
    }
    if (byKey.size > 0) {
      this.#logger.info({ keys: [...byKey.keys()] }, "rate limit windows restored from usage");
    }
  }

  #install(key: string, list: RateLimit[], now: number): void {
    const prev = this.#keys.get(key);
    const share = this.#share;
    const windows = list.map((configured) => {
      const spec =
        share === 1
          ? configured
          : { ...configured, limit: configured.limit * share, burst: configured.burst * share };
      const match = prev?.windows.find(
        (w) => w.spec.unit === spec.unit && w.spec.windowMs === spec.windowMs,
      );
      return new LimitWindow(spec, match, now, marginFor(spec.windowMs, this.#marginMs));
    });
    if (list.length === 0) this.#configured.delete(key);
    else this.#configured.set(key, list);
    this.#keys.set(key, { windows, pausedUntil: prev?.pausedUntil ?? 0 });
  }

  /**
   * This limiter's share of every limit, in (0, 1]: `1 / n` on each of `n` servers that
   * share the limits (each then admits its share, and together they admit the limit).
   * Usage already counted is kept. Limits read back (`getLimits`) stay as configured;
   * `stats` shows this limiter's share. A new limiter admits the whole limit (share 1).
   *
   * @example
   * ```ts
   * limiter.setShare(1 / 3); // "90/min" admits 30 a minute here
   * ```
   */
  setShare(share: number): void {
    if (typeof share !== "number" || !(share > 0 && share <= 1)) {
      throw new FlotillaError(
        "VALIDATION",
        `share: expected a number in (0, 1], got ${String(share)}`,
      );
    }
    if (share === this.#share) return;
    this.#share = share;
    const now = this.#clock.now();
    for (const [key, list] of this.#configured) this.#install(key, list, now);
    this.#wake();
  }

  /** This limiter's share of every limit (see {@link RateLimiter.setShare}). */
  get share(): number {
    return this.#share;
  }

  #state(key: string): KeyState {
    let st = this.#keys.get(key);
    if (!st) {
      st = { windows: [], pausedUntil: 0 };
      this.#keys.set(key, st);
    }
    return st;
  }

  /**
   * Replaces the limits of `key` at run time (an empty list removes them). Usage already
   * counted in a window of the same unit and length is kept, so a change never opens a new
   * burst. Wakes the scheduler.
   *
   * @example
   * ```ts
   * limiter.setLimits("openai", ["1000/min", "200k tokens/min"]);
   * ```
   */
  setLimits(key: string, limits: LimitInput | LimitInput[]): void {
    const list = parseConfig(KeyLimitsSchema, limits, `limits[${JSON.stringify(key)}]`);
    this.#install(key, list, this.#clock.now());
    this.#wake();
  }

  /** The limits currently configured for `key`. @example limiter.getLimits("openai") */
  getLimits(key: string): RateLimit[] {
    return (this.#configured.get(key) ?? []).map((spec) => ({ ...spec }));
  }

  /**
   * Holds every task of `key` until `untilMs` (ms since epoch); a later pause extends, an
   * earlier one is ignored. Called automatically when a worker throws `RetryAfterError`.
   *
   * @example
   * ```ts
   * limiter.pause("openai", Date.now() + 30_000);
   * ```
   */
  pause(key: string, untilMs: number): void {
    const st = this.#state(key);
    if (untilMs > st.pausedUntil) {
      st.pausedUntil = untilMs;
      this.#logger.info({ key, until: new Date(untilMs).toISOString() }, "rate limit key paused");
      this.#armWake(untilMs);
    }
  }

  /** Lifts a pause at once and wakes the scheduler. @example limiter.resume("openai") */
  resume(key: string): void {
    const st = this.#keys.get(key);
    if (st && st.pausedUntil > 0) {
      st.pausedUntil = 0;
      this.#wake();
    }
  }

  /**
   * Whether a call on `keys` costing `tokens` could go at `now`, and if not, when.
   *
   * @example
   * ```ts
   * const r = limiter.peek(["openai"], 1200);
   * if (!r.ok) console.log(r.reason, new Date(r.retryAt));
   * ```
   */
  peek(keys: readonly string[], tokens = 0, now = this.#clock.now()): LimitCheck {
    let worst: Extract<LimitCheck, { ok: false }> | undefined;
    for (const key of keys) {
      const st = this.#keys.get(key);
      if (!st) continue;
      if (st.pausedUntil > now) {
        const retryAt = st.pausedUntil;
        if (!worst || retryAt > worst.retryAt) {
          worst = {
            ok: false,
            key,
            limit: "paused",
            retryAt,
            reason: `rate limit "${key}" paused until ${new Date(retryAt).toISOString()}`,
          };
        }
      }
      for (const w of st.windows) {
        const at = w.readyAt(w.spec.unit === "tokens" ? tokens : 1, now);
        if (at > now && (!worst || at > worst.retryAt)) {
          worst = {
            ok: false,
            key,
            limit: w.spec.name,
            retryAt: at,
            reason: `rate limit "${key}" (${w.spec.name}) exhausted`,
          };
        }
      }
    }
    return worst ?? { ok: true };
  }

  /**
   * Charges a call on `keys` (1 request and `tokens` tokens on each) at `now`, whether or not it
   * fits (use {@link peek} first), and returns a reservation to reconcile with actual usage.
   *
   * @example
   * ```ts
   * if (limiter.peek(["openai"], 1200).ok) {
   *   const r = limiter.acquire(["openai"], 1200);
   *   const res = await callModel();
   *   r.reconcile(res.usage.total_tokens);
   * }
   * ```
   */
  acquire(keys: readonly string[], tokens = 0, now = this.#clock.now()): Reservation {
    const charges: Charge[] = [];
    for (const key of keys) {
      const st = this.#keys.get(key);
      if (!st) continue;
      for (const window of st.windows) {
        const cost = window.spec.unit === "tokens" ? tokens : 1;
        const entry = window.take(cost, now);
        charges.push({ key, window, entry });
      }
    }
    let settled = false;
    const reservation: Reservation = {
      keys,
      tokens,
      reconcile: (actual: number) => {
        if (settled) return;
        settled = true;
        const delta = actual - tokens;
        if (delta === 0 || !Number.isFinite(delta)) return;
        const at = this.#clock.now();
        for (const c of charges) {
          if (c.window.spec.unit !== "tokens") continue;
          this.#current(c).adjust(c.entry, delta, at);
        }
        if (delta < 0) this.#wakers.wake(keys);
      },
    };
    this.#charges.set(reservation, charges);
    return reservation;
  }

  /** The window holding a charge now: after setLimits a new window carries the entry over. */
  #current(c: Charge): LimitWindow {
    return (
      this.#keys
        .get(c.key)
        ?.windows.find(
          (w) => w.spec.unit === c.window.spec.unit && w.spec.windowMs === c.window.spec.windowMs,
        ) ?? c.window
    );
  }

  /**
   * The state of every key with limits or a pause: used and remaining per limit.
   *
   * @example
   * ```ts
   * limiter.stats().openai?.limits[0]?.remaining;
   * ```
   */
  stats(now = this.#clock.now()): Record<string, KeyStats> {
    const out: Record<string, KeyStats> = {};
    for (const [key, st] of this.#keys) {
      const s: KeyStats = {
        limits: st.windows.map((w) => {
          const used = w.used(now);
          return {
            name: w.spec.name,
            unit: w.spec.unit,
            limit: w.spec.limit,
            windowMs: w.spec.windowMs,
            burst: w.spec.burst,
            used,
            remaining: Math.max(0, w.spec.limit - used),
          };
        }),
      };
      if (st.pausedUntil > now) s.pausedUntil = st.pausedUntil;
      out[key] = s;
    }
    return out;
  }

  #tokens(task: TaskRecord): number {
    return estimatedTokens(task) ?? this.#defaultTokens;
  }

  /** Gate: waits while any of the task's keys is paused or over a limit. @example limiter.check(task, worker, Date.now()) */
  check(task: TaskRecord, worker: WorkerEntry, now: number): GateDecision {
    const r = this.peek(this.#keysOf(task, worker), this.#tokens(task), now);
    if (r.ok) return r;
    return { ok: false, reason: r.reason, retryAt: r.retryAt, blockKey: r.key };
  }

  /** Gate: charges the task's keys. @example limiter.onDispatch(task, worker, Date.now()) */
  onDispatch(task: TaskRecord, worker: WorkerEntry, now: number): void {
    this.#reservations.set(
      task.id,
      this.acquire(this.#keysOf(task, worker), this.#tokens(task), now),
    );
  }

  /**
   * Gate: the task's call really starts now (the worker runs it). Its calls are counted from
   * now instead of from dispatch, so later calls wait a full window after it started: the
   * limit then holds at the provider whatever the lag between dispatch and start.
   *
   * @example
   * ```ts
   * limiter.onStart(task, worker, Date.now());
   * ```
   */
  onStart(task: TaskRecord, _worker: WorkerEntry, now: number): void {
    const reservation = this.#reservations.get(task.id);
    const charges = reservation && this.#charges.get(reservation);
    if (!charges) return;
    for (const c of charges) {
      const window = this.#current(c);
      c.entry = window.retime(c.entry, now);
      c.window = window;
    }
  }

  /** Gate: reconciles tokens with reported usage and applies Retry-After pauses. @example limiter.onSettle(task, worker, { status: "succeeded" }, Date.now()) */
  onSettle(task: TaskRecord, worker: WorkerEntry, outcome: SettleOutcome, now: number): void {
    const reservation = this.#reservations.get(task.id);
    this.#reservations.delete(task.id);
    if (reservation) {
      const usage = resolveUsage(task, outcome.usage);
      if (usage.source === "reported") reservation.reconcile(usage.totalTokens);
      else if (outcome.usage !== undefined) {
        this.#logger.debug({ taskId: task.id, problem: usage.problem }, "usage kept at estimate");
      }
    }
    const retryAfterMs = retryAfterOf(outcome);
    if (retryAfterMs !== undefined) {
      // Clocks count whole milliseconds (Date.now() rounds down): 1 ms more keeps the first
      // start after the pause from landing before the provider's Retry-After has passed.
      for (const key of reservation?.keys ?? this.#keysOf(task, worker)) {
        this.pause(key, now + retryAfterMs + 1);
      }
    }
  }

  /** Gate: registers the scheduler's wake-up. @example const off = limiter.subscribe(() => scheduler.poke()) */
  subscribe(wake: (keys?: readonly string[]) => void): () => void {
    return this.#wakers.subscribe(wake);
  }

  #armWake(at: number): void {
    if (at >= this.#timerAt) return;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timerAt = at;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Number.POSITIVE_INFINITY;
      this.#wake();
    }, at - this.#clock.now());
  }

  #wake(): void {
    this.#wakers.wake();
  }

  /** Cancels the pending wake-up timer (call when discarding the limiter). @example limiter.close() */
  close(): void {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Number.POSITIVE_INFINITY;
  }
}

/** Largest margin `"auto"` gives a window, in ms. */
const AUTO_MARGIN_MAX_MS = 50;
/** Share of its window `"auto"` gives as margin. */
const AUTO_MARGIN_SHARE = 0.02;

/**
 * The margin a window of `windowMs` gets under a `marginMs` setting.
 *
 * @example
 * ```ts
 * marginFor(1000, "auto"); // 20
 * marginFor(60_000, "auto"); // 50
 * marginFor(1000, 0); // 0
 * ```
 */
export function marginFor(windowMs: number, marginMs: number | "auto"): number {
  if (marginMs !== "auto") return marginMs;
  return Math.min(AUTO_MARGIN_MAX_MS, windowMs * AUTO_MARGIN_SHARE);
}

/**
 * The Retry-After of an outcome, from `retryAfterMs` or a `RATE_LIMITED` error's details.
 *
 * @example
 * ```ts
 * retryAfterOf({ status: "failed", retryAfterMs: 2000 }); // 2000
 * ```
 */
export function retryAfterOf(outcome: SettleOutcome): number | undefined {
  if (typeof outcome.retryAfterMs === "number" && Number.isFinite(outcome.retryAfterMs)) {
    return Math.max(0, outcome.retryAfterMs);
  }
  const details = outcome.error?.details as { retryAfterMs?: unknown } | undefined;
  if (outcome.error?.code === "RATE_LIMITED" && typeof details?.retryAfterMs === "number") {
    return Math.max(0, details.retryAfterMs);
  }
  return undefined;
}
