import type { Clock, TimerHandle } from "../clock.js";

/**
 * The orchestrator's timers, all set through its `Clock`. While any is pending and
 * `keepAlive` is on, one referenced handle keeps the Node process alive, so a script that
 * awaits a task waiting out a retry delay or a rate limit does not exit under it (the
 * system clock's own timers are unref'd). No timer pending: no handle.
 *
 * @example
 * ```ts
 * const timers = new OrchestratorTimers(systemClock, true);
 * const t = timers.set(() => console.log("later"), 1_000);
 * timers.clear(t);
 * ```
 */
export class OrchestratorTimers {
  readonly #clock: Clock;
  readonly #keepAlive: boolean;
  readonly #live = new Set<TimerHandle>();
  #keep: ReturnType<typeof setInterval> | undefined;

  constructor(clock: Clock, keepAlive: boolean) {
    this.#clock = clock;
    this.#keepAlive = keepAlive;
  }

  /** Timers pending. */
  get size(): number {
    return this.#live.size;
  }

  set(fn: () => void, ms: number): TimerHandle {
    const handle = this.#clock.setTimeout(() => {
      this.#live.delete(handle);
      this.#update();
      fn();
    }, ms);
    this.#live.add(handle);
    this.#update();
    return handle;
  }

  clear(handle: TimerHandle | undefined): void {
    if (handle === undefined) return;
    this.#clock.clearTimeout(handle);
    if (this.#live.delete(handle)) this.#update();
  }

  #update(): void {
    const want = this.#keepAlive && this.#live.size > 0;
    if (want && this.#keep === undefined) {
      this.#keep = setInterval(() => {}, 2 ** 30);
    } else if (!want && this.#keep !== undefined) {
      clearInterval(this.#keep);
      this.#keep = undefined;
    }
  }
}
