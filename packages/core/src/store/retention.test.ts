import { describe, expect, it } from "vitest";
import type { TaskRecord } from "../task/types.js";
import { FakeClock, makeTaskRecord } from "../testing/index.js";
import { MemoryStore } from "./memory.js";
import { scheduleRetention } from "./retention.js";

function finished(id: string, seq: number, at: number): TaskRecord {
  const t = makeTaskRecord({ id, seq });
  return {
    ...t,
    status: "succeeded",
    attempt: 1,
    result: {
      taskId: id,
      status: "succeeded",
      attempts: 1,
      timings: { createdAt: 0, finishedAt: at },
    },
    updatedAt: at,
  };
}

describe("scheduleRetention", () => {
  it("cleans up every interval on the store's clock, and stops", async () => {
    const clock = new FakeClock({ now: 10_000_000 });
    const store = new MemoryStore({ clock });
    await store.insertTasks([
      finished("old", 1, 10_000_000 - 5_000),
      makeTaskRecord({ id: "open", seq: 2 }),
    ]);
    const deletions: number[] = [];
    const retention = scheduleRetention(store, {
      olderThan: 6_000,
      intervalMs: 1_000,
      clock,
      onCleanup: (n) => deletions.push(n),
    });
    await clock.advance(1_000);
    expect(deletions).toEqual([0]);
    await clock.advance(1_000);
    expect(deletions).toEqual([0, 1]);
    expect((await store.listTasks()).map((t) => t.id)).toEqual(["open"]);
    await store.insertTasks([finished("newer", 3, clock.now())]);
    expect(await retention.runNow()).toBe(0);
    retention.stop();
    await clock.advance(60_000);
    expect(deletions).toEqual([0, 1, 0]);
    expect(clock.pendingTimers).toBe(0);
  });

  it("keeps going after a failed cleanup", async () => {
    const clock = new FakeClock();
    const store = new MemoryStore({ clock });
    let calls = 0;
    const flaky = Object.assign(Object.create(store) as MemoryStore, {
      deleteFinished: async () => {
        calls++;
        if (calls === 1) throw new Error("disk busy");
        return 0;
      },
    });
    const retention = scheduleRetention(flaky, { keep: 10, intervalMs: 100, clock });
    await clock.advance(100);
    await clock.advance(100);
    expect(calls).toBe(2);
    retention.stop();
  });

  it("rejects a schedule with nothing to bound, or a bad interval", () => {
    const store = new MemoryStore();
    expect(() => scheduleRetention(store, {})).toThrow(/olderThan and\/or keep/);
    expect(() => scheduleRetention(store, { keep: 1, intervalMs: 0 })).toThrow(/intervalMs/);
  });
});

describe("retention in batches, with the usage ledger and space given back", () => {
  it("deletes in batches until a batch comes back short, oldest first, and old usage lines", async () => {
    const now = 10_000_000;
    const clock = new FakeClock({ now });
    const store = new MemoryStore({ clock });
    await store.insertTasks(
      Array.from({ length: 5 }, (_, i) => finished(`old${i}`, i + 1, now - 9_000 + i)),
    );
    await store.recordUsage({ at: now - 50_000, usage: { inputTokens: 1 } });
    await store.recordUsage({ at: now - 10, usage: { inputTokens: 2 } });
    const seen: number[] = [];
    const retention = scheduleRetention(store, {
      olderThan: 1_000,
      batchSize: 2,
      usageOlderThan: 20_000,
      clock,
      intervalMs: 60_000,
      onCleanup: (n) => seen.push(n),
    });
    expect(await retention.runNow()).toBe(5);
    expect(await store.listTasks()).toEqual([]);
    expect((await store.listUsage()).map((u) => u.at)).toEqual([now - 10]);
    retention.stop();
  });

  it("a store.deleteFinished limit removes the oldest first", async () => {
    const now = 10_000_000;
    const store = new MemoryStore({ clock: new FakeClock({ now }) });
    await store.insertTasks([finished("b", 2, now - 500), finished("a", 1, now - 900)]);
    expect(await store.deleteFinished({ olderThan: 100, limit: 1 })).toBe(1);
    expect((await store.listTasks()).map((t) => t.id)).toEqual(["b"]);
    await expect(store.deleteFinished({ limit: 0 })).rejects.toThrow(/deleteFinished.limit/);
  });
});

describe("after retention", () => {
  it("a task depending on a removed one is refused with a message that says why", async () => {
    const now = 10_000_000;
    const clock = new FakeClock({ now });
    const store = new MemoryStore({ clock });
    await store.insertTasks([finished("gone", 1, now - 9_000)]);
    await store.deleteFinished({ olderThan: 1_000 });
    const { Orchestrator } = await import("../orchestrator/orchestrator.js");
    const o = new Orchestrator({ clock, store });
    await o.start();
    await expect(o.submit({ type: "x", dependsOn: ["gone"] })).rejects.toMatchObject({
      code: "UNKNOWN_DEPENDENCY",
      message: expect.stringContaining("removed by retention"),
    });
    await o.stop();
  });
});
