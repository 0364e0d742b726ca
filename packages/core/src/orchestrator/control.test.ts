import { afterEach, describe, expect, it } from "vitest";
import { type Clock, systemClock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { DispatchGate, SettleOutcome } from "../resources/gate.js";
import { MemoryStore } from "../store/memory.js";
import { FakeClock } from "../testing/index.js";
import type { Worker } from "../worker/types.js";
import { Orchestrator } from "./orchestrator.js";
import { fnWorker, sleep, started } from "./testkit.test-helpers.js";

const running: Orchestrator[] = [];
afterEach(async () => {
  for (const o of running.splice(0)) await o.stop({ mode: "abort" });
});

async function setup(options: Parameters<typeof started>[0] = {}) {
  const s = await started(options);
  running.push(s.orchestrator);
  return s;
}

describe("approvals", () => {
  it("before_run waits for approval before it is queued; approve is idempotent", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(fnWorker("w", ["deploy"], async () => "deployed"));
    const h = await orchestrator.submit({ id: "d", type: "deploy", approval: "before_run" });
    await clock.advance(1_000);
    expect(h.status).toBe("awaiting_approval");
    const rec = await orchestrator.approve("d", { by: "alice", comment: "ok" });
    expect(rec.approvalDecision).toMatchObject({
      decision: "approved",
      by: "alice",
      comment: "ok",
    });
    expect((await h.result()).status).toBe("succeeded");
    const again = await orchestrator.approve("d", { by: "alice" });
    expect(again.status).toBe("succeeded");
    await expect(orchestrator.reject("d")).rejects.toMatchObject({
      code: "INVALID_STATE",
      message: expect.stringContaining("succeeded"),
    });
  });

  it("after_run holds the result until approved; reject skips dependents", async () => {
    const { orchestrator } = await setup();
    const events: string[] = [];
    orchestrator.on("task:transition", (e) => events.push(`${e.taskId}:${e.to}`));
    await orchestrator.register(fnWorker("w", ["t"], async (_p, _c, t) => `out-${t.id}`));
    const [a] = await orchestrator.submitBatch([
      { id: "a", type: "t", approval: "after_run" },
      { id: "b", type: "t", dependsOn: ["a"] },
    ]);
    await new Promise((r) => setImmediate(r));
    expect(a!.status).toBe("awaiting_approval");
    expect((await orchestrator.get("a"))?.result?.output).toBe("out-a");
    expect((await orchestrator.get("b"))?.status).toBe("pending");
    await orchestrator.approve("a", { by: "bob" });
    expect((await a!.result()).output).toBe("out-a");
    await (await orchestrator.handle("b"))!.result();
    expect(events).toContain("a:awaiting_approval");
    expect(events).toContain("b:succeeded");

    const [c] = await orchestrator.submitBatch([
      { id: "c", type: "t", approval: "before_run" },
      { id: "e", type: "t", dependsOn: ["c"] },
    ]);
    await orchestrator.reject("c", { by: "carol", comment: "not now" });
    await orchestrator.reject("c", { by: "carol" }); // idempotent
    const rc = await c!.result();
    expect(rc.status).toBe("rejected");
    expect(rc.error).toMatchObject({
      code: "REJECTED",
      message: expect.stringContaining("not now"),
    });
    expect((await (await orchestrator.handle("e"))!.result()).status).toBe("skipped");
  });

  it("approving a task that is not awaiting approval names its state", async () => {
    const { orchestrator } = await setup();
    await orchestrator.submit({ id: "q", type: "nobody-runs-this" });
    await expect(orchestrator.approve("q")).rejects.toMatchObject({
      code: "INVALID_STATE",
      message: "task q is queued, not awaiting approval",
    });
    await expect(orchestrator.approve("missing")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});

describe("gates", () => {
  it("calls check before dispatch, onDispatch once, onSettle once per attempt; retryAt wakes the lane", async () => {
    const { orchestrator, clock } = await setup({ gates: [] });
    void orchestrator;
    const calls: string[] = [];
    let openAt = 0;
    const gate: DispatchGate = {
      name: "window",
      check: (task, _w, now) =>
        task.rateLimitKeys.includes("limited") && now < openAt
          ? { ok: false, reason: "closed", retryAt: openAt, blockKey: "limited" }
          : { ok: true },
      onDispatch: (task) => calls.push(`dispatch:${task.id}`),
      onSettle: (task, _w, outcome: SettleOutcome) =>
        calls.push(`settle:${task.id}:${outcome.status}`),
    };
    const c2 = new FakeClock();
    const o = new Orchestrator({ clock: c2, gates: [gate], random: () => 0 });
    running.push(o);
    await o.start();
    await o.register(
      fnWorker(
        "w",
        ["t"],
        async (_p, _c, t) => {
          if (t.id === "flaky" && t.attempt === 1) throw new Error("once");
          return t.id;
        },
        { maxConcurrency: 4 },
      ),
    );
    openAt = c2.now() + 5_000;
    const hs = await o.submitBatch([
      { id: "lim-1", type: "t", rateLimitKey: "limited", priority: "critical" },
      { id: "lim-2", type: "t", rateLimitKey: "limited", priority: "critical" },
      { id: "free", type: "t", priority: "low" },
      { id: "flaky", type: "t", retry: { maxAttempts: 2, initialDelayMs: 10 } },
    ]);
    await c2.advance(100);
    expect(hs[2]!.status).toBe("succeeded"); // a blocked lane does not block other tasks
    expect(hs[0]!.status).toBe("queued");
    await c2.advance(4_900);
    for (const h of hs) expect((await h.result()).status).toBe("succeeded");
    expect(calls.filter((c) => c.startsWith("dispatch:flaky"))).toHaveLength(2);
    expect(calls.filter((c) => c.startsWith("settle:flaky"))).toEqual([
      "settle:flaky:failed",
      "settle:flaky:succeeded",
    ]);
    expect(calls.filter((c) => c.startsWith("dispatch:lim")).length).toBe(2);
    expect(calls.indexOf("dispatch:lim-1")).toBeLessThan(calls.indexOf("dispatch:lim-2"));
    void clock;
  });

  it("fails a task a gate refuses, and wakes parked lanes on the gate's signal", async () => {
    let wake: (() => void) | undefined;
    let open = false;
    const gate: DispatchGate = {
      name: "budget",
      check: (task) =>
        task.tenant === "broke"
          ? {
              ok: false,
              reason: "budget",
              fail: new FlotillaError("QUOTA_EXCEEDED", "budget acme/day spent"),
            }
          : open
            ? { ok: true }
            : { ok: false, reason: "paused" },
      subscribe: (w) => {
        wake = w;
        return () => {
          wake = undefined;
        };
      },
    };
    const { orchestrator, clock } = await setup({ gates: [gate] });
    await orchestrator.register(fnWorker("w", ["t"], async () => 1));
    const broke = await orchestrator.submit({ type: "t", tenant: "broke" });
    const r = await broke.result();
    expect(r.status).toBe("failed");
    expect(r.error?.code).toBe("QUOTA_EXCEEDED");
    const h = await orchestrator.submit({ type: "t" });
    await clock.advance(10_000);
    expect(h.status).toBe("queued");
    open = true;
    wake!();
    expect((await h.result()).status).toBe("succeeded");
    await orchestrator.stop();
    expect(wake).toBeUndefined();
  });
});

describe("scheduling under load", () => {
  it("aging: a background task runs under a constant stream of critical tasks", async () => {
    const { orchestrator, clock } = await setup({ aging: { intervalMs: 100 } });
    const ran: string[] = [];
    const bg = await orchestrator.submit({ id: "bg", type: "t", priority: "background" });
    let i = 0;
    while (orchestrator.status().queued < 3)
      await orchestrator.submit({ id: `c${i++}`, type: "t", priority: "critical" });
    await orchestrator.register(
      fnWorker("w", ["t"], async (_p, _c, t) => {
        ran.push(t.id);
        await sleep(clock, 10);
        return null;
      }),
    );
    // Keep two critical tasks always waiting, for 30 s of fake time.
    for (let step = 0; step < 3_000 && bg.status !== "succeeded"; step++) {
      while (orchestrator.status().queued < 3)
        await orchestrator.submit({ id: `c${i++}`, type: "t", priority: "critical" });
      await clock.advance(10);
    }
    expect(bg.status).toBe("succeeded");
    // it waited for about 40 priority points × 100 ms, not forever
    expect(ran.indexOf("bg")).toBeGreaterThan(100);
    expect(ran.indexOf("bg")).toBeLessThan(600);
  });

  it("without aging the same stream starves it (the control case)", async () => {
    const { orchestrator, clock } = await setup();
    const bg = await orchestrator.submit({ type: "t", priority: "background" });
    await orchestrator.submitBatch(
      [1, 2, 3].map(() => ({ type: "t", priority: "critical" as const })),
    );
    await orchestrator.register(fnWorker("w", ["t"], async () => sleep(clock, 10)));
    for (let step = 0; step < 500; step++) {
      while (orchestrator.status().queued < 3)
        await orchestrator.submit({ type: "t", priority: "critical" });
      await clock.advance(10);
    }
    expect(bg.status).toBe("queued");
  });

  it("fair share: a quiet tenant gets its weight's share against a 10x noisy tenant", async () => {
    const { orchestrator, clock } = await setup({ fairness: { weights: { quiet: 1, noisy: 1 } } });
    const served: string[] = [];
    await orchestrator.register(
      fnWorker(
        "w",
        ["t"],
        async (_p, _c, t) => {
          served.push(t.tenant!);
          await sleep(clock, 10);
          return null;
        },
        { maxConcurrency: 2 },
      ),
    );
    await orchestrator.submitBatch(
      Array.from({ length: 1_000 }, () => ({ type: "t", tenant: "noisy" })),
    );
    await orchestrator.submitBatch(
      Array.from({ length: 100 }, () => ({ type: "t", tenant: "quiet" })),
    );
    await clock.advance(1_000); // 200 tasks served
    const quiet = served.filter((t) => t === "quiet").length;
    expect(served.length).toBeGreaterThanOrEqual(190);
    expect(quiet / served.length).toBeGreaterThan(0.45);
    expect(quiet / served.length).toBeLessThan(0.55);
  });

  it("fair share follows weights (3:1) between two backlogged tenants", async () => {
    const { orchestrator, clock } = await setup({ fairness: { weights: { gold: 3, free: 1 } } });
    const served: string[] = [];
    await orchestrator.submitBatch(
      Array.from({ length: 500 }, () => ({ type: "t", tenant: "free" })),
    );
    await orchestrator.submitBatch(
      Array.from({ length: 500 }, () => ({ type: "t", tenant: "gold" })),
    );
    await orchestrator.register(
      fnWorker("w", ["t"], async (_p, _c, t) => {
        served.push(t.tenant!);
        await sleep(clock, 10);
        return null;
      }),
    );
    await clock.advance(2_000); // 200 tasks
    const gold = served.filter((t) => t === "gold").length;
    expect(gold / served.length).toBeGreaterThan(0.7);
    expect(gold / served.length).toBeLessThan(0.8);
  });

  it("honours the global concurrency cap and per-worker slots", async () => {
    const { orchestrator, clock } = await setup({ concurrency: 3 });
    let now = 0;
    let peak = 0;
    const fn = async () => {
      now++;
      peak = Math.max(peak, now);
      await sleep(clock, 100);
      now--;
      return null;
    };
    await orchestrator.register(fnWorker("a", ["t"], fn, { maxConcurrency: 2 }));
    await orchestrator.register(fnWorker("b", ["t"], fn, { maxConcurrency: 2 }));
    const hs = await orchestrator.submitBatch(Array.from({ length: 12 }, () => ({ type: "t" })));
    await clock.advance(50);
    expect(orchestrator.status().inFlight).toBe(3);
    await clock.advance(1_000);
    for (const h of hs) expect(h.status).toBe("succeeded");
    expect(peak).toBe(3);
  });

  it("thousands of lanes waiting on a busy worker cost nothing per completion elsewhere", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(fnWorker("busy", ["t"], () => new Promise(() => {})));
    await orchestrator.register(
      fnWorker("free", ["t"], async () => sleep(clock, 1), { maxConcurrency: 4 }),
    );
    await orchestrator.submit({ type: "t", target: { workerId: "busy" } }); // occupies busy for good
    // 3 000 distinct lanes (one rate-limit key each) that only "busy" may run
    await orchestrator.submitBatch(
      Array.from({ length: 3_000 }, (_, i) => ({
        type: "t",
        priority: "critical" as const,
        target: { workerId: "busy" },
        rateLimitKey: `k${i}`,
      })),
    );
    const work = await orchestrator.submitBatch(
      Array.from({ length: 3_000 }, () => ({ type: "t" })),
    );
    const t0 = performance.now();
    for (let i = 0; i < 100 && work.some((h) => h.status !== "succeeded"); i++)
      await clock.advance(1_000);
    const ms = performance.now() - t0;
    for (const h of work) expect(h.status).toBe("succeeded");
    // rescanning 3 000 parked lanes on each of 3 000 completions would take far longer
    expect(ms).toBeLessThan(15_000);
    expect(orchestrator.status().queued).toBe(3_000);
  }, 60_000);

  it("a task no worker can run keeps its place and does not block others", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(fnWorker("cpu", ["t"], async () => "cpu"));
    const gpu = await orchestrator.submit({
      type: "t",
      priority: "critical",
      requirements: { capabilities: ["gpu"] },
    });
    const plain = await orchestrator.submit({ type: "t", priority: "low" });
    expect((await plain.result()).status).toBe("succeeded");
    expect(gpu.status).toBe("queued");
    await orchestrator.register(
      fnWorker("gpu", ["t"], async () => "gpu", { capabilities: ["gpu"] }),
    );
    expect((await gpu.result()).output).toBe("gpu");
    void clock;
  });

  it("work waiting for an unhealthy worker runs when its health recovers", async () => {
    const { orchestrator, clock } = await setup({
      registry: {
        health: { intervalMs: 1_000, unhealthyAfter: 1, degradedAfter: 1, recoverAfter: 1 },
      },
    });
    let healthy = false;
    const w = fnWorker("w", ["t"], async () => "ran");
    Object.assign(w, {
      healthCheck: async () => ({ status: healthy ? "healthy" : "unhealthy" }),
    });
    await orchestrator.register(w);
    await clock.advance(1);
    expect(orchestrator.registry.get("w")?.health).toBe("unhealthy");
    const h = await orchestrator.submit({ type: "t" });
    await clock.advance(5_000);
    expect(h.status).toBe("queued");
    healthy = true;
    await clock.advance(1_000);
    expect((await h.result()).output).toBe("ran");
  });

  it("status() reports counts, queue depth by priority, workers, uptime and execution time", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.submitBatch([
      { type: "none", priority: "high" },
      { type: "none", priority: "high" },
      { type: "none", priority: 7 },
    ]);
    await orchestrator.register(fnWorker("w", ["t"], async () => sleep(clock, 40)));
    const h = await orchestrator.submit({ type: "t" });
    await clock.advance(100);
    await h.result();
    const s = orchestrator.status();
    expect(s.counts).toMatchObject({ queued: 3, succeeded: 1 });
    expect(s.queueDepth).toEqual({ high: 2, "7": 1 });
    expect(s.workers.map((w) => w.id)).toEqual(["w"]);
    expect(s.uptimeMs).toBe(100);
    expect(s.avgExecutionMs).toBe(40);
    expect(JSON.parse(JSON.stringify(s))).toBeTruthy();
  });
});

describe("workers and shutdown", () => {
  it("unregister drains by default and hands back with handback", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(
      fnWorker("slow", ["t"], async (_p, ctx) => sleep(clock, 1_000, ctx.signal)),
    );
    const h1 = await orchestrator.submit({ type: "t" });
    await clock.advance(10);
    const drained = orchestrator.unregister("slow");
    await clock.advance(1_000);
    expect(await drained).toBe(true);
    expect(h1.status).toBe("succeeded");
    await orchestrator.register(
      fnWorker("slow2", ["t"], async (_p, ctx) => sleep(clock, 1_000, ctx.signal)),
    );
    const h2 = await orchestrator.submit({ type: "t" });
    await clock.advance(10);
    await orchestrator.unregister("slow2", { mode: "handback" });
    expect(h2.status).toBe("queued");
    expect((await orchestrator.get(h2.id))?.attempt).toBe(1);
    expect(orchestrator.listWorkers()).toEqual([]);
  });

  it("stop leaves no timers behind (drain and abort) and requeues aborted work", async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    const o = new Orchestrator({ clock, store, registry: { health: { intervalMs: 1_000 } } });
    await o.start();
    await o.register(fnWorker("w", ["t"], async (_p, ctx) => sleep(clock, 5_000, ctx.signal)));
    const h = await o.submit({ type: "t", timeoutMs: 60_000 });
    await o.submit({ type: "t", retry: { maxAttempts: 3 }, runAt: clock.now() + 100_000 });
    await o.submit({ type: "remote_compute" });
    const claim = await o.claim({ holderId: "n1" });
    expect(claim).not.toBeNull();
    await clock.advance(10);
    expect(clock.pendingTimers).toBeGreaterThan(0);
    await o.stop({ mode: "abort" });
    expect(clock.pendingTimers).toBe(0);
    expect(h.status).toBe("queued");
    expect((await store.getTask(h.id))?.status).toBe("queued");
    // a second start/stop with drain
    await o.start();
    await clock.advance(100);
    const stopping = o.stop({ mode: "drain", timeoutMs: 10_000 });
    await clock.advance(5_000);
    await stopping;
    expect(h.status).toBe("succeeded");
    expect(clock.pendingTimers).toBe(0);
  });

  it("real timers: every timer set through the system clock is gone after stop", async () => {
    const live = new Set<unknown>();
    const counting: Clock = {
      now: () => systemClock.now(),
      setTimeout(fn, ms) {
        const h = systemClock.setTimeout(() => {
          live.delete(h);
          fn();
        }, ms);
        live.add(h);
        return h;
      },
      clearTimeout(h) {
        live.delete(h);
        systemClock.clearTimeout(h);
      },
    };
    const o = new Orchestrator({ clock: counting });
    await o.start();
    await o.register(fnWorker("w", ["t"], async () => 1));
    await (await o.submit({ type: "t", timeoutMs: 10_000, retry: { maxAttempts: 2 } })).result();
    await o.submit({ type: "t", runAt: Date.now() + 60_000 });
    expect(live.size).toBeGreaterThan(0);
    await o.stop();
    expect(live.size).toBe(0);
  });

  it("keeps the process alive only while it has a timer pending for work", async () => {
    const refd = () =>
      (process as unknown as { getActiveResourcesInfo(): string[] })
        .getActiveResourcesInfo()
        .filter((r) => r === "Timeout").length;
    const before = refd();
    const o = new Orchestrator();
    await o.start();
    expect(refd()).toBe(before); // idle: holds nothing
    await o.submit({ type: "t", runAt: Date.now() + 60_000 });
    expect(refd()).toBe(before + 1); // a delayed task: one handle
    await o.stop();
    expect(refd()).toBe(before);
  });

  it("stops registered workers on stop and starts them again on start", async () => {
    const calls: string[] = [];
    const w: Worker = {
      id: "w",
      kind: "custom",
      taskTypes: ["t"],
      maxConcurrency: 1,
      start: async () => {
        calls.push("start");
      },
      stop: async () => {
        calls.push("stop");
      },
      execute: async () => ({ output: 1 }),
    };
    const { orchestrator } = await setup();
    await orchestrator.register(w);
    await orchestrator.stop();
    await orchestrator.start();
    expect(calls).toEqual(["start", "stop", "start"]);
  });

  it("restores unfinished tasks from the store on start", async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    const first = new Orchestrator({ clock, store });
    await first.submitBatch([
      { id: "a", type: "t" },
      { id: "b", type: "t", dependsOn: ["a"] },
    ]);
    await first.stop();
    const second = new Orchestrator({ clock, store });
    running.push(second);
    await second.register(fnWorker("w", ["t"], async (_p, _c, t) => t.id));
    await second.start();
    const b = (await second.handle("b"))!;
    expect((await b.result()).status).toBe("succeeded");
    expect((await store.getTask("a"))?.status).toBe("succeeded");
  });

  it("a worker that throws synchronously or a non-Error never crashes the engine", async () => {
    const { orchestrator } = await setup();
    await orchestrator.register({
      id: "sync",
      kind: "custom",
      taskTypes: ["s"],
      maxConcurrency: 1,
      execute: () => {
        throw "a string";
      },
    });
    const r = await (await orchestrator.submit({ type: "s" })).result();
    expect(r.status).toBe("failed");
    expect(r.error?.code).toBe("WORKER_ERROR");
  });
});
