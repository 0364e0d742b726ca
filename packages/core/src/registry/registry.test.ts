import { afterEach, describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import { FakeClock, makeStubWorker, makeTaskRecord } from "../testing/index.js";
import type { HealthReport, Worker } from "../worker/types.js";
import { matchesTask } from "./match.js";
import { type RegistryChange, WorkerRegistry, type WorkerRegistryOptions } from "./registry.js";

const registries: WorkerRegistry[] = [];
function setup(options: Omit<WorkerRegistryOptions, "clock"> = {}) {
  const clock = new FakeClock({ now: 0 });
  const changes: RegistryChange[] = [];
  const registry = new WorkerRegistry({ clock, ...options, onChange: (c) => changes.push(c) });
  registries.push(registry);
  return { clock, registry, changes };
}
afterEach(() => {
  for (const r of registries.splice(0)) r.stop();
});

/** A worker whose health check answers with whatever `state.next` says. */
function probed(id: string) {
  const state = {
    next: { status: "healthy" } as HealthReport | "throw" | "hang" | "malformed",
    calls: 0,
    signals: [] as AbortSignal[],
  };
  const worker = makeStubWorker({
    id,
    async healthCheck(signal) {
      state.calls++;
      state.signals.push(signal);
      const next = state.next;
      if (next === "throw") throw new Error("connection refused");
      if (next === "hang") return new Promise<HealthReport>(() => {});
      if (next === "malformed") return { status: "fine" } as unknown as HealthReport;
      return next;
    },
  });
  return { worker, state };
}

const healthPath = (changes: RegistryChange[]) =>
  changes.filter((c) => c.kind === "health").map((c) => `${c.from}>${c.to}`);
const circuitPath = (changes: RegistryChange[]) =>
  changes.filter((c) => c.kind === "circuit").map((c) => `${c.from}>${c.to}`);

describe("WorkerRegistry: registration", () => {
  it("adds, gets, lists in order, counts and removes", () => {
    const { registry } = setup();
    const a = registry.add(makeStubWorker({ id: "a" }));
    registry.add(makeStubWorker({ id: "b" }));
    expect(a).toMatchObject({ id: "a", health: "healthy", circuit: "closed", inFlight: 0 });
    expect(registry.size).toBe(2);
    expect(registry.list().map((e) => e.id)).toEqual(["a", "b"]);
    expect(registry.get("b")?.worker.id).toBe("b");
    expect(registry.remove("a")).toBe(true);
    expect(registry.remove("a")).toBe(false);
    expect(registry.get("a")).toBeUndefined();
    expect(registry.size).toBe(1);
    expect(registry.eligible(makeTaskRecord()).map((e) => e.id)).toEqual(["b"]);
  });

  it("rejects a duplicate id with CONFLICT", () => {
    const { registry } = setup();
    registry.add(makeStubWorker({ id: "a" }));
    expect(() => registry.add(makeStubWorker({ id: "a" }))).toThrow(
      expect.objectContaining({ code: "CONFLICT" }),
    );
  });

  it("rejects an invalid worker with VALIDATION naming the field", () => {
    const { registry } = setup();
    const bad = makeStubWorker({ id: "x", maxConcurrency: 0 });
    expect(() => registry.add(bad)).toThrow(/worker\.maxConcurrency: expected an integer >= 1/);
    expect(() => registry.add(makeStubWorker({ id: "" }))).toThrow(/worker\.id/);
    expect(registry.size).toBe(0);
  });

  it("rejects invalid options with VALIDATION", () => {
    expect(() => new WorkerRegistry({ health: { intervalMs: 0 } })).toThrow(
      /options\.health\.intervalMs/,
    );
    expect(() => new WorkerRegistry({ health: { degradedAfter: 4, unhealthyAfter: 2 } })).toThrow(
      /degradedAfter/,
    );
    expect(() => new WorkerRegistry({ circuit: { failureThreshold: 1.5 } })).toThrow(FlotillaError);
    expect(() => new WorkerRegistry({ onChange: "log" as never })).toThrow(/options\.onChange/);
    expect(() => new WorkerRegistry({ clock: { now: () => 0 } as never })).toThrow(
      /options\.clock/,
    );
  });

  it("emits added and removed events", () => {
    const { registry } = setup();
    const seen: string[] = [];
    registry.on("added", (e) => seen.push(`+${e.id}`));
    registry.on("removed", (e) => seen.push(`-${e.id}`));
    registry.add(makeStubWorker({ id: "a" }));
    registry.remove("a");
    expect(seen).toEqual(["+a", "-a"]);
  });
});

describe("WorkerRegistry: matching", () => {
  const fleet = () => {
    const { registry } = setup();
    registry.add(makeStubWorker({ id: "any", taskTypes: ["*"] }));
    registry.add(
      makeStubWorker({
        id: "acme-1",
        name: "client-acme-prod-1",
        taskTypes: ["llm_request"],
        capabilities: ["vision", "tools"],
        labels: { region: "eu", tier: "gold" },
      }),
    );
    registry.add(
      makeStubWorker({
        id: "beta-1",
        name: "client-beta-prod-1",
        taskTypes: ["llm_request", "tool_call"],
        capabilities: ["tools"],
        labels: { region: "us" },
      }),
    );
    return registry;
  };
  const ids = (r: WorkerRegistry, t: Parameters<WorkerRegistry["eligible"]>[0]) =>
    r.eligible(t).map((e) => e.id);

  it("matches by type and the '*' wildcard, in registration order", () => {
    const r = fleet();
    expect(ids(r, makeTaskRecord({ type: "llm_request" }))).toEqual(["any", "acme-1", "beta-1"]);
    expect(ids(r, makeTaskRecord({ type: "tool_call" }))).toEqual(["any", "beta-1"]);
    expect(ids(r, makeTaskRecord({ type: "other" }))).toEqual(["any"]);
  });

  it("merges typed and wildcard workers in registration order, and available() filters the same way", () => {
    const { registry } = setup();
    for (const [id, types] of [
      ["t1", ["x"]],
      ["s1", ["*"]],
      ["t2", ["x", "y"]],
      ["s2", ["*"]],
      ["t3", ["x"]],
    ] as const) {
      registry.add(makeStubWorker({ id, taskTypes: [...types] }));
    }
    const x = makeTaskRecord({ type: "x" });
    expect(registry.eligible(x).map((e) => e.id)).toEqual(["t1", "s1", "t2", "s2", "t3"]);
    registry.acquireSlot("s1");
    registry.setAccepting("t3", false);
    expect(registry.available(x).map((e) => e.id)).toEqual(["t1", "t2", "s2"]);
    registry.remove("t1");
    registry.add(makeStubWorker({ id: "t1", taskTypes: ["x"] }));
    expect(registry.eligible(x).map((e) => e.id)).toEqual(["s1", "t2", "s2", "t3", "t1"]);
  });

  it("uses a worker's new fields after it is removed, changed and added again", () => {
    const { registry } = setup();
    const worker = { ...makeStubWorker({ id: "w" }), taskTypes: ["a"], capabilities: ["x"] };
    registry.add(worker);
    const task = makeTaskRecord({ type: "a", requirements: { capabilities: ["x"] } });
    expect(registry.eligible(task)).toHaveLength(1);
    registry.remove("w");
    worker.taskTypes = ["b"];
    worker.capabilities = ["y"];
    registry.add(worker);
    expect(registry.eligible(task)).toHaveLength(0);
    expect(
      registry.eligible(makeTaskRecord({ type: "b", requirements: { capabilities: ["y"] } })),
    ).toHaveLength(1);
    expect(registry.eligible(makeTaskRecord({ type: "b" }))).toHaveLength(1);
  });

  it("requires every capability and label", () => {
    const r = fleet();
    const t = (requirements: object) =>
      ids(r, makeTaskRecord({ type: "llm_request", requirements }));
    expect(t({ capabilities: ["tools"] })).toEqual(["acme-1", "beta-1"]);
    expect(t({ capabilities: ["tools", "vision"] })).toEqual(["acme-1"]);
    expect(t({ capabilities: ["gpu"] })).toEqual([]);
    expect(t({ labels: { region: "us" } })).toEqual(["beta-1"]);
    expect(t({ labels: { region: "eu", tier: "silver" } })).toEqual([]);
  });

  it("honours target worker id, name glob and tags", () => {
    const r = fleet();
    const t = (target: object) => ids(r, makeTaskRecord({ type: "llm_request", target }));
    expect(t({ workerId: "beta-1" })).toEqual(["beta-1"]);
    expect(t({ workerId: "nope" })).toEqual([]);
    expect(ids(r, makeTaskRecord({ type: "x", target: { workerId: "acme-1" } }))).toEqual([]);
    expect(t({ name: "client-acme-*" })).toEqual(["acme-1"]);
    expect(t({ name: "client-*-prod-1" })).toEqual(["acme-1", "beta-1"]);
    expect(t({ name: "client-{acme,beta}-prod-?" })).toEqual(["acme-1", "beta-1"]);
    expect(t({ name: "any" })).toEqual(["any"]); // an unnamed worker is matched by its id
    expect(t({ tags: { tier: "gold" } })).toEqual(["acme-1"]);
    expect(t({ tags: { tier: "gold" }, name: "client-beta-*" })).toEqual([]);
  });

  it("matches() agrees with eligible() and ignores load and health", () => {
    const r = fleet();
    const entry = r.get("acme-1")!;
    entry.health = "unhealthy";
    entry.inFlight = 1;
    const task = makeTaskRecord({ type: "llm_request", target: { name: "client-acme-*" } });
    expect(r.matches(entry, task)).toBe(true);
    expect(r.matches(r.get("beta-1")!, task)).toBe(false);
    expect(r.available(task)).toEqual([]);
  });

  it("keeps indexes exact over 5k workers with churn, without scanning the fleet", () => {
    const { registry } = setup();
    let labelReads = 0;
    const types = ["llm_request", "tool_call", "docker_task", "custom"];
    for (let i = 0; i < 5000; i++) {
      const labels = { zone: `z${i % 10}`, ...(i % 1000 === 7 ? { gpu: "a100" } : {}) };
      const worker = makeStubWorker({
        id: `w${i}`,
        name: `node-${i % 3 === 0 ? "acme" : "beta"}-${i}`,
        taskTypes: i % 97 === 0 ? ["*"] : [types[i % 4]!, types[(i + 1) % 4]!],
        capabilities: [`cap${i % 7}`, ...(i % 2 === 0 ? ["tools"] : [])],
      });
      Object.defineProperty(worker, "labels", {
        get() {
          labelReads++;
          return labels;
        },
      });
      registry.add(worker);
    }
    for (let i = 0; i < 5000; i += 5) registry.remove(`w${i}`);
    expect(registry.size).toBe(4000);

    const brute = (task: ReturnType<typeof makeTaskRecord>) =>
      registry
        .list()
        .filter((e) => matchesTask(e, task))
        .map((e) => e.id);
    const tasks = [
      makeTaskRecord({ type: "llm_request" }),
      makeTaskRecord({ type: "nothing-claims-this" }),
      makeTaskRecord({ type: "tool_call", requirements: { capabilities: ["cap3", "tools"] } }),
      makeTaskRecord({ type: "custom", requirements: { labels: { zone: "z4" } } }),
      makeTaskRecord({
        type: "docker_task",
        target: { tags: { zone: "z1" }, name: "node-acme-*" },
      }),
      makeTaskRecord({ type: "llm_request", target: { workerId: "w4001" } }),
      makeTaskRecord({ type: "custom", requirements: { capabilities: ["missing"] } }),
    ];
    for (const task of tasks) expect(registry.eligible(task).map((e) => e.id)).toEqual(brute(task));
    expect(registry.eligible(tasks[0]!).length).toBeGreaterThan(1000);

    // A rare label narrows the candidates to that label's index: the other workers are never looked at.
    labelReads = 0;
    const rare = makeTaskRecord({ type: "llm_request", requirements: { labels: { gpu: "a100" } } });
    const found = registry.eligible(rare).map((e) => e.id);
    expect(found).toEqual(
      ["w7", "w1007", "w2007", "w3007", "w4007"].filter((id) => registry.get(id)),
    );
    expect(labelReads).toBeLessThanOrEqual(found.length + 4);
  });
});

describe("WorkerRegistry: slots and availability", () => {
  it("counts slots, refuses beyond maxConcurrency, ignores extra releases", () => {
    const { registry } = setup();
    registry.add(makeStubWorker({ id: "a", maxConcurrency: 2 }));
    const task = makeTaskRecord();
    expect(registry.acquireSlot("a")).toBe(true);
    expect(registry.acquireSlot("a")).toBe(true);
    expect(registry.acquireSlot("a")).toBe(false);
    expect(registry.get("a")!.inFlight).toBe(2);
    expect(registry.available(task)).toEqual([]);
    registry.releaseSlot("a");
    expect(registry.available(task).map((e) => e.id)).toEqual(["a"]);
    registry.releaseSlot("a");
    registry.releaseSlot("a");
    expect(registry.get("a")!.inFlight).toBe(0);
    expect(registry.acquireSlot("ghost")).toBe(false);
    registry.releaseSlot("ghost");
  });

  it("excludes workers that are not accepting or unhealthy; keeps degraded ones", () => {
    const { registry } = setup();
    registry.add(makeStubWorker({ id: "a" }));
    registry.add(makeStubWorker({ id: "b" }));
    registry.add(makeStubWorker({ id: "c" }));
    registry.setAccepting("a", false);
    registry.reportHealth("b", { status: "degraded" });
    registry.get("c")!.health = "unhealthy";
    expect(registry.available(makeTaskRecord()).map((e) => e.id)).toEqual(["b"]);
    expect(registry.acquireSlot("a")).toBe(false);
    expect(registry.acquireSlot("c")).toBe(false);
    expect(registry.setAccepting("ghost", true)).toBe(false);
  });

  it("a windowed scan of a large fleet takes turns through it; a small set comes back whole", () => {
    const { registry } = setup();
    for (let i = 0; i < 150; i++) registry.add(makeStubWorker({ id: `w${i}`, taskTypes: ["t"] }));
    registry.add(makeStubWorker({ id: "x0", taskTypes: ["x"] }));
    registry.add(makeStubWorker({ id: "x1", taskTypes: ["x"] }));
    const free = { free: true, local: true };
    const ids = (task = makeTaskRecord({ type: "t" })) =>
      registry.windowed(task, free, 64).map((e) => e.id);
    const range = (from: number, to: number) =>
      Array.from({ length: to - from }, (_, i) => `w${from + i}`);
    expect(ids()).toEqual(range(0, 64));
    expect(ids()).toEqual(range(64, 128));
    // Wraps round to the start of the set.
    expect(ids()).toEqual([...range(128, 150), ...range(0, 42)]);
    // Busy workers are passed over without counting against the window.
    for (let i = 42; i < 52; i++) registry.acquireSlot(`w${i}`);
    expect(ids()).toEqual(range(52, 116));
    // A set no larger than the window: whole, in registration order, every time.
    expect(ids(makeTaskRecord({ type: "x" }))).toEqual(["x0", "x1"]);
    expect(ids(makeTaskRecord({ type: "x" }))).toEqual(["x0", "x1"]);
    // Unbounded answers are unchanged.
    expect(registry.available(makeTaskRecord({ type: "t" }))).toHaveLength(140);
  });

  it("a windowed scan for local dispatch passes over remote fleet nodes", () => {
    const { registry } = setup();
    for (let i = 0; i < 100; i++) {
      registry.add(makeStubWorker({ id: `node${i}`, kind: "remote-node", taskTypes: ["t"] }));
    }
    registry.add(makeStubWorker({ id: "local", taskTypes: ["t"] }));
    const task = makeTaskRecord({ type: "t" });
    expect(registry.windowed(task, { free: true, local: true }, 64).map((e) => e.id)).toEqual([
      "local",
    ]);
    expect(registry.windowed(task, { free: false, local: false }, 64)).toHaveLength(64);
  });

  it("a removed worker takes no slot, and its stats stop changing", () => {
    const { registry } = setup();
    const entry = registry.add(makeStubWorker({ id: "a" }));
    registry.acquireSlot("a");
    registry.remove("a");
    expect(entry.accepting).toBe(false);
    expect(registry.acquireSlot("a")).toBe(false);
    registry.recordResult("a", { ok: true, durationMs: 5 });
    expect(entry.stats.tasksCompleted).toBe(0);
  });
});

describe("WorkerRegistry: stats and circuit breaker", () => {
  it("keeps counters and an EWMA of execution time", () => {
    const { registry } = setup({ ewmaAlpha: 0.5 });
    const entry = registry.add(makeStubWorker({ id: "a" }));
    registry.recordResult("a", { ok: true, durationMs: 100 });
    expect(entry.stats.avgExecutionMs).toBe(100);
    registry.recordResult("a", { ok: true, durationMs: 200 });
    expect(entry.stats.avgExecutionMs).toBe(150);
    registry.recordResult("a", { ok: false, durationMs: Number.NaN, error: new Error("boom") });
    expect(entry.stats).toMatchObject({
      tasksCompleted: 2,
      tasksFailed: 1,
      avgExecutionMs: 150,
      consecutiveFailures: 1,
      lastError: { code: "WORKER_ERROR", message: "boom" },
    });
    registry.recordResult("a", { ok: true, durationMs: 150 });
    expect(entry.stats.consecutiveFailures).toBe(0);
  });

  it("opens after N consecutive failures, half-opens after the cooldown, closes after a probe succeeds", async () => {
    const { registry, clock, changes } = setup({
      circuit: { failureThreshold: 3, cooldownMs: 1000 },
    });
    registry.add(makeStubWorker({ id: "a", maxConcurrency: 4 }));
    const task = makeTaskRecord();
    const fail = () =>
      registry.recordResult("a", { ok: false, durationMs: 1, error: new Error("x") });
    fail();
    fail();
    registry.recordResult("a", { ok: true, durationMs: 1 }); // resets the streak
    fail();
    fail();
    expect(registry.get("a")!.circuit).toBe("closed");
    fail();
    expect(registry.get("a")!.circuit).toBe("open");
    const opened = changes.find((c) => c.kind === "circuit" && c.to === "open");
    expect(opened).toMatchObject({ workerId: "a", from: "closed", at: 0, error: { message: "x" } });
    expect(registry.available(task)).toEqual([]);
    expect(registry.acquireSlot("a")).toBe(false);

    await clock.advance(999);
    expect(registry.get("a")!.circuit).toBe("open");
    await clock.advance(1);
    expect(registry.get("a")!.circuit).toBe("half_open"); // by the clock's timer, no query needed
    expect(changes.at(-1)).toMatchObject({
      kind: "circuit",
      from: "open",
      to: "half_open",
      at: 1000,
    });

    // One probe only, though the worker has 4 slots.
    expect(registry.acquireSlot("a")).toBe(true);
    expect(registry.available(task)).toEqual([]);
    expect(registry.acquireSlot("a")).toBe(false);
    fail(); // the probe failed: open again for another cooldown
    registry.releaseSlot("a");
    expect(registry.get("a")!.circuit).toBe("open");
    await clock.advance(1000);
    expect(registry.get("a")!.circuit).toBe("half_open");
    expect(registry.acquireSlot("a")).toBe(true);
    registry.recordResult("a", { ok: true, durationMs: 1 });
    registry.releaseSlot("a");
    expect(registry.get("a")!.circuit).toBe("closed");
    expect(registry.available(task)).toHaveLength(1);
    expect(circuitPath(changes)).toEqual([
      "closed>open",
      "open>half_open",
      "half_open>open",
      "open>half_open",
      "half_open>closed",
    ]);
  });

  it("a released probe without a result lets another probe in", async () => {
    const { registry, clock } = setup({ circuit: { failureThreshold: 1, cooldownMs: 10 } });
    registry.add(makeStubWorker({ id: "a" }));
    registry.recordResult("a", { ok: false, durationMs: 1 });
    await clock.advance(10);
    expect(registry.acquireSlot("a")).toBe(true);
    registry.releaseSlot("a"); // e.g. the task was cancelled
    expect(registry.acquireSlot("a")).toBe(true);
  });

  it("after stop() an open circuit still half-opens, lazily, with no timer left", async () => {
    const { registry, clock } = setup({ circuit: { failureThreshold: 1, cooldownMs: 100 } });
    registry.add(makeStubWorker({ id: "a" }));
    registry.stop();
    registry.recordResult("a", { ok: false, durationMs: 1 });
    expect(clock.pendingTimers).toBe(0);
    await clock.advance(100);
    expect(registry.get("a")!.circuit).toBe("open");
    expect(registry.available(makeTaskRecord())).toHaveLength(1);
    expect(registry.get("a")!.circuit).toBe("half_open");
  });
});

describe("WorkerRegistry: health monitor", () => {
  const health = {
    intervalMs: 1000,
    timeoutMs: 100,
    degradedAfter: 1,
    unhealthyAfter: 3,
    recoverAfter: 2,
  };

  it("moves healthy -> degraded -> unhealthy on failed checks and recovers after good ones", async () => {
    const { registry, clock, changes } = setup({ health });
    const { worker, state } = probed("a");
    registry.add(worker);
    registry.start();
    await clock.advance(0);
    expect(state.calls).toBe(1);
    expect(registry.get("a")!.health).toBe("healthy");

    state.next = "throw";
    await clock.advance(1000);
    expect(registry.get("a")!.health).toBe("degraded");
    await clock.advance(1000);
    expect(registry.get("a")!.health).toBe("degraded");
    await clock.advance(1000);
    expect(registry.get("a")!.health).toBe("unhealthy");
    expect(registry.available(makeTaskRecord())).toEqual([]);
    const down = changes.at(-1) as Extract<RegistryChange, { kind: "health" }>;
    expect(down.report.message).toMatch(/connection refused/);
    expect(down.at).toBe(3000);

    // Unhealthy workers keep being checked, so they recover.
    state.next = { status: "healthy" };
    await clock.advance(1000);
    expect(registry.get("a")!.health).toBe("unhealthy");
    await clock.advance(1000);
    expect(registry.get("a")!.health).toBe("healthy");
    expect(healthPath(changes)).toEqual([
      "healthy>degraded",
      "degraded>unhealthy",
      "unhealthy>healthy",
    ]);
    expect(state.calls).toBe(6);
    expect(registry.get("a")!.stats.lastHealthCheckAt).toBe(5000);
  });

  it("a degraded report degrades at once; recovery needs recoverAfter healthy checks", async () => {
    const { registry, clock, changes } = setup({ health });
    const { worker, state } = probed("a");
    registry.add(worker);
    registry.start();
    state.next = { status: "degraded", message: "slow" };
    await clock.advance(0);
    expect(registry.get("a")!.health).toBe("degraded");
    state.next = { status: "healthy" };
    await clock.advance(1000);
    expect(registry.get("a")!.health).toBe("degraded");
    await clock.advance(1000);
    expect(registry.get("a")!.health).toBe("healthy");
    expect(healthPath(changes)).toEqual(["healthy>degraded", "degraded>healthy"]);
  });

  it("from unhealthy, degraded answers recover to degraded first", async () => {
    const { registry, changes } = setup({ health: { ...health, unhealthyAfter: 1 } });
    const { worker } = probed("a");
    registry.add(worker);
    registry.reportHealth("a", { status: "unhealthy" });
    registry.reportHealth("a", { status: "degraded" });
    registry.reportHealth("a", { status: "degraded" });
    registry.reportHealth("a", { status: "healthy" });
    registry.reportHealth("a", { status: "healthy" });
    expect(healthPath(changes)).toEqual([
      "healthy>unhealthy",
      "unhealthy>degraded",
      "degraded>healthy",
    ]);
    expect(() => registry.reportHealth("a", { status: "ok" } as unknown as HealthReport)).toThrow(
      /report\.status/,
    );
    expect(registry.reportHealth("ghost", { status: "healthy" })).toBe(false);
  });

  it("times out a hanging check, aborts its signal, and keeps monitoring", async () => {
    const { registry, clock, changes } = setup({ health: { ...health, unhealthyAfter: 2 } });
    const { worker, state } = probed("a");
    registry.add(worker);
    state.next = "hang";
    registry.start();
    await clock.advance(99);
    expect(state.signals[0]!.aborted).toBe(false);
    await clock.advance(1);
    expect(state.signals[0]!.aborted).toBe(true);
    expect(registry.get("a")!.health).toBe("degraded");
    expect(registry.get("a")!.stats.lastHealthReport?.message).toMatch(/timed out after 100 ms/);
    await clock.advance(1000);
    expect(state.calls).toBe(2);
    expect(registry.get("a")!.health).toBe("unhealthy");
    state.next = { status: "healthy" };
    await clock.advance(2000);
    expect(registry.get("a")!.health).toBe("healthy");
    expect(healthPath(changes)).toEqual([
      "healthy>degraded",
      "degraded>unhealthy",
      "unhealthy>healthy",
    ]);
  });

  it("treats a malformed report as a failed check", async () => {
    const { registry } = setup({ health });
    const { worker, state } = probed("a");
    registry.add(worker);
    state.next = "malformed";
    await registry.checkNow("a");
    expect(registry.get("a")!.health).toBe("degraded");
    expect(registry.get("a")!.stats.lastHealthReport?.message).toMatch(/malformed health report/);
  });

  it("leaves workers without a healthCheck healthy and never calls anything", async () => {
    const { registry, clock } = setup({ health });
    registry.add(makeStubWorker({ id: "plain" }));
    registry.start();
    await clock.advance(5000);
    expect(registry.get("plain")!.health).toBe("healthy");
    await registry.checkNow("plain");
    expect(registry.get("plain")!.stats.lastHealthCheckAt).toBeUndefined();
  });

  it("runs checks concurrently, bounded by concurrency", async () => {
    const { registry, clock } = setup({ health: { ...health, timeoutMs: 500, concurrency: 4 } });
    let running = 0;
    let peak = 0;
    for (let i = 0; i < 10; i++) {
      const w: Worker = makeStubWorker({
        id: `w${i}`,
        healthCheck: () =>
          new Promise<HealthReport>((resolve) => {
            running++;
            peak = Math.max(peak, running);
            clock.setTimeout(() => {
              running--;
              resolve({ status: "healthy" });
            }, 50);
          }),
      });
      registry.add(w);
    }
    const done = registry.checkNow();
    await clock.advance(150); // 10 checks of 50 ms, 4 at a time: 3 waves
    await done;
    expect(peak).toBe(4);
    expect(registry.list().every((e) => e.stats.lastHealthCheckAt !== undefined)).toBe(true);
    expect(registry.list().map((e) => e.stats.lastHealthCheckAt)).toContain(150);
  });

  it("joins a check already running for the same worker", async () => {
    const { registry, clock } = setup({ health });
    const { worker, state } = probed("a");
    registry.add(worker);
    state.next = "hang";
    const a = registry.checkNow("a");
    const b = registry.checkNow("a");
    await clock.advance(100);
    await Promise.all([a, b]);
    expect(state.calls).toBe(1);
    await expect(registry.checkNow("ghost")).rejects.toMatchObject({ code: "NOT_FOUND" });
  });

  it("stop() leaves no timer even with checks in flight and circuits open", async () => {
    const { registry, clock } = setup({
      health,
      circuit: { failureThreshold: 1, cooldownMs: 5000 },
    });
    const { worker, state } = probed("a");
    registry.add(worker);
    registry.add(makeStubWorker({ id: "b" }));
    state.next = "hang";
    registry.start();
    registry.start(); // idempotent
    await clock.advance(0);
    registry.recordResult("b", { ok: false, durationMs: 1 });
    expect(clock.pendingTimers).toBe(2); // the check's timeout and b's cooldown
    registry.stop();
    expect(clock.pendingTimers).toBe(0);
    expect(state.signals[0]!.aborted).toBe(true);
    await clock.advance(10_000);
    expect(state.calls).toBe(1);
    registry.stop();
    // start() resumes monitoring and re-arms cooldowns.
    registry.start();
    await clock.advance(0);
    expect(state.calls).toBe(2);
    registry.stop();
    expect(clock.pendingTimers).toBe(0);
  });

  it("a quick stop() and start() while a round runs does not start a second loop", async () => {
    const { registry, clock } = setup({ health: { ...health, timeoutMs: 500 } });
    let calls = 0;
    registry.add(
      makeStubWorker({
        id: "slow",
        healthCheck: () =>
          new Promise<HealthReport>((resolve) => {
            calls++;
            clock.setTimeout(() => resolve({ status: "healthy" }), 50);
          }),
      }),
    );
    registry.start();
    await clock.advance(10); // round 1 is running
    registry.stop();
    registry.start(); // round 2 at once
    await clock.advance(0);
    expect(calls).toBe(2);
    await clock.advance(10_000 - 10);
    // One loop: a round every 1000 ms from t=10 -> rounds at 10, 1010, ..., 9010 plus round 1.
    expect(calls).toBe(11);
    registry.stop();
    await clock.runUntilIdle();
    expect(clock.pendingTimers).toBe(0);
  });

  it("removing a worker aborts its check and applies nothing", async () => {
    const { registry, clock, changes } = setup({ health });
    const { worker, state } = probed("a");
    registry.add(worker);
    state.next = "hang";
    const pending = registry.checkNow("a");
    registry.remove("a");
    await pending;
    expect(state.signals[0]!.aborted).toBe(true);
    await clock.advance(1000);
    expect(changes).toEqual([]);
    expect(clock.pendingTimers).toBe(0);
  });

  it("survives an onChange callback and listeners that throw", async () => {
    const clock = new FakeClock({ now: 0 });
    const registry = new WorkerRegistry({
      clock,
      health,
      onChange: () => {
        throw new Error("listener bug");
      },
    });
    registry.on("change", () => {
      throw new Error("listener bug 2");
    });
    registry.add(makeStubWorker({ id: "a" }));
    expect(() => registry.reportHealth("a", { status: "degraded" })).not.toThrow();
    expect(registry.get("a")!.health).toBe("degraded");
  });
});

describe("WorkerRegistry: snapshot", () => {
  it("is JSON-safe: survives a JSON round trip unchanged", async () => {
    const { registry } = setup();
    const cyclic: Record<string, unknown> = { n: Number.NaN };
    cyclic.self = cyclic;
    registry.add(
      makeStubWorker({
        id: "a",
        kind: "weird",
        labels: { team: "x" },
        healthCheck: async () => ({
          status: "degraded",
          details: {
            inf: Number.POSITIVE_INFINITY,
            big: 10n,
            fn: () => 1,
            cyclic,
            at: new Date(0),
          },
        }),
      }),
    );
    registry.add(makeStubWorker({ id: "b", name: "bee", local: false }));
    await registry.checkNow();
    registry.recordResult("a", { ok: true, durationMs: Number.POSITIVE_INFINITY });
    registry.recordResult("a", { ok: false, durationMs: 5, error: { weird: Symbol("x") } });
    const snap = registry.snapshot();
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
    expect(snap[0]).toMatchObject({
      id: "a",
      kind: "weird",
      name: "a",
      local: true,
      health: "degraded",
      stats: {
        avgExecutionMs: 5,
        lastHealthReport: {
          details: {
            inf: null,
            big: "10",
            cyclic: { n: null, self: "[Circular]" },
            at: "1970-01-01T00:00:00.000Z",
          },
        },
      },
    });
    expect(snap[1]).toMatchObject({ id: "b", name: "bee", local: false, circuit: "closed" });
    expect(registry.info("b")).toEqual(snap[1]);
    expect(registry.info("ghost")).toBeUndefined();
  });
});
