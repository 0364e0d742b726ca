import type { TaskRecord } from "../task/types.js";

function sortedEntries(rec: Readonly<Record<string, string>> | undefined): string {
  if (!rec) return "";
  const keys = Object.keys(rec).sort();
  return keys.map((k) => `${k}=${rec[k]}`).join(",");
}

/**
 * The constraint signature of a task: two tasks with the same signature can run on exactly
 * the same workers and pass or fail the same gates (type, requirements, target,
 * rate-limit keys, tenant). The ready queue groups tasks into one lane per signature, so
 * a lane that no free worker can take, or that a gate holds, is skipped as a whole.
 *
 * @example
 * ```ts
 * laneSignature(task); // "llm_request|gpu||||openai|acme"
 * ```
 */
export function laneSignature(task: TaskRecord): string {
  const req = task.requirements;
  const caps = req?.capabilities ? [...req.capabilities].sort().join(",") : "";
  const t = task.target;
  const target = t ? `${t.workerId ?? ""}/${t.name ?? ""}/${sortedEntries(t.tags)}` : "";
  const keys = task.rateLimitKeys.length > 1 ? [...task.rateLimitKeys].sort() : task.rateLimitKeys;
  return [
    task.type,
    caps,
    sortedEntries(req?.labels),
    target,
    keys.join(","),
    task.tenant ?? "",
  ].join("|");
}
