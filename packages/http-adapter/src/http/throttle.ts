import { createHash } from "node:crypto";
import { type Clock, type Logger, silentLogger, systemClock } from "@flotilla/core";

/** Settings of {@link AuthThrottle}. */
export interface AuthThrottleOptions {
  /** Failed authentications a source may make in `windowMs` before its answers are delayed. @default 5 */
  freeFailures?: number;
  /** The first delay, doubled for each further failure. @default 250 */
  baseDelayMs?: number;
  /** The longest delay of one answer. @default 4000 */
  maxDelayMs?: number;
  /**
   * Failures in `windowMs` after which a source's wrong keys are answered 429 with
   * `Retry-After` (0: never; registration tokens never get a 429). @default 30
   */
  lockAfter?: number;
  /** How long a failure counts against its source. @default 600000 (10 min) */
  windowMs?: number;
  /** Sources remembered at once (the least recent are forgotten first). @default 10000 */
  maxSources?: number;
}

/** What to do with one failed authentication. */
export interface ThrottleVerdict {
  /** Wait this long before answering 401 (0: at once). */
  delayMs: number;
  /** Answer 429 with `Retry-After` of this many ms instead (absent: answer 401). */
  retryAfterMs?: number;
}

/**
 * Slows down guessing: failed authentications are counted per source (client address), and
 * once a source has made `freeFailures` of them in `windowMs`, each further failure is
 * answered after a growing delay (`baseDelayMs` doubling up to `maxDelayMs`), and after
 * `lockAfter` failures with 429 and `Retry-After`. Only failures count: a valid credential is
 * checked first and always accepted, so clients sharing an address with a misbehaving one
 * are never refused because of it. Each source's first delayed failure and its lock are
 * logged with the fingerprint of the credential tried (never the credential).
 *
 * @example
 * ```ts
 * const throttle = new AuthThrottle({ lockAfter: 20 });
 * const verdict = throttle.fail("10.0.0.7", "GET /nodes", presentedKey);
 * if (verdict.retryAfterMs) answer429(verdict.retryAfterMs);
 * else setTimeout(answer401, verdict.delayMs);
 * ```
 */
export class AuthThrottle {
  readonly #free: number;
  readonly #base: number;
  readonly #max: number;
  readonly #lockAfter: number;
  readonly #windowMs: number;
  readonly #maxSources: number;
  readonly #clock: Clock;
  readonly #logger: Logger;
  /** Failure times per source, oldest first. */
  readonly #failures = new Map<string, number[]>();
  readonly #listeners = new Set<(source: string, at: number) => void>();

  constructor(options: AuthThrottleOptions = {}, deps: { clock?: Clock; logger?: Logger } = {}) {
    const int = (name: string, v: number | undefined, dflt: number, min: number) => {
      const n = v ?? dflt;
      if (!Number.isInteger(n) || n < min) {
        throw new TypeError(`${name}: expected an integer >= ${min}, got ${String(v)}`);
      }
      return n;
    };
    this.#free = int("freeFailures", options.freeFailures, 5, 0);
    this.#base = int("baseDelayMs", options.baseDelayMs, 250, 0);
    this.#max = int("maxDelayMs", options.maxDelayMs, 4000, 0);
    this.#lockAfter = int("lockAfter", options.lockAfter, 30, 0);
    this.#windowMs = int("windowMs", options.windowMs, 600_000, 1);
    this.#maxSources = int("maxSources", options.maxSources, 10_000, 1);
    this.#clock = deps.clock ?? systemClock;
    this.#logger = deps.logger ?? silentLogger;
  }

  /**
   * Records a failed authentication of `source` (for `what`, e.g. `GET /nodes`) with
   * `credential` (only its fingerprint is logged) and says how to answer it. `lock: false`
   * (registration tokens) never answers 429, so a client can tell a wrong credential
   * (401, permanent) from a transient refusal.
   *
   * @example
   * ```ts
   * const { delayMs, retryAfterMs } = throttle.fail("10.0.0.7", "POST /register", token, { lock: false });
   * ```
   */
  fail(
    source: string,
    what: string,
    credential: string | undefined,
    { lock = true }: { lock?: boolean } = {},
  ): ThrottleVerdict {
    const now = this.#clock.now();
    const times = this.#count(source, now, now);
    for (const l of this.#listeners) l(source, now);
    const n = times.length;
    const fingerprint = credential
      ? createHash("sha256").update(credential).digest("hex").slice(0, 12)
      : null;
    if (lock && this.#lockAfter > 0 && n > this.#lockAfter) {
      const retryAfterMs = Math.max(1000, times[0]! + this.#windowMs - now);
      if (n === this.#lockAfter + 1) {
        this.#logger.warn(
          { source, what, failures: n, credential: fingerprint, retryAfterMs },
          "authentication locked for this source after repeated failures",
        );
      }
      return { delayMs: 0, retryAfterMs };
    }
    if (n <= this.#free) return { delayMs: 0 };
    if (n === this.#free + 1) {
      this.#logger.warn(
        { source, what, failures: n, credential: fingerprint },
        "repeated authentication failures: answers from this source are delayed",
      );
    }
    return { delayMs: Math.min(this.#max, this.#base * 2 ** (n - this.#free - 1)) };
  }

  /**
   * Counts a failure of `source` at `at` that another server sharing the store saw (nothing
   * logged, no verdict): a guesser spread over the servers is throttled as by one.
   *
   * @example
   * ```ts
   * throttle.countElsewhere("10.0.0.7", Date.now());
   * ```
   */
  countElsewhere(source: string, at: number): void {
    const now = this.#clock.now();
    if (typeof source !== "string" || !Number.isFinite(at) || at <= now - this.#windowMs) return;
    this.#count(source, Math.min(at, now), now);
  }

  /**
   * Calls `listener` with each failure this throttle records (its source and time): servers
   * sharing a store tell each other with it. Returns a remover.
   *
   * @example
   * ```ts
   * const off = throttle.onFailure((source, at) => tellTheOthers(source, at));
   * ```
   */
  onFailure(listener: (source: string, at: number) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Adds a failure of `source` at `at` (in time order), dropping what left the window. */
  #count(source: string, at: number, now: number): number[] {
    const edge = now - this.#windowMs;
    let times = this.#failures.get(source);
    if (times) this.#failures.delete(source);
    else {
      times = [];
      if (this.#failures.size >= this.#maxSources) {
        const oldest = this.#failures.keys().next().value;
        if (oldest !== undefined) this.#failures.delete(oldest);
      }
    }
    while (times.length > 0 && times[0]! <= edge) times.shift();
    let i = times.length;
    while (i > 0 && times[i - 1]! > at) i--;
    times.splice(i, 0, at);
    // Bounded: beyond the lock threshold only the newest failures matter.
    const keep = Math.max(this.#lockAfter, this.#free) + 1;
    if (times.length > keep) times.splice(0, times.length - keep);
    this.#failures.set(source, times);
    return times;
  }

  /** Failures of `source` counted now (for tests and stats). @example throttle.failures("10.0.0.7") // 3 */
  failures(source: string): number {
    const edge = this.#clock.now() - this.#windowMs;
    return (this.#failures.get(source) ?? []).filter((t) => t > edge).length;
  }

  /** Waits out a verdict's delay on the throttle's clock. @example await throttle.delay(verdict.delayMs) */
  delay(ms: number): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => this.#clock.setTimeout(resolve, ms));
  }
}
