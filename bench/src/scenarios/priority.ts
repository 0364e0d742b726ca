/**
 * Scenario 2: priority under backlog. Enqueue and dequeue cost from 1k to 100k queued tasks
 * over 5 levels (the cost must stay flat), zero inversions, and how soon urgent tasks injected
 * mid-run start.
 */
import { FunctionWorker, Orchestrator } from "@flotilla/core";
import PQueue from "p-queue";
import { type BenchContext, check, type Scenario } from "../report.js";
import { countInversions, median, nowMs } from "../stats.js";

const NAME = "2. Priority under backlog";
const LEVELS = [0, 10, 20, 30, 40];
const level = (i: number) => LEVELS[(i * 7919) % LEVELS.length]!;

async function flotillaBacklog(backlog: number, probe: number) {
  const orchestrator = new Orchestrator({ concurrency: 1 });
  await orchestrator.start();
  await orchestrator.submitBatch(
    Array.from({ length: backlog }, (_, i) => ({ type: "noop", priority: level(i) })),
  );
  const t0 = nowMs();
  for (let i = 0; i < probe; i++) await orchestrator.submit({ type: "noop", priority: level(i) });
  const enqueueUs = ((nowMs() - t0) * 1000) / probe;
  const started: number[] = [];
  let resolve!: () => void;
  const drained = new Promise<void>((r) => {
    resolve = r;
  });
  const t1 = nowMs();
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["noop"],
      maxConcurrency: 1,
      fn: async (_payload, _ctx, task) => {
        started.push(task.priority);
        if (started.length === probe) resolve();
        return null;
      },
    }),
  );
  await drained;
  const dequeueUs = ((nowMs() - t1) * 1000) / probe;
  await orchestrator.stop({ mode: "abort" });
  return { enqueueUs, dequeueUs, inversions: countInversions(started) };
}

async function pQueueBacklog(backlog: number, probe: number) {
  const q = new PQueue({ concurrency: 1, autoStart: false });
  const started: number[] = [];
  let resolve!: () => void;
  const drained = new Promise<void>((r) => {
    resolve = r;
  });
  const task = (p: number) => async () => {
    started.push(p);
    if (started.length === probe) resolve();
  };
  for (let i = 0; i < backlog; i++) void q.add(task(level(i)), { priority: level(i) });
  const t0 = nowMs();
  for (let i = 0; i < probe; i++) void q.add(task(level(i)), { priority: level(i) });
  const enqueueUs = ((nowMs() - t0) * 1000) / probe;
  const t1 = nowMs();
  q.start();
  await drained;
  const dequeueUs = ((nowMs() - t1) * 1000) / probe;
  q.clear();
  return { enqueueUs, dequeueUs, inversions: countInversions(started) };
}

export const priorityScenario: Scenario = {
  name: "priority",
  title: NAME,
  async run(ctx: BenchContext) {
    const sizes = ctx.smoke ? [1_000, 10_000] : [1_000, 10_000, 100_000];
    const probe = 1_000;
    const flotillaEnqueue: number[] = [];
    for (const backlog of sizes) {
      const caseName = `backlog ${backlog.toLocaleString("en")}`;
      ctx.log(`${NAME}: ${caseName}`);
      for (const [subject, fn] of [
        ["Flotilla", flotillaBacklog],
        ["p-queue", pQueueBacklog],
      ] as const) {
        const samples = [];
        for (let r = 0; r < (ctx.smoke ? 1 : 3); r++) samples.push(await fn(backlog, probe));
        const enqueueUs = median(samples.map((s) => s.enqueueUs));
        const dequeueUs = median(samples.map((s) => s.dequeueUs));
        ctx.rows.push(
          {
            scenario: NAME,
            case: caseName,
            subject,
            metric: "enqueue µs/op",
            value: enqueueUs,
            unit: "µs",
            better: "lower",
          },
          {
            scenario: NAME,
            case: caseName,
            subject,
            metric: "dequeue+run µs/op",
            value: dequeueUs,
            unit: "µs",
            better: "lower",
          },
        );
        if (subject === "Flotilla") {
          flotillaEnqueue.push(enqueueUs);
          const inv = samples.reduce((a, s) => a + s.inversions, 0);
          check(ctx, NAME, `${caseName}: zero priority inversions`, inv === 0, `${inv} inversions`);
        }
      }
    }
    if (!ctx.smoke && flotillaEnqueue.length >= 2) {
      const ratio = flotillaEnqueue.at(-1)! / flotillaEnqueue[0]!;
      ctx.log(
        `  enqueue cost ${sizes.at(-1)} vs ${sizes[0]}: ${ratio.toFixed(2)}× (target: flat ±20%)`,
      );
      ctx.rows.push({
        scenario: NAME,
        case: `${sizes.at(-1)!.toLocaleString("en")} vs ${sizes[0]!.toLocaleString("en")} backlog`,
        subject: "Flotilla",
        metric: "enqueue cost ratio",
        value: ratio,
        unit: "×",
        better: "lower",
      });
    }
  },
};
