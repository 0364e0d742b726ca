/**
 * Scenario 3: rate-limit accuracy. A limit of 200/s, and a composite of 60/min and 4/s:
 * the most starts in any sliding 1 s and 100 ms window, and the achieved rate.
 */
import {
  type DispatchGate,
  FunctionWorker,
  marginFor,
  Orchestrator,
  ResourceManager,
} from "@flotilla/core";
import Bottleneck from "bottleneck";
import PQueue from "p-queue";
import { bullmqRun } from "../bullmq.js";
import { type BenchContext, check, type Scenario } from "../report.js";
import { maxInSlidingWindow } from "../stats.js";

const NAME = "3. Rate-limit accuracy";

/** What a Flotilla run saw: each call's start in the worker, and the engine's own start stamps. */
interface FlotillaRun {
  /** `performance.now()` as each worker call began. */
  starts: number[];
  /** The orchestrator clock's reading when it told the gates the call starts (what the limiter counts). */
  stamps: number[];
  /** Longest time from a start stamp to the worker call beginning, in ms (process pauses, scheduling). */
  lagMs: number;
}

async function flotillaLimited(n: number, limits: string[]): Promise<FlotillaRun> {
  const starts: number[] = [];
  const stamps: number[] = [];
  const stampOf = new Map<string, number>();
  let lagMs = 0;
  const resources = new ResourceManager({ limits: { provider: limits } });
  // A gate that only watches: it records when the engine counts each call as started.
  const watch: DispatchGate = {
    name: "bench-watch",
    check: () => ({ ok: true }),
    onStart: (task, _worker, now) => {
      stamps.push(now);
      stampOf.set(task.id, now);
    },
  };
  const orchestrator = new Orchestrator({ concurrency: 64, gates: [...resources.gates, watch] });
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["call"],
      maxConcurrency: 64,
      fn: async (_payload, _ctx, task) => {
        starts.push(performance.now());
        // +1: Date.now() ticks in whole milliseconds.
        lagMs = Math.max(lagMs, Date.now() - (stampOf.get(task.id) ?? Date.now()) + 1);
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
  return { starts, stamps, lagMs };
}

/**
 * Checks a Flotilla run against its limits, exactly. The limiter holds each call in its
 * window for `windowMs + margin` from its start stamp, so (1) no `windowMs` window of stamps
 * holds more than the limit, and (2) calls seen in the worker, each at most `lagMs` after its
 * stamp, hold no more than the limit in any window of `windowMs + margin − lagMs` — the full
 * window whenever the process paused less than the margin between stamp and call.
 */
function checkFlotilla(
  ctx: BenchContext,
  caseName: string,
  run: FlotillaRun,
  limits: Array<[number, number]>,
) {
  ctx.rows.push({
    scenario: NAME,
    case: caseName,
    subject: "Flotilla",
    metric: "longest start-stamp-to-call lag",
    value: run.lagMs,
    unit: "ms",
    better: "lower",
  });
  for (const [windowMs, limit] of limits) {
    const stamped = maxInSlidingWindow(run.stamps, windowMs);
    check(
      ctx,
      NAME,
      `${caseName}: no sliding ${windowMs} ms window of start stamps above ${limit}`,
      stamped <= limit,
      `max ${stamped}`,
    );
    const seenWindow = Math.min(windowMs, windowMs + marginFor(windowMs, "auto") - run.lagMs);
    const seen = maxInSlidingWindow(run.starts, seenWindow);
    check(
      ctx,
      NAME,
      `${caseName}: no sliding ${seenWindow} ms window of worker calls above ${limit}`,
      seen <= limit,
      `max ${seen} (lag ${run.lagMs} ms)`,
    );
  }
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

function record(ctx: BenchContext, caseName: string, subject: string, starts: number[]) {
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
}

export const rateLimitScenario: Scenario = {
  name: "ratelimit",
  title: NAME,
  async run(ctx: BenchContext) {
    const n = ctx.smoke ? 300 : 1000;
    const caseName = `200/s, ${n} tasks`;
    ctx.log(`${NAME}: ${caseName}`);
    const run = await flotillaLimited(n, ["200/s"]);
    record(ctx, caseName, "Flotilla", run.starts);
    checkFlotilla(ctx, caseName, run, [[1000, 200]]);
    record(ctx, caseName, "p-queue interval (200 per 1 s)", await pQueueInterval(n, 200));
    record(ctx, caseName, "bottleneck minTime 5 ms", await bottleneckMinTime(n, 200));
    record(ctx, caseName, "bottleneck reservoir 200/s", await bottleneckReservoir(n, 200));
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
      record(ctx, caseName, "BullMQ limiter 200 per 1 s", starts);
    }
    if (!ctx.smoke) {
      const m = 64;
      const composite = `60/min and 4/s, ${m} tasks`;
      ctx.log(`${NAME}: ${composite}`);
      const compositeRun = await flotillaLimited(m, ["60/min", "4/s"]);
      record(ctx, composite, "Flotilla", compositeRun.starts);
      checkFlotilla(ctx, composite, compositeRun, [
        [1000, 4],
        [60_000, 60],
      ]);
      record(
        ctx,
        composite,
        "bottleneck chain (minTime 250 ms → reservoir 60/min)",
        await bottleneckComposite(m),
      );
    }
  },
};
