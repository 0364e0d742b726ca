import { EventEmitter } from "eventemitter3";
import { z } from "zod";
import {
  type AdmissionConfig,
  AdmissionControl,
  type PressureLevel,
} from "../admission/admission.js";
import type { PressureSample, PressureSensor } from "../admission/sensor.js";
import { type BudgetConfig, type BudgetStats, Budgets } from "../budget/budgets.js";
import { isTimeZone } from "../budget/calendar.js";
import { type Clock, systemClock } from "../clock.js";
import { CostModel } from "../cost/costModel.js";
import { type CostEntry, CostLedger, type CostSnapshot } from "../cost/ledger.js";
import { PriceBook, type PriceSubject, type PriceTable } from "../cost/prices.js";
import { ConcurrencyCapSchema, ConcurrencyLimiter } from "../limits/concurrency.js";
import type { LimitInput, RateLimitsConfig } from "../limits/rate.js";
import { type LimitStats, RateLimiter } from "../limits/rateLimiter.js";
import { type Logger, silentLogger } from "../logger.js";
import type { WorkerEntry } from "../registry/types.js";
import type { UsageEntry } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import type { DispatchGate } from "./gate.js";
import { parseConfig } from "./validate.js";

/** Validates the top level of a {@link ResourceConfig}; each part is validated by its own schema. @example ResourceConfigSchema.parse({ timeZone: "UTC" }) */
export const ResourceConfigSchema = z
  .object({
    timeZone: z
      .string()
      .refine(isTimeZone, {
        error: (i) =>
          `unknown time zone ${JSON.stringify(i.input)} (expected an IANA name such as "Europe/Berlin")`,
      })
      .default("UTC"),
    limits: z.record(z.string(), z.unknown()).default({}),
    budgets: z.array(z.unknown()).default([]),
    prices: z.record(z.string(), z.unknown()).default({}),
    defaultPrices: z.boolean().default(true),
    tenantConcurrency: z
      .record(z.string(), z.unknown(), {
        error: 'expected caps per tenant, e.g. { acme: 4, "*": 1 }',
      })
      .optional(),
    admission: z.union([z.boolean(), z.record(z.string(), z.unknown())]).default(false),
    defaultTokens: z.number().nonnegative().default(0),
    limitMarginMs: z.union([z.literal("auto"), z.number().nonnegative().finite()]).default("auto"),
  })
  .strict();

/**
 * Everything the resource manager enforces, in one object.
 *
 * @example
 * ```ts
 * const config: ResourceConfig = {
 *   timeZone: "Europe/Berlin",
 *   limits: { openai: ["500/min", "90k tokens/min", "10000/day"] },
 *   budgets: [{ scope: "global", costUsd: 100 }, { scope: "tenant", costUsd: 5, policy: "fail" }],
 *   prices: { openai: { "gpt-4o-mini": { input: 0.15, output: 0.6 } } },
 *   tenantConcurrency: { acme: 8, "*": 2 },
 *   admission: { holdAt: "red" },
 * };
 * ```
 */
export interface ResourceConfig {
  /** IANA zone for calendar budgets and "today" in stats. @default "UTC" */
  timeZone?: string;
  /** Rate limits per key (see `RateLimiter`). @default {} */
  limits?: RateLimitsConfig;
  /** Quotas and budgets (see `Budgets`). @default [] */
  budgets?: BudgetConfig[];
  /** Price overrides, USD per million tokens (see `PriceBook`). @default {} */
  prices?: PriceTable;
  /** Start from the built-in price table. @default true */
  defaultPrices?: boolean;
  /** Concurrency cap per tenant; `"*"` is the cap of every other tenant. @default undefined (no caps) */
  tenantConcurrency?: Record<string, number>;
  /** Admission control: `true` for defaults, or its options. @default false */
  admission?: boolean | AdmissionConfig;
  /** Tokens charged for a task without an estimate (reconciled at settle). @default 0 */
  defaultTokens?: number;
  /** Extra ms each admitted call counts in rate-limit windows (see `RateLimiterOptions.marginMs`). @default "auto" (2 % of each window, at most 50 ms) */
  limitMarginMs?: number | "auto";
}

/** Injected parts of a {@link ResourceManager}. */
/** The run-time parts of {@link ResourceManager}'s options (next to its config). */
export interface ResourceManagerOptions {
  /** @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
  /** Pressure source for admission control. @default HostPressureSensor */
  sensor?: PressureSensor;
  /** Rate-limit keys of a task. @default the task's `rateLimitKey`(s) */
  keys?: (task: TaskRecord, worker: WorkerEntry) => readonly string[];
  /** Provider and model of a task on a worker, for pricing. @default defaultPriceSubject */
  subject?: (task: TaskRecord, worker: WorkerEntry | undefined) => PriceSubject;
}

/** Usage of one provider, worker or tenant today. */
export interface UsageToday {
  requests_today: number;
  tokens_today: number;
  /** USD. */
  cost_today: number;
}

/** A provider's usage, limits and what remains (the tightest of its limits and budgets). */
export interface ProviderStats extends UsageToday {
  limits: LimitStats[];
  pausedUntil?: number;
  remaining: { requests?: number; tokens?: number; cost?: number };
}

/** What {@link ResourceManager.stats} returns (JSON-safe; served at `/resources/stats`). */
export interface ResourceStats {
  at: number;
  timeZone: string;
  today: string;
  totals: UsageToday;
  providers: Record<string, ProviderStats>;
  workers: Record<string, UsageToday>;
  tenants: Record<string, UsageToday & { inFlight: number; concurrencyLimit?: number }>;
  budgets: BudgetStats[];
  admission?: {
    level: PressureLevel;
    holding: boolean;
    sample?: PressureSample;
    retryAfterSeconds: number;
  };
  cost: Pick<CostSnapshot, "total" | "byProvider" | "byModel">;
}

/** Events of {@link ResourceManager}. */
export interface ResourceManagerEvents {
  cost: [entry: CostEntry];
  pressure: [level: PressureLevel, previous: PressureLevel, sample: PressureSample];
}

function minDefined(a: number | undefined, b: number | undefined): number | undefined {
  if (a === undefined) return b;
  if (b === undefined) return a;
  return Math.min(a, b);
}

/**
 * Builds the rate limiter, budgets, cost ledger, tenant caps and admission control from one
 * options object — the validated config (plain data, as a config file holds it) and the
 * run-time parts (`clock`, `logger`, `sensor`, `keys`, `subject`) side by side — and hands
 * the orchestrator their gates. `stats()` is the
 * `/resources/stats` view; `cost` and `pressure` events can be forwarded.
 *
 * @example
 * ```ts
 * const resources = new ResourceManager({
 *   clock: systemClock, // the default
 *   limits: { openai: ["500/min", "90k tokens/min"] },
 *   budgets: [{ scope: "provider", key: "openai", costUsd: 20 }],
 *   tenantConcurrency: { "*": 4 },
 * });
 * const orchestrator = new Orchestrator({ gates: resources.gates });
 * resources.start();
 * resources.on("cost", (e) => console.log(e.taskId, e.costUsd));
 * console.log(resources.stats().providers.openai?.remaining);
 * ```
 */
export class ResourceManager extends EventEmitter<ResourceManagerEvents> {
  readonly limiter: RateLimiter;
  readonly budgets: Budgets;
  readonly ledger: CostLedger;
  readonly costModel: CostModel;
  /** Per-tenant concurrency caps (a gate even without caps, so `configure` can add some). */
  readonly concurrency: ConcurrencyLimiter;
  readonly admission: AdmissionControl | undefined;
  /** The gates to pass as `new Orchestrator({ gates })`, in check order. */
  readonly gates: DispatchGate[];
  readonly timeZone: string;
  readonly #clock: Clock;
  /** The config as given (validated), for `config()` and to tell what `configure` changes. */
  #config: ResourceConfig;
  /** Limit keys and budget names the config made (run-time ones such as `worker:<id>` are not). */
  #configLimitKeys: string[];
  #configBudgets: string[];

  constructor(init: ResourceConfig & ResourceManagerOptions = {}) {
    super();
    const { clock: _c, logger: _l, sensor: _s, keys: _k, subject: _j, ...config } = init ?? {};
    const options: ResourceManagerOptions = init ?? {};
    const cfg = parseConfig(ResourceConfigSchema, config, "resources");
    const clock = options.clock ?? systemClock;
    const logger = options.logger ?? silentLogger;
    this.#clock = clock;
    this.timeZone = cfg.timeZone;
    this.#config = structuredClone(config) as ResourceConfig;
    this.#configLimitKeys = Object.keys(cfg.limits);
    const modelOptions: ConstructorParameters<typeof CostModel>[0] = {
      prices: new PriceBook(cfg.prices as PriceTable, { defaults: cfg.defaultPrices }),
    };
    if (options.subject) modelOptions.subject = options.subject;
    this.costModel = new CostModel(modelOptions);
    const limiterOptions: ConstructorParameters<typeof RateLimiter>[0] = {
      limits: cfg.limits as RateLimitsConfig,
      clock,
      logger,
      defaultTokens: cfg.defaultTokens,
      marginMs: cfg.limitMarginMs,
    };
    if (options.keys) limiterOptions.keys = options.keys;
    this.limiter = new RateLimiter(limiterOptions);
    this.budgets = new Budgets({
      budgets: cfg.budgets as BudgetConfig[],
      timeZone: cfg.timeZone,
      costModel: this.costModel,
      clock,
      logger,
    });
    this.#configBudgets = this.budgets.names();
    this.ledger = new CostLedger({
      costModel: this.costModel,
      timeZone: cfg.timeZone,
      clock,
      logger,
    });
    this.ledger.on("cost", (e) => this.emit("cost", e));
    // Always a gate (no caps: it only counts), so caps can be set by a later `configure`.
    const { "*": fallback, ...caps } = parseCaps(cfg.tenantConcurrency ?? {});
    const capOptions: ConstructorParameters<typeof ConcurrencyLimiter>[0] = {
      limits: caps,
      logger,
    };
    if (fallback !== undefined) capOptions.default = fallback;
    this.concurrency = new ConcurrencyLimiter(capOptions);
    if (cfg.admission !== false) {
      const admissionConfig = cfg.admission === true ? {} : (cfg.admission as AdmissionConfig);
      const opts: ConstructorParameters<typeof AdmissionControl>[0] = {
        ...admissionConfig,
        clock,
        logger,
      };
      if (options.sensor) opts.sensor = options.sensor;
      this.admission = new AdmissionControl(opts);
      this.admission.on("level", (level, prev, sample) =>
        this.emit("pressure", level, prev, sample),
      );
    }
    const gates: DispatchGate[] = [];
    if (this.admission) gates.push(this.admission);
    gates.push(this.concurrency);
    gates.push(this.limiter, this.budgets, this.ledger);
    this.gates = gates;
  }

  /**
   * The resource config in force: as given at construction, with each later
   * {@link ResourceManager.configure} applied. JSON-safe.
   *
   * @example
   * ```ts
   * resources.config().limits; // { openai: ["500/min", "90k tokens/min"] }
   * ```
   */
  config(): ResourceConfig {
    return structuredClone(this.#config);
  }

  /**
   * Applies a new resource config while tasks run, without losing usage already counted:
   * rate limits (a window of the same unit and length keeps its log, so a change never opens
   * a new burst), budgets (see `Budgets.configure`; `history`, the usage ledger, fills a new
   * budget's current window), prices and tenant caps change at once and the scheduler is
   * woken. Limits and budgets added at run time by other code (e.g. `worker:<id>`) are left
   * alone. `timeZone`, `admission`, `defaultTokens`, `limitMarginMs` and `defaultPrices` are fixed for the
   * manager's life: a change to them is not applied and is listed in `restartRequired`.
   * The whole config is validated first: a bad one throws `VALIDATION` naming the setting
   * and changes nothing.
   *
   * @example
   * ```ts
   * const { restartRequired } = resources.configure(
   *   { limits: { openai: ["1000/min"] }, budgets: [{ scope: "global", costUsd: 80 }] },
   *   await orchestrator.usage({ since: Date.now() - 48 * 3_600_000 }),
   * );
   * ```
   */
  configure(next: ResourceConfig, history: UsageEntry[] = []): { restartRequired: string[] } {
    const cfg = parseConfig(ResourceConfigSchema, next, "resources");
    // Validate every part before changing any (the constructors check exactly what the live parts do).
    new RateLimiter({ limits: cfg.limits as RateLimitsConfig, marginMs: cfg.limitMarginMs });
    new Budgets({ budgets: cfg.budgets as BudgetConfig[], timeZone: cfg.timeZone });
    new PriceBook(cfg.prices as PriceTable, { defaults: cfg.defaultPrices });
    const { "*": fallback, ...caps } = parseCaps(cfg.tenantConcurrency ?? {});

    const before = parseConfig(ResourceConfigSchema, this.#config, "resources");
    const fixed = ["timeZone", "admission", "defaultTokens", "limitMarginMs", "defaultPrices"];
    const restartRequired = fixed.filter(
      (k) =>
        JSON.stringify((before as Record<string, unknown>)[k]) !==
        JSON.stringify((cfg as Record<string, unknown>)[k]),
    );

    const limits = cfg.limits as RateLimitsConfig;
    for (const key of this.#configLimitKeys) {
      if (!(key in limits)) this.limiter.setLimits(key, []);
    }
    for (const [key, list] of Object.entries(limits))
      this.limiter.setLimits(key, list as LimitInput[]);
    this.#configLimitKeys = Object.keys(limits);
    this.#configBudgets = this.budgets.configure(
      cfg.budgets as BudgetConfig[],
      this.#configBudgets,
      history,
    );
    this.costModel.prices.setOverrides(cfg.prices as PriceTable);
    for (const key of this.concurrency.keys())
      if (!(key in caps)) this.concurrency.setLimit(key, undefined);
    for (const [key, cap] of Object.entries(caps)) this.concurrency.setLimit(key, cap);
    this.concurrency.setDefault(fallback);

    const kept: ResourceConfig = structuredClone(next);
    for (const k of restartRequired) {
      const old = (this.#config as Record<string, unknown>)[k];
      if (old === undefined) delete (kept as Record<string, unknown>)[k];
      else (kept as Record<string, unknown>)[k] = structuredClone(old);
    }
    this.#config = kept;
    return { restartRequired };
  }

  /** Starts admission sampling (no-op without admission control). @example resources.start() */
  start(): void {
    this.admission?.start();
  }

  /**
   * Continues rate-limit windows, budgets and today's cost totals across a restart from the
   * store's usage ledger (see `RateLimiter.restore`, `Budgets.restore`, `CostLedger.restore`).
   * An orchestrator given `resources.gates` calls each gate's `restore` at `start()`; call this
   * yourself when you use the gates without one.
   *
   * @example
   * ```ts
   * resources.restore(await store.listUsage({ since: Date.now() - 48 * 3_600_000 }));
   * ```
   */
  restore(entries: UsageEntry[], now: number = this.#clock.now()): void {
    this.limiter.restore(entries, now);
    this.budgets.restore(entries, now);
    this.ledger.restore(entries, now);
  }

  /** Stops timers (admission sampling, pause wake-ups). @example resources.stop() */
  stop(): void {
    this.admission?.stop();
    this.limiter.close();
  }

  /**
   * Usage today per provider, worker and tenant; each provider's limits and remaining
   * headroom; budgets; admission level; cost totals.
   *
   * @example
   * ```ts
   * const s = resources.stats();
   * s.providers.openai?.remaining.tokens; // tokens left in the tightest window or budget
   * ```
   */
  stats(now = this.#clock.now()): ResourceStats {
    const snap = this.ledger.snapshot(now);
    const day = this.ledger.day(snap.today);
    const usage = (a?: { requests: number; totalTokens: number; costUsd: number }): UsageToday => ({
      requests_today: a?.requests ?? 0,
      tokens_today: a?.totalTokens ?? 0,
      cost_today: a?.costUsd ?? 0,
    });
    const budgets = this.budgets.stats(now);
    const limits = this.limiter.stats(now);
    const providers: Record<string, ProviderStats> = {};
    const names = new Set([
      ...Object.keys(day.byProvider),
      ...Object.keys(day.byKey),
      ...Object.keys(limits),
      ...budgets.filter((b) => b.scope === "provider").map((b) => b.subject),
    ]);
    for (const name of names) {
      const ks = limits[name];
      const p: ProviderStats = {
        ...usage(day.byKey[name] ?? day.byProvider[name]),
        limits: ks?.limits ?? [],
        remaining: {},
      };
      if (ks?.pausedUntil !== undefined) p.pausedUntil = ks.pausedUntil;
      for (const l of p.limits) {
        if (l.unit === "requests")
          p.remaining.requests = minDefined(p.remaining.requests, l.remaining);
        else p.remaining.tokens = minDefined(p.remaining.tokens, l.remaining);
      }
      for (const b of budgets) {
        if (b.scope !== "provider" || b.subject !== name) continue;
        p.remaining.requests = minDefined(p.remaining.requests, b.remaining.requests);
        p.remaining.tokens = minDefined(p.remaining.tokens, b.remaining.tokens);
        p.remaining.cost = minDefined(p.remaining.cost, b.remaining.costUsd);
      }
      providers[name] = p;
    }
    const workers: Record<string, UsageToday> = {};
    for (const [id, a] of Object.entries(day.byWorker)) workers[id] = usage(a);
    const tenants: ResourceStats["tenants"] = {};
    const caps = this.concurrency.stats();
    for (const t of new Set([...Object.keys(day.byTenant), ...Object.keys(caps)])) {
      const c = caps[t];
      const entry: ResourceStats["tenants"][string] = {
        ...usage(day.byTenant[t]),
        inFlight: c?.inFlight ?? 0,
      };
      if (c?.limit !== undefined) entry.concurrencyLimit = c.limit;
      tenants[t] = entry;
    }
    const out: ResourceStats = {
      at: now,
      timeZone: this.timeZone,
      today: snap.today,
      totals: usage(day.total),
      providers,
      workers,
      tenants,
      budgets,
      cost: { total: snap.total, byProvider: snap.byProvider, byModel: snap.byModel },
    };
    if (this.admission) out.admission = this.admission.snapshot();
    return out;
  }
}

/** Validates tenant caps (`"*"` is the cap of every other tenant). */
function parseCaps(caps: Record<string, unknown>): Record<string, number> {
  return parseConfig(z.record(z.string().min(1), ConcurrencyCapSchema), caps, "tenantConcurrency");
}
