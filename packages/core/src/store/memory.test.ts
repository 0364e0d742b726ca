import { describe, expect, it } from "vitest";
import { Orchestrator } from "../orchestrator/orchestrator.js";
import type { TaskRecord } from "../task/types.js";
import { FakeClock } from "../testing/fake-clock.js";
import { FunctionWorker } from "../worker/base.js";
import { MemoryStore } from "./memory.js";

function record(id: string, seq: number): TaskRecord {
  return {
    id,
    type: "custom",
    payload: { n: seq },
    priority: 20,
    seq,
    status: "queued",
    dependsOn: [],
    onDependencyFailure: "skip",
    retry: { maxAttempts: 1, initialDelayMs: 0, maxDelayMs: 0, factor: 2, jitter: 0 },
    rateLimitKeys: [],
    approval: "none",
    metadata: {},
    attempt: 0,
    createdAt: 1000 + seq,
    updatedAt: 1000 + seq,
    version: 1,
  };
}

describe("MemoryStore", () => {
  it("copies on the way in and out", async () => {
    const store = new MemoryStore();
    const task = record("a", 1);
    await store.insertTasks([task]);
    (task.payload as { n: number }).n = 99;
    const got = await store.getTask("a");
    expect(got?.payload).toEqual({ n: 1 });
    (got!.payload as { n: number }).n = 42;
    expect((await store.getTask("a"))?.payload).toEqual({ n: 1 });
  });

  it("compare-and-set on version", async () => {
    const store = new MemoryStore();
    await store.insertTasks([record("a", 1)]);
    const next = { ...record("a", 1), status: "running" as const, version: 2 };
    expect(await store.saveTask(next, 1)).toBe(true);
    expect(await store.saveTask({ ...next, version: 3 }, 1)).toBe(false);
    expect((await store.getTask("a"))?.version).toBe(2);
  });

  it("rejects calls once closed, and reopens", async () => {
    const store = new MemoryStore();
    await store.insertTasks([record("a", 1)]);
    await store.close();
    await expect(store.getTask("a")).rejects.toMatchObject({ code: "STORE_ERROR" });
    await store.open();
    expect((await store.getTask("a"))?.id).toBe("a");
  });

  it("keeps only the newest finished tasks, never an unfinished one", async () => {
    const store = new MemoryStore({ maxFinishedTasks: 3 });
    await store.insertTasks([1, 2, 3, 4, 5, 6].map((n) => record(`t${n}`, n)));
    // finish t1, t2, t3, t4 in the order 2, 1, 4, 3; t5 and t6 stay queued
    for (const id of ["t2", "t1", "t4", "t3"]) {
      const t = (await store.getTask(id))!;
      await store.saveTask({ ...t, status: "succeeded", attempt: 1, version: t.version + 1 });
    }
    const left = (await store.listTasks({ newestFirst: false })).map((t) => t.id);
    expect(left).toEqual(["t1", "t3", "t4", "t5", "t6"]);
    expect(await store.listAttempts("t2")).toEqual([]);
    expect(await store.countTasks({ status: "queued" })).toBe(2);
  });

  it("a task finishing again counts from its latest finish", async () => {
    const store = new MemoryStore({ maxFinishedTasks: 2 });
    await store.insertTasks([record("a", 1), record("b", 2), record("c", 3)]);
    const finish = async (id: string, status: "succeeded" | "queued") => {
      const t = (await store.getTask(id))!;
      await store.saveTask({ ...t, status, version: t.version + 1 });
    };
    await finish("a", "succeeded");
    await finish("b", "succeeded");
    await finish("a", "queued"); // resubmitted: unfinished again
    await finish("a", "succeeded"); // now the newest finish
    await finish("c", "succeeded");
    expect((await store.listTasks({ newestFirst: false })).map((t) => t.id)).toEqual(["a", "c"]);
  });

  it("drops finished tasks by age, and frees their idempotency keys", async () => {
    const clock = new FakeClock({ now: 0 });
    const store = new MemoryStore({ clock, finishedTaskMaxAgeMs: 1_000 });
    await store.insertTasks([{ ...record("a", 1), idempotencyKey: "k" }, record("b", 2)]);
    const a = (await store.getTask("a"))!;
    await store.saveTask({ ...a, status: "failed", version: 2 });
    await clock.advance(1_001);
    const b = (await store.getTask("b"))!;
    await store.saveTask({ ...b, status: "running", version: 2 });
    expect(await store.getTask("a")).toBeUndefined();
    expect(await store.getTaskByIdempotencyKey("k")).toBeUndefined();
    await store.insertTasks([{ ...record("a2", 3), idempotencyKey: "k" }]);
    expect((await store.getTaskByIdempotencyKey("k"))?.id).toBe("a2");
  });

  it("counts tasks stored already finished (a skipped task) against the bound", async () => {
    const small = new MemoryStore({ maxFinishedTasks: 1 });
    await small.insertTasks([
      { ...record("a", 1), status: "succeeded" },
      { ...record("b", 2), status: "succeeded" },
    ]);
    expect((await small.listTasks()).map((t) => t.id)).toEqual(["b"]);
  });

  it("refuses a bound that is not a number >= 0", () => {
    expect(() => new MemoryStore({ maxFinishedTasks: -1 })).toThrow(/maxFinishedTasks/);
    expect(() => new MemoryStore({ finishedTaskMaxAgeMs: Number.NaN })).toThrow(
      /finishedTaskMaxAgeMs/,
    );
  });

  it("an orchestrator on the default store stays flat over many tasks", async () => {
    const store = new MemoryStore();
    const orchestrator = new Orchestrator({ store, concurrency: 64 });
    await orchestrator.register(
      new FunctionWorker({ id: "w", taskTypes: ["noop"], maxConcurrency: 64, fn: async () => 1 }),
    );
    await orchestrator.start();
    for (let i = 0; i < 3; i++) {
      const handles = await orchestrator.submitBatch(
        Array.from({ length: 10_000 }, () => ({ type: "noop" })),
      );
      await Promise.all(handles.map((h) => h.result()));
    }
    await orchestrator.stop();
    expect(await store.countTasks()).toBe(10_000);
    expect(await store.countTasks({ status: "succeeded" })).toBe(10_000);
  });
});
