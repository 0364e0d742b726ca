/** An opaque timer handle returned by {@link Clock.setTimeout}. */
export type TimerHandle = { readonly __timer: unique symbol } | object;

/**
 * Every timer in Flotilla goes through a `Clock`, so that tests can replace time with a
 * fake clock (`FakeClock` from `@flotilla/core/testing`, also exported by `@flotilla/testing`)
 * and advance it exactly.
 *
 * @example
 * ```ts
 * const orchestrator = new Orchestrator({ clock: new FakeClock() });
 * ```
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  /** Calls `fn` once after `ms` milliseconds. */
  setTimeout(fn: () => void, ms: number): TimerHandle;
  /** Cancels a timer; unknown or already-fired handles are ignored. */
  clearTimeout(handle: TimerHandle): void;
}

/**
 * The real clock (`Date.now` and the global timers). Its timers are `unref`'d, so an
 * idle orchestrator never keeps the process alive on its own.
 */
export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout(fn, ms) {
    const t = setTimeout(fn, Math.max(0, ms));
    t.unref?.();
    return t as unknown as TimerHandle;
  },
  clearTimeout(handle) {
    clearTimeout(handle as unknown as ReturnType<typeof setTimeout>);
  },
};
