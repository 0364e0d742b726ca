import { afterEach, describe, expect, it } from "vitest";
import { Budgets } from "../budget/budgets.js";
import type { Clock } from "../clock.js";
import { RetryAfterError } from "../errors.js";
import type { OrchestratorOptions } from "../orchestrator/options.js";
import { Orchestrator } from "../orchestrator/orchestrator.js";
import { orchestratorPoolHost } from "../pools/orchestratorHost.js";
import { WorkerPool } from "../pools/workerPool.js";
import type { TaskSpec } from "../task/schema.js";
import { FakeClock } from "../testing/index.js";
import { FunctionWorker } from "../worker/base.js";
import type { WorkerTask } from "../worker/types.js";
import { ResourceManager } from "./manager.js";

const sleep = (clock: Clock, ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));

const running: Orchestrator[] = [];
afterEach(async () => {
  for (const o of running.splice(0)) await o.stop({ mode: "abort" });
});

async function setup(
  clock: FakeClock,
  resources: ResourceManager,
  opts: Partial<OrchestratorOptions> & {
    slots?: number;
    workMs?: number;
    usage?: (t: WorkerTask) => object;
  } = {},
) {
  const runs: { id: string; at: number; tenant?: string }[] = [];
  const orchestrator = new Orchestrator({ clock, gates: resources.gates, ...opts });
  running.push(orchestrator);
  await orchestrator.register(
    new FunctionWorker({
      id: "llm-1",
      labels: { provider: "openai" },
      taskTypes: ["llm"],
      maxConcurrency: opts.slots ?? 100,
      fn: async (payload: { fail429?: boolean } | undefined, ctx, task) => {
        runs.push({ id: task.id, at: clock.now(), tenant: task.tenant });
        if (payload?.fail429 && task.attempt === 1) throw new RetryAfterError(5000);
        await sleep(clock, opts.workMs ?? 10);
        if (opts.usage) ctx.reportUsage(opts.usage(task));
        return "ok";
      },
    }),
  );
  return { orchestrator, runs };
}

describe("resources with the orchestrator", () => {
  it("keeps priority order while rate limited, one task per limit interval", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({
      limits: { openai: { requests: 2, per: "second", burst: 1 } },
      clock,
    });
    const { orchestrator, runs } = await setup(clock, resources);
    const specs: TaskSpec[] = [];
    const prios = [
      "low",
      "normal",
      "critical",
      "background",
      "high",
      "normal",
      "critical",
      "low",
    ] as const;
    for (const [i, priority] of prios.entries()) {
      specs.push({ id: `${priority}-${i}`, type: "llm", priority, rateLimitKey: "openai" });
    }
    await orchestrator.submitBatch(specs);
    await orchestrator.start();
    await clock.advance(10_000);
    expect(runs.map((r) => r.id)).toEqual([
      "critical-2",
      "critical-6",
      "high-4",
      "normal-1",
      "normal-5",
      "low-0",
      "low-7",
      "background-3",
    ]);
    // GCRA spaces calls 500 ms apart; the sliding log holds each call one window plus its
    // margin (auto: 20 ms) and a clock tick, so every third call waits for the first to leave.
    expect(runs.map((r) => r.at)).toEqual([0, 500, 1021, 1521, 2042, 2542, 3063, 3563]);

    // A higher-priority task submitted while limited goes before the waiting ones.
    const more: TaskSpec[] = [0, 1, 2].map((i) => ({
      id: `n${i}`,
      type: "llm",
      rateLimitKey: "openai",
    }));
    await orchestrator.submitBatch(more);
    await clock.advance(1);
    await orchestrator.submit({
      id: "urgent",
      type: "llm",
      priority: "critical",
      rateLimitKey: "openai",
    });
    await clock.advance(5000);
    expect(runs.slice(8).map((r) => r.id)).toEqual(["n0", "urgent", "n1", "n2"]);
  });

  it("pauses a key on Retry-After and resumes within one tick", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ limits: { openai: "100/s" }, clock });
    const { orchestrator, runs } = await setup(clock, resources);
    await orchestrator.start();
    const h = await orchestrator.submit({
      id: "a",
      type: "llm",
      rateLimitKey: "openai",
      payload: { fail429: true },
      retry: { maxAttempts: 2, initialDelayMs: 0, jitter: 0 },
    });
    await clock.advance(100);
    await orchestrator.submit({ id: "b", type: "llm", rateLimitKey: "openai" });
    await orchestrator.submit({ id: "other", type: "llm", rateLimitKey: "anthropic" });
    await clock.advance(10_000);
    expect((await h.result()).status).toBe("succeeded");
    const at = Object.fromEntries(
      runs.map((r) => [`${r.id}@${runs.filter((x) => x.id === r.id).indexOf(r)}`, r.at]),
    );
    expect(at).toEqual({ "a@0": 0, "other@0": 100, "a@1": 5001, "b@0": 5001 });
  });

  it("a limit raised at run time releases waiting work at once", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ limits: { openai: "1/min" }, clock });
    const { orchestrator, runs } = await setup(clock, resources);
    await orchestrator.start();
    await orchestrator.submitBatch(
      [0, 1, 2].map((i) => ({ id: `t${i}`, type: "llm", rateLimitKey: "openai" })),
    );
    await clock.advance(1000);
    expect(runs.map((r) => r.id)).toEqual(["t0"]);
    resources.limiter.setLimits("openai", "3/min");
    await clock.flush();
    expect(runs.map((r) => [r.id, r.at])).toEqual([
      ["t0", 0],
      ["t1", 1000],
      ["t2", 1000],
    ]);
  });

  it("admission control holds local workers while red and lets remote ones work", async () => {
    const clock = new FakeClock({ now: 0 });
    let cpu = 0.99;
    const resources = new ResourceManager({
      admission: { intervalMs: 1000 },
      clock,
      sensor: { sample: () => ({ cpu, memory: 0.1 }) },
    });
    const { orchestrator, runs } = await setup(clock, resources, { slots: 1 });
    const remoteRuns: string[] = [];
    await orchestrator.register(
      new FunctionWorker({
        id: "remote-1",
        taskTypes: ["llm"],
        local: false,
        fn: async (_p, _ctx, task) => {
          remoteRuns.push(task.id);
          await sleep(clock, 10);
        },
      }),
    );
    resources.start();
    await clock.flush();
    expect(resources.admission?.level).toBe("red");
    await orchestrator.start();
    await orchestrator.submitBatch([0, 1, 2, 3].map((i) => ({ id: `t${i}`, type: "llm" })));
    await clock.advance(100);
    expect(runs).toEqual([]);
    expect(remoteRuns).toEqual(["t0", "t1", "t2", "t3"]);
    cpu = 0.5;
    await clock.advance(1000);
    expect(resources.admission?.level).toBe("green");
    await orchestrator.submitBatch([4, 5].map((i) => ({ id: `t${i}`, type: "llm" })));
    await clock.advance(100);
    expect(runs).toHaveLength(1); // the local worker takes work again
    expect(remoteRuns).toHaveLength(5);
    resources.stop();
  });

  it("limits keyed by the worker: work held on one worker's key goes to another's freed slot", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({
      limits: { "key-a": "1/min", "key-b": "100/s" },
      clock,
      keys: (_task, worker) => [worker.worker.labels?.apiKey ?? "none"],
    });
    const orchestrator = new Orchestrator({ clock, gates: resources.gates });
    running.push(orchestrator);
    const runs: [string, number][] = [];
    for (const [k, ms] of [
      ["a", 10],
      ["b", 100],
    ] as const) {
      await orchestrator.register(
        new FunctionWorker({
          id: `w-${k}`,
          taskTypes: ["llm"],
          labels: { apiKey: `key-${k}` },
          fn: async () => {
            runs.push([`w-${k}`, clock.now()]);
            await sleep(clock, ms);
          },
        }),
      );
    }
    await orchestrator.start();
    await orchestrator.submitBatch([0, 1, 2, 3].map((i) => ({ id: `t${i}`, type: "llm" })));
    await clock.advance(1000);
    // key-a admits one call per minute; everything else goes to w-b as soon as it is free.
    expect(runs.filter(([w]) => w === "w-a")).toEqual([["w-a", 0]]);
    expect(runs.filter(([w]) => w === "w-b").map(([, at]) => at)).toEqual([0, 100, 200]);
  });

  it("a worker over its own budget hands its work to another worker; alone, the task fails", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1, 12) });
    const budgets = new Budgets({
      clock,
      budgets: [{ scope: "worker", key: "a", requests: 1, policy: "fail" }],
    });
    const orchestrator = new Orchestrator({ clock, gates: [budgets] });
    running.push(orchestrator);
    const ran: string[] = [];
    const worker = (id: string) =>
      new FunctionWorker({
        id,
        taskTypes: ["job"],
        fn: async () => {
          ran.push(id);
          await sleep(clock, 100);
          return id;
        },
      });
    await orchestrator.register(worker("a"));
    await orchestrator.start();
    const first = await orchestrator.submit({ type: "job" });
    await clock.advance(100);
    expect((await first.result()).output).toBe("a");
    // "a" has spent its day; with no other worker the task fails, naming the budget.
    const alone = await orchestrator.submit({ type: "job" });
    await clock.advance(0);
    expect((await alone.result()).error).toMatchObject({ code: "QUOTA_EXCEEDED" });
    // With "b" busy, a task waits for it instead of failing, then runs there.
    await orchestrator.register(worker("b"));
    const busy = await orchestrator.submit({ type: "job" });
    const next = await orchestrator.submit({ type: "job" });
    await clock.advance(250);
    expect((await busy.result()).output).toBe("b");
    expect((await next.result()).output).toBe("b");
    expect(ran).toEqual(["a", "b", "b"]);
  });

  it("when a key reopens, the best task across every lane held on it goes first", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ limits: { A: "2/10s" }, clock });
    const orchestrator = new Orchestrator({ clock, gates: resources.gates });
    running.push(orchestrator);
    const ran: string[] = [];
    await orchestrator.register(
      new FunctionWorker({
        id: "w",
        taskTypes: ["call", "other"],
        maxConcurrency: 10,
        fn: async (p: { n: string }) => {
          ran.push(`${p.n}@${Math.floor(clock.now() / 10_000)}`);
          return 1;
        },
      }),
    );
    await orchestrator.start();
    for (let i = 1; i <= 4; i++) {
      await orchestrator.submit({ type: "call", rateLimitKey: "A", payload: { n: `N${i}` } });
    }
    await clock.advance(1_000);
    // Another lane (another type) on the same key, more urgent, arrives while N3, N4 wait.
    await orchestrator.submit({
      type: "other",
      rateLimitKey: "A",
      priority: "critical",
      payload: { n: "C1" },
    });
    await orchestrator.submit({
      type: "other",
      rateLimitKey: "A",
      priority: "high",
      payload: { n: "H1" },
    });
    await clock.advance(60_000);
    expect(ran).toEqual(["N1@0", "N2@0", "C1@1", "H1@1", "N3@2", "N4@2"]);
  });

  it("when a budget frees at midnight, the most urgent task across lanes goes first", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1, 23, 0) });
    const budgets = new Budgets({ clock, budgets: [{ requests: 2 }] }); // wait policy, UTC day
    const orchestrator = new Orchestrator({ clock, gates: [budgets] });
    running.push(orchestrator);
    const ran: string[] = [];
    await orchestrator.register(
      new FunctionWorker({
        id: "w",
        taskTypes: ["a", "b"],
        maxConcurrency: 10,
        fn: async (p: { n: string }) => {
          ran.push(p.n);
          return 1;
        },
      }),
    );
    await orchestrator.start();
    for (const n of ["N1", "N2", "N3", "N4"]) {
      await orchestrator.submit({ type: "a", payload: { n } });
    }
    await clock.advance(60_000);
    await orchestrator.submit({ type: "b", priority: "critical", payload: { n: "C1" } });
    await clock.advance(3_600_000); // past midnight: two more today
    expect(ran).toEqual(["N1", "N2", "C1", "N3"]);
  });

  it("under-estimated tokens are a debt carried forward: the sustained rate converges to the limit", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ limits: { k: "1000 tokens/min" }, clock });
    const orchestrator = new Orchestrator({ clock, gates: resources.gates });
    running.push(orchestrator);
    const starts: number[] = [];
    await orchestrator.register(
      new FunctionWorker({
        id: "llm",
        taskTypes: ["call"],
        fn: async (_p, ctx) => {
          starts.push(clock.now());
          await sleep(clock, 1_000);
          ctx.reportUsage({ inputTokens: 300, outputTokens: 100 }); // 400, estimated 100
          return 1;
        },
      }),
    );
    await orchestrator.start();
    await orchestrator.submitBatch(
      Array.from({ length: 60 }, () => ({
        type: "call",
        rateLimitKey: "k",
        estimate: { tokens: 100 },
      })),
    );
    await clock.advance(10 * 60_000);
    // Over any span of k whole windows: at most k × 1000 tokens plus the under-estimate (300)
    // of the one call in flight — not 1200 per window for ever.
    for (let k = 1; k <= 10; k++) {
      for (const from of starts) {
        const tokens = starts.filter((t) => t >= from && t < from + k * 60_000).length * 400;
        expect(tokens, `${k} windows from ${from}`).toBeLessThanOrEqual(k * 1_000 + 300);
      }
    }
    expect(starts.length * 400).toBeGreaterThanOrEqual(9_600); // and it still uses the limit
  });

  it("reconciles tokens with reported usage end to end", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ limits: { openai: "1000 tokens/min" }, clock });
    const { orchestrator, runs } = await setup(clock, resources, {
      usage: () => ({ inputTokens: 50, outputTokens: 50 }),
    });
    await orchestrator.start();
    const specs: TaskSpec[] = [0, 1, 2].map((i) => ({
      id: `t${i}`,
      type: "llm",
      rateLimitKey: "openai",
      estimate: { tokens: 600 },
    }));
    await orchestrator.submitBatch(specs);
    await clock.advance(5000);
    // t0 takes 600; t1 cannot fit until t0 settles at 10 ms and refunds 500; then t1, then t2 after t1 settles.
    expect(runs.map((r) => [r.id, r.at])).toEqual([
      ["t0", 0],
      ["t1", 10],
      ["t2", 20],
    ]);
    expect(resources.stats().providers.openai).toMatchObject({
      requests_today: 3,
      tokens_today: 300,
    });
    expect(resources.limiter.stats().openai?.limits[0]?.used).toBe(300);
  });

  it("fails tasks over a budget with QUOTA_EXCEEDED under the fail policy", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({
      budgets: [
        { name: "acme-daily", scope: "tenant", key: "acme", costUsd: 0.05, policy: "fail" },
      ],
      clock,
    });
    const { orchestrator } = await setup(clock, resources, { usage: () => ({ costUsd: 0.02 }) });
    await orchestrator.start();
    const results = [];
    for (let i = 0; i < 4; i++) {
      const h = await orchestrator.submit({
        type: "llm",
        tenant: "acme",
        estimate: { costUsd: 0.02 },
      });
      await clock.advance(20);
      results.push(await h.result());
    }
    expect(results.map((r) => r.status)).toEqual(["succeeded", "succeeded", "failed", "failed"]);
    expect(results[2]?.error).toMatchObject({
      code: "QUOTA_EXCEEDED",
      message:
        'budget "acme-daily" exceeded: cost limit $0.05, used $0.04, this task needs $0.02 (per day in UTC, tenant "acme")',
    });
    expect(resources.stats().tenants.acme).toMatchObject({ requests_today: 2, cost_today: 0.04 });
  });

  it("shares fairly: tenants weighted 3:2:1 against a noisy tenant with a 10x backlog", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ tenantConcurrency: { noisy: 4 }, clock });
    const { orchestrator, runs } = await setup(clock, resources, {
      slots: 4,
      workMs: 10,
      fairness: { weights: { a: 3, b: 2, c: 1, noisy: 1 } },
    });
    const specs: TaskSpec[] = [];
    for (let i = 0; i < 1000; i++) specs.push({ type: "llm", tenant: "noisy" });
    for (const t of ["a", "b", "c"])
      for (let i = 0; i < 100; i++) specs.push({ type: "llm", tenant: t });
    await orchestrator.submitBatch(specs);
    await orchestrator.start();
    await clock.advance(700); // ~280 dispatches, every tenant still backlogged
    const window = runs.slice(0, 210);
    const share = (t: string) => window.filter((r) => r.tenant === t).length / window.length;
    const expected = { a: 3 / 7, b: 2 / 7, c: 1 / 7, noisy: 1 / 7 };
    for (const [t, w] of Object.entries(expected)) {
      expect(
        Math.abs(share(t) / w - 1),
        `tenant ${t}: share ${share(t)} vs ${w}`,
      ).toBeLessThanOrEqual(0.1);
    }
  });

  it("caps a tenant's concurrency under the global cap", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ tenantConcurrency: { noisy: 2, "*": 8 }, clock });
    const { orchestrator } = await setup(clock, resources, {
      slots: 100,
      workMs: 100,
      concurrency: 6,
    });
    const specs: TaskSpec[] = [];
    for (let i = 0; i < 50; i++) specs.push({ type: "llm", tenant: "noisy" });
    for (let i = 0; i < 10; i++) specs.push({ type: "llm", tenant: "quiet" });
    await orchestrator.submitBatch(specs);
    await orchestrator.start();
    let maxNoisy = 0;
    let maxTotal = 0;
    for (let i = 0; i < 30; i++) {
      await clock.advance(50);
      maxNoisy = Math.max(maxNoisy, resources.concurrency!.inFlight("noisy"));
      maxTotal = Math.max(maxTotal, orchestrator.status().inFlight);
    }
    expect(maxNoisy).toBe(2);
    expect(maxTotal).toBe(6);
    expect(resources.stats().tenants.quiet?.requests_today).toBe(10);
  });

  it("grows a pool on backlog and shrinks it when idle", async () => {
    const clock = new FakeClock({ now: 0 });
    const orchestrator = new Orchestrator({ clock });
    running.push(orchestrator);
    const host = orchestratorPoolHost(orchestrator);
    const pool = new WorkerPool({
      clock,
      min: 0,
      max: 3,
      taskTypes: ["job"],
      cooldownUpMs: 1000,
      cooldownDownMs: 2000,
      scaleDownIdleMs: 5000,
      factory: (i) =>
        new FunctionWorker({ id: `job-${i}`, taskTypes: ["job"], fn: () => sleep(clock, 1000) }),
    });
    const sizes: number[] = [];
    pool.on("scale", (e) => sizes.push(e.size));
    await orchestrator.start();
    await pool.start(host);
    const handles = await orchestrator.submitBatch(
      Array.from({ length: 12 }, () => ({ type: "job" })),
    );
    await clock.advance(30_000);
    for (const h of handles) expect((await h.result()).status).toBe("succeeded");
    expect(sizes).toEqual([1, 2, 3, 2, 1, 0]);
    expect(orchestrator.listWorkers()).toHaveLength(0);
    await pool.stop();
  });
});
