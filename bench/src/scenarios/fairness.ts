/**
 * Scenario 5: fairness. Tenants weighted 3:2:1 plus a noisy tenant with a 10× backlog,
 * under a global cap: each tenant's share of the work done while all are backlogged, and
 * the quiet tenant's p99 wait.
 */
import { FunctionWorker, Orchestrator } from "@flotilla/core";
import Bottleneck from "bottleneck";
import PQueue from "p-queue";
import { type BenchContext, check, type Scenario } from "../report.js";
import { percentile } from "../stats.js";

const NAME = "5. Fairness";
const TENANTS = [
  { name: "a", weight: 3, backlog: 1 },
  { name: "b", weight: 2, backlog: 1 },
  { name: "quiet", weight: 1, backlog: 1 },
  { name: "noisy", weight: 1, backlog: 10 },
];

interface FairRun {
  /** Tenant of each task, in start order. */
  order: string[];
  /** Waits (ms) of the quiet tenant's tasks. */
  quietWaits: number[];
}

/** Submission order: the noisy tenant's whole backlog first, then the others interleaved. */
function submissions(base: number): string[] {
  const out: string[] = [];
  const noisy = TENANTS.find((t) => t.name === "noisy")!;
  for (let i = 0; i < base * noisy.backlog; i++) out.push("noisy");
  for (let i = 0; i < base; i++) for (const t of TENANTS) if (t.name !== "noisy") out.push(t.name);
  return out;
}

async function flotillaFair(base: number, cap: number): Promise<FairRun> {
  const order: string[] = [];
  const quietWaits: number[] = [];
  const weights = Object.fromEntries(TENANTS.map((t) => [t.name, t.weight]));
  const orchestrator = new Orchestrator({ concurrency: cap, fairness: { weights } });
  await orchestrator.start();
  const t0 = performance.now();
  const handles = await orchestrator.submitBatch(
    submissions(base).map((tenant) => ({ type: "work", tenant, payload: tenant })),
  );
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["work"],
      maxConcurrency: cap,
      fn: async (tenant) => {
        order.push(tenant as string);
        if (tenant === "quiet") quietWaits.push(performance.now() - t0);
        await new Promise((r) => setImmediate(r));
        return null;
      },
    }),
  );
  await Promise.all(handles.map((h) => h.result()));
  await orchestrator.stop();
  return { order, quietWaits };
}

async function pQueueFifo(base: number, cap: number): Promise<FairRun> {
  const order: string[] = [];
  const quietWaits: number[] = [];
  const q = new PQueue({ concurrency: cap, autoStart: false });
  const t0 = performance.now();
  const all = submissions(base).map((tenant) =>
    q.add(async () => {
      order.push(tenant);
      if (tenant === "quiet") quietWaits.push(performance.now() - t0);
      await new Promise((r) => setImmediate(r));
    }),
  );
  q.start();
  await Promise.all(all);
  return { order, quietWaits };
}

async function bottleneckGroup(base: number, cap: number): Promise<FairRun> {
  const order: string[] = [];
  const quietWaits: number[] = [];
  // A global limiter chained behind a per-tenant group: the documented way to combine both.
  const global = new Bottleneck({ maxConcurrent: cap });
  const group = new Bottleneck.Group({ maxConcurrent: cap });
  group.on("created", (limiter) => limiter.chain(global));
  const t0 = performance.now();
  await Promise.all(
    submissions(base).map((tenant) =>
      group.key(tenant).schedule(async () => {
        order.push(tenant);
        if (tenant === "quiet") quietWaits.push(performance.now() - t0);
        await new Promise((r) => setImmediate(r));
      }),
    ),
  );
  await global.stop({ dropWaitingJobs: false });
  return { order, quietWaits };
}

export const fairnessScenario: Scenario = {
  name: "fairness",
  title: NAME,
  async run(ctx: BenchContext) {
    const base = ctx.smoke ? 60 : 300;
    const cap = 4;
    const totalWeight = TENANTS.reduce((a, t) => a + t.weight, 0);
    const caseName = `weights 3:2:1:1, noisy backlog 10×, global cap ${cap}`;
    ctx.log(`${NAME}: ${caseName}`);
    const subjects: Array<[string, () => Promise<FairRun>]> = [
      ["Flotilla", () => flotillaFair(base, cap)],
      ["p-queue (one FIFO queue)", () => pQueueFifo(base, cap)],
    ];
    if (!ctx.smoke)
      subjects.push(["bottleneck Group + global chain", () => bottleneckGroup(base, cap)]);
    for (const [subject, fn] of subjects) {
      const run = await fn();
      // Shares while every tenant still has work: the first `base` starts of the 'a' tenant's
      // backlog bound that period; use the window before any tenant could have run out.
      const windowSize = Math.floor((base * totalWeight) / 3);
      const window = run.order.slice(0, windowSize);
      for (const t of TENANTS) {
        const share = window.filter((x) => x === t.name).length / window.length;
        ctx.rows.push({
          scenario: NAME,
          case: caseName,
          subject,
          metric: `share of ${t.name} (weight ${t.weight}/${totalWeight})`,
          value: share * 100,
          unit: "%",
          better: "higher",
        });
        if (subject === "Flotilla") {
          const expected = t.weight / totalWeight;
          check(
            ctx,
            NAME,
            `${t.name}'s share within ±10% of its weight`,
            Math.abs(share - expected) <= expected * 0.1,
            `${(share * 100).toFixed(1)}% vs ${(expected * 100).toFixed(1)}%`,
          );
        }
      }
      ctx.rows.push({
        scenario: NAME,
        case: caseName,
        subject,
        metric: "quiet tenant p99 wait",
        value: percentile(run.quietWaits, 99),
        unit: "ms",
        better: "lower",
      });
    }
  },
};
