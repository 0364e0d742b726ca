import { afterEach, describe, expect, it } from "vitest";
import { RetryAfterError } from "../errors.js";
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

describe("edge cases", () => {
  it("429s (Retry-After) pause work but never open the worker's circuit", async () => {
    const { orchestrator, clock } = await setup();
    let calls = 0;
    await orchestrator.register(
      fnWorker(
        "api",
        ["call"],
        async () => {
          calls++;
          if (calls <= 6) throw new RetryAfterError(1_000);
          return "ok";
        },
        { maxConcurrency: 6 },
      ),
    );
    const handles = await orchestrator.submitBatch(
      Array.from({ length: 6 }, () => ({ type: "call", retry: { maxAttempts: 3 } })),
    );
    await clock.advance(0);
    expect(calls).toBe(6);
    expect(orchestrator.listWorkers()[0]).toMatchObject({ circuit: "closed", health: "healthy" });
    await clock.advance(1_001);
    for (const h of handles) expect((await h.result()).status).toBe("succeeded");
  });

  it("streams progress of a local worker and ends the stream with the task", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(
      fnWorker("llm", ["llm_request"], async (_p, ctx) => {
        for (const token of ["Hel", "lo", "!"]) {
          await sleep(clock, 10);
          ctx.progress(token);
        }
        ctx.reportUsage({ inputTokens: 3, outputTokens: 3 });
        return "Hello!";
      }),
    );
    const h = await orchestrator.submit({ type: "llm_request" });
    const tokens: unknown[] = [];
    const reading = (async () => {
      for await (const p of h.progress()) tokens.push(p.data);
    })();
    await clock.advance(100);
    await reading;
    expect(tokens).toEqual(["Hel", "lo", "!"]);
    const r = await h.result();
    expect(r.usage).toEqual({ inputTokens: 3, outputTokens: 3 });
    expect(r.timings).toMatchObject({ durationMs: 30, queueWaitMs: 0 });
  });

  it("a batch is atomic: a duplicate id stores nothing", async () => {
    const { orchestrator } = await setup();
    await orchestrator.submit({ id: "taken", type: "t" });
    await expect(
      orchestrator.submitBatch([
        { id: "new-1", type: "t" },
        { id: "taken", type: "t" },
      ]),
    ).rejects.toMatchObject({ code: "CONFLICT", message: expect.stringContaining("taken") });
    expect(await orchestrator.get("new-1")).toBeUndefined();
    expect(orchestrator.status().counts.queued).toBe(1);
  });

  it("drops malformed usage but keeps the result", async () => {
    const { orchestrator } = await setup();
    const w: Worker = {
      id: "w",
      kind: "custom",
      taskTypes: ["t"],
      maxConcurrency: 1,
      execute: async () => ({ output: "ok", usage: { inputTokens: -5 } }),
    };
    await orchestrator.register(w);
    const r = await (await orchestrator.submit({ type: "t" })).result();
    expect(r.status).toBe("succeeded");
    expect(r.usage).toBeUndefined();
  });

  it("validates orchestrator options", () => {
    expect(() => new Orchestrator({ concurrency: 0 })).toThrow(/options\.concurrency/);
    expect(() => new Orchestrator({ routing: "fastest" as never })).toThrow(/routing/);
    expect(() => new Orchestrator({ fairness: { weights: { a: -1 } } })).toThrow(
      /options\.fairness\.weights\.a/,
    );
  });

  it("a task cut off by the process dying is retried without spending an attempt, up to maxInterruptions", async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    const first = new Orchestrator({ clock, store, maxInterruptions: 1 });
    await first.start();
    await first.register(fnWorker("w", ["t"], () => new Promise(() => {}), { maxConcurrency: 2 }));
    await first.submitBatch([
      { id: "once", type: "t" }, // maxAttempts 1: still retried, the crash was not its fault
      { id: "twice", type: "t", retry: { maxAttempts: 3 } },
    ]);
    await clock.advance(10);
    expect((await store.getTask("once"))?.status).toBe("running");
    // the first process "dies": nothing of it runs again
    const second = new Orchestrator({ clock, store, maxInterruptions: 1 });
    running.push(second);
    await second.register(
      fnWorker("w2", ["t"], () => new Promise(() => {}), { maxConcurrency: 2 }),
    );
    await second.start();
    await clock.advance(10);
    expect(await store.getTask("once")).toMatchObject({
      status: "running",
      attempt: 2,
      interruptions: 1,
    });
    // it dies again: a second interruption is over maxInterruptions (1)
    const third = new Orchestrator({ clock, store, maxInterruptions: 1 });
    running.push(third);
    await third.register(fnWorker("w3", ["t"], async () => "third"));
    await third.start();
    const once = await (await third.handle("once"))!.result();
    expect(once.error).toMatchObject({
      code: "WORKER_LOST",
      message: "task once was cut off by the orchestrator stopping 2 times (maxInterruptions 1)",
    });
    first.removeAllListeners();
    second.removeAllListeners();
  });

  it("a routing strategy that picks nobody leaves the task queued without spinning", async () => {
    const { orchestrator, clock } = await setup({
      routing: { name: "never", pick: () => undefined },
    });
    await orchestrator.register(fnWorker("w", ["t"], async () => 1));
    const h = await orchestrator.submit({ type: "t" });
    await clock.advance(5_000);
    expect(h.status).toBe("queued");
  });
});
