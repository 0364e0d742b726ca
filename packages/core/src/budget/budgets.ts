import { z } from "zod";
import { type Clock, systemClock } from "../clock.js";
import { CostModel } from "../cost/costModel.js";
import { formatUsd, toMicros } from "../cost/prices.js";
import { resolveUsageEntries } from "../cost/restore.js";
import { FlotillaError } from "../errors.js";
import { parseWindow } from "../limits/rate.js";
import { type Logger, silentLogger } from "../logger.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate, GateDecision, SettleOutcome } from "../resources/gate.js";
import { parseConfig } from "../resources/validate.js";
import { Wakers } from "../resources/wakers.js";
import type { UsageEntry } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import { dayBounds, isTimeZone, monthBounds } from "./calendar.js";

const positive = (what: string) =>
  z
    .number({ error: `${what} must be a number` })
    .finite()
    .positive({ error: `${what} must be greater than zero` });

/**
 * One budget as configured.
 *
 * @example
 * ```ts
 * BudgetConfigSchema.parse({ scope: "tenant", key: "acme", costUsd: 5, policy: "fail" });
 * ```
 */
export const BudgetConfigSchema = z
  .object({
    /** Name used in errors and stats. @default `${scope}:${key ?? "*"}/${period}` */
    name: z.string().min(1).optional(),
    /**
     * `global` (everything), `provider` (a task's rate-limit keys, else its worker's
     * provider), `tenant`, `worker` (what one worker runs), or `apiKey` (what one API key
     * submitted; tasks without one are not counted). @default "global"
     */
    scope: z.enum(["global", "provider", "tenant", "worker", "apiKey"]).default("global"),
    /** Which provider/tenant/worker/API key; without it, each gets its own budget. */
    key: z.string().min(1).optional(),
    requests: positive("requests").optional(),
    tokens: positive("tokens").optional(),
    /** Money in USD, enforced to the micro-dollar. */
    costUsd: positive("costUsd").optional(),
    /** `day` or `month` for a calendar period, or a sliding window length (`24h`, `1h`, `7d`, ms). @default "day" */
    period: z.union([z.string(), z.number()]).default("day"),
    /** `calendar` resets at local midnight (of the 1st, for `month`) in `timeZone`; `sliding` counts the last `period`. @default "calendar" */
    reset: z.enum(["calendar", "sliding"]).default("calendar"),
    /** IANA time zone of the calendar day. @default the manager's timeZone, else "UTC" */
    timeZone: z.string().optional(),
    /** `wait` holds tasks until the budget frees up; `fail` fails them with QUOTA_EXCEEDED. @default "wait" */
    policy: z.enum(["wait", "fail"]).default("wait"),
  })
  .strict()
  .superRefine((b, ctx) => {
    if (b.requests === undefined && b.tokens === undefined && b.costUsd === undefined) {
      ctx.addIssue({ code: "custom", message: "give at least one of requests, tokens or costUsd" });
    }
    if (b.timeZone !== undefined && !isTimeZone(b.timeZone)) {
      ctx.addIssue({
        code: "custom",
        path: ["timeZone"],
        message: `unknown time zone "${b.timeZone}" (expected an IANA name such as "Europe/Berlin")`,
      });
    }
    if (b.reset === "calendar" && b.period !== "day" && b.period !== "month") {
      ctx.addIssue({
        code: "custom",
        path: ["period"],
        message: `a calendar budget resets per "day" or "month"; for another length use reset: "sliding" (got ${JSON.stringify(b.period)})`,
      });
    }
    if (b.reset === "sliding" && b.period === "month") {
      ctx.addIssue({
        code: "custom",
        path: ["period"],
        message: 'a month is a calendar period: use reset: "calendar" (or a sliding "30d")',
      });
    }
    if (b.reset === "sliding" && b.period !== "month") {
      const w = parseWindow(b.period === "day" ? "1d" : b.period);
      if (typeof w === "string") ctx.addIssue({ code: "custom", path: ["period"], message: w });
    }
  });
/** Input form of a budget. */
export type BudgetConfig = z.input<typeof BudgetConfigSchema>;

/** A list of budgets. @example BudgetsConfigSchema.parse([{ costUsd: 100 }]) */
export const BudgetsConfigSchema = z.array(BudgetConfigSchema);

type Metric = "requests" | "tokens" | "cost";
interface Amounts {
  requests: number;
  tokens: number;
  cost: number;
}

type Scope = "global" | "provider" | "tenant" | "worker" | "apiKey";

interface Spec {
  /** Unique per `Budgets`: counters are keyed by it (names may repeat). */
  id: number;
  name: string;
  scope: Scope;
  key?: string;
  limits: Partial<Amounts>;
  reset: "calendar" | "sliding";
  /** The calendar period of a calendar budget. */
  unit: "day" | "month";
  /** A sliding budget's window; a calendar budget's longest period. */
  windowMs: number;
  timeZone: string;
  policy: "wait" | "fail";
  periodLabel: string;
}

interface Entry extends Amounts {
  t: number;
  /** Set once the entry has left the sliding window. */
  gone?: boolean;
}

/** Usage of one budget for one subject (one provider or tenant, or everything). */
class Counter {
  windowStart = 0;
  windowEnd = 0;
  used: Amounts = { requests: 0, tokens: 0, cost: 0 };
  log: Entry[] = [];
  head = 0;

  constructor(readonly spec: Spec) {}

  roll(now: number): void {
    if (this.spec.reset === "calendar") {
      if (now >= this.windowEnd || now < this.windowStart) {
        const b =
          this.spec.unit === "month"
            ? monthBounds(now, this.spec.timeZone)
            : dayBounds(now, this.spec.timeZone);
        this.windowStart = b.start;
        this.windowEnd = b.end;
        this.used = { requests: 0, tokens: 0, cost: 0 };
      }
      return;
    }
    const edge = now - this.spec.windowMs;
    const log = this.log;
    while (this.head < log.length && log[this.head]!.t <= edge) {
      const e = log[this.head]!;
      this.used.requests -= e.requests;
      this.used.tokens -= e.tokens;
      this.used.cost -= e.cost;
      e.gone = true;
      this.head++;
    }
    // Dropped entries stay before `head` until they are half the array, keeping pruning amortized O(1).
    if (this.head > 1024 && this.head * 2 > log.length) {
      this.log = log.slice(this.head);
      this.head = 0;
    }
  }

  /** The earliest time `need` fits under `limit` for `metric`. */
  freeAt(metric: Metric, need: number, limit: number, now: number): number {
    if (this.spec.reset === "calendar") return this.windowEnd;
    let used = this.used[metric];
    for (let i = this.head; i < this.log.length; i++) {
      const e = this.log[i]!;
      used -= e[metric];
      if (fits(used, need, limit)) return e.t + this.spec.windowMs;
    }
    return now + this.spec.windowMs;
  }

  /** Counts usage from before a restart; `entries` sorted by time, all inside the current window. */
  restore(entries: Entry[]): void {
    for (const e of entries) {
      this.used.requests += e.requests;
      this.used.tokens += e.tokens;
      this.used.cost += e.cost;
    }
    if (this.spec.reset === "sliding") {
      this.log = [...entries, ...this.log.slice(this.head)].sort((a, b) => a.t - b.t);
      this.head = 0;
    }
  }

  add(a: Amounts, now: number): Entry | undefined {
    this.used.requests += a.requests;
    this.used.tokens += a.tokens;
    this.used.cost += a.cost;
    if (this.spec.reset === "sliding") {
      const e = { t: now, ...a };
      this.log.push(e);
      return e;
    }
    return undefined;
  }
}

function fits(used: number, need: number, limit: number): boolean {
  return need > 0 ? used + need <= limit : used < limit;
}

interface Hold {
  counter: Counter;
  /** The key a task held by this budget and subject waits on (`budget:<name>:<subject>`). */
  key: string;
  windowStart: number;
  entry: Entry | undefined;
  amounts: Amounts;
}

/** One budget's state for one subject, as {@link Budgets.stats} shows it. */
export interface BudgetStats {
  name: string;
  scope: Scope;
  subject: string;
  period: string;
  policy: "wait" | "fail";
  /** Start and end (ms) of the current calendar window; absent for sliding budgets. */
  windowStart?: number;
  windowEnd?: number;
  limit: { requests?: number; tokens?: number; costUsd?: number };
  used: { requests: number; tokens: number; costUsd: number };
  remaining: { requests?: number; tokens?: number; costUsd?: number };
}

/** Options of {@link Budgets}. */
export interface BudgetsOptions {
  /**
   * Budgets to enforce (see {@link BudgetConfig}). @default []
   */
  budgets?: BudgetConfig[];
  /** Default IANA zone for calendar budgets. @default "UTC" */
  timeZone?: string;
  /** @default new CostModel() */
  costModel?: CostModel;
  /** @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
}

const METRIC_LABEL: Record<Metric, string> = {
  requests: "requests",
  tokens: "tokens",
  cost: "cost",
};

function show(metric: Metric, n: number): string {
  return metric === "cost" ? formatUsd(n) : String(Math.round(n * 1000) / 1000);
}

/**
 * Quotas and budgets — requests, tokens and money per day (calendar day in a time zone, or
 * sliding), globally, per provider, per tenant or per worker — as a dispatch gate. Before dispatch the
 * task's estimate is checked and reserved; at settle the reservation is replaced by the
 * actual usage. Money is counted in integer micro-dollars, so a budget holds to the cent.
 * A task that does not fit waits until the window frees up (`policy: "wait"`) or fails with
 * `QUOTA_EXCEEDED` (`policy: "fail"`), with a message naming the budget, its limit, what is
 * used and the period. (A worker's budget fails a task only when no other worker could run
 * it; otherwise the task waits for one.) Budgets can be added and removed while the
 * orchestrator runs (`add`, `remove`).
 *
 * @example
 * ```ts
 * const budgets = new Budgets({
 *   timeZone: "Europe/Berlin",
 *   budgets: [
 *     { scope: "provider", key: "openai", costUsd: 50, tokens: 2_000_000 },
 *     { scope: "tenant", costUsd: 5, policy: "fail" }, // each tenant: $5 per day
 *     { scope: "global", requests: 100_000, reset: "sliding", period: "24h" },
 *   ],
 * });
 * const orchestrator = new Orchestrator({ gates: [budgets] });
 * ```
 */
export class Budgets implements DispatchGate {
  readonly name = "budget";
  readonly costModel: CostModel;
  #specs: Spec[];
  #nextId = 0;
  readonly #timeZone: string;
  readonly #counters = new Map<string, Counter>();
  readonly #holds = new Map<string, Hold[]>();
  readonly #wakers: Wakers;
  readonly #clock: Clock;
  readonly #logger: Logger;
  /** Creation time: usage lines from then on were counted live, never restored. */
  readonly #born: number;
  #restored = false;

  constructor(options: BudgetsOptions = {}) {
    const tz = options.timeZone ?? "UTC";
    if (!isTimeZone(tz)) {
      throw new FlotillaError(
        "VALIDATION",
        `timeZone: unknown time zone "${tz}" (expected an IANA name such as "Europe/Berlin")`,
      );
    }
    this.#timeZone = tz;
    const list = parseConfig(BudgetsConfigSchema, options.budgets ?? [], "budgets");
    this.#specs = list.map((b) => this.#spec(b));
    this.costModel = options.costModel ?? new CostModel();
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
    this.#wakers = new Wakers(this.#logger);
    this.#born = this.#clock.now();
  }

  #spec(b: z.output<typeof BudgetConfigSchema>): Spec {
    const sliding = b.reset === "sliding";
    const unit = !sliding && b.period === "month" ? "month" : "day";
    const windowMs = sliding
      ? (parseWindow(b.period === "day" ? "1d" : b.period) as number)
      : unit === "month"
        ? 31 * 86_400_000
        : 86_400_000;
    const periodLabel = sliding
      ? `sliding ${typeof b.period === "number" ? `${b.period}ms` : b.period}`
      : `${unit} in ${b.timeZone ?? this.#timeZone}`;
    const limits: Partial<Amounts> = {};
    if (b.requests !== undefined) limits.requests = b.requests;
    if (b.tokens !== undefined) limits.tokens = b.tokens;
    if (b.costUsd !== undefined) limits.cost = toMicros(b.costUsd);
    const spec: Spec = {
      id: this.#nextId++,
      name:
        b.name ??
        `${b.scope}${b.scope === "global" ? "" : `:${b.key ?? "*"}`}/${sliding ? b.period : unit}`,
      scope: b.scope,
      limits,
      reset: b.reset,
      unit,
      windowMs,
      timeZone: b.timeZone ?? this.#timeZone,
      policy: b.policy,
      periodLabel,
    };
    if (b.key !== undefined) spec.key = b.key;
    return spec;
  }

  /**
   * Adds a budget while the orchestrator runs. It counts from now, plus the lines of
   * `history` (the usage ledger, e.g. `orchestrator.usage({ since })`) inside its current
   * window, so usage earlier today is not forgotten. Returns its name; `VALIDATION` naming
   * the field for a bad config.
   *
   * @example
   * ```ts
   * budgets.add(
   *   { name: "worker:openai-1/day", scope: "worker", key: "openai-1", requests: 1000, policy: "fail" },
   *   await orchestrator.usage({ since: Date.now() - 86_400_000 }),
   * );
   * ```
   */
  add(config: BudgetConfig, history: UsageEntry[] = []): string {
    const [parsed] = parseConfig(BudgetsConfigSchema, [config], "budget");
    const spec = this.#spec(parsed!);
    const now = this.#clock.now();
    this.#replay(history, [spec], now, now + 1);
    if (spec.key !== undefined) this.#counter(spec, spec.key, now); // shown in stats at once
    this.#specs = [...this.#specs, spec];
    this.#wake();
    return spec.name;
  }

  /**
   * Removes every budget named `name` with its counters; tasks it held may go. Resolves
   * whether there was one.
   *
   * @example
   * ```ts
   * budgets.remove("worker:openai-1/day");
   * ```
   */
  remove(name: string): boolean {
    const gone = this.#specs.filter((s) => s.name === name);
    if (gone.length === 0) return false;
    this.#specs = this.#specs.filter((s) => s.name !== name);
    for (const spec of gone) {
      for (const [id, c] of this.#counters) if (c.spec === spec) this.#counters.delete(id);
    }
    this.#wake();
    return true;
  }

  /** How far back the usage ledger must reach to restore these budgets (see `DispatchGate.restoreSpanMs`). */
  get restoreSpanMs(): number {
    return usageSpanOf(this.#specs);
  }

  /** The names of every budget, in check order. @example budgets.names() // ["global/day"] */
  names(): string[] {
    return this.#specs.map((s) => s.name);
  }

  /**
   * Replaces the budgets named in `previous` (those an earlier config made) with `configs`,
   * keeping what was already counted: a budget whose name, scope, key, period and time zone
   * are unchanged keeps its counters and takes its new caps and policy at once; a new one
   * counts from now plus the lines of `history` inside its current window. Budgets not in
   * `previous` (added with {@link Budgets.add}) are left alone. Everything is validated
   * first: a bad config throws `VALIDATION` naming the entry and changes nothing. Returns the
   * names of the budgets now configured (pass them as `previous` next time).
   *
   * @example
   * ```ts
   * let names = budgets.configure([{ scope: "global", costUsd: 50 }], []);
   * names = budgets.configure([{ scope: "global", costUsd: 80 }], names); // spend kept
   * ```
   */
  configure(
    configs: BudgetConfig[],
    previous: readonly string[],
    history: UsageEntry[] = [],
  ): string[] {
    const parsed = parseConfig(BudgetsConfigSchema, configs, "budgets");
    const now = this.#clock.now();
    const wanted = parsed.map((b) => this.#spec(b));
    const old = new Set(previous);
    const reusable = this.#specs.filter((s) => old.has(s.name));
    const kept: Spec[] = [];
    const added: Spec[] = [];
    for (const next of wanted) {
      const i = reusable.findIndex(
        (s) =>
          s.name === next.name &&
          s.scope === next.scope &&
          s.key === next.key &&
          s.reset === next.reset &&
          s.unit === next.unit &&
          s.windowMs === next.windowMs &&
          s.timeZone === next.timeZone,
      );
      if (i >= 0) {
        const same = reusable.splice(i, 1)[0]!;
        same.limits = next.limits;
        same.policy = next.policy;
        same.periodLabel = next.periodLabel;
        kept.push(same);
      } else added.push(next);
    }
    // What is left of `reusable` was removed or changed shape: drop it with its counters.
    for (const spec of reusable) {
      for (const [id, c] of this.#counters) if (c.spec === spec) this.#counters.delete(id);
    }
    const gone = new Set(reusable);
    this.#replay(history, added, now, now + 1);
    for (const spec of added) if (spec.key !== undefined) this.#counter(spec, spec.key, now);
    this.#specs = [...this.#specs.filter((s) => !gone.has(s)), ...added];
    this.#wake();
    return [...kept, ...added].map((s) => s.name);
  }

  /**
   * Counts the spend recorded before a restart (the store's usage ledger), so that a budget
   * does not start empty: a calendar budget counts the lines of its current day in its time
   * zone, a sliding one the lines of its last period. A line counts its reported requests,
   * total tokens and cost (the reported `costUsd`, else its tokens priced on the line's
   * provider and model) for the global budget, its tenant (`"default"` without one) and its
   * provider (the task's first rate-limit key). Lines recorded after these budgets were
   * created (counted live) are ignored; only the first call restores. The orchestrator calls
   * it at `start()`.
   *
   * @example
   * ```ts
   * budgets.restore(await store.listUsage({ since: Date.now() - 48 * 3_600_000 }), Date.now());
   * ```
   */
  restore(entries: UsageEntry[], now: number = this.#clock.now()): void {
    if (this.#restored) return;
    this.#restored = true;
    const replayed = this.#replay(entries, this.#specs, now, this.#born);
    if (replayed > 0) this.#logger.info({ lines: replayed }, "budgets restored from usage");
  }

  /**
   * Counts usage that other servers sharing the store recorded (as they record it: see
   * `PostgresStore.followUsage`), so that a budget configured on every server holds across
   * them: each admits while its own spend and the others' known spend fit the cap. Lines
   * count as `restore` counts them, whatever this server's creation time.
   *
   * @example
   * ```ts
   * import { PostgresStore } from "@flotilla/store-postgres";
   *
   * const shared = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
   * await shared.open();
   * const follow = shared.followUsage((lines) => budgets.countElsewhere(lines));
   * ```
   */
  countElsewhere(entries: readonly UsageEntry[], now: number = this.#clock.now()): void {
    if (entries.length === 0) return;
    // Another server's clock may run a little ahead: its lines are not from the future.
    const latest = Math.max(now, ...entries.map((e) => e.at));
    this.#replay([...entries], this.#specs, latest, Number.POSITIVE_INFINITY);
  }

  /** Counts ledger lines (before `before`) into the counters of `specs`; returns how many counted. */
  #replay(entries: UsageEntry[], specs: readonly Spec[], now: number, before: number): number {
    const lines = resolveUsageEntries(entries, this.costModel.prices).filter(
      (l) => l.at < before && l.at <= now,
    );
    const perCounter = new Map<Counter, Entry[]>();
    for (const line of lines) {
      for (const spec of specs) {
        let subjects: string[];
        if (spec.scope === "global") subjects = ["*"];
        else if (spec.scope === "tenant") subjects = [line.tenant ?? "default"];
        else if (spec.scope === "worker")
          subjects = line.workerId === undefined ? [] : [line.workerId];
        else if (spec.scope === "apiKey") subjects = line.apiKey === undefined ? [] : [line.apiKey];
        else subjects = line.provider === undefined ? [] : [line.provider];
        for (const subject of subjects) {
          if (spec.key !== undefined && spec.key !== subject) continue;
          const c = this.#counter(spec, subject, now);
          const inside =
            spec.reset === "calendar"
              ? line.at >= c.windowStart && line.at < c.windowEnd
              : line.at > now - spec.windowMs;
          if (!inside) continue;
          let list = perCounter.get(c);
          if (!list) {
            list = [];
            perCounter.set(c, list);
          }
          list.push({
            t: line.at,
            requests: line.requests,
            tokens: line.totalTokens,
            cost: line.costMicros,
          });
        }
      }
    }
    for (const [counter, list] of perCounter) counter.restore(list);
    return perCounter.size > 0 ? lines.length : 0;
  }

  #subjects(spec: Spec, task: TaskRecord, worker: WorkerEntry | undefined): string[] {
    if (spec.scope === "global") return ["*"];
    if (spec.scope === "tenant") {
      const t = task.tenant ?? "default";
      return spec.key === undefined || spec.key === t ? [t] : [];
    }
    if (spec.scope === "worker") {
      if (worker === undefined) return [];
      return spec.key === undefined || spec.key === worker.id ? [worker.id] : [];
    }
    if (spec.scope === "apiKey") {
      const k = task.apiKey;
      if (k === undefined) return [];
      return spec.key === undefined || spec.key === k ? [k] : [];
    }
    const providers = task.rateLimitKeys.length
      ? task.rateLimitKeys
      : [this.costModel.subject(task, worker).provider];
    if (spec.key === undefined) return [...providers];
    return providers.includes(spec.key) ? [spec.key] : [];
  }

  #counter(spec: Spec, subject: string, now: number): Counter {
    const id = `${spec.id}\u0000${subject}`;
    let c = this.#counters.get(id);
    if (!c) {
      c = new Counter(spec);
      this.#counters.set(id, c);
    }
    c.roll(now);
    return c;
  }

  #estimate(task: TaskRecord, worker: WorkerEntry | undefined): Amounts {
    const e = this.costModel.estimate(task, worker);
    return { requests: 1, tokens: e.tokens, cost: e.costMicros };
  }

  /** Gate: holds (or fails) a task whose estimate does not fit a budget. @example budgets.check(task, entry, Date.now()) */
  check(task: TaskRecord, worker: WorkerEntry, now: number): GateDecision {
    const need = this.#estimate(task, worker);
    let wait: Extract<GateDecision, { ok: false }> | undefined;
    for (const spec of this.#specs) {
      for (const subject of this.#subjects(spec, task, worker)) {
        const c = this.#counter(spec, subject, now);
        for (const metric of ["cost", "tokens", "requests"] as const) {
          const limit = spec.limits[metric];
          if (limit === undefined || fits(c.used[metric], need[metric], limit)) continue;
          const name = spec.name;
          const message =
            `budget "${name}" exceeded: ${METRIC_LABEL[metric]} limit ${show(metric, limit)}, ` +
            `used ${show(metric, c.used[metric])}, this task needs ${show(metric, need[metric])} ` +
            `(per ${spec.periodLabel}${spec.scope === "global" ? "" : `, ${spec.scope} "${subject}"`})`;
          if (spec.policy === "fail") {
            return {
              ok: false,
              reason: message,
              fail: new FlotillaError("QUOTA_EXCEEDED", message, {
                details: {
                  budget: name,
                  scope: spec.scope,
                  subject,
                  metric,
                  limit: metric === "cost" ? limit / 1e6 : limit,
                  used: metric === "cost" ? c.used[metric] / 1e6 : c.used[metric],
                  period: spec.periodLabel,
                },
              }),
            };
          }
          const retryAt = c.freeAt(metric, need[metric], limit, now);
          if (!wait || (wait.retryAt ?? 0) < retryAt) {
            wait = { ok: false, reason: message, retryAt, blockKey: `budget:${name}:${subject}` };
          }
        }
      }
    }
    return wait ?? { ok: true };
  }

  /** Gate: reserves the task's estimate on every budget it falls under. @example budgets.onDispatch(task, entry, Date.now()) */
  onDispatch(task: TaskRecord, worker: WorkerEntry, now: number): void {
    const amounts = this.#estimate(task, worker);
    const holds: Hold[] = [];
    for (const spec of this.#specs) {
      for (const subject of this.#subjects(spec, task, worker)) {
        const counter = this.#counter(spec, subject, now);
        const entry = counter.add(amounts, now);
        holds.push({
          counter,
          key: `budget:${spec.name}:${subject}`,
          windowStart: counter.windowStart,
          entry,
          amounts,
        });
      }
    }
    this.#holds.set(task.id, holds);
  }

  /** Gate: replaces the reservation by the actual usage and cost. @example budgets.onSettle(task, entry, { status: "succeeded", usage }, Date.now()) */
  onSettle(task: TaskRecord, worker: WorkerEntry, outcome: SettleOutcome, now: number): void {
    const holds = this.#holds.get(task.id);
    this.#holds.delete(task.id);
    if (!holds) return;
    const actual = this.costModel.actual(task, worker, outcome.usage, outcome.status);
    const real: Amounts = {
      requests: actual.usage.requests,
      tokens: actual.usage.totalTokens,
      cost: actual.costMicros,
    };
    let freed: string[] | undefined;
    for (const h of holds) {
      const c = h.counter;
      c.roll(now);
      if (c.spec.reset === "calendar" && c.windowStart !== h.windowStart) continue;
      for (const m of ["requests", "tokens", "cost"] as const) {
        const delta = real[m] - h.amounts[m];
        if (delta < 0 && freed?.at(-1) !== h.key) {
          freed ??= [];
          freed.push(h.key);
        }
        if (h.entry) {
          if (h.entry.gone) continue;
          h.entry[m] += delta;
        }
        c.used[m] += delta;
      }
    }
    if (freed) this.#wakers.wake(freed);
  }

  /** Gate: registers the scheduler's wake-up (called when a settle frees budget). @example budgets.subscribe(() => {}) */
  subscribe(wake: () => void): () => void {
    return this.#wakers.subscribe(wake);
  }

  #wake(): void {
    this.#wakers.wake();
  }

  /**
   * Every budget's current usage and what remains, per subject seen so far.
   *
   * @example
   * ```ts
   * for (const b of budgets.stats()) console.log(b.name, b.subject, b.remaining.costUsd);
   * ```
   */
  stats(now = this.#clock.now()): BudgetStats[] {
    const out: BudgetStats[] = [];
    for (const [id, c] of this.#counters) {
      c.roll(now);
      const subject = id.slice(id.indexOf("\u0000") + 1);
      const { limits } = c.spec;
      const s: BudgetStats = {
        name: c.spec.name,
        scope: c.spec.scope,
        subject,
        period: c.spec.periodLabel,
        policy: c.spec.policy,
        limit: {},
        used: { requests: c.used.requests, tokens: c.used.tokens, costUsd: c.used.cost / 1e6 },
        remaining: {},
      };
      if (c.spec.reset === "calendar") {
        s.windowStart = c.windowStart;
        s.windowEnd = c.windowEnd;
      }
      if (limits.requests !== undefined) {
        s.limit.requests = limits.requests;
        s.remaining.requests = Math.max(0, limits.requests - c.used.requests);
      }
      if (limits.tokens !== undefined) {
        s.limit.tokens = limits.tokens;
        s.remaining.tokens = Math.max(0, limits.tokens - c.used.tokens);
      }
      if (limits.cost !== undefined) {
        s.limit.costUsd = limits.cost / 1e6;
        s.remaining.costUsd = Math.max(0, limits.cost - c.used.cost) / 1e6;
      }
      out.push(s);
    }
    return out;
  }
}

/** The usage ledger span (ms) that budgets shaped like `specs` need to continue after a restart. */
function usageSpanOf(specs: ReadonlyArray<Pick<Spec, "reset" | "unit" | "windowMs">>): number {
  let span = 48 * 3_600_000;
  for (const s of specs) {
    // A calendar month is at most 31 days (+1 for time zones); a sliding window its length.
    const need = s.reset === "calendar" ? (s.unit === "month" ? 32 * 86_400_000 : 0) : s.windowMs;
    span = Math.max(span, need);
  }
  return span;
}

/**
 * How far back (ms) the usage ledger must reach for these budgets to count what was spent
 * in their current period: 48 hours, the month for a calendar month, a sliding window's
 * length. Read that much history before `Budgets.add` or `ResourceManager.configure`.
 *
 * @example
 * ```ts
 * const since = Date.now() - budgetHistorySpanMs([{ scope: "global", costUsd: 500, period: "month" }]);
 * ```
 */
export function budgetHistorySpanMs(configs: BudgetConfig[]): number {
  const parsed = parseConfig(BudgetsConfigSchema, configs, "budgets");
  return usageSpanOf(
    parsed.map((b) => {
      const sliding = b.reset === "sliding";
      return {
        reset: b.reset,
        unit: !sliding && b.period === "month" ? ("month" as const) : ("day" as const),
        windowMs: sliding ? (parseWindow(b.period === "day" ? "1d" : b.period) as number) : 0,
      };
    }),
  );
}
