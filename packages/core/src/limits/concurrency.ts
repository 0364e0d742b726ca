import { z } from "zod";
import { type Logger, silentLogger } from "../logger.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate, GateDecision } from "../resources/gate.js";
import { parseConfig } from "../resources/validate.js";
import { Wakers } from "../resources/wakers.js";
import type { TaskRecord } from "../task/types.js";

/** A concurrency cap: a whole number ≥ 1. @example ConcurrencyCapSchema.parse(4) */
export const ConcurrencyCapSchema = z
  .number()
  .int({ error: "must be a whole number" })
  .positive({ error: "must be at least 1" });

/** Validates {@link ConcurrencyLimiterOptions.limits} and `default`. @example ConcurrencyConfigSchema.parse({ limits: { acme: 4 }, default: 1 }) */
export const ConcurrencyConfigSchema = z
  .object({
    limits: z.record(z.string().min(1), ConcurrencyCapSchema).default({}),
    default: ConcurrencyCapSchema.optional(),
  })
  .strict();

/** Options of {@link ConcurrencyLimiter}. */
export interface ConcurrencyLimiterOptions {
  /** Cap per key, e.g. `{ acme: 4, beta: 2 }`. @default {} */
  limits?: Record<string, number>;
  /** Cap for keys not listed in `limits`. @default undefined (no cap) */
  default?: number;
  /** The key of a task. @default the task's tenant ("default" when it has none) */
  key?: (task: TaskRecord, worker: WorkerEntry) => string | undefined;
  /** What the key is, for reasons and stats. @default "tenant" */
  label?: string;
  /** Gate name. @default "concurrency" */
  name?: string;
  /** @default silentLogger */
  logger?: Logger;
}

/**
 * Per-key concurrency caps as a dispatch gate: at most N tasks of one tenant (or of any key
 * you derive from the task and worker) run at once. A slot is released when the attempt
 * settles, and the scheduler is woken. Works together with the orchestrator's global cap
 * and its weighted fair sharing between tenants.
 *
 * @example
 * ```ts
 * const perTenant = new ConcurrencyLimiter({ limits: { acme: 8 }, default: 2 });
 * const orchestrator = new Orchestrator({ gates: [perTenant] });
 * perTenant.setLimit("acme", 16); // at run time
 * ```
 */
export class ConcurrencyLimiter implements DispatchGate {
  readonly name: string;
  readonly #limits: Map<string, number>;
  #default: number | undefined;
  readonly #keyOf: (task: TaskRecord, worker: WorkerEntry) => string | undefined;
  readonly #label: string;
  readonly #inFlight = new Map<string, number>();
  readonly #held = new Map<string, string>();
  readonly #wakers: Wakers;
  readonly #logger: Logger;

  constructor(options: ConcurrencyLimiterOptions = {}) {
    const cfg = parseConfig(
      ConcurrencyConfigSchema,
      { limits: options.limits ?? {}, default: options.default },
      "tenantConcurrency",
    );
    this.#limits = new Map(Object.entries(cfg.limits));
    this.#default = cfg.default;
    this.#keyOf = options.key ?? ((task) => task.tenant ?? "default");
    this.#label = options.label ?? "tenant";
    this.name = options.name ?? "concurrency";
    this.#logger = options.logger ?? silentLogger;
    this.#wakers = new Wakers(this.#logger);
  }

  /** The cap of `key`, if any. @example perTenant.limitOf("acme") // 8 */
  limitOf(key: string): number | undefined {
    return this.#limits.get(key) ?? this.#default;
  }

  /** Tasks of `key` running now. @example perTenant.inFlight("acme") */
  inFlight(key: string): number {
    return this.#inFlight.get(key) ?? 0;
  }

  /**
   * Sets (or with `undefined` removes) the cap of `key` at run time and wakes the scheduler.
   *
   * @example
   * ```ts
   * perTenant.setLimit("acme", 16);
   * ```
   */
  setLimit(key: string, limit: number | undefined): void {
    if (limit === undefined) this.#limits.delete(key);
    else
      this.#limits.set(
        key,
        parseConfig(ConcurrencyCapSchema, limit, `tenantConcurrency.limits.${key}`),
      );
    this.#wake();
  }

  /**
   * Sets (or with `undefined` removes) the cap of every key without a cap of its own, and
   * wakes the scheduler.
   *
   * @example
   * ```ts
   * perTenant.setDefault(2);
   * ```
   */
  setDefault(limit: number | undefined): void {
    this.#default =
      limit === undefined
        ? undefined
        : parseConfig(ConcurrencyCapSchema, limit, "tenantConcurrency.default");
    this.#wake();
  }

  /** The keys with a cap of their own. @example perTenant.keys() // ["acme"] */
  keys(): string[] {
    return [...this.#limits.keys()];
  }

  /** Gate: waits while the task's key is at its cap. @example perTenant.check(task, entry, Date.now()) */
  check(task: TaskRecord, worker: WorkerEntry): GateDecision {
    const key = this.#keyOf(task, worker);
    if (key === undefined) return { ok: true };
    const cap = this.limitOf(key);
    if (cap === undefined || this.inFlight(key) < cap) return { ok: true };
    return { ok: false, reason: `${this.#label} "${key}" is at its concurrency cap (${cap})` };
  }

  /** Gate: takes a slot of the task's key. @example perTenant.onDispatch(task, entry, Date.now()) */
  onDispatch(task: TaskRecord, worker: WorkerEntry): void {
    const key = this.#keyOf(task, worker);
    if (key === undefined) return;
    if (this.#held.has(task.id)) this.#release(task.id);
    this.#held.set(task.id, key);
    this.#inFlight.set(key, this.inFlight(key) + 1);
  }

  /** Gate: releases the slot and wakes the scheduler. @example perTenant.onSettle(task, entry, outcome, Date.now()) */
  onSettle(task: TaskRecord): void {
    if (this.#release(task.id)) this.#wake();
  }

  #release(taskId: string): boolean {
    const key = this.#held.get(taskId);
    if (key === undefined) return false;
    this.#held.delete(taskId);
    const n = this.inFlight(key) - 1;
    if (n > 0) this.#inFlight.set(key, n);
    else this.#inFlight.delete(key);
    return true;
  }

  /** Gate: registers the scheduler's wake-up. @example perTenant.subscribe(() => {}) */
  subscribe(wake: () => void): () => void {
    return this.#wakers.subscribe(wake);
  }

  #wake(): void {
    this.#wakers.wake();
  }

  /**
   * Running tasks and cap per key (keys with a cap or running tasks).
   *
   * @example
   * ```ts
   * perTenant.stats(); // { acme: { inFlight: 3, limit: 8 } }
   * ```
   */
  stats(): Record<string, { inFlight: number; limit?: number }> {
    const out: Record<string, { inFlight: number; limit?: number }> = {};
    for (const key of new Set([...this.#limits.keys(), ...this.#inFlight.keys()])) {
      const limit = this.limitOf(key);
      out[key] =
        limit === undefined
          ? { inFlight: this.inFlight(key) }
          : { inFlight: this.inFlight(key), limit };
    }
    return out;
  }
}
