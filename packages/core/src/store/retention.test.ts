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
