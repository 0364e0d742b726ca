import { afterEach, describe, expect, it } from "vitest";
import type { FlotillaError } from "../errors.js";
import type { DispatchGate } from "../resources/gate.js";
import { ResourceManager } from "../resources/manager.js";
import { MemoryStore } from "../store/memory.js";
import type { UsageEntry } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import { FakeClock } from "../testing/index.js";
import { Orchestrator } from "./orchestrator.js";
import { fnWorker, sleep } from "./testkit.test-helpers.js";

/** A MemoryStore whose writes fail while `failing` is set (a full disk, an I/O error). */
class FlakyStore extends MemoryStore {
  failing = false;
  refused = 0;
  override async insertTasks(tasks: readonly TaskRecord[]): Promise<void> {
    if (this.failing) {
      this.refused++;
      throw new Error("disk full");
    }
    return super.insertTasks(tasks);
  }
  override async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
    if (this.failing) {
      this.refused++;
      throw new Error("disk full");
    }
    return super.saveTask(task, expectedVersion);
  }
}

const running: Orchestrator[] = [];
afterEach(async () => {
  for (const o of running.splice(0)) await o.stop({ mode: "abort" });
});

function make(options: ConstructorParameters<typeof Orchestrator>[0] = {}) {
  const clock = (options.clock as FakeClock | undefined) ?? new FakeClock();
  const orchestrator = new Orchestrator({ clock, random: () => 0, ...options });
  const errors: Error[] = [];
  orchestrator.on("error", (e) => errors.push(e));
  running.push(orchestrator);
  return { clock, orchestrator, errors };
}

describe("writes the store refuses", () => {
  it("rejects a submit with STORE_ERROR when the task cannot be stored", async () => {
    const store = new FlakyStore();
    const { orchestrator } = make({ store });
    await orchestrator.start();
    store.failing = true;
    await expect(orchestrator.submit({ id: "a", type: "t" })).rejects.toMatchObject({
      code: "STORE_ERROR",
    });
    store.failing = false;
    expect(await orchestrator.get("a")).toBeUndefined();
    const h = await orchestrator.submit({ id: "a", type: "t" });
    expect(h.status).toBe("queued");
  });

  it("does not report a task finished until its result is stored, retrying the write", async () => {
    const store = new FlakyStore();
    const { orchestrator, clock, errors } = make({ store });
    let finish!: () => void;
    await orchestrator.register(
      fnWorker("w", ["t"], () => new Promise<string>((r) => (finish = () => r("done")))),
    );
    await orchestrator.start();
    const h = await orchestrator.submit({ id: "a", type: "t" });
    await clock.advance(0);
    expect(h.status).toBe("running");
    const announced: string[] = [];
    orchestrator.on("task:succeeded", (e) => announced.push(e.taskId));
    let settled = false;
    void h.result().then(() => (settled = true));

    store.failing = true;
    finish();
    await clock.advance(1_000); // several retries, all refused
    expect(store.refused).toBeGreaterThan(2);
    expect(settled).toBe(false);
    expect(announced).toEqual([]);
    expect(errors.some((e) => e.message.includes("disk full"))).toBe(true);
    expect((await store.getTask("a"))?.status).toBe("running");

    store.failing = false;
    await clock.advance(5_000);
    expect(await h.result()).toMatchObject({ status: "succeeded", output: "done" });
    expect(announced).toEqual(["a"]);
    expect((await store.getTask("a"))?.status).toBe("succeeded");
  });

  it("stops without waiting on a write the store keeps refusing, and never acknowledges it", async () => {
    const store = new FlakyStore();
    const { orchestrator, clock } = make({ store });
    await orchestrator.start();
    await orchestrator.submit({ id: "q", type: "t", runAt: clock.now() + 60_000 });
    store.failing = true;
    let outcome: unknown;
    const cancelling = orchestrator.cancel("q").then(
      (v) => (outcome = v),
      (err: FlotillaError) => (outcome = err.code),
    );
    await clock.advance(1_000);
    expect(outcome).toBeUndefined(); // not acknowledged while the store refuses it
    await orchestrator.stop();
    await cancelling;
    expect(outcome).toBe("STORE_ERROR");
    expect((await store.getTask("q"))?.status).toBe("queued");
    expect(clock.pendingTimers).toBe(0);
  });
});

describe("usage ledger and gate restore", () => {
  it("records provider, model, tenant, worker and cost, and replays the last 48 h into gates at start", async () => {
    const clock = new FakeClock({ now: 100 * 3_600_000 });
    const store = new MemoryStore({ clock });
    const first = make({ clock, store }).orchestrator;
    await first.register(
      fnWorker("llm-1", ["llm"], async (_p, ctx) => {
        ctx.reportUsage({ inputTokens: 10, outputTokens: 5, costUsd: 0.25 });
        return "ok";
      }),
    );
    await first.start();
    const h = await first.submit({
      type: "llm",
      payload: { model: "gpt-x", prompt: "hi" },
      rateLimitKey: ["openai", "global"],
      tenant: "acme",
    });
    await clock.advance(0);
    await h.result();
    await first.stop();
    await store.recordUsage({ at: clock.now() - 49 * 3_600_000, usage: { costUsd: 9 } });

    const ledger = await store.listUsage();
    expect(ledger.find((l) => l.taskId === h.id)).toEqual({
      at: clock.now(),
      taskId: h.id,
      workerId: "llm-1",
      provider: "openai",
      model: "gpt-x",
      tenant: "acme",
      usage: { inputTokens: 10, outputTokens: 5, costUsd: 0.25 },
    });

    const restored: Array<{ entries: UsageEntry[]; now: number }> = [];
    const gate: DispatchGate = {
      name: "fake",
      check: () => ({ ok: true }),
      restore: (entries, now) => restored.push({ entries, now }),
    };
    const second = make({ clock, store, gates: [gate] }).orchestrator;
    await second.start();
    await second.stop();
    await second.start(); // a restart in the same process does not replay twice
    expect(restored).toHaveLength(1);
    expect(restored[0]!.now).toBe(clock.now());
    expect(restored[0]!.entries.map((e) => e.taskId)).toEqual([h.id]);
  });
});

describe("handles on tasks known only from the store", () => {
  it("a handle taken before start resolves once the recovered task finishes", async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    const first = make({ clock, store }).orchestrator;
    await first.start();
    await first.submit({ id: "later", type: "t" });
    await first.stop();

    const { orchestrator: second } = make({ clock, store });
    const h = await second.handle("later");
    expect(h?.status).toBe("queued");
    await second.register(fnWorker("w", ["t"], async () => 7));
    await second.start();
    await clock.advance(0);
    expect(await h!.result()).toMatchObject({ status: "succeeded", output: 7 });
  });

  it("a handle on a task another orchestrator runs resolves when the store shows it finished", async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    const owner = make({ clock, store }).orchestrator;
    await owner.register(fnWorker("w", ["t"], async () => sleep(clock, 3_000).then(() => "x")));
    const { orchestrator: watcher } = make({ clock, store, recheckIntervalMs: 500 });
    await watcher.start(); // before the task exists: it is not this one's to recover
    await owner.start();
    await owner.submit({ id: "shared", type: "t" });
    const h = await watcher.handle("shared");
    let done = false;
    void h!.result().then(() => (done = true));
    await clock.advance(2_000);
    expect(done).toBe(false);
    await clock.advance(2_000);
    expect(await h!.result()).toMatchObject({ status: "succeeded", output: "x" });
    await watcher.stop();
    await owner.stop();
    expect(clock.pendingTimers).toBe(0);
  });
});

describe("queueReading", () => {
  it("reports ready depth and the oldest wait, per task type", async () => {
    const { orchestrator, clock } = make();
    await orchestrator.start();
    expect(orchestrator.queueReading()).toEqual({ depth: 0, oldestWaitMs: 0 });
    await orchestrator.submit({ id: "a1", type: "a" });
    await clock.advance(1_000);
    await orchestrator.submitBatch([
      { id: "b1", type: "b" },
      { id: "a2", type: "a" },
      { id: "a3", type: "a", dependsOn: ["a1"] }, // waiting: not counted
      { id: "late", type: "a", runAt: clock.now() + 60_000 }, // delayed: not counted
    ]);
    await clock.advance(500);
    expect(orchestrator.queueReading()).toEqual({ depth: 3, oldestWaitMs: 1_500 });
    expect(orchestrator.queueReading(["b"])).toEqual({ depth: 1, oldestWaitMs: 500 });
    expect(orchestrator.queueReading(["a", "zzz"])).toEqual({ depth: 2, oldestWaitMs: 1_500 });
    await orchestrator.cancel("a1");
    expect(orchestrator.queueReading(["a"])).toEqual({ depth: 1, oldestWaitMs: 500 });
    expect(() => orchestrator.queueReading("a" as unknown as string[])).toThrow(/taskTypes/);
  });
});

describe("lanes a gate holds", () => {
  it("are asked again when any worker's slot frees, without a wake-up from the gate", async () => {
    const clock = new FakeClock();
    let inFlight = 0;
    // At most one task running across all workers; never wakes the scheduler itself.
    const cap: DispatchGate = {
      name: "global-cap",
      check: () => (inFlight < 1 ? { ok: true } : { ok: false, reason: "cap", blockKey: "cap" }),
      onDispatch: () => void inFlight++,
      onSettle: () => void inFlight--,
      subscribe: () => () => {},
    };
    const o2 = make({ clock, gates: [cap] }).orchestrator;
    const ran: string[] = [];
    await o2.register(
      fnWorker("w1", ["x"], async (_p, _c, t) => sleep(clock, 100).then(() => ran.push(t.id))),
    );
    await o2.register(
      fnWorker("w2", ["y"], async (_p, _c, t) => sleep(clock, 100).then(() => ran.push(t.id))),
    );
    await o2.start();
    await o2.submitBatch([
      { id: "x1", type: "x" },
      { id: "y1", type: "y" },
    ]);
    await clock.advance(100);
    expect(ran).toEqual(["x1"]);
    await clock.advance(100);
    expect(ran).toEqual(["x1", "y1"]);
  });

  it("held until a retry time on their own key, are not asked again when unrelated tasks settle", async () => {
    const clock = new FakeClock();
    const asked = new Map<string, number>();
    // Every "k*" key admits one task per hour; a refund of key "k0" is announced by key.
    let wake: (keys?: readonly string[]) => void = () => {};
    const used = new Set<string>();
    let open = false;
    let hourPassed = false;
    const limit: DispatchGate = {
      name: "per-key",
      check: (t) => {
        const key = t.rateLimitKeys[0];
        if (key === undefined) return { ok: true };
        asked.set(t.id, (asked.get(t.id) ?? 0) + 1);
        if (!used.has(key) || hourPassed || (open && key === "k0")) return { ok: true };
        return { ok: false, reason: "limit", blockKey: key, retryAt: clock.now() + 3_600_000 };
      },
      onDispatch: (t) => void (t.rateLimitKeys[0] && used.add(t.rateLimitKeys[0])),
      subscribe: (w) => {
        wake = w;
        return () => {};
      },
    };
    const o2 = make({ clock, gates: [limit] }).orchestrator;
    await o2.register(fnWorker("w", ["held", "free"], async () => "ok", { maxConcurrency: 4 }));
    await o2.start();
    const keys = Array.from({ length: 50 }, (_, i) => `k${i}`);
    const first = await o2.submitBatch(keys.map((k) => ({ type: "held", rateLimitKey: k })));
    await Promise.all(first.map((h) => h.result()));
    const second = await o2.submitBatch(
      keys.map((k) => ({ id: `second-${k}`, type: "held", rateLimitKey: k })),
    );
    await clock.advance(0);
    const before = [...asked.entries()].filter(([id]) => id.startsWith("second-"));
    expect(before.every(([, n]) => n === 1)).toBe(true);
    const free = await o2.submitBatch(Array.from({ length: 40 }, () => ({ type: "free" })));
    await Promise.all(free.map((h) => h.result()));
    // 40 settles later, no held task was asked again
    expect(second.map((h) => asked.get(h.id))).toEqual(keys.map(() => 1));
    // A wake-up for "k0" asks the lane held on "k0" alone, and it runs.
    open = true;
    wake(["k0"]);
    expect(await second[0]!.result()).toMatchObject({ status: "succeeded" });
    expect(second.slice(1).map((h) => asked.get(h.id))).toEqual(keys.slice(1).map(() => 1));
    // The retry time asks them all again.
    hourPassed = true;
    await clock.advance(3_600_000);
    await Promise.all(second.map((h) => h.result()));
    await o2.stop();
  });

  it("held on one worker's key, go to another worker when its slot frees", async () => {
    const clock = new FakeClock();
    // Worker w1's key is spent for an hour; w2 is busy with a long task.
    const limit: DispatchGate = {
      name: "per-worker",
      check: (_t, w) =>
        w.id === "w1"
          ? { ok: false, reason: "w1 spent", blockKey: "w1", retryAt: clock.now() + 3_600_000 }
          : { ok: true },
      subscribe: () => () => {},
    };
    const o2 = make({ clock, gates: [limit] }).orchestrator;
    await o2.register(fnWorker("w1", ["t"], async () => "w1"));
    await o2.register(fnWorker("w2", ["t"], async () => sleep(clock, 100).then(() => "w2")));
    await o2.start();
    const [long, waiting] = await o2.submitBatch([
      { id: "long", type: "t", priority: 90 },
      { id: "waiting", type: "t" },
    ]);
    await clock.advance(100);
    expect(await long!.result()).toMatchObject({ output: "w2" });
    await clock.advance(100);
    expect(await waiting!.result()).toMatchObject({ output: "w2" });
    await o2.stop();
  });
});

describe("a monthly budget across a restart", () => {
  it("counts what was spent earlier in the month, beyond the usual 48 hours", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 5, 20, 12) });
    const store = new MemoryStore();
    const line = { tenant: "acme", usage: { inputTokens: 10, outputTokens: 5 } };
    await store.recordUsage({ at: Date.UTC(2026, 5, 3), ...line });
    await store.recordUsage({ at: Date.UTC(2026, 4, 30), ...line });
    const resources = new ResourceManager({
      clock,
      budgets: [{ name: "june", scope: "global", requests: 10, period: "month" }],
    });
    const orchestrator = new Orchestrator({ clock, store, gates: resources.gates });
    await orchestrator.start();
    // The line of 3 June counts; the one of 30 May is last month's.
    expect(resources.budgets.stats(clock.now())[0]?.used).toMatchObject({
      requests: 1,
      tokens: 15,
    });
    await orchestrator.stop();
  });
});

describe("restoring usage rolled up", () => {
  it("a budget and a daily rate limit count every line summed into a rolled-up one", async () => {
    const { SqliteStore } = await import("../store/sqlite.js");
    const { mkdtempSync, rmSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const dir = mkdtempSync(join(tmpdir(), "flotilla-rollup-"));
    const clock = new FakeClock({ now: Date.UTC(2026, 5, 20, 12) });
    const store = new SqliteStore({ path: join(dir, "f.db"), clock });
    await store.open();
    // 30 calls 5 hours ago (rolled up into one line) and 2 in the last hour (line by line).
    for (let i = 0; i < 30; i++) {
      await store.recordUsage({
        at: clock.now() - 5 * 3_600_000 + i,
        provider: "openai",
        usage: { inputTokens: 10 },
      });
    }
    for (let i = 0; i < 2; i++) {
      await store.recordUsage({
        at: clock.now() - 60_000 + i,
        provider: "openai",
        usage: { inputTokens: 10 },
      });
    }
    const resources = new ResourceManager({
      clock,
      limits: { openai: ["100/day"] },
      budgets: [{ name: "day", scope: "global", requests: 1000, reset: "sliding", period: "24h" }],
    });
    const orchestrator = new Orchestrator({ clock, store, gates: resources.gates });
    await orchestrator.start();
    expect(resources.budgets.stats(clock.now())[0]?.used).toMatchObject({
      requests: 32,
      tokens: 320,
    });
    expect(resources.limiter.stats(clock.now()).openai?.limits[0]).toMatchObject({ used: 32 });
    await orchestrator.stop();
    await store.close();
    rmSync(dir, { recursive: true, force: true });
  });
});
