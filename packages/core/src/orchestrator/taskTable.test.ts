import { describe, expect, it } from "vitest";
import type { TaskHandle } from "./handle.js";
import { resultPromise } from "./handle.js";
import { record } from "./parts.test-helpers.js";
import { type Live, TaskTable } from "./taskTable.js";
import { buildResult } from "./transitions.js";

const live = (id: string, status: Live["rec"]["status"] = "queued", key?: string): Live => ({
  rec: record(key === undefined ? { id } : { id, idempotencyKey: key }, status),
  finished: false,
});

describe("TaskTable", () => {
  it("counts tasks by status as they are added and moved", () => {
    const table = new TaskTable(10);
    table.add(live("a"));
    table.add(live("b", "pending"));
    table.count("queued", "running");
    expect(table.counts()).toMatchObject({ queued: 0, pending: 1, running: 1 });
  });

  it("a finished task leaves the live map for the cache and its waiters get the result", async () => {
    const table = new TaskTable(10);
    const a = live("a", "succeeded");
    table.add(a);
    const waiting = resultPromise(a);
    const result = buildResult(a.rec, a, "succeeded", 5, { output: 42 });
    table.finish(a, result);
    expect(table.live("a")).toBeUndefined();
    expect(table.finished("a")).toBe(a);
    expect(table.known("a")).toBe(a);
    expect(a.finished).toBe(true);
    expect((await waiting).output).toBe(42);
  });

  it("keeps only the newest finished tasks, evicting the oldest first", () => {
    const table = new TaskTable(2);
    for (const id of ["a", "b", "c"]) {
      const l = live(id, "succeeded");
      table.add(l);
      table.finish(l, buildResult(l.rec, l, "succeeded", 1, {}));
    }
    expect(table.known("a")).toBeUndefined();
    expect(table.known("b")).toBeDefined();
    expect(table.known("c")).toBeDefined();
    const none = new TaskTable(0);
    const d = live("d", "succeeded");
    none.add(d);
    none.finish(d, buildResult(d.rec, d, "succeeded", 1, {}));
    expect(none.known("d")).toBeUndefined();
  });

  it("an idempotency key is released when its task finishes, and only by its own reservation", () => {
    const table = new TaskTable(10);
    const mine = Promise.resolve({} as TaskHandle);
    const other = Promise.resolve({} as TaskHandle);
    table.reserve("k", mine);
    table.release("k", other);
    expect(table.reservation("k")).toBe(mine);
    const a = live("a", "succeeded", "k");
    table.add(a);
    table.finish(a, buildResult(a.rec, a, "succeeded", 1, {}));
    expect(table.reservation("k")).toBeUndefined();
  });
});
