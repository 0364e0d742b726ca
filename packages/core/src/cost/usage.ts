import { type TaskStatus, type Usage, UsageSchema } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";

/** Usage with every field known, as the resource manager accounts it. */
export interface ResolvedUsage {
  inputTokens: number;
  outputTokens: number;
  totalTokens: number;
  requests: number;
  /** Cost the worker reported, if any (USD). */
  costUsd?: number;
  /**
   * `reported` when the worker's usage was used; `estimate` when it was missing or malformed
   * (and the attempt succeeded); `none` when an attempt that did not succeed reported nothing
   * (counted as one request and zero tokens).
   */
  source: "reported" | "estimate" | "none";
  /** Why the report was not used (missing, malformed). */
  problem?: string;
}

/**
 * Tokens a task is expected to use: `estimate.tokens`, else `inputTokens + outputTokens`;
 * `undefined` when the task gives no estimate.
 *
 * @example
 * ```ts
 * estimatedTokens(task); // 1200 for { estimate: { inputTokens: 1000, outputTokens: 200 } }
 * ```
 */
export function estimatedTokens(task: Pick<TaskRecord, "estimate">): number | undefined {
  const e = task.estimate;
  if (!e) return undefined;
  if (e.tokens !== undefined) return e.tokens;
  if (e.inputTokens === undefined && e.outputTokens === undefined) return undefined;
  return (e.inputTokens ?? 0) + (e.outputTokens ?? 0);
}

function fromEstimate(task: Pick<TaskRecord, "estimate">, problem: string): ResolvedUsage {
  const e = task.estimate ?? {};
  const total = estimatedTokens(task) ?? 0;
  const input =
    e.inputTokens ?? (e.outputTokens === undefined ? total : Math.max(0, total - e.outputTokens));
  const output = e.outputTokens ?? Math.max(0, total - input);
  const out: ResolvedUsage = {
    inputTokens: input,
    outputTokens: output,
    totalTokens: total,
    requests: 1,
    source: "estimate",
    problem,
  };
  if (e.costUsd !== undefined) out.costUsd = e.costUsd;
  return out;
}

/**
 * Reads the usage a worker reported for one attempt. Missing or malformed reports (negative
 * numbers, strings, no token count at all) fall back to the task's estimate; `problem` says why,
 * so that the caller can log it. An attempt with a `status` other than `succeeded` that
 * reported nothing counts as zero tokens (a refused or failed call is rarely billed). Never throws.
 *
 * @example
 * ```ts
 * const u = resolveUsage(task, { inputTokens: 900, outputTokens: 150 });
 * u.totalTokens; // 1050
 * ```
 */
export function resolveUsage(
  task: Pick<TaskRecord, "estimate">,
  usage: unknown,
  status?: TaskStatus,
): ResolvedUsage {
  if (usage === undefined || usage === null) {
    if (status !== undefined && status !== "succeeded") {
      return { inputTokens: 0, outputTokens: 0, totalTokens: 0, requests: 1, source: "none" };
    }
    return fromEstimate(task, "no usage reported");
  }
  const parsed = UsageSchema.safeParse(usage);
  if (!parsed.success) {
    const first = parsed.error.issues[0];
    return fromEstimate(
      task,
      `malformed usage report (${first ? `${first.path.join(".") || "usage"}: ${first.message}` : "invalid"})`,
    );
  }
  const u: Usage = parsed.data;
  const numbers = [u.inputTokens, u.outputTokens, u.totalTokens].filter(
    (n): n is number => n !== undefined && Number.isFinite(n),
  );
  if (numbers.length === 0 && u.costUsd === undefined) {
    return fromEstimate(task, "usage report has no token counts");
  }
  if (numbers.length === 0) {
    const est = fromEstimate(task, "usage report has no token counts");
    return { ...est, costUsd: u.costUsd, source: "reported" };
  }
  const input = u.inputTokens ?? 0;
  const output =
    u.outputTokens ?? (u.totalTokens !== undefined ? Math.max(0, u.totalTokens - input) : 0);
  const out: ResolvedUsage = {
    inputTokens: u.inputTokens ?? Math.max(0, (u.totalTokens ?? output) - output),
    outputTokens: output,
    totalTokens: u.totalTokens ?? input + output,
    requests: u.requests ?? 1,
    source: "reported",
  };
  if (u.costUsd !== undefined) out.costUsd = u.costUsd;
  return out;
}
