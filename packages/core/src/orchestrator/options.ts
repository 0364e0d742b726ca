import { z } from "zod";
import type { Clock } from "../clock.js";
import type { Logger } from "../logger.js";
import type { WorkerRegistryOptions } from "../registry/registry.js";
import type { DispatchGate } from "../resources/gate.js";
import type { RoutingStrategyName } from "../router/strategies.js";
import type { RoutingStrategy } from "../router/types.js";
import type { Store } from "../store/types.js";
import type { TaskDefaults } from "../task/normalize.js";
import { PrioritySchema, RetryPolicySchema } from "../task/schema.js";
import type { TelemetryBounds } from "./telemetry.js";

/**
 * Options of an {@link Orchestrator}. Every field is optional.
 *
 * @example
 * ```ts
 * const orchestrator = new Orchestrator({
 *   concurrency: 32,
 *   aging: { intervalMs: 10_000 },
 *   routing: "power-of-two",
 *   fairness: { weights: { acme: 3 } },
 *   defaults: { timeoutMs: 60_000, retry: { maxAttempts: 3 } },
 * });
 * ```
 */
export interface OrchestratorOptions {
  /** Time source of every timer. @default systemClock */
  clock?: Clock;
  /** Where task state is written before it is acknowledged. @default new MemoryStore() */
  store?: Store;
  /** pino-compatible logger. @default silentLogger */
  logger?: Logger;
  /** Tasks leased or running at once across all workers and remote slots. @default Infinity */
  concurrency?: number;
  /**
   * Priority aging: a waiting task gains one priority point per `intervalMs` over newer
   * tasks, so `background` work cannot starve under a stream of urgent work.
   * @default undefined (off)
   */
  aging?: { intervalMs: number };
  /** Weighted fair share between tenants at equal priority. @default every tenant weight 1 */
  fairness?: { weights?: Record<string, number> };
  /** How a worker is chosen among those that can take a task. @default "least-loaded" */
  routing?: RoutingStrategy | RoutingStrategyName;
  /** Checks consulted before every dispatch (rate limits, budgets, tenant caps, admission). @default [] */
  gates?: DispatchGate[];
  /** Defaults applied to submitted tasks. @default { priority: "normal", retry: { maxAttempts: 1 } } */
  defaults?: TaskDefaults;
  /** Health monitoring and circuit breaker options of the worker registry. @default registry defaults */
  registry?: Omit<WorkerRegistryOptions, "clock" | "logger">;
  /** Default lease of a pull claim (renewed by progress/renew calls). @default 60_000 */
  leaseMs?: number;
  /** How often a gate that blocks without a retry time and cannot wake the scheduler is asked again. @default 1_000 */
  recheckIntervalMs?: number;
  /** Finished tasks kept in memory for fast `get` and dependency outputs (the store keeps all). @default 10_000 */
  finishedCacheSize?: number;
  /**
   * Bounds of the per-task telemetry kept in memory (see `Orchestrator.telemetry`): samples
   * per task and tasks kept. @default { samplesPerTask: 200, tasks: 1000 }
   */
  telemetry?: TelemetryBounds;
  /**
   * Largest payload a task may carry, in bytes of its JSON. A larger one is refused at submit
   * with `VALIDATION` naming the task, the size and the limit (it would be stored, copied and
   * sent with every attempt). Put big inputs in a file or object store and pass a reference.
   * @default 8_388_608 (8 MiB)
   */
  maxPayloadBytes?: number;
  /**
   * How often a task may be cut off by the orchestrator's own stop (a crash, a kill) before
   * it fails with `WORKER_LOST`. Such interruptions do not count against the task's
   * `retry.maxAttempts` — an accepted task is never lost to a crash — but a task that
   * brings the process down every time must end. Execution is at least once: a task cut off
   * after its worker did the work runs again, so make workers idempotent (see persistence docs).
   * @default 3
   */
  maxInterruptions?: number;
  /**
   * Fail a queued task that no registered worker could run (no worker has its type, or none
   * offers its requirements or target) once it has waited this long, with
   * `NO_ELIGIBLE_WORKER`. Off by default: such a task waits for a matching worker to
   * register (late binding), and `explain` says what it waits for.
   * @default undefined (off)
   */
  unroutableTimeoutMs?: number;
  /**
   * While the orchestrator has a timer pending for work (a retry delay, a rate-limit wait, a
   * timeout, a lease), keep the Node process alive, so `await handle.result()` in a script
   * does not exit under it. Nothing pending: nothing held.
   * @default true with the system clock, false with any other clock
   */
  keepAlive?: boolean;
  /** Random source for retry jitter, in [0, 1). @default Math.random */
  random?: () => number;
  /**
   * One of several orchestrators sharing one store: the store's tasks are hashed into
   * `count` partitions and this orchestrator schedules only those it has adopted
   * (`adopt`/`release`, driven by partition leases such as `@flotilla/store-postgres`'s).
   * It accepts any submission — a task of a partition held elsewhere is stored, and its
   * holder runs it — and starts holding none. Off by default: one orchestrator schedules
   * every task of its store.
   * @default undefined (off)
   */
  partitions?: { count: number };
}

const positive = z.number().positive();

/**
 * Validates the plain-data fields of {@link OrchestratorOptions} (the constructor does it).
 *
 * @example
 * ```ts
 * OrchestratorOptionsSchema.parse({ concurrency: 8 });
 * ```
 */
export const OrchestratorOptionsSchema = z.object({
  concurrency: z.union([z.number().int().min(1), z.literal(Number.POSITIVE_INFINITY)]).optional(),
  aging: z.object({ intervalMs: positive }).optional(),
  fairness: z.object({ weights: z.record(z.string(), positive).optional() }).optional(),
  gates: z
    .array(
      z.custom<DispatchGate>(
        (g) =>
          typeof g === "object" &&
          g !== null &&
          typeof (g as DispatchGate).check === "function" &&
          typeof (g as DispatchGate).name === "string",
        { message: "expected a DispatchGate (an object with name and check)" },
      ),
    )
    .optional(),
  defaults: z
    .object({
      priority: PrioritySchema.optional(),
      timeoutMs: z.number().int().positive().optional(),
      retry: RetryPolicySchema.partial().optional(),
      tenant: z.string().min(1).optional(),
    })
    .optional(),
  leaseMs: z.number().int().positive().optional(),
  recheckIntervalMs: z.number().int().positive().optional(),
  finishedCacheSize: z.number().int().min(0).optional(),
  telemetry: z
    .object({
      samplesPerTask: z.number().int().min(1).optional(),
      tasks: z.number().int().min(1).optional(),
    })
    .strict()
    .optional(),
  maxPayloadBytes: z.number().int().positive().optional(),
  maxInterruptions: z.number().int().min(0).optional(),
  unroutableTimeoutMs: z.number().int().positive().optional(),
  keepAlive: z.boolean().optional(),
  partitions: z
    .object({ count: z.number().int().min(1).max(4096) })
    .strict()
    .optional(),
});

/**
 * Options of `Orchestrator.stop`.
 *
 * @example
 * ```ts
 * await orchestrator.stop({ mode: "abort" });
 * ```
 */
export interface StopOptions {
  /**
   * `drain`: take no new work and let running tasks finish (up to `timeoutMs`, then abort
   * them); `abort`: abort running tasks at once. Aborted tasks go back to `queued` (a new
   * attempt on the next start).
   * @default "drain"
   */
  mode?: "drain" | "abort";
  /** Longest wait for a drain. @default 30_000 */
  timeoutMs?: number;
}

/**
 * Options of `Orchestrator.unregister`.
 *
 * @example
 * ```ts
 * await orchestrator.unregister("gpu-1", { mode: "drain", timeoutMs: 60_000 });
 * ```
 */
export interface UnregisterOptions {
  /** `drain`: let its tasks finish (up to `timeoutMs`), `handback`: requeue them at once. @default "drain" */
  mode?: "drain" | "handback";
  /** Longest wait for a drain; remaining tasks are then handed back. @default 30_000 */
  timeoutMs?: number;
}

/**
 * A snapshot of the orchestrator, from `Orchestrator.status()`. JSON-safe.
 *
 * @example
 * ```ts
 * const { counts, queueDepth, inFlight, avgExecutionMs } = orchestrator.status();
 * ```
 */
export interface OrchestratorStatus {
  state: "idle" | "running" | "stopping" | "stopped";
  /** Tasks by status (tasks known to this process). */
  counts: Record<string, number>;
  /** Ready tasks by priority (name when it is a named level, else the number). */
  queueDepth: Record<string, number>;
  /** Ready tasks in total, and tasks waiting for a retry delay or `runAt`. */
  queued: number;
  delayed: number;
  /** Tasks leased or running now. */
  inFlight: number;
  workers: import("../registry/types.js").WorkerInfo[];
  /** ms since `start()` (0 when not running). */
  uptimeMs: number;
  /** Mean wall time of finished attempts, ms. */
  avgExecutionMs: number;
}
