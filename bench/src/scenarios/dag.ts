/**
 * Scenario 6: DAG. Layered DAGs of 1k, 10k and 100k no-op tasks: plan time (submit with
 * validation and cycle check), per-node overhead, and makespan (the critical path of no-op
 * tasks is ~0, so makespan is all overhead) against a hand-written promise graph.
 */
import { FunctionWorker, Orchestrator, type TaskSpec } from "@flotilla/core";
import { type BenchContext, check, type Scenario } from "../report.js";
import { nowMs } from "../stats.js";

const NAME = "6. DAG";

/** Layers of `width` nodes; every node depends on up to 3 nodes of the layer before. */
function layeredDag(n: number, width: number): { id: string; deps: string[] }[] {
  const nodes: { id: string; deps: string[] }[] = [];
  for (let i = 0; i < n; i++) {
    const layer = Math.floor(i / width);
    const deps: string[] = [];
    if (layer > 0) {
      const prevStart = (layer - 1) * width;
      for (const k of [0, 1, 2]) {
        const j = prevStart + ((i + k * 7) % width);
        if (!deps.includes(`n${j}`)) deps.push(`n${j}`);
      }
    }
    nodes.push({ id: `n${i}`, deps });
  }
  return nodes;
}

async function flotillaDag(nodes: { id: string; deps: string[] }[], concurrency: number) {
  const orchestrator = new Orchestrator({ concurrency });
  const finished = new Map<string, number>();
  let seq = 0;
  let violations = 0;
  const deps = new Map(nodes.map((n) => [n.id, n.deps]));
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["noop"],
      maxConcurrency: concurrency,
      fn: async (_p, _ctx, task) => {
        for (const d of deps.get(task.id) ?? []) if (!finished.has(d)) violations++;
        finished.set(task.id, seq++);
        return null;
      },
    }),
  );
  await orchestrator.start();
  const specs: TaskSpec[] = nodes.map((n) => ({ id: n.id, type: "noop", dependsOn: n.deps }));
  const t0 = nowMs();
  const handles = await orchestrator.submitBatch(specs);
  const planMs = nowMs() - t0;
  await Promise.all(handles.map((h) => h.result()));
  const makespanMs = nowMs() - t0;
  await orchestrator.stop();
  return { planMs, makespanMs, ran: finished.size, violations };
}

async function promiseGraph(nodes: { id: string; deps: string[] }[]) {
  const t0 = nowMs();
  const done = new Map<string, Promise<void>>();
  let ran = 0;
  for (const n of nodes) {
    const waits = n.deps.map((d) => done.get(d)!);
    done.set(
      n.id,
      Promise.all(waits).then(async () => {
        ran++;
      }),
    );
  }
  const planMs = nowMs() - t0;
  await Promise.all(done.values());
  return { planMs, makespanMs: nowMs() - t0, ran, violations: 0 };
}

export const dagScenario: Scenario = {
  name: "dag",
  title: NAME,
  async run(ctx: BenchContext) {
    const sizes = ctx.smoke ? [1_000] : [1_000, 10_000, 100_000];
    for (const n of sizes) {
      const caseName = `${n.toLocaleString("en")} nodes`;
      ctx.log(`${NAME}: ${caseName}`);
      const nodes = layeredDag(n, 100);
      for (const [subject, fn] of [
        ["Flotilla", () => flotillaDag(nodes, 16)],
        ["promise graph (hand-written)", () => promiseGraph(nodes)],
      ] as const) {
        const r = await fn();
        ctx.rows.push(
          {
            scenario: NAME,
            case: caseName,
            subject,
            metric: "plan ms",
            value: r.planMs,
            unit: "ms",
            better: "lower",
          },
          {
            scenario: NAME,
            case: caseName,
            subject,
            metric: "µs per node",
            value: (r.makespanMs * 1000) / n,
            unit: "µs",
            better: "lower",
          },
          {
            scenario: NAME,
            case: caseName,
            subject,
            metric: "makespan − critical path",
            value: r.makespanMs,
            unit: "ms",
            better: "lower",
          },
        );
        if (subject === "Flotilla") {
          check(ctx, NAME, `${caseName}: every node ran once`, r.ran === n, `${r.ran}/${n}`);
          check(
            ctx,
            NAME,
            `${caseName}: no node ran before its dependencies`,
            r.violations === 0,
            `${r.violations} violations`,
          );
          if (n === 10_000)
            check(
              ctx,
              NAME,
              "10k-node DAG planned in under 500 ms",
              r.planMs < 500,
              `${r.planMs.toFixed(0)} ms`,
            );
        }
      }
    }
  },
};
