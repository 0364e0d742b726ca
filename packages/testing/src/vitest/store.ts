import type { Store, TaskRecord, TaskStatus } from "@flotilla/core";
import { FakeClock } from "@flotilla/core/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  STORE_TEST_BASE_TIME as BASE_TIME,
  type StoreConformanceContext,
  type StoreConformanceOptions,
  storeTestRecord,
} from "../store-conformance.js";

/** A finished copy of `task` (status, result with `finishedAt`), version bumped. */
function finish(task: TaskRecord, at: number, status: TaskStatus = "succeeded"): TaskRecord {
  return {
    ...task,
    status,
    attempt: Math.max(1, task.attempt),
    workerId: "w1",
    result: {
      taskId: task.id,
      status,
      output: { done: task.id },
      attempts: Math.max(1, task.attempt),
      workerId: "w1",
      timings: { createdAt: task.createdAt, startedAt: at - 5, finishedAt: at },
    },
    updatedAt: at,
    version: task.version + 1,
  };
}

async function rejection(promise: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await promise;
  } catch (err) {
    return err as { code?: string; message: string };
  }
  throw new Error("expected the call to reject, it resolved");
}

/**
 * The contract every `Store` keeps, as a vitest suite. A new store (a database server
 * shared by several orchestrators, say) runs this first. `makeStore` must return a new,
 * empty, not yet opened store on every call; the suite opens and closes it.
 *
 * Covered: atomic `insertTasks` (a duplicate id or idempotency key leaves nothing
 * inserted), compare-and-set saves (concurrent ones too), atomic claims of the best due
 * task under a lease from the store's time (`claimTask`, `now`), copies in and out, the
 * idempotency index, query filters/order/paging and counts, `loadUnfinished` order (and by
 * partitions), event
 * sequence numbers, the usage ledger, key-value collections, retention, attempt history
 * (when the store has `listAttempts`) and, with `options.reopen`, that all of it survives
 * a close and reopen.
 *
 * @example
 * ```ts
 * import { MemoryStore } from "@flotilla/core";
 * import { describeStoreConformance } from "@flotilla/testing/vitest";
 *
 * describeStoreConformance("MemoryStore", ({ clock }) => new MemoryStore({ clock }));
 * ```
 */
export function describeStoreConformance(
  name: string,
  makeStore: (ctx: StoreConformanceContext) => Store | Promise<Store>,
  options: StoreConformanceOptions = {},
): void {
  describe(`Store conformance: ${name}`, () => {
    let clock: FakeClock;
    let store: Store;

    beforeEach(async () => {
      clock = new FakeClock({ now: BASE_TIME + 1_000_000 });
      store = await makeStore({ clock });
      await store.open();
    });

    afterEach(async () => {
      await store.close();
      await options.cleanup?.(store);
    });

    describe("tasks", () => {
      it("stores a task and returns an equal copy", async () => {
        const task = storeTestRecord({
          id: "a",
          tenant: "acme",
          idempotencyKey: "k-a",
          dependsOn: [],
          metadata: { tags: ["x"], n: 1 },
          lease: { id: "l1", holder: "w1", acquiredAt: BASE_TIME, expiresAt: BASE_TIME + 10 },
        });
        await store.insertTasks([task]);
        expect(await store.getTask("a")).toEqual(task);
        expect(await store.getTask("missing")).toBeUndefined();
      });

      it("accepts an empty insert", async () => {
        await store.insertTasks([]);
        expect(await store.countTasks()).toBe(0);
      });

      it("keeps what it stored when the caller mutates its objects", async () => {
        const task = storeTestRecord({ id: "a" });
        await store.insertTasks([task]);
        (task.payload as { value: string }).value = "changed";
        task.dependsOn.push("zzz");
        const got = (await store.getTask("a"))!;
        (got.payload as { nested: { list: number[] } }).nested.list.push(4);
        got.metadata.changed = true;
        expect(await store.getTask("a")).toEqual(storeTestRecord({ id: "a" }));

        const saved: TaskRecord = {
          ...storeTestRecord({ id: "a" }),
          status: "running",
          version: 2,
        };
        await store.saveTask(saved);
        saved.status = "failed";
        expect((await store.getTask("a"))?.status).toBe("running");
      });

      it("rejects a duplicate id with CONFLICT and inserts nothing of that batch", async () => {
        await store.insertTasks([storeTestRecord({ id: "a", seq: 1 })]);
        const err = await rejection(
          store.insertTasks([
            storeTestRecord({ id: "b", seq: 2 }),
            storeTestRecord({ id: "a", seq: 3, payload: "other" }),
          ]),
        );
        expect(err.code).toBe("CONFLICT");
        expect(err.message).toContain("a");
        expect(await store.getTask("b")).toBeUndefined();
        expect((await store.getTask("a"))?.seq).toBe(1);
        expect(await store.countTasks()).toBe(1);
      });

      it("rejects duplicate ids inside one batch and inserts none of it", async () => {
        const err = await rejection(
          store.insertTasks([
            storeTestRecord({ id: "x", seq: 1 }),
            storeTestRecord({ id: "y", seq: 2 }),
            storeTestRecord({ id: "x", seq: 3 }),
          ]),
        );
        expect(err.code).toBe("CONFLICT");
        expect(await store.countTasks()).toBe(0);
      });

      it("rejects a reused idempotency key with CONFLICT and inserts nothing of that batch", async () => {
        await store.insertTasks([storeTestRecord({ id: "a", seq: 1, idempotencyKey: "k" })]);
        const err = await rejection(
          store.insertTasks([
            storeTestRecord({ id: "b", seq: 2 }),
            storeTestRecord({ id: "c", seq: 3, idempotencyKey: "k" }),
          ]),
        );
        expect(err.code).toBe("CONFLICT");
        expect(await store.countTasks()).toBe(1);
      });

      it("a failed insert does not disturb writes issued alongside it", async () => {
        await store.insertTasks([storeTestRecord({ id: "a", seq: 1 })]);
        const results = await Promise.allSettled([
          store.insertTasks([storeTestRecord({ id: "b", seq: 2 })]),
          store.insertTasks([storeTestRecord({ id: "a", seq: 3 })]),
          store.insertTasks([storeTestRecord({ id: "c", seq: 4 })]),
          store.kvPut("c", "k", 1),
        ]);
        expect(results.map((r) => r.status)).toEqual([
          "fulfilled",
          "rejected",
          "fulfilled",
          "fulfilled",
        ]);
        expect((await store.listTasks({ newestFirst: false })).map((t) => t.id)).toEqual([
          "a",
          "b",
          "c",
        ]);
      });

      it("finds a task by idempotency key", async () => {
        await store.insertTasks([
          storeTestRecord({ id: "a", seq: 1, idempotencyKey: "key-1" }),
          storeTestRecord({ id: "b", seq: 2 }),
        ]);
        expect((await store.getTaskByIdempotencyKey("key-1"))?.id).toBe("a");
        expect(await store.getTaskByIdempotencyKey("key-2")).toBeUndefined();
        const a = (await store.getTask("a"))!;
        await store.saveTask({ ...a, status: "running", version: 2 }, 1);
        expect((await store.getTaskByIdempotencyKey("key-1"))?.status).toBe("running");
      });
    });

    describe("compare-and-set", () => {
      it("saves when the stored version matches and refuses a stale one", async () => {
        const a = storeTestRecord({ id: "a" });
        await store.insertTasks([a]);
        expect(await store.saveTask({ ...a, status: "leased", version: 2 }, 1)).toBe(true);
        expect(await store.saveTask({ ...a, status: "running", version: 2 }, 1)).toBe(false);
        const got = await store.getTask("a");
        expect(got?.status).toBe("leased");
        expect(got?.version).toBe(2);
      });

      it("refuses a compare-and-set on a task that does not exist", async () => {
        const ghost = storeTestRecord({ id: "ghost", version: 2 });
        expect(await store.saveTask(ghost, 1)).toBe(false);
        expect(await store.getTask("ghost")).toBeUndefined();
      });

      it("saves unconditionally without an expected version", async () => {
        const a = storeTestRecord({ id: "a" });
        await store.insertTasks([a]);
        expect(await store.saveTask({ ...a, status: "cancelled", version: 7 })).toBe(true);
        expect((await store.getTask("a"))?.version).toBe(7);
      });

      it("lets exactly one of two concurrent claims win", async () => {
        const a = storeTestRecord({ id: "a" });
        await store.insertTasks([a]);
        const claim = (holder: string) =>
          store.saveTask(
            {
              ...a,
              status: "leased",
              version: 2,
              lease: { id: holder, holder, acquiredAt: BASE_TIME, expiresAt: BASE_TIME + 1000 },
            },
            1,
          );
        const results = await Promise.all([claim("w1"), claim("w2"), claim("w3")]);
        expect(results.filter(Boolean)).toHaveLength(1);
        const winner = ["w1", "w2", "w3"][results.indexOf(true)];
        expect((await store.getTask("a"))?.lease?.holder).toBe(winner);
      });

      it("rejects a save that takes another task's idempotency key", async () => {
        await store.insertTasks([
          storeTestRecord({ id: "a", seq: 1, idempotencyKey: "k1" }),
          storeTestRecord({ id: "b", seq: 2 }),
        ]);
        const b = (await store.getTask("b"))!;
        const err = await rejection(store.saveTask({ ...b, idempotencyKey: "k1", version: 2 }, 1));
        expect(err.code).toBe("CONFLICT");
        expect((await store.getTaskByIdempotencyKey("k1"))?.id).toBe("a");
      });
    });

    describe("claim", () => {
      it("claims the highest priority, then the earliest, due task of the asked types", async () => {
        // Due times are on the store's time (a database server's clock, for a shared store).
        const storeNow = await store.now();
        await store.insertTasks([
          storeTestRecord({ id: "low", seq: 1, priority: 10 }),
          storeTestRecord({ id: "high-late", seq: 3, priority: 30 }),
          storeTestRecord({ id: "high-early", seq: 2, priority: 30 }),
          storeTestRecord({ id: "not-due", seq: 0, priority: 40, notBefore: storeNow + 9e9 }),
          storeTestRecord({ id: "other-type", seq: 0, priority: 40, type: "other" }),
          storeTestRecord({ id: "running", seq: 0, priority: 40, status: "running" }),
        ]);
        const before = await store.now();
        const got = await store.claimTask({
          holder: "node-1",
          leaseId: "lease-1",
          leaseMs: 5_000,
          taskTypes: ["custom"],
        });
        const after = await store.now();
        expect(got?.id).toBe("high-early");
        expect(got).toMatchObject({
          status: "leased",
          attempt: 1,
          version: 2,
          workerId: "node-1",
          lease: { id: "lease-1", holder: "node-1" },
        });
        expect(got!.lease!.expiresAt - got!.lease!.acquiredAt).toBe(5_000);
        expect(got!.lease!.acquiredAt).toBeGreaterThanOrEqual(before);
        expect(got!.lease!.acquiredAt).toBeLessThanOrEqual(after);
        expect(await store.getTask("high-early")).toEqual(got);
        const order: string[] = [];
        for (;;) {
          const next = await store.claimTask({
            holder: "n",
            leaseId: `l${order.length}`,
            leaseMs: 1,
          });
          if (!next) break;
          order.push(next.id);
        }
        expect(order).toEqual(["other-type", "high-late", "low"]);
      });

      it("never hands one task to two concurrent claims", async () => {
        await store.insertTasks(
          Array.from({ length: 5 }, (_, i) => storeTestRecord({ id: `t${i}`, seq: i + 1 })),
        );
        const claims = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            store.claimTask({ holder: `h${i}`, leaseId: `l${i}`, leaseMs: 1_000 }),
          ),
        );
        const ids = claims.filter((c) => c !== undefined).map((c) => c!.id);
        expect(ids.sort()).toEqual(["t0", "t1", "t2", "t3", "t4"]);
        expect(claims.filter((c) => c === undefined)).toHaveLength(3);
      });

      it("claims a delayed task once the store's time reaches it, and nothing of no type", async () => {
        const claim = (leaseId: string, taskTypes?: string[]) =>
          store.claimTask({
            holder: "h",
            leaseId,
            leaseMs: 1,
            ...(taskTypes ? { taskTypes } : {}),
          });
        const now = await store.now();
        await store.insertTasks([storeTestRecord({ id: "later", notBefore: now + 1_000 })]);
        expect(await claim("l1")).toBeUndefined();
        await clock.advance(1_000);
        // A store on its own (a database server's) time gets there by itself.
        while ((await store.now()) < now + 1_000) await new Promise((r) => setTimeout(r, 20));
        expect(await claim("l2", [])).toBeUndefined();
        expect((await claim("l3"))?.id).toBe("later");
      });

      it("refuses a malformed claim with VALIDATION", async () => {
        const bad = [
          { holder: "", leaseId: "l", leaseMs: 1 },
          { holder: "h", leaseId: "l", leaseMs: 0 },
          { holder: "h", leaseId: "l", leaseMs: 1, taskTypes: "custom" },
        ];
        for (const claim of bad) {
          expect((await rejection(store.claimTask(claim as never))).code).toBe("VALIDATION");
        }
      });
    });

    describe("queries", () => {
      beforeEach(async () => {
        await store.insertTasks([
          storeTestRecord({ id: "t1", seq: 1, type: "llm_request", tenant: "acme" }),
          storeTestRecord({ id: "t2", seq: 2, type: "tool_call", tenant: "acme" }),
          storeTestRecord({ id: "t3", seq: 3, type: "llm_request", tenant: "beta" }),
          storeTestRecord({ id: "t4", seq: 4, type: "llm_request", status: "pending" }),
          storeTestRecord({ id: "t5", seq: 5, type: "tool_call", tenant: "beta" }),
        ]);
        const t3 = (await store.getTask("t3"))!;
        await store.saveTask(finish(t3, BASE_TIME + 100), 1);
        const t5 = (await store.getTask("t5"))!;
        await store.saveTask(
          { ...t5, status: "running", workerId: "w9", attempt: 1, version: 2 },
          1,
        );
      });

      const ids = (tasks: TaskRecord[]) => tasks.map((t) => t.id);

      it("lists newest first by default, oldest first on request", async () => {
        expect(ids(await store.listTasks())).toEqual(["t5", "t4", "t3", "t2", "t1"]);
        expect(ids(await store.listTasks({ newestFirst: false }))).toEqual([
          "t1",
          "t2",
          "t3",
          "t4",
          "t5",
        ]);
      });

      it("filters by status, type, tenant and worker, and counts the same", async () => {
        expect(ids(await store.listTasks({ status: "queued" }))).toEqual(["t2", "t1"]);
        expect(ids(await store.listTasks({ status: ["pending", "succeeded"] }))).toEqual([
          "t4",
          "t3",
        ]);
        expect(ids(await store.listTasks({ status: [] }))).toEqual([]);
        expect(ids(await store.listTasks({ type: "llm_request" }))).toEqual(["t4", "t3", "t1"]);
        expect(ids(await store.listTasks({ tenant: "acme" }))).toEqual(["t2", "t1"]);
        expect(ids(await store.listTasks({ workerId: "w9" }))).toEqual(["t5"]);
        expect(ids(await store.listTasks({ type: "llm_request", tenant: "beta" }))).toEqual(["t3"]);
        expect(await store.countTasks()).toBe(5);
        expect(await store.countTasks({ type: "llm_request" })).toBe(3);
        expect(await store.countTasks({ status: ["queued", "running"], tenant: "acme" })).toBe(2);
        expect(await store.countTasks({ tenant: "nobody" })).toBe(0);
      });

      it("pages with limit and offset, and counts ignore paging", async () => {
        const pages = [
          await store.listTasks({ limit: 2, offset: 0 }),
          await store.listTasks({ limit: 2, offset: 2 }),
          await store.listTasks({ limit: 2, offset: 4 }),
          await store.listTasks({ limit: 2, offset: 6 }),
        ];
        expect(pages.map(ids)).toEqual([["t5", "t4"], ["t3", "t2"], ["t1"], []]);
        expect(ids(await store.listTasks({ offset: 3, newestFirst: false }))).toEqual(["t4", "t5"]);
        expect(await store.listTasks({ limit: 0 })).toEqual([]);
        expect(await store.countTasks({ limit: 1, offset: 1 })).toBe(5);
      });

      it("rejects a negative or fractional limit/offset with VALIDATION", async () => {
        expect((await rejection(store.listTasks({ limit: -1 }))).code).toBe("VALIDATION");
        expect((await rejection(store.listTasks({ offset: 1.5 }))).code).toBe("VALIDATION");
      });

      it("orders by seq whatever order the tasks were written in", async () => {
        await store.insertTasks([
          storeTestRecord({ id: "z9", seq: 9 }),
          storeTestRecord({ id: "z0", seq: 0 }),
          storeTestRecord({ id: "z7", seq: 7 }),
        ]);
        expect(ids(await store.listTasks({ newestFirst: false, limit: 3 }))).toEqual([
          "z0",
          "t1",
          "t2",
        ]);
        expect(ids(await store.listTasks({ limit: 2 }))).toEqual(["z9", "z7"]);
        const t1 = (await store.getTask("t1"))!;
        await store.saveTask({ ...t1, seq: 8, version: 2 }, 1);
        expect(ids(await store.listTasks({ limit: 3 }))).toEqual(["z9", "t1", "z7"]);
        expect(ids(await store.loadUnfinished()).slice(0, 2)).toEqual(["z0", "t2"]);
      });

      it("loads unfinished tasks in submission order", async () => {
        await store.insertTasks([
          storeTestRecord({ id: "late", seq: 0, status: "awaiting_approval" }),
        ]);
        expect(ids(await store.loadUnfinished())).toEqual(["late", "t1", "t2", "t4", "t5"]);
      });

      it("loads the unfinished tasks of some partitions (records without one too), never fewer", async () => {
        await store.insertTasks([
          storeTestRecord({ id: "p3", seq: 20, partition: 3 }),
          storeTestRecord({ id: "p4", seq: 21, partition: 4 }),
          storeTestRecord({ id: "p5", seq: 22, partition: 5, status: "pending" }),
          storeTestRecord({ id: "p3-done", seq: 23, partition: 3, status: "succeeded" }),
        ]);
        const got = ids(await store.loadUnfinished({ partitions: [3, 5] }));
        // A store may return more; these it must return, in order.
        const wanted = ["t1", "t2", "t4", "t5", "p3", "p5"];
        expect(got.filter((id) => wanted.includes(id))).toEqual(wanted);
        expect(got).not.toContain("p3-done");
        expect(ids(await store.loadUnfinished({ partitions: [] }))).not.toContain("p3");
        await expect(
          store.loadUnfinished({ partitions: ["x" as unknown as number] }),
        ).rejects.toMatchObject({ code: "VALIDATION" });
      });
    });

    describe("events", () => {
      it("assigns increasing sequence numbers and lists after a given one", async () => {
        await store.appendEvents([
          { type: "task:submitted", taskId: "a", at: 1, data: { n: 1 } },
          { type: "task:submitted", taskId: "b", at: 2, data: { n: 2 } },
        ]);
        await store.appendEvents([]);
        await store.appendEvents([{ type: "worker:up", at: 3, data: null }]);
        await store.appendEvents([{ type: "task:succeeded", taskId: "a", at: 4, data: [1, "x"] }]);
        const all = await store.listEvents();
        expect(all.map((e) => e.type)).toEqual([
          "task:submitted",
          "task:submitted",
          "worker:up",
          "task:succeeded",
        ]);
        const seqs = all.map((e) => e.seq!);
        for (let i = 1; i < seqs.length; i++) expect(seqs[i]!).toBeGreaterThan(seqs[i - 1]!);
        expect(all[0]).toMatchObject({ taskId: "a", at: 1, data: { n: 1 } });
        expect(all[2]?.data).toBeNull();
        expect(all[3]?.data).toEqual([1, "x"]);

        const after = await store.listEvents({ afterSeq: seqs[1]! });
        expect(after.map((e) => e.seq)).toEqual(seqs.slice(2));
        expect((await store.listEvents({ taskId: "a" })).map((e) => e.type)).toEqual([
          "task:submitted",
          "task:succeeded",
        ]);
        expect((await store.listEvents({ limit: 2 })).map((e) => e.seq)).toEqual(seqs.slice(0, 2));
        expect(await store.listEvents({ afterSeq: seqs[3]! })).toEqual([]);
        expect(await store.listEvents({ limit: 0 })).toEqual([]);
        expect((await rejection(store.listEvents({ limit: -1 }))).code).toBe("VALIDATION");
        expect((await rejection(store.listEvents({ afterSeq: 0.5 }))).code).toBe("VALIDATION");
      });

      it("keeps sequence numbers increasing across many concurrent appends", async () => {
        await Promise.all(
          Array.from({ length: 50 }, (_, i) =>
            store.appendEvents([{ type: "tick", at: i, data: i }]),
          ),
        );
        const events = await store.listEvents();
        expect(events).toHaveLength(50);
        expect(events.map((e) => e.data)).toEqual(Array.from({ length: 50 }, (_, i) => i));
        expect(new Set(events.map((e) => e.seq)).size).toBe(50);
      });
    });

    describe("usage ledger", () => {
      it("records entries and lists them by time window, oldest first", async () => {
        await store.recordUsage({
          at: 300,
          taskId: "c",
          provider: "openai",
          model: "m",
          tenant: "acme",
          workerId: "w1",
          usage: { inputTokens: 3, outputTokens: 4, costUsd: 0.5 },
        });
        await store.recordUsage({ at: 100, taskId: "a", usage: { inputTokens: 1 } });
        await store.recordUsage({ at: 200, usage: { requests: 1 } });
        const all = await store.listUsage();
        expect(all.map((u) => u.at)).toEqual([100, 200, 300]);
        expect(all[2]).toEqual({
          at: 300,
          taskId: "c",
          provider: "openai",
          model: "m",
          tenant: "acme",
          workerId: "w1",
          usage: { inputTokens: 3, outputTokens: 4, costUsd: 0.5 },
        });
        expect((await store.listUsage({ since: 200 })).map((u) => u.at)).toEqual([200, 300]);
        expect((await store.listUsage({ until: 300 })).map((u) => u.at)).toEqual([100, 200]);
        expect((await store.listUsage({ since: 150, until: 250 })).map((u) => u.at)).toEqual([200]);
      });
    });

    describe("key-value collections", () => {
      it("puts, gets, overwrites, lists by key and deletes, per collection", async () => {
        expect(await store.kvGet("nodes", "n1")).toBeUndefined();
        await store.kvPut("nodes", "n2", { name: "b", caps: ["gpu"] });
        await store.kvPut("nodes", "n1", { name: "a" });
        await store.kvPut("keys", "n1", "other collection");
        await store.kvPut("nodes", "n1", { name: "a2" });
        expect(await store.kvGet("nodes", "n1")).toEqual({ name: "a2" });
        expect(await store.kvList("nodes")).toEqual([
          { key: "n1", value: { name: "a2" } },
          { key: "n2", value: { name: "b", caps: ["gpu"] } },
        ]);
        expect(await store.kvGet("keys", "n1")).toBe("other collection");
        expect(await store.kvDelete("nodes", "n1")).toBe(true);
        expect(await store.kvDelete("nodes", "n1")).toBe(false);
        expect(await store.kvGet("nodes", "n1")).toBeUndefined();
        expect(await store.kvList("empty")).toEqual([]);
      });

      it("copies values in and out", async () => {
        const value = { list: [1] };
        await store.kvPut("c", "k", value);
        value.list.push(2);
        const got = await store.kvGet<{ list: number[] }>("c", "k");
        got!.list.push(3);
        expect(await store.kvGet("c", "k")).toEqual({ list: [1] });
      });

      it("rejects an empty collection or key, and an undefined value, with VALIDATION", async () => {
        expect((await rejection(store.kvPut("", "k", 1))).code).toBe("VALIDATION");
        expect((await rejection(store.kvPut("c", "", 1))).code).toBe("VALIDATION");
        expect((await rejection(store.kvPut("c", "k", undefined))).code).toBe("VALIDATION");
      });
    });

    describe("retention", () => {
      const now = () => clock.now();

      async function seed(): Promise<void> {
        const tasks = Array.from({ length: 6 }, (_, i) =>
          storeTestRecord({ id: `f${i + 1}`, seq: i + 1, idempotencyKey: `key-f${i + 1}` }),
        );
        tasks.push(storeTestRecord({ id: "open1", seq: 7 }));
        tasks.push(storeTestRecord({ id: "open2", seq: 8, status: "running", attempt: 1 }));
        await store.insertTasks(tasks);
        // f1..f6 finished 60, 50, 40, 30, 20, 10 minutes ago.
        for (let i = 0; i < 6; i++) {
          const t = (await store.getTask(`f${i + 1}`))!;
          await store.saveTask(finish(t, now() - (60 - i * 10) * 60_000, "succeeded"), 1);
        }
        for (const id of ["f1", "f6", "open1"]) {
          await store.appendEvents([{ type: "task:submitted", taskId: id, at: 1, data: null }]);
        }
        await store.appendEvents([{ type: "worker:up", at: now() - 10 * 60_000, data: null }]);
        await store.appendEvents([{ type: "worker:down", at: now() - 50 * 60_000, data: null }]);
      }

      it("deletes finished tasks older than an age, with their events, never unfinished ones", async () => {
        await seed();
        expect(await store.deleteFinished({ olderThan: 35 * 60_000 })).toBe(3);
        const left = (await store.listTasks({ newestFirst: false })).map((t) => t.id);
        expect(left).toEqual(["f4", "f5", "f6", "open1", "open2"]);
        const events = await store.listEvents();
        // task events go with their task; events of no task go by age
        expect(events.map((e) => e.taskId ?? e.type)).toEqual(["f6", "open1", "worker:up"]);
        expect(await store.getTaskByIdempotencyKey("key-f1")).toBeUndefined();
        // the key of a deleted task can be used again
        await store.insertTasks([
          storeTestRecord({ id: "again", seq: 9, idempotencyKey: "key-f1" }),
        ]);
        expect((await store.getTaskByIdempotencyKey("key-f1"))?.id).toBe("again");
      });

      it("keeps only the newest finished tasks with `keep`", async () => {
        await seed();
        expect(await store.deleteFinished({ keep: 2 })).toBe(4);
        expect((await store.listTasks({ newestFirst: false })).map((t) => t.id)).toEqual([
          "f5",
          "f6",
          "open1",
          "open2",
        ]);
        expect(await store.deleteFinished({ keep: 0 })).toBe(2);
        expect(await store.countTasks()).toBe(2);
        expect(await store.deleteFinished({ keep: 0, olderThan: 0 })).toBe(0);
      });

      it("applies age and count together (either one deletes)", async () => {
        await seed();
        expect(await store.deleteFinished({ olderThan: 55 * 60_000, keep: 4 })).toBe(2);
        expect((await store.listTasks({ newestFirst: false })).map((t) => t.id)).toEqual([
          "f3",
          "f4",
          "f5",
          "f6",
          "open1",
          "open2",
        ]);
      });

      it("measures age on the store's clock", async () => {
        await seed();
        expect(await store.deleteFinished({ olderThan: 65 * 60_000 })).toBe(0);
        await clock.advance(20 * 60_000);
        expect(await store.deleteFinished({ olderThan: 65 * 60_000 })).toBe(2);
      });

      it("keeps a finished task an unfinished task depends on", async () => {
        await store.insertTasks([
          storeTestRecord({ id: "dep", seq: 1 }),
          storeTestRecord({ id: "child", seq: 2, status: "pending", dependsOn: ["dep"] }),
        ]);
        const dep = (await store.getTask("dep"))!;
        await store.saveTask(finish(dep, now() - 3_600_000), 1);
        expect(await store.deleteFinished({ olderThan: 0 })).toBe(0);
        const child = (await store.getTask("child"))!;
        await store.saveTask(finish(child, now() - 1000, "skipped"), 1);
        expect(await store.deleteFinished({ olderThan: 0 })).toBe(2);
      });

      it("rejects a negative age or count with VALIDATION", async () => {
        expect((await rejection(store.deleteFinished({ olderThan: -1 }))).code).toBe("VALIDATION");
        expect((await rejection(store.deleteFinished({ keep: 1.5 }))).code).toBe("VALIDATION");
      });
    });

    describe("attempt history", () => {
      it("records one row per attempt when the store keeps attempts", async () => {
        if (!store.listAttempts) {
          expect(store.listAttempts).toBeUndefined();
          return;
        }
        const a = storeTestRecord({ id: "a" });
        await store.insertTasks([a]);
        const lease = (n: number) => ({
          id: `l${n}`,
          holder: `w${n}`,
          acquiredAt: BASE_TIME + n,
          expiresAt: BASE_TIME + n + 100,
        });
        await store.saveTask({ ...a, status: "running", attempt: 1, lease: lease(1), version: 2 });
        await store.saveTask({ ...a, status: "queued", attempt: 1, version: 3 });
        await store.saveTask({ ...a, status: "running", attempt: 2, lease: lease(2), version: 4 });
        const done = finish({ ...a, attempt: 2, version: 4 }, BASE_TIME + 500, "failed");
        done.result!.error = { code: "WORKER_ERROR", message: "boom" };
        await store.saveTask(done);
        const attempts = await store.listAttempts("a");
        expect(attempts.map((x) => x.attempt)).toEqual([1, 2]);
        expect(attempts[0]).toMatchObject({ status: "queued", startedAt: BASE_TIME + 1 });
        expect(attempts[1]).toMatchObject({
          status: "failed",
          workerId: "w1",
          finishedAt: BASE_TIME + 500,
          error: { code: "WORKER_ERROR", message: "boom" },
        });
        expect(await store.listAttempts("nobody")).toEqual([]);
      });
    });

    describe("writes under load", () => {
      it("lands every one of many writes issued at once", async () => {
        const tasks = Array.from({ length: 200 }, (_, i) =>
          storeTestRecord({ id: `t${i}`, seq: i }),
        );
        await Promise.all(tasks.map((t) => store.insertTasks([t])));
        const saved = await Promise.all(
          tasks.map((t) => store.saveTask({ ...t, status: "running", attempt: 1, version: 2 }, 1)),
        );
        expect(saved.every(Boolean)).toBe(true);
        expect(await store.countTasks({ status: "running" })).toBe(200);
        expect((await store.loadUnfinished()).map((t) => t.seq)).toEqual(
          Array.from({ length: 200 }, (_, i) => i),
        );
      });

      it("reads see writes issued before them", async () => {
        const a = storeTestRecord({ id: "a" });
        const insert = store.insertTasks([a]);
        const read = store.getTask("a");
        await insert;
        expect((await read)?.id).toBe("a");
      });
    });

    if (options.reopen) {
      const reopen = options.reopen;
      describe("persistence", () => {
        it("keeps tasks, events, usage, key-values and event numbering across a reopen", async () => {
          const tasks = [
            storeTestRecord({ id: "a", seq: 1, idempotencyKey: "ka", dependsOn: [] }),
            storeTestRecord({ id: "b", seq: 2, dependsOn: ["a"], status: "pending" }),
            storeTestRecord({ id: "c", seq: 3 }),
          ];
          await store.insertTasks(tasks);
          const doneA = finish(tasks[0]!, BASE_TIME + 50);
          await store.saveTask(doneA, 1);
          await store.appendEvents([
            { type: "task:submitted", taskId: "a", at: 1, data: { x: 1 } },
            { type: "task:succeeded", taskId: "a", at: 2, data: { y: [1, 2] } },
          ]);
          await store.recordUsage({ at: 10, taskId: "a", usage: { inputTokens: 5 } });
          await store.kvPut("nodes", "n1", { name: "runner" });
          const eventsBefore = await store.listEvents();

          await store.close();
          store = await reopen(store, { clock });
          await store.open();

          expect(await store.getTask("a")).toEqual(doneA);
          expect(await store.getTask("b")).toEqual(tasks[1]);
          expect((await store.getTaskByIdempotencyKey("ka"))?.id).toBe("a");
          expect((await store.loadUnfinished()).map((t) => t.id)).toEqual(["b", "c"]);
          expect(await store.listEvents()).toEqual(eventsBefore);
          expect(await store.listUsage()).toEqual([
            { at: 10, taskId: "a", usage: { inputTokens: 5 } },
          ]);
          expect(await store.kvGet("nodes", "n1")).toEqual({ name: "runner" });

          await store.appendEvents([{ type: "later", at: 3, data: null }]);
          const last = (await store.listEvents()).at(-1)!;
          expect(last.seq!).toBeGreaterThan(eventsBefore.at(-1)!.seq!);
          // retention still honours dependencies after a reopen
          expect(await store.deleteFinished({ olderThan: 0 })).toBe(0);
        });

        it("never reuses an event number after retention deleted the newest events", async () => {
          await store.insertTasks([storeTestRecord({ id: "a", seq: 1 })]);
          await store.appendEvents([{ type: "x", taskId: "a", at: 1, data: null }]);
          const [first] = await store.listEvents();
          await store.saveTask(finish(storeTestRecord({ id: "a", seq: 1 }), BASE_TIME), 1);
          expect(await store.deleteFinished({ keep: 0 })).toBe(1);
          await store.close();
          store = await reopen(store, { clock });
          await store.open();
          await store.appendEvents([{ type: "y", at: 2, data: null }]);
          const [next] = await store.listEvents();
          expect(next!.seq!).toBeGreaterThan(first!.seq!);
        });
      });
    }
  });
}
