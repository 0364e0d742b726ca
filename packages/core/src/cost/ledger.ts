import { EventEmitter } from "eventemitter3";
import { dayBounds, dayKey, isTimeZone } from "../budget/calendar.js";
import { type Clock, systemClock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import { type Logger, silentLogger } from "../logger.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate, GateDecision, SettleOutcome } from "../resources/gate.js";
import type { UsageEntry } from "../store/types.js";
import type { TaskStatus } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import { CostModel } from "./costModel.js";
import { fromMicros } from "./prices.js";
import { resolveUsageEntries } from "./restore.js";

/** Totals of a group of attempts. Money is kept in integer micro-dollars; `costUsd` is derived. */
export interface CostAggregate {
  requests: number;
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  costMicros: number;
  costUsd: number;
}

/** One settled attempt as the ledger records it (the payload of the `cost` event). */
export interface CostEntry {
  taskId: string;
  attempt: number;
  status: TaskStatus;
  workerId: string;
  provider: string;
  model?: string;
  tenant?: string;
  /** The task's rate-limit keys. */
  keys: string[];
  /** Local date in the ledger's time zone, `YYYY-MM-DD`. */
  day: string;
  at: number;
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  requests: number;
  costMicros: number;
  costUsd: number;
  /** `estimate` when the worker's usage report was missing or malformed; `none` for a failed attempt that reported nothing. */
  source: "reported" | "estimate" | "none";
}

/** Totals of one day, overall and per provider, worker and tenant. */
export interface DayCost {
  total: CostAggregate;
  byProvider: Record<string, CostAggregate>;
  /** Per rate-limit key of the tasks. */
  byKey: Record<string, CostAggregate>;
  byWorker: Record<string, CostAggregate>;
  byTenant: Record<string, CostAggregate>;
}

/** What {@link CostLedger.snapshot} returns (JSON-safe). */
export interface CostSnapshot {
  currency: "USD";
  timeZone: string;
  /** Today's date in `timeZone`. */
  today: string;
  total: CostAggregate;
  byProvider: Record<string, CostAggregate>;
  /** Per rate-limit key of the tasks. */
  byKey: Record<string, CostAggregate>;
  byModel: Record<string, CostAggregate>;
  byWorker: Record<string, CostAggregate>;
  byTenant: Record<string, CostAggregate>;
  byDay: Record<string, DayCost>;
}

/** Events of {@link CostLedger}. */
export interface CostLedgerEvents {
  cost: [entry: CostEntry];
}

/** Options of {@link CostLedger}. */
export interface CostLedgerOptions {
  /** @default new CostModel() (default price table) */
  costModel?: CostModel;
  /** IANA zone for day buckets. @default "UTC" */
  timeZone?: string;
  /** Per-task totals kept (oldest dropped first). @default 10000 */
  maxTasks?: number;
  /** Days kept in `byDay`. @default 31 */
  maxDays?: number;
  /** @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
}

function empty(): CostAggregate {
  return {
    requests: 0,
    inputTokens: 0,
    outputTokens: 0,
    totalTokens: 0,
    costMicros: 0,
    costUsd: 0,
  };
}

function add(into: CostAggregate, e: CostEntry): void {
  into.requests += e.requests;
  into.inputTokens += e.inputTokens;
  into.outputTokens += e.outputTokens;
  into.totalTokens += e.totalTokens;
  into.costMicros += e.costMicros;
  into.costUsd = fromMicros(into.costMicros);
}

function bump(map: Map<string, CostAggregate>, key: string, e: CostEntry): void {
  let a = map.get(key);
  if (!a) {
    a = empty();
    map.set(key, a);
  }
  add(a, e);
}

function plain(map: Map<string, CostAggregate>): Record<string, CostAggregate> {
  const out: Record<string, CostAggregate> = {};
  for (const [k, v] of map) out[k] = { ...v };
  return out;
}

interface DayMaps {
  total: CostAggregate;
  byProvider: Map<string, CostAggregate>;
  byKey: Map<string, CostAggregate>;
  byWorker: Map<string, CostAggregate>;
  byTenant: Map<string, CostAggregate>;
}

/**
 * The cost ledger: records the usage and cost of every settled attempt (as a gate that never
 * blocks) and keeps totals per task, worker, provider, model, tenant and day. Emits a `cost`
 * event per attempt. A missing or malformed usage report is logged as a warning and
 * accounted at the task's estimate — never a crash.
 *
 * @example
 * ```ts
 * const ledger = new CostLedger({ timeZone: "Europe/Berlin" });
 * ledger.on("cost", (e) => console.log(e.taskId, e.costUsd));
 * const orchestrator = new Orchestrator({ gates: [ledger] });
 * // later
 * ledger.snapshot().byProvider.openai?.costUsd;
 * ```
 */
export class CostLedger extends EventEmitter<CostLedgerEvents> implements DispatchGate {
  readonly name = "cost-ledger";
  readonly costModel: CostModel;
  readonly timeZone: string;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #maxTasks: number;
  readonly #maxDays: number;
  readonly #total = empty();
  readonly #byTask = new Map<string, CostAggregate>();
  /**
   * Task ids in the order they entered `#byTask`, oldest at `#taskHead`: evicting through a
   * Map's own iterator would walk every earlier deleted slot each time (quadratic).
   */
  #taskOrder: string[] = [];
  #taskHead = 0;
  readonly #byProvider = new Map<string, CostAggregate>();
  readonly #byKey = new Map<string, CostAggregate>();
  readonly #byModel = new Map<string, CostAggregate>();
  readonly #byWorker = new Map<string, CostAggregate>();
  readonly #byTenant = new Map<string, CostAggregate>();
  readonly #byDay = new Map<string, DayMaps>();
  /** Creation time: usage lines from then on were recorded live, never restored. */
  readonly #born: number;
  #restored = false;

  constructor(options: CostLedgerOptions = {}) {
    super();
    this.timeZone = options.timeZone ?? "UTC";
    if (!isTimeZone(this.timeZone)) {
      throw new FlotillaError(
        "VALIDATION",
        `timeZone: unknown time zone "${this.timeZone}" (expected an IANA name such as "Europe/Berlin")`,
      );
    }
    this.costModel = options.costModel ?? new CostModel();
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
    this.#maxTasks = options.maxTasks ?? 10_000;
    this.#maxDays = options.maxDays ?? 31;
    this.#born = this.#clock.now();
  }

  /**
   * Brings back today's totals (in the ledger's time zone) after a restart from the store's
   * usage ledger: each line of today is recorded again — by provider and key (the task's
   * first rate-limit key), model, worker, tenant, task and day — without emitting `cost`
   * events. Its cost is the reported `costUsd`, else its tokens priced on the line's
   * provider and model. Lines recorded after this ledger was created (recorded live) are
   * ignored; only the first call restores. The orchestrator calls it at `start()`.
   *
   * @example
   * ```ts
   * ledger.restore(await store.listUsage({ since: Date.now() - 48 * 3_600_000 }), Date.now());
   * ledger.day().total.costUsd; // today's spend, across the restart
   * ```
   */
  restore(entries: UsageEntry[], now: number = this.#clock.now()): void {
    if (this.#restored) return;
    this.#restored = true;
    // Today's bounds once (a time-zone lookup per line costs more than all the rest).
    const { start, end, day } = dayBounds(now, this.timeZone);
    for (const line of resolveUsageEntries(entries, this.costModel.prices)) {
      if (line.at >= this.#born || line.at > now) continue;
      if (line.at < start || line.at >= end) continue;
      const entry: CostEntry = {
        // Rolled-up lines have no task: they count in every total but no task's.
        taskId: line.taskId ?? "",
        attempt: 0,
        status: "succeeded",
        workerId: line.workerId ?? "unknown",
        provider: line.provider ?? "unknown",
        keys: line.provider === undefined ? [] : [line.provider],
        day,
        at: line.at,
        inputTokens: line.inputTokens,
        outputTokens: line.outputTokens,
        totalTokens: line.totalTokens,
        requests: line.requests,
        costMicros: line.costMicros,
        costUsd: fromMicros(line.costMicros),
        source: "reported",
      };
      if (line.model !== undefined) entry.model = line.model;
      if (line.tenant !== undefined) entry.tenant = line.tenant;
      this.#add(entry);
    }
  }

  /** Gate: never blocks. @example ledger.check(task, entry, Date.now()) // { ok: true } */
  check(): GateDecision {
    return { ok: true };
  }

  /** Gate: records the attempt's cost. @example ledger.onSettle(task, entry, { status: "succeeded", usage }, Date.now()) */
  onSettle(task: TaskRecord, worker: WorkerEntry, outcome: SettleOutcome, now: number): void {
    this.record(task, worker, outcome, now);
  }

  /**
   * Records one attempt and returns its entry (what the gate does on settle; callable directly
   * when running tasks outside an orchestrator).
   *
   * @example
   * ```ts
   * ledger.record(task, entry, { status: "succeeded", usage: { inputTokens: 10, outputTokens: 5 } });
   * ```
   */
  record(
    task: TaskRecord,
    worker: WorkerEntry | undefined,
    outcome: SettleOutcome,
    now = this.#clock.now(),
  ): CostEntry {
    const { subject, usage, costMicros } = this.costModel.actual(
      task,
      worker,
      outcome.usage,
      outcome.status,
    );
    if (usage.source === "estimate") {
      this.#logger.warn(
        { taskId: task.id, workerId: worker?.id, problem: usage.problem },
        "usage report missing or malformed; accounted at the task's estimate",
      );
    }
    const entry: CostEntry = {
      taskId: task.id,
      attempt: task.attempt,
      status: outcome.status,
      workerId: worker?.id ?? task.workerId ?? "unknown",
      provider: subject.provider,
      keys: [...task.rateLimitKeys],
      day: dayKey(now, this.timeZone),
      at: now,
      inputTokens: usage.inputTokens,
      outputTokens: usage.outputTokens,
      totalTokens: usage.totalTokens,
      requests: usage.requests,
      costMicros,
      costUsd: fromMicros(costMicros),
      source: usage.source,
    };
    if (subject.model !== undefined) entry.model = subject.model;
    if (task.tenant !== undefined) entry.tenant = task.tenant;
    this.#add(entry);
    try {
      this.emit("cost", entry);
    } catch (err) {
      this.#logger.error({ err }, "cost listener threw");
    }
    return entry;
  }

  #add(e: CostEntry): void {
    add(this.#total, e);
    if (e.taskId !== "" && !this.#byTask.has(e.taskId)) {
      if (this.#byTask.size >= this.#maxTasks) {
        const oldest = this.#taskOrder[this.#taskHead++];
        if (oldest !== undefined) this.#byTask.delete(oldest);
        if (this.#taskHead > 1024 && this.#taskHead * 2 > this.#taskOrder.length) {
          this.#taskOrder = this.#taskOrder.slice(this.#taskHead);
          this.#taskHead = 0;
        }
      }
      this.#taskOrder.push(e.taskId);
    }
    if (e.taskId !== "") bump(this.#byTask, e.taskId, e);
    bump(this.#byProvider, e.provider, e);
    for (const k of e.keys) bump(this.#byKey, k, e);
    bump(this.#byModel, `${e.provider}/${e.model ?? "*"}`, e);
    bump(this.#byWorker, e.workerId, e);
    if (e.tenant !== undefined) bump(this.#byTenant, e.tenant, e);
    let day = this.#byDay.get(e.day);
    if (!day) {
      day = {
        total: empty(),
        byProvider: new Map(),
        byKey: new Map(),
        byWorker: new Map(),
        byTenant: new Map(),
      };
      this.#byDay.set(e.day, day);
      if (this.#byDay.size > this.#maxDays) {
        const oldest = [...this.#byDay.keys()].sort()[0];
        if (oldest !== undefined) this.#byDay.delete(oldest);
      }
    }
    add(day.total, e);
    bump(day.byProvider, e.provider, e);
    for (const k of e.keys) bump(day.byKey, k, e);
    bump(day.byWorker, e.workerId, e);
    if (e.tenant !== undefined) bump(day.byTenant, e.tenant, e);
  }

  /** Totals of one task (all its attempts), if still kept. @example ledger.taskCost("t1")?.costUsd */
  taskCost(taskId: string): CostAggregate | undefined {
    const a = this.#byTask.get(taskId);
    return a ? { ...a } : undefined;
  }

  /**
   * Totals of one day (today by default), overall and per provider, worker and tenant.
   *
   * @example
   * ```ts
   * ledger.day().byProvider.openai?.totalTokens;
   * ```
   */
  day(day = dayKey(this.#clock.now(), this.timeZone)): DayCost {
    const d = this.#byDay.get(day);
    if (!d) return { total: empty(), byProvider: {}, byKey: {}, byWorker: {}, byTenant: {} };
    return {
      total: { ...d.total },
      byProvider: plain(d.byProvider),
      byKey: plain(d.byKey),
      byWorker: plain(d.byWorker),
      byTenant: plain(d.byTenant),
    };
  }

  /**
   * A JSON-safe copy of every total, for `status()` and `/resources/stats`.
   *
   * @example
   * ```ts
   * const s = ledger.snapshot();
   * console.log(s.total.costUsd, s.byDay[s.today]?.total.requests);
   * ```
   */
  snapshot(now = this.#clock.now()): CostSnapshot {
    const byDay: Record<string, DayCost> = {};
    for (const k of this.#byDay.keys()) byDay[k] = this.day(k);
    return {
      currency: "USD",
      timeZone: this.timeZone,
      today: dayKey(now, this.timeZone),
      total: { ...this.#total },
      byProvider: plain(this.#byProvider),
      byKey: plain(this.#byKey),
      byModel: plain(this.#byModel),
      byWorker: plain(this.#byWorker),
      byTenant: plain(this.#byTenant),
      byDay,
    };
  }
}
