import type { UsageEntry } from "../store/types.js";
import { type PriceBook, toMicros } from "./prices.js";
import { resolveUsage } from "./usage.js";

/** One line of the store's usage ledger, resolved the way the resource gates account it. */
export interface RestoredUsage {
  at: number;
  /** The task's first rate-limit key (its provider in budgets and rate limits), if it had one. */
  provider?: string;
  model?: string;
  tenant?: string;
  apiKey?: string;
  taskId?: string;
  workerId?: string;
  requests: number;
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  costMicros: number;
}

/**
 * Resolves usage ledger lines for `restore`: missing token fields are derived as at settle
 * time, the cost is the reported `costUsd`, else the price of the tokens on the line's
 * provider and model, else 0. Lines without a finite time or with malformed usage are
 * skipped. The result is sorted by time.
 *
 * @example
 * ```ts
 * const lines = resolveUsageEntries(await store.listUsage({ since: now - 48 * 3_600_000 }), prices);
 * ```
 */
export function resolveUsageEntries(
  entries: readonly UsageEntry[],
  prices?: PriceBook,
): RestoredUsage[] {
  const out: RestoredUsage[] = [];
  for (const e of entries) {
    if (e === null || typeof e !== "object" || !Number.isFinite(e.at)) continue;
    const u = resolveUsage({}, e.usage);
    if (u.source !== "reported") continue;
    let costMicros: number | undefined;
    if (u.costUsd !== undefined) costMicros = toMicros(u.costUsd);
    else if (prices && e.provider !== undefined) {
      const subject =
        e.model !== undefined ? { provider: e.provider, model: e.model } : { provider: e.provider };
      costMicros = prices.costMicros(subject, u.inputTokens, u.outputTokens);
    }
    const r: RestoredUsage = {
      at: e.at,
      requests: u.requests,
      inputTokens: u.inputTokens,
      outputTokens: u.outputTokens,
      totalTokens: u.totalTokens,
      costMicros: costMicros ?? 0,
    };
    if (e.provider !== undefined) r.provider = e.provider;
    if (e.model !== undefined) r.model = e.model;
    if (e.tenant !== undefined) r.tenant = e.tenant;
    if (e.apiKey !== undefined) r.apiKey = e.apiKey;
    if (e.taskId !== undefined) r.taskId = e.taskId;
    if (e.workerId !== undefined) r.workerId = e.workerId;
    out.push(r);
  }
  return out.sort((a, b) => a.at - b.at);
}
