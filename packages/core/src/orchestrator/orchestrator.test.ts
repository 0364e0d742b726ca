import { afterEach, describe, expect, it } from "vitest";
import { type FlotillaError, RetryAfterError, UnrecoverableError } from "../errors.js";
import type { Worker } from "../worker/types.js";
import type { Orchestrator } from "./orchestrator.js";
import { fnWorker, sleep, started } from "./testkit.test-helpers.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

async function setup(options: ConstructorParameters<typeof Orchestrator>[0] = {}) {
  const s = await started(options);
  cleanups.push(() => s.orchestrator.stop({ mode: "abort" }));
  return s;
}

describe("Orchestrator basics", () => {
  it("runs a task on a function worker and records every transition in order", async () => {
    const { orchestrator } = await setup();
    const seen: string[] = [];
    orchestrator.on("task:transition", (e) => seen.push(`${e.from}->${e.to}`));
    await orchestrator.register(
      fnWorker(
        "w",
        ["add"],
        async (p) => (p as { a: number; b: number }).a + (p as { a: number; b: number }).b,
      ),
    );
    const handle = await orchestrator.submit({ type: "add", payload: { a: 1, b: 2 } });
    const result = await handle.result();
    expect(result.status).toBe("succeeded");
    expect(result.output).toBe(3);
    expect(result.workerId).toBe("w");
    expect(result.attempts).toBe(1);
    expect(seen).toEqual([
      "null->queued",
      "queued->leased",
      "leased->running",
      "running->succeeded",
    ]);
    const stored = await orchestrator.store.getTask(handle.id);
    expect(stored?.status).toBe("succeeded");
    const events = await orchestrator.store.listEvents({ taskId: handle.id });
    expect(events.map((e) => e.type)).toEqual([
      "task:queued",
      "task:leased",
      "task:running",
      "task:succeeded",
    ]);
  });

  it("view renders a task from memory or the store without copying it; undefined when unknown", async () => {
    // No finished task kept in memory: a finished one is read back from the store.
    const { orchestrator } = await setup({ finishedCacheSize: 0 });
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let running!: () => void;
    const workerStarted = new Promise<void>((r) => {
      running = r;
    });
    await orchestrator.register(
      fnWorker("w", ["slow"], () => {
        running();
        return gate.then(() => "done");
      }),
    );
    const h = await orchestrator.submit({ type: "slow", metadata: { who: "a" } });
    await workerStarted;
    const seen: unknown[] = [];
    const line = await orchestrator.view(h.id, (rec) => {
      seen.push(rec.metadata);
      return `${rec.id}: ${rec.status}`;
    });
    expect(line).toBe(`${h.id}: running`);
    // The record handed over is the engine's own, not a copy `get` makes.
    expect(seen[0]).toBe((await orchestrator.view(h.id, (rec) => rec.metadata)) as unknown);
    expect(seen[0]).not.toBe((await orchestrator.get(h.id))?.metadata);
    release();
    await h.result();
    expect(await orchestrator.view(h.id, (rec) => rec.status)).toBe("succeeded");
    expect(await orchestrator.view(h.id, (rec) => rec.result?.output)).toBe("done");
    expect(await orchestrator.view("no-such-task", () => "x")).toBeUndefined();
  });

  it("rejects bad specs with VALIDATION naming the field", async () => {
    const { orchestrator } = await setup();
    await expect(orchestrator.submit({ type: "" })).rejects.toMatchObject({
      code: "VALIDATION",
      message: expect.stringContaining("task.type"),
    });
    await expect(
      orchestrator.submitBatch([{ type: "a" }, { type: "b", retry: { maxAttempts: 0 } }]),
    ).rejects.toMatchObject({
      code: "VALIDATION",
      message: expect.stringContaining("tasks[1].retry.maxAttempts"),
    });
    await expect(orchestrator.submit(42 as never)).rejects.toMatchObject({ code: "VALIDATION" });
    expect(orchestrator.status().counts.queued).toBe(0);
  });

  it("maps priority names and runs higher priorities first, FIFO within one", async () => {
    const { orchestrator, clock } = await setup();
    const order: string[] = [];
    await orchestrator.submitBatch([
      { id: "low-1", type: "t", priority: "low" },
      { id: "normal-1", type: "t" },
      { id: "crit", type: "t", priority: "critical" },
      { id: "normal-2", type: "t", priority: "normal" },
      { id: "num-35", type: "t", priority: 35 },
      { id: "bg", type: "t", priority: "background" },
    ]);
    expect((await orchestrator.get("crit"))?.priority).toBe(40);
    await orchestrator.register(
      fnWorker("w", ["t"], async (_p, _c, task) => {
        order.push(task.id);
        await sleep(clock, 10);
        return null;
      }),
    );
    await clock.advance(1000);
    expect(order).toEqual(["crit", "num-35", "normal-1", "normal-2", "low-1", "bg"]);
  });

  it("returns the same task for the same idempotency key", async () => {
    const { orchestrator } = await setup();
    const a = await orchestrator.submit({ type: "x", idempotencyKey: "k1" });
    const b = await orchestrator.submit({ type: "x", idempotencyKey: "k1" });
    expect(b.id).toBe(a.id);
    const [c] = await Promise.all([
      orchestrator.submit({ type: "x", idempotencyKey: "k2" }),
      orchestrator.submit({ type: "x", idempotencyKey: "k2" }),
    ]);
    expect((await orchestrator.list()).length).toBe(2);
    expect(c).toBeDefined();
  });
});

describe("failures and retries", () => {
  it("fails a task whose worker returns a malformed result (never succeeded)", async () => {
    const { orchestrator } = await setup();
    const bad: Worker = {
      id: "bad",
      kind: "custom",
      taskTypes: ["t"],
      maxConcurrency: 1,
      execute: async () => ({ answer: 42 }) as never,
    };
    await orchestrator.register(bad);
    const r = await (await orchestrator.submit({ type: "t", retry: { maxAttempts: 3 } })).result();
    expect(r.status).toBe("failed");
    expect(r.error?.code).toBe("WORKER_ERROR");
    expect(r.attempts).toBe(1);
    const nul: Worker = {
      id: "nul",
      kind: "custom",
      taskTypes: ["u"],
      maxConcurrency: 1,
      execute: async () => null as never,
    };
    await orchestrator.register(nul);
    expect((await (await orchestrator.submit({ type: "u" })).result()).status).toBe("failed");
  });

  it("retries with exponential backoff under the fake clock", async () => {
    const { orchestrator, clock } = await setup();
    const startedAt: number[] = [];
    await orchestrator.register(
      fnWorker("w", ["t"], async () => {
        startedAt.push(clock.now());
        if (startedAt.length < 3) throw new Error("flaky");
        return "ok";
      }),
    );
    const t0 = clock.now();
    const h = await orchestrator.submit({
      type: "t",
      retry: { maxAttempts: 4, initialDelayMs: 100, factor: 2, jitter: 0.5 },
    });
    await clock.advance(10_000);
    const r = await h.result();
    expect(r.status).toBe("succeeded");
    expect(r.attempts).toBe(3);
    // random() = 0 → no jitter reduction: 100 ms, then 200 ms
    expect(startedAt.map((t) => t - t0)).toEqual([0, 100, 300]);
  });

  it("never retries UnrecoverableError and waits at least RetryAfterError's delay", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(
      fnWorker("u", ["unrec"], async () => {
        throw new UnrecoverableError("bad input");
      }),
    );
    const r1 = await (
      await orchestrator.submit({ type: "unrec", retry: { maxAttempts: 5, initialDelayMs: 1 } })
    ).result();
    expect(r1.status).toBe("failed");
    expect(r1.attempts).toBe(1);
    const times: number[] = [];
    await orchestrator.register(
      fnWorker("r", ["ra"], async () => {
        times.push(clock.now());
        if (times.length === 1) throw new RetryAfterError(5_000);
        return 1;
      }),
    );
    const h = await orchestrator.submit({
      type: "ra",
      retry: { maxAttempts: 2, initialDelayMs: 10 },
    });
    await clock.advance(5_000);
    expect(times.length).toBe(1); // not at 5 000 ms: the clock counts whole ms
    await clock.advance(1);
    expect((await h.result()).status).toBe("succeeded");
    expect(times[1]! - times[0]!).toBe(5_001);
  });

  it("times out a hanging worker, aborts its signal, retries, then ends timed_out", async () => {
    const { orchestrator, clock } = await setup();
    const signals: AbortSignal[] = [];
    const hang: Worker = {
      id: "hang",
      kind: "custom",
      taskTypes: ["t"],
      maxConcurrency: 1,
      execute: (_t, ctx) => {
        signals.push(ctx.signal);
        return new Promise(() => {});
      },
    };
    await orchestrator.register(hang);
    const h = await orchestrator.submit({
      type: "t",
      timeoutMs: 1_000,
      retry: { maxAttempts: 2, initialDelayMs: 500 },
    });
    await clock.advance(999);
    expect(h.status).toBe("running");
    await clock.advance(1);
    expect(signals[0]?.aborted).toBe(true);
    expect((signals[0]!.reason as FlotillaError).code).toBe("TIMEOUT");
    await clock.advance(1_500);
    const r = await h.result();
    expect(r.status).toBe("timed_out");
    expect(r.error?.code).toBe("TIMEOUT");
    expect(r.attempts).toBe(2);
    expect(orchestrator.registry.get("hang")?.inFlight).toBe(0);
  });

  it("cancels a running task: signal aborted, settled at once even if the worker ignores it", async () => {
    const { orchestrator, clock } = await setup();
    let signal: AbortSignal | undefined;
    const stubborn: Worker = {
      id: "s",
      kind: "custom",
      taskTypes: ["t"],
      maxConcurrency: 1,
      execute: (_t, ctx) => {
        signal = ctx.signal;
        return new Promise((res) => clock.setTimeout(() => res({ output: "late" }), 10_000));
      },
    };
    await orchestrator.register(stubborn);
    const h = await orchestrator.submit({ type: "t" });
    await clock.advance(10);
    expect(h.status).toBe("running");
    const [a, b] = await Promise.all([h.cancel("stop"), orchestrator.cancel(h.id)]);
    expect([a, b].filter(Boolean).length).toBe(1);
    expect(signal?.aborted).toBe(true);
    const r = await h.result();
    expect(r.status).toBe("cancelled");
    expect(r.error?.code).toBe("CANCELLED");
    await clock.advance(20_000);
    expect((await orchestrator.get(h.id))?.status).toBe("cancelled");
    expect(await h.cancel()).toBe(false);
  });

  it("cancelling a waiting task cancels it at once and skips its dependents", async () => {
    const { orchestrator } = await setup();
    const [a, b] = await orchestrator.submitBatch([
      { id: "a", type: "nobody" },
      { id: "b", type: "nobody", dependsOn: ["a"] },
    ]);
    expect(await a!.cancel("changed my mind")).toBe(true);
    expect((await a!.result()).error).toMatchObject({
      code: "CANCELLED",
      message: "changed my mind",
    });
    expect((await b!.result()).status).toBe("skipped");
    expect(orchestrator.status().queued).toBe(0);
    await expect(orchestrator.cancel("unknown")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });
});
