import { describe, expect, it } from "vitest";
import type { TransitionEvent } from "../task/events.js";
import { record, testContext } from "./parts.test-helpers.js";
import { Persistence } from "./persistence.js";
import { type Live, TaskTable } from "./taskTable.js";
import { Transitions } from "./transitions.js";

async function setup() {
  const t = testContext();
  const table = new TaskTable(10);
  const persistence = new Persistence(t.ctx);
  const transitions = new Transitions(t.ctx, table, persistence);
  const live: Live = { rec: record({ id: "a" }, "queued"), finished: false };
  await t.store.insertTasks([live.rec]);
  table.add(live);
  return { ...t, table, persistence, transitions, live };
}

describe("Transitions", () => {
  it("applies a legal move: status, counts, a stored record and event, then the emitted event", async () => {
    const { transitions, live, table, store, events, persistence } = await setup();
    const seen: TransitionEvent[] = [];
    events.on("task:leased", (e) => seen.push(e));
    const done = transitions.apply(live, "leased", { workerId: "w", reason: "picked" });
    expect(live.rec.status).toBe("leased");
    expect(seen).toEqual([]); // not before it is stored
    await done;
    expect(seen).toMatchObject([
      { taskId: "a", from: "queued", to: "leased", workerId: "w", reason: "picked" },
    ]);
    expect((await store.getTask("a"))?.status).toBe("leased");
    expect(table.counts()).toMatchObject({ queued: 0, leased: 1 });
    await persistence.flush();
    const history = await store.listEvents({ taskId: "a" });
    expect(history.map((e) => e.type)).toEqual(["task:leased"]);
  });

  it("refuses an illegal move without changing or writing anything", async () => {
    const { transitions, live, store } = await setup();
    const before = (await store.getTask("a"))?.version;
    expect(() => transitions.apply(live, "succeeded")).toThrow(
      /queued.*succeeded|succeeded.*queued/,
    );
    expect(live.rec.status).toBe("queued");
    expect((await store.getTask("a"))?.version).toBe(before);
  });

  it("a patch is applied with the status, in the same write", async () => {
    const { transitions, live, store } = await setup();
    await transitions.apply(live, "leased", {
      patch: (r) => {
        r.workerId = "w9";
      },
    });
    expect(await store.getTask("a")).toMatchObject({ status: "leased", workerId: "w9" });
  });

  it("a listener that throws is reported, not thrown into the engine", async () => {
    const { transitions, live, events, errors } = await setup();
    events.on("task:transition", () => {
      throw new Error("listener broke");
    });
    await transitions.apply(live, "leased");
    expect(errors.map((e) => e.message)).toEqual(["listener broke"]);
  });
});
