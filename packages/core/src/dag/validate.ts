import { alg, Graph } from "@dagrejs/graphlib";
import { FlotillaError } from "../errors.js";
import type { TaskRecord } from "../task/types.js";
import { splitReference } from "./templates.js";

/**
 * Checks the dependency graph of a batch of new tasks, with `known(id)` telling whether an
 * id names a task from an earlier submission:
 * - every `dependsOn` id is in the batch or known, else `UNKNOWN_DEPENDENCY` naming them;
 * - the batch's edges form no cycle, else `CYCLE_DETECTED` naming the tasks of each cycle;
 * - every `inputs` reference starts with one of the task's dependencies (`VALIDATION`).
 *
 * Returns the batch in dependency order (a dependency before its dependents). A cycle can
 * only lie within one batch: earlier tasks cannot depend on ids that did not exist yet.
 *
 * @example
 * ```ts
 * orderBatch([a, b], (id) => existing.has(id)); // [a, b] when b depends on a
 * ```
 */
export function orderBatch(
  batch: readonly TaskRecord[],
  known: (id: string) => boolean,
): TaskRecord[] {
  const byId = new Map<string, TaskRecord>();
  for (const t of batch) byId.set(t.id, t);
  const unknown: Array<{ taskId: string; dependency: string }> = [];
  let internalEdges = 0;
  for (const t of batch) {
    for (const dep of t.dependsOn) {
      if (byId.has(dep)) internalEdges++;
      else if (!known(dep)) unknown.push({ taskId: t.id, dependency: dep });
    }
    if (t.inputs) {
      const deps = new Set(t.dependsOn);
      for (const [name, ref] of Object.entries(t.inputs)) {
        if (!splitReference(ref, deps)) {
          throw new FlotillaError(
            "VALIDATION",
            `task ${t.id}: inputs.${name}: expected "<dependency id>[.path]" naming one of dependsOn [${t.dependsOn.join(", ")}], got "${ref}"`,
            { details: { taskId: t.id, input: name, reference: ref } },
          );
        }
      }
    }
  }
  if (unknown.length > 0) {
    const names = [...new Set(unknown.map((u) => u.dependency))];
    throw new FlotillaError(
      "UNKNOWN_DEPENDENCY",
      `unknown dependencies: ${unknown
        .slice(0, 10)
        .map((u) => `${u.taskId} → ${u.dependency}`)
        .join(
          ", ",
        )}${unknown.length > 10 ? ` (and ${unknown.length - 10} more)` : ""}: no such task (never submitted, or a finished task removed by retention)`,
      { details: { unknown: names, edges: unknown } },
    );
  }
  if (internalEdges === 0) return [...batch];
  // Kahn's algorithm: O(tasks + edges). The graph library is only needed to name cycles.
  const indegree = new Map<string, number>();
  const dependents = new Map<string, string[]>();
  for (const t of batch) {
    let n = 0;
    for (const dep of t.dependsOn) {
      if (!byId.has(dep)) continue;
      n++;
      const list = dependents.get(dep);
      if (list) list.push(t.id);
      else dependents.set(dep, [t.id]);
    }
    indegree.set(t.id, n);
  }
  const ordered: TaskRecord[] = [];
  for (const t of batch) if (indegree.get(t.id) === 0) ordered.push(t);
  for (let i = 0; i < ordered.length; i++) {
    const list = dependents.get(ordered[i]!.id);
    if (!list) continue;
    for (const id of list) {
      const left = indegree.get(id)! - 1;
      indegree.set(id, left);
      if (left === 0) ordered.push(byId.get(id)!);
    }
  }
  if (ordered.length === byId.size) return ordered;
  const graph = new Graph({ directed: true });
  for (const t of batch) graph.setNode(t.id);
  for (const t of batch) for (const dep of t.dependsOn) if (byId.has(dep)) graph.setEdge(dep, t.id);
  const cycles = alg.findCycles(graph);
  throw new FlotillaError(
    "CYCLE_DETECTED",
    `dependency cycle${cycles.length > 1 ? "s" : ""}: ${cycles
      .slice(0, 5)
      .map((c) => `[${[...c].sort().join(", ")}]`)
      .join(", ")}`,
    { details: { cycles } },
  );
}
