/**
 * Scenario 3: rate-limit accuracy. A limit of 200/s, and a composite of 60/min and 4/s:
 * the most starts in any sliding 1 s and 100 ms window, and the achieved rate.
 */
import { FunctionWorker, Orchestrator, ResourceManager } from "@flotilla/core";
import Bottleneck from "bottleneck";
import PQueue from "p-queue";
import { bullmqRun } from "../bullmq.js";
import { type BenchContext, check, type Scenario } from "../report.js";
import { maxInSlidingWindow } from "../stats.js";

const NAME = "3. Rate-limit accuracy";

async function flotillaLimited(n: number, limits: string[]): Promise<number[]> {
  const starts: number[] = [];
  const resources = new ResourceManager({ limits: { provider: limits } });
  const orchestrator = new Orchestrator({ concurrency: 64, gates: resources.gates });
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["call"],
      maxConcurrency: 64,
      fn: async () => {
        starts.push(performance.now());
        return null;
      },
    }),
  );
  await orchestrator.start();
  const handles = await orchestrator.submitBatch(
    Array.from({ length: n }, () => ({ type: "call", rateLimitKey: "provider" })),
  );
  await Promise.all(handles.map((h) => h.result()));
  await orchestrator.stop();
  return starts;
}

async function pQueueInterval(n: number, perSecond: number): Promise<number[]> {
  const starts: number[] = [];
  const q = new PQueue({ concurrency: 64, intervalCap: perSecond, interval: 1000 });
  await Promise.all(
    Array.from({ length: n }, () => q.add(async () => void starts.push(performance.now()))),
  );
  return starts;
}

async function bottleneckMinTime(n: number, perSecond: number): Promise<number[]> {
  const starts: number[] = [];
  const limiter = new Bottleneck({ maxConcurrent: 64, minTime: 1000 / perSecond });
  await Promise.all(
    Array.from({ length: n }, () =>
      limiter.schedule(async () => void starts.push(performance.now())),
    ),
  );
  await limiter.stop({ dropWaitingJobs: false });
  return starts;
}

async function bottleneckReservoir(n: number, perSecond: number): Promise<number[]> {
  const starts: number[] = [];
  const limiter = new Bottleneck({
    maxConcurrent: 64,
    reservoir: perSecond,
    reservoirRefreshAmount: perSecond,
    reservoirRefreshInterval: 1000,
  });
  await Promise.all(
    Array.from({ length: n }, () =>
      limiter.schedule(async () => void starts.push(performance.now())),
    ),
  );
  await limiter.stop({ dropWaitingJobs: false });
  return starts;
}

async function bottleneckComposite(n: number): Promise<number[]> {
  const starts: number[] = [];
  const perMinute = new Bottleneck({
    reservoir: 60,
    reservoirRefreshAmount: 60,
    reservoirRefreshInterval: 60_000,
  });
  const perSecond = new Bottleneck({ minTime: 250, maxConcurrent: 64 }).chain(perMinute);
  await Promise.all(
    Array.from({ length: n }, () =>
      perSecond.schedule(async () => void starts.push(performance.now())),
    ),
  );
  await perSecond.stop({ dropWaitingJobs: false });
  await perMinute.stop({ dropWaitingJobs: false });
  return starts;
}

function record(
  ctx: BenchContext,
  caseName: string,
  subject: string,
  starts: number[],
  limits: Array<[number, number]>,
) {
  const achieved =
    starts.length > 1
      ? ((starts.length - 1) / (Math.max(...starts) - Math.min(...starts))) * 1000
      : 0;
  ctx.rows.push(
    {
      scenario: NAME,
      case: caseName,
      subject,
      metric: "max starts in any 1 s",
      value: maxInSlidingWindow(starts, 1000),
      unit: "",
      better: "lower",
    },
    {
      scenario: NAME,
      case: caseName,
      subject,
      metric: "max starts in any 100 ms",
      value: maxInSlidingWindow(starts, 100),
      unit: "",
      better: "lower",
    },
    {
      scenario: NAME,
      case: caseName,
      subject,
      metric: "achieved rate",
      value: achieved,
      unit: "/s",
      better: "higher",
    },
  );
  if (subject === "Flotilla") {
    for (const [windowMs, limit] of limits) {
      const seen = maxInSlidingWindow(starts, windowMs);
      check(
        ctx,
        NAME,
        `${caseName}: no sliding ${windowMs} ms window above ${limit}`,
        seen <= limit,
        `max ${seen}`,
      );
    }
  }
}

export const rateLimitScenario: Scenario = {
  name: "ratelimit",
  title: NAME,
  async run(ctx: BenchContext) {
    const n = ctx.smoke ? 300 : 1000;
    const caseName = `200/s, ${n} tasks`;
    ctx.log(`${NAME}: ${caseName}`);
    record(ctx, caseName, "Flotilla", await flotillaLimited(n, ["200/s"]), [[1000, 200]]);
    record(ctx, caseName, "p-queue interval (200 per 1 s)", await pQueueInterval(n, 200), []);
    record(ctx, caseName, "bottleneck minTime 5 ms", await bottleneckMinTime(n, 200), []);
    record(ctx, caseName, "bottleneck reservoir 200/s", await bottleneckReservoir(n, 200), []);
    if (ctx.redis) {
      const starts: number[] = [];
      await bullmqRun(
        ctx.redis,
        Array.from({ length: n }, () => 0),
        64,
        false,
        {
          limiter: { max: 200, duration: 1000 },
          onStart: (t) => starts.push(t),
        },
      );
      record(ctx, caseName, "BullMQ limiter 200 per 1 s", starts, []);
    }
    if (!ctx.smoke) {
      const m = 64;
      const composite = `60/min and 4/s, ${m} tasks`;
      ctx.log(`${NAME}: ${composite}`);
      record(ctx, composite, "Flotilla", await flotillaLimited(m, ["60/min", "4/s"]), [
        [1000, 4],
        [60_000, 60],
      ]);
      record(
        ctx,
        composite,
        "bottleneck chain (minTime 250 ms → reservoir 60/min)",
        await bottleneckComposite(m),
        [],
      );
    }
  },
};
