import {
  type Budgets,
  PRIORITY_NAMES,
  PRIORITY_VALUES,
  type ResourceStats,
  type TaskStatus,
  type WorkerInfo,
} from "@flotilla/core";
import type { MetricsSnapshot } from "../metrics.js";
import { jsonSafe, workerView } from "../views.js";
import type { AppContext } from "./context.js";

/** The name of the daily budget a worker's registration quota becomes. @internal */
export function workerBudget(workerId: string): string {
  return `worker:${workerId}/day`;
}

/** Per-worker quotas and today's use, as `/resources/stats` shows them (`worker_quotas`). */
function workerQuotas(budgets: Pick<Budgets, "stats">): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const b of budgets.stats()) {
    if (b.scope !== "worker" || b.name !== workerBudget(b.subject)) continue;
    out[b.subject] = {
      quota_requests_per_day: b.limit.requests ?? null,
      quota_tokens_per_day: b.limit.tokens ?? null,
      quota_cost_limit_per_day: b.limit.costUsd ?? null,
      requests_today: b.used.requests,
      tokens_today: b.used.tokens,
      cost_today: b.used.costUsd,
      resets_at: b.windowEnd === undefined ? null : new Date(b.windowEnd).toISOString(),
      exceeded: Object.values(b.remaining).some((r) => r !== undefined && r <= 0),
    };
  }
  return out;
}

/** Today's (UTC) usage per worker, read from the engine's usage ledger. */
async function usageBlock(ctx: AppContext) {
  const now = ctx.clock.now();
  const day = new Date(now).toISOString().slice(0, 10);
  const byWorker: Record<
    string,
    { requests_today: number; tokens_today: number; cost_today: number }
  > = {};
  const totals = { requests_today: 0, tokens_today: 0, cost_today: 0 };
  for (const line of await ctx.o.usage({ since: Date.parse(`${day}T00:00:00Z`), until: now + 1 })) {
    const u = line.usage;
    const requests = u.requests ?? 1;
    const tokens = u.totalTokens ?? (u.inputTokens ?? 0) + (u.outputTokens ?? 0);
    const cost = u.costUsd ?? 0;
    const id = line.workerId ?? "unknown";
    const w = byWorker[id] ?? { requests_today: 0, tokens_today: 0, cost_today: 0 };
    byWorker[id] = w;
    w.requests_today += requests;
    w.tokens_today += tokens;
    w.cost_today += cost;
    totals.requests_today += requests;
    totals.tokens_today += tokens;
    totals.cost_today += cost;
  }
  return { workers: byWorker, totals, day };
}

/**
 * `/resources/stats`: the resource manager's view (limits, budgets, cost) with Vera's
 * `llm_api_usage` block, or, without a manager, usage per worker from the engine's ledger;
 * plus per-worker quotas. @internal
 */
export async function resourceStats(ctx: AppContext): Promise<Record<string, unknown>> {
  const res = ctx.options.resources;
  let managed: Record<string, unknown> | undefined;
  try {
    const m = res?.stats?.();
    if (m && typeof m === "object") managed = m as Record<string, unknown>;
  } catch (err) {
    ctx.logger.warn({ err: String(err) }, "resources.stats() failed");
  }
  const base = managed
    ? {
        ...managed,
        llm_api_usage: { workers: managed.workers ?? {}, totals: managed.totals ?? {} },
      }
    : { llm_api_usage: await usageBlock(ctx) };
  return jsonSafe({
    ...base,
    ...(res?.budgets ? { worker_quotas: workerQuotas(res.budgets) } : {}),
  }) as Record<string, unknown>;
}

/** Vera's worker views and the statistics over them. @internal */
export function workerStats(list: WorkerInfo[]) {
  const views = list.map(workerView);
  const byStatus: Record<string, number> = {};
  const byKind: Record<string, number> = {};
  const byCap: Record<string, number> = {};
  let capacity = 0;
  let inFlight = 0;
  for (const [i, w] of list.entries()) {
    const v = views[i] as { status: string; capabilities: string[] };
    byStatus[v.status] = (byStatus[v.status] ?? 0) + 1;
    byKind[w.kind] = (byKind[w.kind] ?? 0) + 1;
    for (const c of v.capabilities) byCap[c] = (byCap[c] ?? 0) + 1;
    capacity += w.maxConcurrency;
    inFlight += w.inFlight;
  }
  return {
    views,
    statistics: {
      total_workers: list.length,
      workers_by_status: byStatus,
      workers_by_kind: byKind,
      workers_by_capability: byCap,
      total_capacity: capacity,
      tasks_in_flight: inFlight,
      utilization: capacity > 0 ? inFlight / capacity : 0,
    },
  };
}

/** `/status` and the WebSocket status snapshots: all read from the engine. @internal */
export async function statusSnapshot(ctx: AppContext): Promise<Record<string, unknown>> {
  const raw = ctx.o.status();
  const byState = { ...raw.counts };
  const sum = (...k: TaskStatus[]) => k.reduce((a, s) => a + (byState[s] ?? 0), 0);
  const ws = workerStats(ctx.workers());
  return jsonSafe({
    is_running: !ctx.shuttingDown && ctx.engineRunning,
    state: ctx.shuttingDown ? "stopping" : raw.state,
    uptime_seconds: Math.round(raw.uptimeMs / 1000),
    metrics: {
      tasks_submitted: Object.values(byState).reduce((a, b) => a + b, 0),
      tasks_completed: sum("succeeded"),
      tasks_failed: sum("failed", "timed_out"),
      tasks_cancelled: sum("cancelled"),
      tasks_skipped: sum("skipped"),
      active_tasks: raw.inFlight,
      queued_tasks: raw.queued,
      delayed_tasks: raw.delayed,
      pending_tasks: sum("pending", "awaiting_approval"),
      avg_execution_time_ms: raw.avgExecutionMs,
      tasks_by_state: byState,
      queue_depth_by_priority: raw.queueDepth,
    },
    workers: { ...ws.statistics, list: ws.views },
    resources: await resourceStats(ctx),
    engine: { ...raw, workers: undefined },
  }) as Record<string, unknown>;
}

/** What `/metrics` exports, read from the engine. @internal */
export function metricsSnapshot(ctx: AppContext): MetricsSnapshot {
  const raw = ctx.o.status();
  const queueByPriority: Record<string, number> = {};
  for (const [k, v] of Object.entries(raw.queueDepth)) {
    const n = Number(k);
    const name = Number.isFinite(n)
      ? (PRIORITY_NAMES.find((p) => PRIORITY_VALUES[p] === n) ?? k)
      : k;
    queueByPriority[name] = (queueByPriority[name] ?? 0) + v;
  }
  for (const p of PRIORITY_NAMES) queueByPriority[p] ??= 0;
  const out: MetricsSnapshot = {
    tasksByState: { ...raw.counts },
    queueByPriority,
    workers: ctx.workers(),
  };
  let stats: Partial<ResourceStats> | undefined;
  try {
    stats = ctx.options.resources?.stats?.() as Partial<ResourceStats> | undefined;
  } catch (err) {
    ctx.logger.warn({ err: String(err) }, "resources.stats() failed");
  }
  if (stats?.providers) {
    out.limits = Object.entries(stats.providers).flatMap(([key, p]) =>
      p.limits.map((l) => ({
        key,
        limit: l.name,
        unit: l.unit,
        used: l.used,
        remaining: l.remaining,
      })),
    );
  }
  if (stats?.budgets) {
    out.budgets = stats.budgets.flatMap((b) =>
      (
        [
          ["requests", b.used.requests, b.remaining.requests],
          ["tokens", b.used.tokens, b.remaining.tokens],
          ["cost_usd", b.used.costUsd, b.remaining.costUsd],
        ] as const
      )
        .filter(([metric]) => b.limit[metric === "cost_usd" ? "costUsd" : metric] !== undefined)
        .map(([metric, used, remaining]) => ({
          budget: b.name,
          subject: b.subject,
          metric,
          used,
          ...(remaining === undefined ? {} : { remaining }),
        })),
    );
  }
  return out;
}
