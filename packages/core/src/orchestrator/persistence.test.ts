import { describe, expect, it } from "vitest";
import { MemoryStore } from "../store/memory.js";
import type { StoredEvent } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import { record, testContext } from "./parts.test-helpers.js";
import { Persistence } from "./persistence.js";

/** A memory store whose task writes fail while `refusing` is set, counting every write. */
class FlakyStore extends MemoryStore {
  refusing = false;
  saves: TaskRecord[] = [];
  override async appendEvents(events: readonly StoredEvent[]): Promise<void> {
    if (this.refusing) throw new Error("connection refused");
    return super.appendEvents(events);
  }
  override async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
    this.saves.push(structuredClone(task));
    if (this.refusing) throw new Error("disk full");
    return super.saveTask(task, expectedVersion);
  }
}

async function setup() {
  const store = new FlakyStore();
  const t = testContext({ store });
  const persistence = new Persistence(t.ctx);
  const rec = record({ id: "a" });
  await persistence.insert([rec]);
  return { ...t, store, persistence, rec };
}

describe("Persistence", () => {
  it("changes of one task in one tick share one write, and every caller is acknowledged", async () => {
    const { persistence, store, rec } = await setup();
    rec.status = "leased";
    const first = persistence.save(rec);
    rec.status = "running";
    const second = persistence.save(rec);
    await Promise.all([first, second]);
    expect(store.saves.map((s) => s.status)).toEqual(["running"]);
    expect((await store.getTask("a"))?.status).toBe("running");
  });

  it("a refused write is retried with backoff and acknowledged only once stored", async () => {
    const { persistence, store, rec, clock, errors } = await setup();
    store.refusing = true;
    rec.status = "leased";
    let acked = false;
    const saved = persistence.save(rec).then(() => {
      acked = true;
    });
    await clock.advance(0);
    expect(acked).toBe(false);
    expect(errors[0]?.message).toBe("disk full");
    await clock.advance(50); // first retry: still refused
    expect(store.saves.length).toBe(2);
    expect(acked).toBe(false);
    store.refusing = false;
    await clock.advance(100); // the wait doubled
    await saved;
    expect(acked).toBe(true);
    expect((await store.getTask("a"))?.status).toBe("leased");
  });

  it("flush waits for writes in flight; writes still refused at stop are rejected, never acknowledged", async () => {
    const { persistence, store, rec, clock, ctx } = await setup();
    store.refusing = true;
    rec.status = "leased";
    const saved = persistence.save(rec);
    await clock.advance(0);
    await persistence.flush(); // does not hang on the refused write
    ctx.state = "stopping";
    const tries = store.saves.length;
    await persistence.retryOnceThenGiveUp();
    // It was tried once more at stop, refused again, and given up.
    expect(store.saves.length).toBe(tries + 1);
    await expect(saved).rejects.toMatchObject({ code: "STORE_ERROR" });
  });

  it("a write waiting for its retry when the store is back is stored at stop, not dropped", async () => {
    const { persistence, store, rec, clock, ctx } = await setup();
    store.refusing = true;
    rec.status = "succeeded";
    let acked = false;
    const saved = persistence.save(rec).then(() => {
      acked = true;
    });
    await clock.advance(0);
    expect(acked).toBe(false);
    // The store is back, but the retry timer has not fired: stop tries it at once.
    store.refusing = false;
    ctx.state = "stopping";
    await persistence.retryOnceThenGiveUp();
    await saved;
    expect(acked).toBe(true);
    expect((await store.getTask("a"))?.status).toBe("succeeded");
  });

  it("history lines of one tick are appended together after the writes", async () => {
    const { persistence, store } = await setup();
    persistence.appendEvent({ type: "task:queued", taskId: "a", at: 1, data: {} });
    persistence.appendEvent({ type: "task:leased", taskId: "a", at: 2, data: {} });
    await persistence.flush();
    expect((await store.listEvents({ taskId: "a" })).map((e) => e.type)).toEqual([
      "task:queued",
      "task:leased",
    ]);
  });

  it("history lines the store refuses are appended again once it is back, in order, and flush does not wait for them", async () => {
    const { persistence, store, clock, errors } = await setup();
    store.refusing = true;
    persistence.appendEvent({ type: "task:leased", taskId: "a", at: 1, data: {} });
    persistence.appendEvent({ type: "task:running", taskId: "a", at: 2, data: {} });
    await persistence.flush(); // refused: kept for a retry, not waited for
    persistence.appendEvent({ type: "task:succeeded", taskId: "a", at: 3, data: {} });
    await persistence.flush();
    expect(errors).toHaveLength(1); // said once, not per refused batch
    expect(await store.listEvents({ taskId: "a" })).toEqual([]);
    await clock.advance(50); // first retry: still refused
    expect(await store.listEvents({ taskId: "a" })).toEqual([]);
    store.refusing = false;
    await clock.advance(100);
    expect((await store.listEvents({ taskId: "a" })).map((e) => e.type)).toEqual([
      "task:leased",
      "task:running",
      "task:succeeded",
    ]);
  });

  it("history lines still refused at stop are tried once more", async () => {
    const { persistence, store, ctx } = await setup();
    store.refusing = true;
    persistence.appendEvent({ type: "task:succeeded", taskId: "a", at: 1, data: {} });
    await persistence.flush();
    store.refusing = false;
    ctx.state = "stopping";
    await persistence.retryOnceThenGiveUp();
    expect((await store.listEvents({ taskId: "a" })).map((e) => e.type)).toEqual([
      "task:succeeded",
    ]);
  });
});
