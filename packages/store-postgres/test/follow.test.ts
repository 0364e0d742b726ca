import { EventEmitter } from "node:events";
import type { ProgressEvent, StoredEvent, UsageEntry } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { PostgresStore, type ProgressSource } from "../src/index.js";
import { dropSchema, freshSchema, pgUrl } from "./pg-env.js";

const url = pgUrl();

/** Resolves once `events` holds `n` entries, failing after `ms`. */
async function until(cond: () => boolean, what: string, ms = 15_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

const ev = (type: string, taskId: string, at: number): StoredEvent => ({
  type,
  taskId,
  at,
  data: { attempt: 1 },
});

if (url) {
  describe("PostgresStore.followEvents", () => {
    const stores: PostgresStore[] = [];
    const schemas: string[] = [];
    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close();
      for (const s of schemas.splice(0)) await dropSchema(url, s);
    });

    async function open(schema: string, followPollMs?: number) {
      const store = new PostgresStore({
        connectionString: url,
        schema,
        exclusive: false,
        ...(followPollMs ? { followPollMs } : {}),
      });
      await store.open();
      stores.push(store);
      return store;
    }

    it("delivers what the other stores append from the start on, in order, and none of its own", async () => {
      const schema = freshSchema("follow");
      schemas.push(schema);
      const a = await open(schema);
      const b = await open(schema);
      const c = await open(schema);
      await b.appendEvents([ev("task:queued", "before", 1)]);
      const seen: StoredEvent[] = [];
      const follow = a.followEvents((events) => seen.push(...events));
      await follow.ready;
      await a.appendEvents([ev("task:queued", "mine", 2)]);
      for (let i = 0; i < 30; i++) {
        await (i % 2 === 0 ? b : c).appendEvents([
          ev("task:running", `t${i}`, 10 + i),
          ev("task:succeeded", `t${i}`, 11 + i),
        ]);
      }
      await until(() => seen.length >= 60, "60 events are delivered");
      expect(seen.map((e) => e.taskId)).not.toContain("before");
      expect(seen.map((e) => e.taskId)).not.toContain("mine");
      expect(seen.map((e) => `${e.taskId}:${e.type}`).slice(0, 4)).toEqual([
        "t0:task:running",
        "t0:task:succeeded",
        "t1:task:running",
        "t1:task:succeeded",
      ]);
      const seqs = seen.map((e) => e.seq!);
      expect([...seqs].sort((x, y) => x - y)).toEqual(seqs);
      expect(new Set(seqs).size).toBe(60);
      expect(seen[0]?.data).toEqual({ attempt: 1 });
      follow.close();
    });

    it("pages through a long run, and stops reading once nobody follows", async () => {
      const schema = freshSchema("follow");
      schemas.push(schema);
      const a = await open(schema, 20);
      const b = await open(schema);
      const seen: StoredEvent[] = [];
      const first = a.followEvents((events) => seen.push(...events));
      const second: StoredEvent[] = [];
      const other = a.followEvents((events) => second.push(...events));
      await Promise.all([first.ready, other.ready]);
      await b.appendEvents(Array.from({ length: 1200 }, (_, i) => ev("task:queued", `p${i}`, i)));
      await until(() => seen.length === 1200 && second.length === 1200, "all 1200 are delivered");
      expect(seen.map((e) => e.taskId)).toEqual(Array.from({ length: 1200 }, (_, i) => `p${i}`));
      first.close();
      other.close();
      await b.appendEvents([ev("task:queued", "late", 5000)]);
      await new Promise((r) => setTimeout(r, 200)); // ten polling periods: nothing may arrive
      expect(seen).toHaveLength(1200);
      // Following again starts from the log's end then.
      const again: StoredEvent[] = [];
      const third = a.followEvents((events) => again.push(...events));
      await third.ready;
      await b.appendEvents([ev("task:queued", "later", 6000)]);
      await until(() => again.length === 1, "the new event is delivered");
      expect(again[0]?.taskId).toBe("later");
      third.close();
    });

    it("a store with partition leases announces its appends: followers hear within the hint, not the polling period", async () => {
      const schema = freshSchema("follow");
      schemas.push(schema);
      const a = await open(schema, 60_000); // polling would take a minute
      const b = await open(schema);
      b.partitionLeases({ instanceId: "b" }); // made, not started: appends are announced
      const seen: StoredEvent[] = [];
      const follow = a.followEvents((events) => seen.push(...events));
      await follow.ready;
      await b.appendEvents([ev("task:succeeded", "hinted", 1)]);
      await until(() => seen.length === 1, "the hinted event is delivered", 5000);
      await b.appendEvents([ev("task:succeeded", "hinted-again", 2)]);
      await until(() => seen.length === 2, "the second hinted event is delivered", 5000);
      follow.close();
    });

    it("followUsage delivers the usage lines the others record, and none of its own", async () => {
      const schema = freshSchema("follow");
      schemas.push(schema);
      const a = await open(schema);
      const b = await open(schema);
      b.partitionLeases({ instanceId: "b" }); // announces its lines
      const line = (taskId: string, totalTokens: number) => ({
        at: Date.now(),
        taskId,
        provider: "openai",
        usage: { inputTokens: totalTokens, outputTokens: 0, totalTokens },
      });
      await b.recordUsage(line("before", 1));
      const seen: UsageEntry[] = [];
      const follow = a.followUsage((lines) => seen.push(...lines));
      await follow.ready;
      await a.recordUsage(line("mine", 2));
      await Promise.all([1, 2, 3].map((i) => b.recordUsage(line(`t${i}`, 10 * i))));
      await until(() => seen.length === 3, "three lines are delivered", 5000);
      expect(seen.map((l) => l.taskId).sort()).toEqual(["t1", "t2", "t3"]);
      expect(seen.find((l) => l.taskId === "t2")).toMatchObject({
        provider: "openai",
        usage: { totalTokens: 20 },
      });
      follow.close();
    });
  });

  describe("PostgresStore.watchProgress and relayProgress", () => {
    const stores: PostgresStore[] = [];
    const schemas: string[] = [];
    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close();
      for (const s of schemas.splice(0)) await dropSchema(url, s);
    });

    /** A stand-in for an orchestrator's events. */
    function source() {
      const emitter = new EventEmitter();
      return {
        emitter,
        on: emitter.on.bind(emitter),
        off: emitter.off.bind(emitter),
      } as unknown as ProgressSource & { emitter: EventEmitter };
    }

    it("relays the reports of a watched task, in order, and only while it is watched", async () => {
      const schema = freshSchema("progress");
      schemas.push(schema);
      const running = new PostgresStore({ connectionString: url, schema, exclusive: false });
      const watching = new PostgresStore({ connectionString: url, schema, exclusive: false });
      stores.push(running, watching);
      await running.open();
      await watching.open();
      const src = source();
      running.relayProgress(src);
      await running.notifications().start();
      await watching.notifications().start();
      const got: ProgressEvent[] = [];
      const stop = watching.watchProgress("t1", (reports) => got.push(...reports));
      // Once the word has reached the running store, a probe report comes through.
      const probe = { taskId: "t1", attempt: 1, at: 0, data: { i: -1 } };
      await until(() => {
        if (got.length === 0) src.emitter.emit("task:progress", probe);
        return got.length > 0;
      }, "the first report relayed");
      got.length = 0; // (probes still on their way are passed over below)
      // A task nobody watches goes nowhere; many reports take more than one message.
      src.emitter.emit("task:progress", { taskId: "t2", attempt: 1, at: 1, data: "no" });
      const text = "x".repeat(400);
      for (let i = 0; i < 40; i++) {
        src.emitter.emit("task:progress", {
          taskId: "t1",
          attempt: 1,
          at: 10 + i,
          data: { i, text },
        });
      }
      // Its end sends the last ones at once.
      src.emitter.emit("task:progress", { taskId: "t1", attempt: 1, at: 99, data: { i: 40 } });
      src.emitter.emit("task:transition", { taskId: "t1", from: "running", to: "succeeded" });
      const reports = () => got.filter((r) => (r.data as { i: number }).i >= 0);
      await until(() => reports().length === 41, "41 reports relayed");
      expect(reports().map((r) => (r.data as { i: number }).i)).toEqual(
        Array.from({ length: 41 }, (_, i) => i),
      );
      expect(reports()[0]).toMatchObject({ taskId: "t1", attempt: 1, at: 10 });
      // A removed listener gets nothing more (another one, still watching, gets the next).
      stop();
      const later: ProgressEvent[] = [];
      const stop2 = watching.watchProgress("t1", (reports) => later.push(...reports));
      await until(() => {
        if (later.length === 0) src.emitter.emit("task:progress", probe);
        return later.length > 0;
      }, "the next report relayed");
      expect(reports()).toHaveLength(41);
      const before = got.length;
      await until(() => {
        src.emitter.emit("task:progress", probe);
        return later.length > 3;
      }, "more reports relayed");
      expect(got).toHaveLength(before);
      stop2();
    });
  });
}
