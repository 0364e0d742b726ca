import { describe, expect, it } from "vitest";
import type { TaskRecord } from "../task/types.js";
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
});
