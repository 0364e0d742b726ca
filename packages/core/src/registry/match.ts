import picomatch from "picomatch";
import type { TaskRecord } from "../task/types.js";
import type { WorkerEntry } from "./types.js";

type GlobMatcher = (input: string) => boolean;

const GLOB_CACHE_LIMIT = 1024;
const globCache = new Map<string, GlobMatcher>();

/**
 * Returns a cached matcher for a target name glob (`client-acme-*`, `gpu-{a,b}-?`).
 * Compiled globs are kept (up to 1024 distinct patterns) so matching on the dispatch path
 * does not recompile them.
 *
 * @example
 * ```ts
 * globMatcher("client-acme-*")("client-acme-prod-1"); // true
 * ```
 */
export function globMatcher(glob: string): GlobMatcher {
  let m = globCache.get(glob);
  if (m === undefined) {
    if (globCache.size >= GLOB_CACHE_LIMIT) globCache.clear();
    try {
      m = picomatch(glob, { dot: true });
    } catch {
      m = () => false; // a pattern picomatch cannot compile matches nothing
    }
    globCache.set(glob, m);
  }
  return m;
}

/** Sets per worker, so the many lookups of matching do not scan arrays. */
interface WorkerSets {
  types: ReadonlySet<string>;
  capabilities: ReadonlySet<string>;
}
const setsCache = new WeakMap<object, WorkerSets>();

/**
 * Keyed by entry, not by worker: a worker removed, changed and added again gets a new entry,
 * so its new fields are used.
 */
function setsOf(entry: WorkerEntry): WorkerSets {
  let sets = setsCache.get(entry);
  if (sets === undefined) {
    const worker = entry.worker;
    sets = { types: new Set(worker.taskTypes), capabilities: new Set(worker.capabilities ?? []) };
    setsCache.set(entry, sets);
  }
  return sets;
}

/**
 * Whether `entry` may ever run `task`, ignoring load, health and circuit state:
 * - the worker's `taskTypes` contains the task's `type` or `"*"`;
 * - every `requirements.capabilities` is among the worker's capabilities;
 * - every `requirements.labels` and `target.tags` pair is a worker label with that value;
 * - `target.workerId`, when set, is the worker's id;
 * - `target.name`, when set, is a glob matching the worker's name (its id when unnamed):
 *   `client-acme-*` matches `client-acme-prod-1`, not `client-beta-prod-1`.
 *
 * @example
 * ```ts
 * const entry = registry.add(new FunctionWorker({ name: "client-acme-prod-1", taskTypes: ["*"], fn }));
 * matchesTask(entry, { ...task, target: { name: "client-acme-*" } }); // true
 * ```
 */
export function matchesTask(entry: WorkerEntry, task: TaskRecord): boolean {
  const worker = entry.worker;
  const sets = setsOf(entry);
  if (!sets.types.has(task.type) && !sets.types.has("*")) return false;
  const target = task.target;
  if (target !== undefined) {
    if (target.workerId !== undefined && target.workerId !== entry.id) return false;
    if (target.tags !== undefined && !hasLabels(worker.labels, target.tags)) return false;
    if (target.name !== undefined && !globMatcher(target.name)(worker.name ?? entry.id)) {
      return false;
    }
  }
  const req = task.requirements;
  if (req !== undefined) {
    if (req.capabilities !== undefined) {
      for (const cap of req.capabilities) if (!sets.capabilities.has(cap)) return false;
    }
    if (req.labels !== undefined && !hasLabels(worker.labels, req.labels)) return false;
  }
  return true;
}

function hasLabels(
  labels: Readonly<Record<string, string>> | undefined,
  wanted: Readonly<Record<string, string>>,
): boolean {
  for (const key in wanted) {
    if (labels === undefined || !Object.hasOwn(labels, key) || labels[key] !== wanted[key]) {
      return false;
    }
  }
  return true;
}
