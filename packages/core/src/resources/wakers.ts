import type { Logger } from "../logger.js";

/**
 * The scheduler wake-ups a gate holds (`DispatchGate.subscribe`): gates call `wake()` when
 * blocked work may now go — with the keys it held them on (`blockKey`) when only those may
 * go, so the scheduler looks at those tasks alone. A listener that throws is logged and the
 * others still run.
 *
 * @example
 * ```ts
 * const wakers = new Wakers(logger);
 * const unsubscribe = wakers.subscribe(() => console.log("blocked work may go now"));
 * wakers.wake();
 * unsubscribe();
 * ```
 */
export class Wakers {
  readonly #listeners = new Set<(keys?: readonly string[]) => void>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Adds a wake-up; returns its unsubscribe. @example const off = wakers.subscribe(() => {}) */
  subscribe(wake: (keys?: readonly string[]) => void): () => void {
    this.#listeners.add(wake);
    return () => this.#listeners.delete(wake);
  }

  /**
   * Calls every wake-up: all held work may go, or only work held on `keys`.
   * @example wakers.wake(); wakers.wake(["openai"])
   */
  wake(keys?: readonly string[]): void {
    for (const fn of this.#listeners) {
      try {
        fn(keys);
      } catch (err) {
        this.#logger.error({ err }, "wake listener threw");
      }
    }
  }
}
