import { describe, expect, it } from "vitest";
import { ResourceManager } from "../resources/manager.js";
import { FakeClock } from "../testing/index.js";
import { FunctionWorker } from "../worker/base.js";
import { Orchestrator } from "./orchestrator.js";

const hang = () => new Promise(() => {});

describe("explain: why is my task waiting?", () => {
  it("names what no worker offers, and the worker's absence ends when one registers", async () => {
    const o = new Orchestrator({ clock: new FakeClock() });
    await o.start();
    await o.register(
      new FunctionWorker({ id: "cpu", taskTypes: ["render"], capabilities: ["cpu"], fn: hang }),
    );
    const unknownType = await o.submit({ type: "transcribe" });
    const gpu = await o.submit({ type: "render", requirements: { capabilities: ["gpu"] } });
    const ghost = await o.submit({ type: "render", target: { workerId: "ghost" } });
    expect((await o.explain(unknownType.id)).reasons).toEqual([
      {
        kind: "no_worker",
        missing: "type",
        value: "transcribe",
        message: 'no registered worker runs "transcribe" tasks; it runs as soon as one registers',
      },
    ]);
    expect((await o.explain(gpu.id)).reasons[0]).toMatchObject({
      missing: "capability",
      value: "gpu",
    });
    expect((await o.explain(ghost.id)).reasons[0]).toMatchObject({
      missing: "target.workerId",
      value: "ghost",
    });
    await o.stop();
  });

  it("names dependencies, approval, retry delay, busy workers and the gate holding it", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ limits: { openai: "1/min" }, clock });
    const o = new Orchestrator({ clock, gates: resources.gates });
    await o.start();
    await o.register(new FunctionWorker({ id: "w", taskTypes: ["t"], fn: hang }));
    const first = await o.submit({ id: "first", type: "t" });
    const child = await o.submit({ id: "child", type: "t", dependsOn: ["first"] });
    const gated = await o.submit({ id: "gated", type: "t", approval: "before_run" });
    const later = await o.submit({ id: "later", type: "t", runAt: 60_000 });
    const queued = await o.submit({ id: "queued", type: "t" });
    await clock.advance(0);
    expect(await o.explain(first.id)).toEqual({ taskId: "first", status: "running", reasons: [] });
    expect((await o.explain(child.id)).reasons).toEqual([
      { kind: "dependencies", message: "waiting for 1 dependency: first", waitingFor: ["first"] },
    ]);
    expect((await o.explain(gated.id)).reasons[0]).toMatchObject({
      kind: "approval",
      stage: "before_run",
    });
    expect((await o.explain(later.id)).reasons[0]).toMatchObject({ kind: "run_at", until: 60_000 });
    expect((await o.explain(queued.id)).reasons).toEqual([
      {
        kind: "workers_unavailable",
        message: "every worker that can run it is taken: w (busy)",
        workers: [{ id: "w", why: "busy" }],
      },
    ]);
    await o.register(
      new FunctionWorker({ id: "llm", taskTypes: ["call"], maxConcurrency: 5, fn: hang }),
    );
    await o.submit({ type: "call", rateLimitKey: "openai" });
    const limited = await o.submit({ type: "call", rateLimitKey: "openai" });
    await clock.advance(0);
    const reason = (await o.explain(limited.id)).reasons[0];
    expect(reason).toMatchObject({ kind: "rate_limit", gate: "rate-limit", key: "openai" });
    expect((reason as { until: number }).until).toBeGreaterThan(60_000);
    await expect(o.explain("nope")).rejects.toMatchObject({ code: "NOT_FOUND" });
    await o.stop({ mode: "abort" });
  });

  it("names a worker cut off by its open circuit and when it turns half-open", async () => {
    const clock = new FakeClock({ now: 0 });
    const o = new Orchestrator({
      clock,
      registry: { circuit: { failureThreshold: 1, cooldownMs: 30_000 } },
    });
    await o.start();
    await o.register(
      new FunctionWorker({
        id: "flaky",
        taskTypes: ["t"],
        fn: async () => {
          throw new Error("boom");
        },
      }),
    );
    const first = await o.submit({ type: "t", retry: { maxAttempts: 1 } });
    expect((await first.result()).status).toBe("failed");
    const next = await o.submit({ type: "t" });
    await clock.advance(0);
    expect((await o.explain(next.id)).reasons).toEqual([
      {
        kind: "workers_unavailable",
        message: `every worker that can run it is taken: flaky (circuit open until ${new Date(30_000).toISOString()})`,
        workers: [{ id: "flaky", why: "circuit_open", until: 30_000 }],
      },
    ]);
    await o.stop({ mode: "abort" });
  });

  it("with unroutableTimeoutMs, a task no worker could run fails NO_ELIGIBLE_WORKER; a worker in time runs it", async () => {
    const clock = new FakeClock({ now: 0 });
    const o = new Orchestrator({ clock, unroutableTimeoutMs: 5_000 });
    await o.start();
    const lost = await o.submit({ type: "nobody" });
    const saved = await o.submit({ type: "later" });
    await clock.advance(2_000);
    await o.register(
      new FunctionWorker({ id: "late", taskTypes: ["later"], fn: async () => "ran" }),
    );
    await clock.advance(3_000);
    const r = await lost.result();
    expect(r.status).toBe("failed");
    expect(r.error).toMatchObject({
      code: "NO_ELIGIBLE_WORKER",
      message:
        "task " +
        lost.id +
        ': no registered worker can run "nobody" tasks with its requirements; waited 5000 ms (unroutableTimeoutMs 5000)',
    });
    expect((await saved.result()).output).toBe("ran");
    await o.stop();
  });
});

describe("task:waiting", () => {
  it("says once per kind why a ready task waits, and again after it ran and waits anew", async () => {
    const clock = new FakeClock({ now: 0 });
    const resources = new ResourceManager({ limits: { openai: "1/min" }, clock });
    const o = new Orchestrator({ clock, gates: resources.gates });
    const seen: Array<{ taskId: string; kind: string; gate?: string; until?: number }> = [];
    o.on("task:waiting", (w) => {
      seen.push({ taskId: w.taskId, kind: w.kind, gate: w.gate, until: w.until });
    });
    await o.start();
    const early = await o.submit({ id: "early", type: "call", rateLimitKey: "openai" });
    await clock.advance(0);
    expect(seen).toEqual([
      { taskId: "early", kind: "no_worker", gate: undefined, until: undefined },
    ]);
    let release = () => {};
    await o.register(
      new FunctionWorker({
        id: "llm",
        taskTypes: ["call"],
        maxConcurrency: 1,
        fn: () =>
          new Promise<string>((r) => {
            release = () => r("ok");
          }),
      }),
    );
    await clock.advance(0);
    await o.submit({ id: "second", type: "call", rateLimitKey: "openai" });
    await clock.advance(0);
    // The one slot is taken; waking and parking again for the same kind says nothing more.
    await o.submit({ type: "call", rateLimitKey: "other" });
    await clock.advance(0);
    expect(seen.filter((w) => w.taskId === "second")).toEqual([
      { taskId: "second", kind: "workers_unavailable", gate: undefined, until: undefined },
    ]);
    release();
    await early.result();
    await clock.advance(0);
    // The slot is free now, but the minute's one openai call is spent.
    const limited = seen.filter((w) => w.taskId === "second");
    expect(limited[1]).toMatchObject({ kind: "rate_limit", gate: "rate-limit" });
    expect(limited[1]?.until).toBeGreaterThan(clock.now());
    expect(limited).toHaveLength(2);
    await o.stop({ mode: "abort" });
  });

  it("a task woken and parked again for the same kind says nothing more", async () => {
    const clock = new FakeClock({ now: 0 });
    const o = new Orchestrator({ clock });
    const kinds: Record<string, string[]> = { b: [], c: [] };
    o.on("task:waiting", (w) => kinds[w.taskId]?.push(w.kind));
    await o.start();
    const releases: Array<() => void> = [];
    await o.register(
      new FunctionWorker({
        id: "w",
        taskTypes: ["t"],
        fn: () => new Promise<string>((r) => releases.push(() => r("ok"))),
      }),
    );
    const a = await o.submit({ id: "a", type: "t" });
    await o.submit({ id: "b", type: "t" });
    // Another tenant: its own lane, so it is parked and woken on its own.
    await o.submit({ id: "c", type: "t", tenant: "acme" });
    await clock.advance(0);
    expect(kinds).toEqual({ b: ["workers_unavailable"], c: ["workers_unavailable"] });
    releases.shift()?.();
    await a.result();
    await clock.advance(0);
    // One of b and c took the freed slot; the other was woken with it and parked again.
    const statuses = [(await o.get("b"))?.status, (await o.get("c"))?.status].sort();
    expect(statuses).toEqual(["queued", "running"]);
    expect(kinds).toEqual({ b: ["workers_unavailable"], c: ["workers_unavailable"] });
    await o.stop({ mode: "abort" });
  });
});
