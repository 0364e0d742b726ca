import type { Clock, TimerHandle } from "../clock.js";
import { startHealthCheck } from "../health/check.js";
import { nextHealthState } from "../health/state.js";
import type { Logger } from "../logger.js";
import type { HealthReport } from "../worker/types.js";
import type { Entry, PendingCheck } from "./entry.js";
import type { HealthMonitorOptions, RegistryChange } from "./options.js";

/** What the health monitor reads and tells. */
export interface HealthMonitorHost {
  entries(): Iterable<Entry>;
  notify(change: RegistryChange): void;
}

/**
 * Health rounds: every worker with a `healthCheck` is checked each `intervalMs`
 * (`concurrency` at a time, each bounded by `timeoutMs`), and each report moves the worker
 * through the health state machine (healthy → degraded → unhealthy → recovered after
 * `recoverAfter` good checks). @internal
 */
export class HealthMonitor {
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #options: HealthMonitorOptions;
  readonly #host: HealthMonitorHost;
  #monitoring = false;
  #generation = 0;
  #roundTimer: TimerHandle | undefined;
  #round: Promise<void> | undefined;

  constructor(
    clock: Clock,
    logger: Logger,
    options: HealthMonitorOptions,
    host: HealthMonitorHost,
  ) {
    this.#clock = clock;
    this.#logger = logger;
    this.#options = options;
    this.#host = host;
  }

  /** Starts the rounds (the first at once). Idempotent. */
  start(): void {
    if (this.#monitoring) return;
    this.#monitoring = true;
    this.#scheduleRound(0);
  }

  /** Stops the rounds and cancels checks in flight. */
  stop(): void {
    this.#monitoring = false;
    this.#generation++;
    if (this.#roundTimer !== undefined) this.#clock.clearTimeout(this.#roundTimer);
    this.#roundTimer = undefined;
    for (const entry of this.#host.entries()) entry.check?.cancel();
  }

  /**
   * Arms the next round. `#generation` changes on every stop(), so a round still finishing
   * from before a stop()/start() pair cannot arm a second, parallel loop.
   */
  #scheduleRound(delay: number): void {
    if (!this.#monitoring) return;
    const generation = this.#generation;
    if (this.#roundTimer !== undefined) this.#clock.clearTimeout(this.#roundTimer);
    this.#roundTimer = this.#clock.setTimeout(() => {
      this.#roundTimer = undefined;
      const startedAt = this.#clock.now();
      void this.checkAll().then(() => {
        if (generation !== this.#generation) return;
        const next = Math.max(0, startedAt + this.#options.intervalMs - this.#clock.now());
        this.#scheduleRound(next);
      });
    }, delay);
  }

  /** One round: every worker with a health check, `concurrency` at a time. */
  checkAll(): Promise<void> {
    if (this.#round !== undefined) return this.#round;
    const queue = [...this.#host.entries()].filter((e) => e.worker.healthCheck !== undefined);
    let next = 0;
    const lane = async () => {
      while (next < queue.length) {
        const e = queue[next++]!;
        if (!e.removed) await this.checkOne(e);
      }
    };
    const lanes = Array.from({ length: Math.min(this.#options.concurrency, queue.length) }, lane);
    this.#round = Promise.all(lanes).then(
      () => {
        this.#round = undefined;
      },
      (err) => {
        this.#round = undefined;
        this.#logger.error({ err }, "health round failed");
      },
    );
    return this.#round;
  }

  /** Runs one check (joining a check already running for that worker) and applies it. */
  checkOne(entry: Entry): Promise<HealthReport> {
    if (entry.worker.healthCheck === undefined) return Promise.resolve({ status: entry.health });
    if (entry.check !== undefined) return entry.check.promise;
    const running = startHealthCheck(entry.worker, {
      clock: this.#clock,
      timeoutMs: this.#options.timeoutMs,
    });
    const pending: PendingCheck = {
      cancel: running.cancel,
      promise: running.result.then((report) => {
        if (entry.check === pending) entry.check = undefined;
        if (report === undefined) return { status: entry.health }; // cancelled: nothing learned
        if (!entry.removed) this.apply(entry, report);
        return report;
      }),
    };
    entry.check = pending;
    return pending.promise;
  }

  /** Moves the worker through the health state machine by one report. */
  apply(entry: Entry, report: HealthReport): void {
    entry.stats.lastHealthCheckAt = this.#clock.now();
    entry.stats.lastHealthReport = report;
    const from = entry.health;
    const next = nextHealthState(from, entry.healthCounters, report, this.#options);
    entry.healthCounters = next.counters;
    const to = next.state;
    if (to === from) return;
    entry.health = to;
    this.#logger[to === "healthy" ? "info" : "warn"](
      { workerId: entry.id, from, to, message: report.message },
      `worker health ${from} -> ${to}`,
    );
    this.#host.notify({
      kind: "health",
      workerId: entry.id,
      from,
      to,
      report,
      at: this.#clock.now(),
    });
  }
}
