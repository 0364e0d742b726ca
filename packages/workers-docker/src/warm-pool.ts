/** What a {@link WarmPool} needs to make and throw away its items. */
export interface WarmPoolHooks<P, T> {
  /** Idle items kept per profile. */
  size: number;
  /** Profiles kept at once; the least recently used beyond it is dropped with its items. */
  maxProfiles: number;
  /** Makes one idle item of a profile. */
  create(profile: P): Promise<T>;
  /** Throws an item away (it was never handed out, or the pool is closing). */
  destroy(item: T): Promise<void>;
  /** A failed `create`: the profile is not refilled again for `retryAfterMs`. */
  onError(err: unknown, profile: P): void;
  /** Milliseconds, for recency and the retry pause. */
  now(): number;
  /** Pause after a failed `create` before the profile is refilled again. @default 30000 */
  retryAfterMs?: number;
}

interface Entry<P, T> {
  profile: P;
  idle: T[];
  filling: boolean;
  usedAt: number;
  failedAt: number | undefined;
}

/**
 * Idle items (started containers) kept ready per profile. An item is handed out once and
 * never comes back: the caller throws it away after its one use. Taking an item refills its
 * profile in the background, one item at a time, up to `size`.
 *
 * @example
 * ```ts
 * const pool = new WarmPool({ size: 2, maxProfiles: 4, create, destroy, onError, now: Date.now });
 * pool.warm("python", profile); // fills in the background
 * const item = pool.take("python", profile); // undefined when none is ready yet
 * await pool.close(); // destroys what is idle, waits for fills under way
 * ```
 */
export class WarmPool<P, T> {
  readonly #hooks: WarmPoolHooks<P, T>;
  readonly #entries = new Map<string, Entry<P, T>>();
  readonly #fills = new Set<Promise<void>>();
  #closed = false;

  constructor(hooks: WarmPoolHooks<P, T>) {
    this.#hooks = hooks;
  }

  /** Whether `close()` was called. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Idle items of a profile (all profiles when `key` is omitted). */
  idle(key?: string): number {
    if (key !== undefined) return this.#entries.get(key)?.idle.length ?? 0;
    let n = 0;
    for (const e of this.#entries.values()) n += e.idle.length;
    return n;
  }

  /** Makes sure `key` is a warm profile and fills it in the background. */
  warm(key: string, profile: P): void {
    if (this.#closed) return;
    this.#fill(key, this.#entry(key, profile));
  }

  /** An idle item of the profile, or undefined; either way the profile is (re)filled. */
  take(key: string, profile: P): T | undefined {
    if (this.#closed) return undefined;
    const e = this.#entry(key, profile);
    e.usedAt = this.#hooks.now();
    const item = e.idle.shift();
    this.#fill(key, e);
    return item;
  }

  /** Stops refilling, destroys every idle item, and waits for fills under way (their items are destroyed too). */
  async close(): Promise<void> {
    this.#closed = true;
    const idle = [...this.#entries.values()].flatMap((e) => e.idle.splice(0));
    this.#entries.clear();
    await Promise.allSettled([...idle.map((t) => this.#hooks.destroy(t)), ...this.#fills]);
  }

  #entry(key: string, profile: P): Entry<P, T> {
    let e = this.#entries.get(key);
    if (e) return e;
    if (this.#entries.size >= this.#hooks.maxProfiles) {
      let oldest: [string, Entry<P, T>] | undefined;
      for (const kv of this.#entries) if (!oldest || kv[1].usedAt < oldest[1].usedAt) oldest = kv;
      if (oldest) {
        this.#entries.delete(oldest[0]);
        for (const t of oldest[1].idle.splice(0)) this.#hooks.destroy(t).catch(() => {});
      }
    }
    e = { profile, idle: [], filling: false, usedAt: this.#hooks.now(), failedAt: undefined };
    this.#entries.set(key, e);
    return e;
  }

  #fill(key: string, e: Entry<P, T>): void {
    if (e.filling || this.#closed) return;
    const pause = this.#hooks.retryAfterMs ?? 30_000;
    if (e.failedAt !== undefined && this.#hooks.now() - e.failedAt < pause) return;
    e.filling = true;
    const current = () => !this.#closed && this.#entries.get(key) === e;
    const fill = (async () => {
      while (current() && e.idle.length < this.#hooks.size) {
        let item: T;
        try {
          item = await this.#hooks.create(e.profile);
        } catch (err) {
          e.failedAt = this.#hooks.now();
          this.#hooks.onError(err, e.profile);
          break;
        }
        if (!current()) {
          await this.#hooks.destroy(item).catch(() => {});
          break;
        }
        e.failedAt = undefined;
        e.idle.push(item);
      }
      e.filling = false;
    })();
    this.#fills.add(fill);
    fill.finally(() => this.#fills.delete(fill));
  }
}
