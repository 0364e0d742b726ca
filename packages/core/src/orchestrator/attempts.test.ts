import { describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import { FunctionWorker } from "../worker/base.js";
import type { ExecutionContext } from "../worker/types.js";
import { testEngine } from "./engine.test-helpers.js";

describe("Attempts", () => {
  it("runs a task on a local slot and settles it once, whatever comes second", async () => {
    const e = testEngine();
    let signal: AbortSignal | undefined;
    let finish!: (v: unknown) => void;
    const entry = e.ctx.registry.add(
      new FunctionWorker({
        id: "w",
        taskTypes: ["t"],
        fn: (_p: unknown, ctx: ExecutionContext) => {
          signal = ctx.signal;
          return new Promise((r) => {
            finish = r;
          });
        },
      }),
    );
    const live = await e.queued({ id: "a", timeoutMs: 1_000 });
    e.parts.attempts.launch(live, entry);
    await e.clock.flush();
    expect(live.rec.status).toBe("running");
    expect(e.parts.attempts.inFlight).toBe(1);
    expect(e.ctx.registry.get("w")?.inFlight).toBe(1);
    await e.clock.advance(1_000); // the timeout settles it first
    expect(live.rec.status).toBe("timed_out");
    expect(signal?.aborted).toBe(true);
    expect((signal?.reason as FlotillaError | undefined)?.code).toBe("TIMEOUT");
    finish("late"); // the worker's late answer changes nothing
    await e.clock.flush();
    expect(live.rec.status).toBe("timed_out");
    expect(live.rec.result?.output).toBeUndefined();
    expect(e.parts.attempts.inFlight).toBe(0);
    expect(e.ctx.registry.get("w")?.inFlight).toBe(0);
  });

  it("a worker may destructure its context or pass its functions on", async () => {
    const e = testEngine();
    const seen: unknown[] = [];
    e.ctx.events.on("task:progress", (ev) => seen.push(ev.data));
    const entry = e.ctx.registry.add(
      new FunctionWorker({
        id: "w",
        taskTypes: ["t"],
        fn: async (_p: unknown, { progress, reportUsage, signal, logger, clock }) => {
          const report = [1, 2].map((n) => () => progress(n));
          for (const r of report) r();
          reportUsage({ inputTokens: 3 });
          logger.debug("ran");
          return { aborted: signal.aborted, at: typeof clock.now() };
        },
      }),
    );
    const live = await e.queued({ id: "a" });
    e.parts.attempts.launch(live, entry);
    await e.clock.flush();
    expect(live.rec.status).toBe("succeeded");
    expect(seen).toEqual([1, 2]);
    expect(live.rec.result?.output).toEqual({ aborted: false, at: "number" });
    expect(live.rec.result?.usage).toMatchObject({ inputTokens: 3 });
  });

  it("a hand-back requeues without spending an attempt; a failure retries with backoff", async () => {
    const e = testEngine();
    const entry = e.ctx.registry.add(
      new FunctionWorker({ id: "w", taskTypes: ["t"], fn: () => new Promise(() => {}) }),
    );
    const live = await e.queued({ id: "a", retry: { maxAttempts: 2, initialDelayMs: 500 } });
    e.parts.attempts.launch(live, entry);
    await e.clock.flush();
    await e.parts.attempts.settle(live.attempt!, { kind: "requeue", reason: "handed back" });
    expect(live.rec.freeAttempts).toBe(1);
    await e.clock.flush(); // the dispatcher hands it to the free slot again
    expect(live.rec).toMatchObject({ status: "running", attempt: 2 });
    const failure = new FlotillaError("WORKER_ERROR", "boom", { retryable: true });
    await e.parts.attempts.settle(live.attempt!, { kind: "error", error: failure });
    // Attempt 2 failed but only one counted: one more is due after the backoff.
    expect(live.rec.status).toBe("queued");
    expect(live.rec.notBefore).toBe(e.clock.now() + 1_000);
  });
});
