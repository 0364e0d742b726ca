import { z } from "zod";
import { type Clock, systemClock } from "../clock.js";
import { FlotillaError, type SerializedError } from "../errors.js";
import { type Logger, silentLogger } from "../logger.js";
import type { HealthReport } from "../worker/types.js";
import { formatIssues } from "../worker/validate.js";
import type { CircuitState, WorkerEntry, WorkerHealthState } from "./types.js";

/** Health monitoring options of {@link WorkerRegistry}. */
export interface HealthMonitorOptions {
  /** Time between the starts of two health rounds. @default 30_000 */
  intervalMs: number;
  /** A check not answered within this time counts as failed (its signal is aborted). @default 5_000 */
  timeoutMs: number;
  /** Consecutive failed checks that make a healthy worker `degraded`. @default 1 */
  degradedAfter: number;
  /** Consecutive failed checks that make a worker `unhealthy` (no new tasks). @default 3 */
  unhealthyAfter: number;
  /** Consecutive good checks that bring a worker back to `healthy`. @default 2 */
  recoverAfter: number;
  /** Health checks running at once in a round. @default 16 */
  concurrency: number;
}

/** Circuit breaker options of {@link WorkerRegistry}. */
export interface CircuitBreakerOptions {
  /** Consecutive execution failures that open the circuit. @default 5 */
  failureThreshold: number;
  /** Time an open circuit waits before admitting one probe task (`half_open`). @default 30_000 */
  cooldownMs: number;
}

/** A health or circuit state change of one worker, as `onChange` and the `change` event get it. */
export type RegistryChange =
  | {
      kind: "health";
      workerId: string;
      from: WorkerHealthState;
      to: WorkerHealthState;
      /** The report (or synthesized failure) that caused the change. */
      report: HealthReport;
      at: number;
    }
  | {
      kind: "circuit";
      workerId: string;
      from: CircuitState;
      to: CircuitState;
      /** The failure that opened the circuit, when it opened. */
      error?: SerializedError;
      at: number;
    };

/** How one execution on a worker ended, for {@link WorkerRegistry.recordResult}. */
export interface ExecutionOutcome {
  /** Whether the worker did its job. Pass `true` for failures that are the task's own fault. */
  ok: boolean;
  /** Wall time of the execution, ms. Non-finite or negative values are not averaged. */
  durationMs: number;
  /** The failure (a `FlotillaError`, any thrown value, or its serialized form). */
  error?: unknown;
}

/** Options of {@link WorkerRegistry}. */
export interface WorkerRegistryOptions {
  /** Time source for health rounds, check timeouts and circuit cooldowns. @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
  /**
   * Health rounds: interval, timeout and the thresholds between states.
   * @default { intervalMs: 30_000, timeoutMs: 5_000, degradedAfter: 1, unhealthyAfter: 3, recoverAfter: 2, concurrency: 16 }
   */
  health?: Partial<HealthMonitorOptions>;
  /**
   * Circuit breaker per worker.
   * @default { failureThreshold: 5, cooldownMs: 30_000 }
   */
  circuit?: Partial<CircuitBreakerOptions>;
  /** Called on every health or circuit state change (after the state has changed). */
  onChange?: (change: RegistryChange) => void;
  /** Weight of the newest sample in the execution-time EWMA, in (0, 1]. @default 0.2 */
  ewmaAlpha?: number;
}

/** Events of {@link WorkerRegistry}. */
export interface WorkerRegistryEvents {
  change: [change: RegistryChange];
  added: [entry: WorkerEntry];
  removed: [entry: WorkerEntry];
}

/**
 * Default health monitoring options.
 *
 * @example
 * ```ts
 * new WorkerRegistry({ health: { ...DEFAULT_HEALTH_OPTIONS, intervalMs: 5_000 } });
 * ```
 */
export const DEFAULT_HEALTH_OPTIONS: Readonly<HealthMonitorOptions> = Object.freeze({
  intervalMs: 30_000,
  timeoutMs: 5_000,
  degradedAfter: 1,
  unhealthyAfter: 3,
  recoverAfter: 2,
  concurrency: 16,
});

/**
 * Default circuit breaker options.
 *
 * @example
 * ```ts
 * new WorkerRegistry({ circuit: { ...DEFAULT_CIRCUIT_OPTIONS, failureThreshold: 3 } });
 * ```
 */
export const DEFAULT_CIRCUIT_OPTIONS: Readonly<CircuitBreakerOptions> = Object.freeze({
  failureThreshold: 5,
  cooldownMs: 30_000,
});

const positiveInt = z.number().int().min(1);
const OptionsSchema = z.object({
  health: z
    .object({
      intervalMs: positiveInt.optional(),
      timeoutMs: positiveInt.optional(),
      degradedAfter: positiveInt.optional(),
      unhealthyAfter: positiveInt.optional(),
      recoverAfter: positiveInt.optional(),
      concurrency: positiveInt.optional(),
    })
    .optional(),
  circuit: z
    .object({
      failureThreshold: positiveInt.optional(),
      cooldownMs: z.number().int().min(0).optional(),
    })
    .optional(),
  ewmaAlpha: z.number().gt(0).max(1).optional(),
});

/** Registry options with defaults applied and checked. @internal */
export interface ResolvedRegistryOptions {
  clock: Clock;
  logger: Logger;
  health: HealthMonitorOptions;
  circuit: CircuitBreakerOptions;
  onChange: ((change: RegistryChange) => void) | undefined;
  alpha: number;
}

/** Validates registry options (`VALIDATION` naming the option) and applies the defaults. @internal */
export function resolveRegistryOptions(options: WorkerRegistryOptions): ResolvedRegistryOptions {
  const parsed = OptionsSchema.safeParse({
    health: options.health,
    circuit: options.circuit,
    ewmaAlpha: options.ewmaAlpha,
  });
  if (!parsed.success) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid registry options: ${formatIssues(parsed.error, "options")}`,
    );
  }
  if (options.onChange !== undefined && typeof options.onChange !== "function") {
    throw new FlotillaError(
      "VALIDATION",
      "invalid registry options: options.onChange: expected a function",
    );
  }
  const clock = options.clock;
  if (
    clock !== undefined &&
    (typeof clock?.now !== "function" ||
      typeof clock.setTimeout !== "function" ||
      typeof clock.clearTimeout !== "function")
  ) {
    throw new FlotillaError(
      "VALIDATION",
      "invalid registry options: options.clock: expected a Clock (now, setTimeout, clearTimeout)",
    );
  }
  const resolvedClock = options.clock ?? systemClock;
  const logger = options.logger ?? silentLogger;
  const health = { ...DEFAULT_HEALTH_OPTIONS, ...stripUndefined(options.health) };
  const circuit = { ...DEFAULT_CIRCUIT_OPTIONS, ...stripUndefined(options.circuit) };
  if (health.degradedAfter > health.unhealthyAfter) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid registry options: options.health.degradedAfter (${health.degradedAfter}) must be <= options.health.unhealthyAfter (${health.unhealthyAfter})`,
    );
  }
  return {
    clock: resolvedClock,
    logger,
    health,
    circuit,
    onChange: options.onChange,
    alpha: options.ewmaAlpha ?? 0.2,
  };
}

function stripUndefined<T extends object>(value: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  if (value === undefined) return out;
  for (const [k, v] of Object.entries(value))
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
