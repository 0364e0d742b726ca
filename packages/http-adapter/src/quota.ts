import {
  type DispatchGate,
  dayBounds,
  FlotillaError,
  type GateDecision,
  isTimeZone,
  type SettleOutcome,
  type TaskRecord,
  type UsageEntry,
  type WorkerEntry,
} from "@flotilla/core";

/** Daily limits of one worker. At least one is set; each counts per calendar day. */
export interface WorkerQuota {
  /** Attempts dispatched to the worker per day. */
  requestsPerDay?: number;
  /** Tokens the worker reported per day (input + output). */
  tokensPerDay?: number;
  /** Money in USD per day (reported by the worker, else from `costOf`). */
  costUsdPerDay?: number;
}

/** Options of {@link WorkerQuotaGate}. */
export interface WorkerQuotaGateOptions {
  /** IANA zone of the calendar day. @default "UTC" */
  timeZone?: string;
  /**
   * Cost in USD of a settled attempt when the worker reported none (e.g. from a cost
   * model). @default the worker's `usage.costUsd`, else 0
   */
  costOf?: (task: TaskRecord, worker: WorkerEntry, outcome: SettleOutcome) => number;
  /**
   * Other workers that could run `task`. When one of them is within its quota (or has none),
   * a task is held for it instead of failing. @default none: a task a worker over quota
   * would run fails at once
   */
  alternatives?: (task: TaskRecord) => readonly WorkerEntry[];
}

interface Day {
  start: number;
  end: number;
  requests: number;
  tokens: number;
  /** Micro-dollars, so sums hold to the cent. */
  micros: number;
}

const toMicros = (usd: number) => Math.round(usd * 1_000_000);

/**
 * Per-worker daily quotas (requests, tokens, cost) as a dispatch gate: once a worker has used
 * a limit for the calendar day, it gets no more tasks until the next day. A task that only
 * that worker can run fails with `QUOTA_EXCEEDED` (the message names the worker, the limit,
 * what is used and when it resets); when another worker could run it, the task waits for
 * that one instead. Requests are counted at dispatch (so parallel tasks cannot overshoot),
 * tokens and cost at settle from the usage the worker reports.
 *
 * @example
 * ```ts
 * const quotas = new WorkerQuotaGate();
 * const orchestrator = new Orchestrator({ gates: [...resources.gates, quotas] });
 * quotas.set("openai-1", { requestsPerDay: 1000, costUsdPerDay: 5 });
 * ```
 */
export class WorkerQuotaGate implements DispatchGate {
  readonly name = "worker-quota";
  readonly #quotas = new Map<string, WorkerQuota>();
  readonly #days = new Map<string, Day>();
  readonly #timeZone: string;
  readonly #costOf: WorkerQuotaGateOptions["costOf"];
  readonly #alternatives: WorkerQuotaGateOptions["alternatives"];
  readonly #dispatched = new Map<string, string>();

  constructor(options: WorkerQuotaGateOptions = {}) {
    this.#timeZone = options.timeZone ?? "UTC";
    if (!isTimeZone(this.#timeZone)) {
      throw new FlotillaError("VALIDATION", `timeZone: unknown time zone "${this.#timeZone}"`);
    }
    this.#costOf = options.costOf;
    this.#alternatives = options.alternatives;
  }

  /**
   * Sets (or replaces) the daily quota of a worker; usage so far today is kept.
   *
   * @example
   * ```ts
   * quotas.set("openai-1", { tokensPerDay: 2_000_000 });
   * ```
   */
  set(workerId: string, quota: WorkerQuota): void {
    for (const [k, v] of Object.entries(quota)) {
      if (v !== undefined && !(typeof v === "number" && Number.isFinite(v) && v > 0)) {
        throw new FlotillaError("VALIDATION", `quota.${k}: expected a number > 0`);
      }
    }
    if (
      quota.requestsPerDay === undefined &&
      quota.tokensPerDay === undefined &&
      quota.costUsdPerDay === undefined
    ) {
      this.#quotas.delete(workerId);
      return;
    }
    this.#quotas.set(workerId, { ...quota });
  }

  /** Removes a worker's quota (e.g. when it is unregistered). @example quotas.delete("openai-1") */
  delete(workerId: string): void {
    this.#quotas.delete(workerId);
    this.#days.delete(workerId);
  }

  /** The quota of a worker, if any. @example quotas.get("openai-1")?.requestsPerDay */
  get(workerId: string): WorkerQuota | undefined {
    const q = this.#quotas.get(workerId);
    return q ? { ...q } : undefined;
  }

  #day(workerId: string, now: number): Day {
    let d = this.#days.get(workerId);
    if (!d || now >= d.end || now < d.start) {
      const b = dayBounds(now, this.#timeZone);
      d = { start: b.start, end: b.end, requests: 0, tokens: 0, micros: 0 };
      this.#days.set(workerId, d);
    }
    return d;
  }

  /**
   * What is exhausted for `workerId` now, as a sentence; undefined while within its quota.
   *
   * @example
   * ```ts
   * quotas.set("openai-1", { requestsPerDay: 1 });
   * quotas.onDispatch(task, worker, Date.now()); // worker.id === "openai-1"
   * quotas.exceeded("openai-1", Date.now()); // 'worker "openai-1" daily quota exceeded: requests 1 of 1 used today (…)'
   * ```
   */
  exceeded(workerId: string, now: number): string | undefined {
    const q = this.#quotas.get(workerId);
    if (!q) return undefined;
    const d = this.#day(workerId, now);
    let what: string | undefined;
    if (q.requestsPerDay !== undefined && d.requests + 1 > q.requestsPerDay) {
      what = `requests ${d.requests} of ${q.requestsPerDay}`;
    } else if (q.tokensPerDay !== undefined && d.tokens >= q.tokensPerDay) {
      what = `tokens ${d.tokens} of ${q.tokensPerDay}`;
    } else if (q.costUsdPerDay !== undefined && d.micros >= toMicros(q.costUsdPerDay)) {
      what = `cost $${(d.micros / 1e6).toFixed(6)} of $${q.costUsdPerDay}`;
    }
    if (!what) return undefined;
    return `worker "${workerId}" daily quota exceeded: ${what} used today (${this.#timeZone} day; resets ${new Date(d.end).toISOString()})`;
  }

  /** Gate: refuses a worker that used up its quota for today. @example quotas.check(task, entry, Date.now()) */
  check(task: TaskRecord, worker: WorkerEntry, now: number): GateDecision {
    const reason = this.exceeded(worker.id, now);
    if (!reason) return { ok: true };
    const end = this.#day(worker.id, now).end;
    const other = this.#alternatives?.(task).some(
      (e) => e.id !== worker.id && this.exceeded(e.id, now) === undefined,
    );
    if (other) return { ok: false, reason, retryAt: end };
    const q = this.#quotas.get(worker.id) ?? {};
    const d = this.#day(worker.id, now);
    return {
      ok: false,
      reason,
      fail: new FlotillaError("QUOTA_EXCEEDED", reason, {
        details: {
          worker_id: worker.id,
          quota_requests_per_day: q.requestsPerDay ?? null,
          quota_tokens_per_day: q.tokensPerDay ?? null,
          quota_cost_limit_per_day: q.costUsdPerDay ?? null,
          used: { requests: d.requests, tokens: d.tokens, cost_usd: d.micros / 1e6 },
          resets_at: new Date(d.end).toISOString(),
        },
      }),
    };
  }

  /** Gate: counts the request. @example quotas.onDispatch(task, entry, Date.now()) */
  onDispatch(task: TaskRecord, worker: WorkerEntry, now: number): void {
    if (!this.#quotas.has(worker.id)) return;
    const d = this.#day(worker.id, now);
    d.requests += 1;
    this.#dispatched.set(task.id, `${d.start}`);
  }

  /** Gate: adds the tokens and cost the attempt used. @example quotas.onSettle(task, entry, outcome, Date.now()) */
  onSettle(task: TaskRecord, worker: WorkerEntry, outcome: SettleOutcome, now: number): void {
    const dayOf = this.#dispatched.get(task.id);
    this.#dispatched.delete(task.id);
    if (!this.#quotas.has(worker.id)) return;
    const d = this.#day(worker.id, now);
    const u = outcome.usage;
    // Extra requests a worker reports (e.g. tool rounds) beyond the one counted at dispatch.
    if (dayOf === `${d.start}` && u?.requests !== undefined && u.requests > 1) {
      d.requests += u.requests - 1;
    }
    d.tokens += u?.totalTokens ?? (u?.inputTokens ?? 0) + (u?.outputTokens ?? 0);
    const usd = u?.costUsd ?? this.#costOf?.(task, worker, outcome) ?? 0;
    if (Number.isFinite(usd) && usd > 0) d.micros += toMicros(usd);
  }

  /**
   * Gate: today's usage from the store's ledger, so a restart keeps counting.
   *
   * @example
   * ```ts
   * const now = Date.now();
   * quotas.restore(await store.listUsage({ since: now - 86_400_000 }), now);
   * ```
   */
  restore(entries: UsageEntry[], now: number): void {
    for (const e of entries) {
      if (!e.workerId) continue;
      const d = this.#day(e.workerId, now);
      if (e.at < d.start || e.at >= d.end) continue;
      d.requests += e.usage.requests ?? 1;
      d.tokens += e.usage.totalTokens ?? (e.usage.inputTokens ?? 0) + (e.usage.outputTokens ?? 0);
      d.micros += toMicros(e.usage.costUsd ?? 0);
    }
  }

  /**
   * Each worker's quota, today's usage and what remains (for `/resources/stats`).
   *
   * @example
   * ```ts
   * quotas.stats(Date.now())["openai-1"]?.remaining.requests;
   * ```
   */
  stats(now: number): Record<string, unknown> {
    const out: Record<string, unknown> = {};
    for (const [id, q] of this.#quotas) {
      const d = this.#day(id, now);
      out[id] = {
        quota_requests_per_day: q.requestsPerDay ?? null,
        quota_tokens_per_day: q.tokensPerDay ?? null,
        quota_cost_limit_per_day: q.costUsdPerDay ?? null,
        requests_today: d.requests,
        tokens_today: d.tokens,
        cost_today: d.micros / 1e6,
        resets_at: new Date(d.end).toISOString(),
        exceeded: this.exceeded(id, now) !== undefined,
      };
    }
    return out;
  }
}
