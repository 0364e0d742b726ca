import type { Clock } from "../clock.js";
import type { SerializedError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Entry } from "./entry.js";
import type { CircuitBreakerOptions, RegistryChange } from "./options.js";
import type { CircuitState } from "./types.js";

/**
 * The circuit breaker of every worker: `failureThreshold` consecutive execution failures
 * open a worker's circuit (no new tasks); after `cooldownMs` it turns `half_open` and admits
 * one probe task; a success closes it, a failure opens it again. @internal
 */
export class CircuitBreaker {
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly options: CircuitBreakerOptions;
  readonly #notify: (change: RegistryChange) => void;
  /** While stopped, no cooldown timer is armed (open circuits turn half-open when asked). */
  stopped = false;

  constructor(
    clock: Clock,
    logger: Logger,
    options: CircuitBreakerOptions,
    notify: (change: RegistryChange) => void,
  ) {
    this.#clock = clock;
    this.#logger = logger;
    this.options = options;
    this.#notify = notify;
  }

  /** Whether the circuit lets a task through now (turning a cooled-down open circuit half-open). */
  allows(entry: Entry): boolean {
    if (entry.circuit === "closed") return true;
    if (entry.circuit === "open") {
      if (this.#clock.now() < entry.openUntil) return false;
      this.clearCooldown(entry);
      this.#set(entry, "half_open");
    }
    return !entry.probeInFlight;
  }

  /** A good run: the circuit closes. */
  succeeded(entry: Entry): void {
    if (entry.circuit === "closed") return;
    this.clearCooldown(entry);
    this.#set(entry, "closed");
  }

  /** A failed run (counted in `stats.consecutiveFailures` already): opens the circuit when due. */
  failed(entry: Entry, error: SerializedError | undefined): void {
    if (
      entry.circuit === "half_open" ||
      (entry.circuit === "closed" &&
        entry.stats.consecutiveFailures >= this.options.failureThreshold)
    ) {
      this.#open(entry, error);
    }
  }

  #open(entry: Entry, error: SerializedError | undefined): void {
    entry.openUntil = this.#clock.now() + this.options.cooldownMs;
    this.clearCooldown(entry);
    this.armCooldown(entry);
    if (entry.circuit !== "open") this.#set(entry, "open", error);
  }

  /** Arms the timer that turns an open circuit half-open. */
  armCooldown(entry: Entry): void {
    if (this.stopped || entry.removed) return;
    const delay = Math.max(0, entry.openUntil - this.#clock.now());
    entry.cooldownTimer = this.#clock.setTimeout(() => {
      entry.cooldownTimer = undefined;
      if (!entry.removed && entry.circuit === "open") this.#set(entry, "half_open");
    }, delay);
  }

  clearCooldown(entry: Entry): void {
    if (entry.cooldownTimer !== undefined) this.#clock.clearTimeout(entry.cooldownTimer);
    entry.cooldownTimer = undefined;
  }

  #set(entry: Entry, to: CircuitState, error?: SerializedError): void {
    const from = entry.circuit;
    if (from === to) return;
    entry.circuit = to;
    const change: RegistryChange = {
      kind: "circuit",
      workerId: entry.id,
      from,
      to,
      at: this.#clock.now(),
    };
    if (error !== undefined) change.error = error;
    this.#logger[to === "open" ? "warn" : "info"](
      { workerId: entry.id, from, to },
      `circuit ${from} -> ${to}`,
    );
    this.#notify(change);
  }
}
