/**
 * Scenario 12: scale curves. The cost of one task as what the engine holds grows: rate-limit
 * keys holding tasks (1 → 10k), registered workers (1 → 10k) and the queued backlog
 * (1k → 1M), each against its smallest case. Per-task cost must not grow with held keys or
 * workers, and at most logarithmically with the backlog.
 */
import { type DispatchGate, FunctionWorker, Orchestrator, RateLimiter } from "@flotilla/core";
import { type BenchContext, check, type Scenario } from "../report.js";
import { median, nowMs } from "../stats.js";

const NAME = "12. Scale curves";

/**
 * µs per task of `n` unrelated no-op tasks while `keys` rate-limit keys each hold one task,
 * and how often the limiter was asked about the held tasks meanwhile.
 */
async function withHeldKeys(keys: number, n: number): Promise<{ us: number; heldChecks: number }> {
  const limits: Record<string, string[]> = {};
  for (let i = 0; i < keys; i++) limits[`k${i}`] = ["1/hour"];
  const limiter = new RateLimiter({ limits });
  let heldChecks = 0;
  let counting = false;
  const gate: DispatchGate = {
    name: limiter.name,
    check: (task, worker, now) => {
      if (counting && task.type === "held") heldChecks++;
      return limiter.check(task, worker, now);
    },
    onDispatch: (...a) => limiter.onDispatch(...a),
    onSettle: (...a) => limiter.onSettle(...a),
    subscribe: (wake) => limiter.subscribe(wake),
  };
  const orchestrator = new Orchestrator({ gates: [gate] });
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["noop", "held"],
      maxConcurrency: 16,
      fn: async () => null,
    }),
  );
  await orchestrator.start();
  const spec = (i: number) => ({ type: "held", rateLimitKey: `k${i}` });
  const first = await orchestrator.submitBatch(Array.from({ length: keys }, (_, i) => spec(i)));
  await Promise.all(first.map((h) => h.result()));
  // The second task of every key waits an hour.
  await orchestrator.submitBatch(Array.from({ length: keys }, (_, i) => spec(i)));
  await new Promise((r) => setImmediate(r));
  counting = true;
  const ms = await timeNoops(orchestrator, n);
  await orchestrator.stop({ mode: "abort" });
  return { us: (ms * 1000) / n, heldChecks };
}

/** µs per task of `n` no-op tasks at concurrency 16 with `workers` one-slot workers registered. */
async function withWorkers(workers: number, n: number): Promise<number> {
  const orchestrator = new Orchestrator({ concurrency: 16 });
  for (let i = 0; i < workers; i++) {
    await orchestrator.register(
      new FunctionWorker({ id: `w${i}`, taskTypes: ["noop"], fn: async () => null }),
    );
  }
  await orchestrator.start();
  const ms = await timeNoops(orchestrator, n);
  await orchestrator.stop();
  return (ms * 1000) / n;
}

/** µs per task to submit a backlog of `n` queued tasks (5 priorities) and drain it. */
async function withBacklog(n: number): Promise<{ us: number; completed: number }> {
  const orchestrator = new Orchestrator({ concurrency: 16 });
  await orchestrator.start();
  let completed = 0;
  const t = nowMs();
  const handles = [];
  for (let i = 0; i < n; i += 10_000) {
    const size = Math.min(10_000, n - i);
    handles.push(
      ...(await orchestrator.submitBatch(
        Array.from({ length: size }, (_, k) => ({ type: "noop", priority: ((i + k) % 5) * 10 })),
      )),
    );
  }
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["noop"],
      maxConcurrency: 16,
      fn: async () => {
        completed++;
        return null;
      },
    }),
  );
  await Promise.all(handles.map((h) => h.result()));
  const us = ((nowMs() - t) * 1000) / n;
  await orchestrator.stop();
  return { us, completed };
}

async function timeNoops(orchestrator: Orchestrator, n: number): Promise<number> {
  const warm = await orchestrator.submitBatch(
    Array.from({ length: Math.min(n, 1_000) }, () => ({ type: "noop" })),
  );
  await Promise.all(warm.map((h) => h.result()));
  const t = nowMs();
  const handles = await orchestrator.submitBatch(
    Array.from({ length: n }, () => ({ type: "noop" })),
  );
  await Promise.all(handles.map((h) => h.result()));
  return nowMs() - t;
}

/** Growth allowed from the smallest to the largest case. */
export const FLAT = 2;

export const scaleScenario: Scenario = {
  name: "scale",
  title: NAME,
  async run(ctx: BenchContext) {
    const n = ctx.smoke ? 1_000 : 5_000;
    const runs = ctx.smoke ? 1 : 3;
    const curve = async (
      what: string,
      sizes: number[],
      measure: (size: number) => Promise<number>,
    ): Promise<number[]> => {
      const out: number[] = [];
      for (const size of sizes) {
        ctx.log(`${NAME}: ${what} ${size}`);
        const xs: number[] = [];
        // One run of the largest backlogs (a 1M backlog takes most of a minute).
        const times = size >= 100_000 && what === "queued backlog" ? 1 : runs;
        for (let i = 0; i < times; i++) xs.push(await measure(size));
        const us = median(xs);
        out.push(us);
        ctx.rows.push({
          scenario: NAME,
          case: `${what}: ${size.toLocaleString("en")}`,
          subject: "Flotilla",
          metric: "µs per task",
          value: us,
          unit: "µs",
          better: "lower",
        });
      }
      const growth = out[out.length - 1]! / out[0]!;
      ctx.rows.push({
        scenario: NAME,
        case: `${what}: ${sizes[sizes.length - 1]!.toLocaleString("en")} vs ${sizes[0]!.toLocaleString("en")}`,
        subject: "Flotilla",
        metric: "growth of the per-task cost",
        value: growth,
        unit: "×",
        better: "lower",
      });
      return out;
    };

    const keySizes = ctx.smoke ? [1, 2_000] : [1, 100, 1_000, 10_000];
    let heldChecks = 0;
    await curve("rate-limit keys holding a task", keySizes, async (k) => {
      const r = await withHeldKeys(k, n);
      heldChecks = Math.max(heldChecks, r.heldChecks);
      return r.us;
    });
    // Counted, not timed: while unrelated tasks run and finish, no held task is asked again
    // (each finish used to ask every held key's first lane again: keys × tasks checks).
    check(
      ctx,
      NAME,
      "held tasks are not asked again while unrelated tasks finish",
      heldChecks === 0,
      `${heldChecks} checks of held tasks during ${n} unrelated tasks`,
    );

    const workerSizes = ctx.smoke ? [1, 100] : [1, 100, 1_000, 10_000];
    await curve("registered workers", workerSizes, (w) => withWorkers(w, n));

    const backlogSizes = ctx.smoke ? [1_000, 20_000] : [1_000, 10_000, 100_000, 1_000_000];
    let drained = true;
    await curve("queued backlog", backlogSizes, async (b) => {
      const r = await withBacklog(b);
      if (r.completed !== b) drained = false;
      return r.us;
    });
    check(ctx, NAME, "every backlog drained, each task once", drained, drained ? "yes" : "no");
  },
};
