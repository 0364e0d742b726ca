import type { Logger } from "../logger.js";

/**
 * The scheduler wake-ups a gate holds (`DispatchGate.subscribe`): gates call `wake()` when
 * blocked work may now go. A listener that throws is logged and the others still run.
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
  readonly #listeners = new Set<() => void>();
  readonly #logger: Logger;

  constructor(logger: Logger) {
    this.#logger = logger;
  }

  /** Adds a wake-up; returns its unsubscribe. @example const off = wakers.subscribe(() => {}) */
  subscribe(wake: () => void): () => void {
    this.#listeners.add(wake);
    return () => this.#listeners.delete(wake);
  }

  /** Calls every wake-up. @example wakers.wake() */
  wake(): void {
    for (const fn of this.#listeners) {
      try {
        fn();
      } catch (err) {
        this.#logger.error({ err }, "wake listener threw");
      }
    }
  }
}
