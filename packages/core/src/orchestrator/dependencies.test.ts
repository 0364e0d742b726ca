import { describe, expect, it } from "vitest";
import type { TaskSpec } from "../task/schema.js";
import { Dependencies } from "./dependencies.js";
import { record, testContext } from "./parts.test-helpers.js";
import { Persistence } from "./persistence.js";
import { type Live, TaskTable } from "./taskTable.js";
import { buildResult, Transitions } from "./transitions.js";

async function setup() {
  const t = testContext();
  const table = new TaskTable(10);
  const persistence = new Persistence(t.ctx);
  const transitions = new Transitions(t.ctx, table, persistence);
  const enqueued: string[] = [];
  const deps = new Dependencies(t.ctx, table, transitions, {
    enqueue: (live) => enqueued.push(live.rec.id),
    schedule: () => {},
  });
  const add = async (spec: Partial<TaskSpec> & { id: string }, status: Live["rec"]["status"]) => {
    const live: Live = { rec: record(spec, status), finished: false };
    await t.store.insertTasks([live.rec]);
    table.add(live);
    return live;
  };
  const end = async (live: Live, status: "succeeded" | "failed", output?: unknown) => {
    await transitions.apply(live, "leased");
    await transitions.apply(live, "running");
    await transitions.apply(live, status, {
      patch: (r) => {
        r.result = buildResult(r, live, status, 1, { output });
      },
    });
    await deps.onTerminal(live);
  };
  return { ...t, table, deps, add, end, enqueued };
}

describe("Dependencies", () => {
  it("a dependent becomes ready when its last dependency succeeds, and sees their outputs", async () => {
    const d = await setup();
    const a = await d.add({ id: "a" }, "queued");
    const b = await d.add({ id: "b" }, "queued");
    const c = await d.add(
      { id: "c", dependsOn: ["a", "b"], payload: { text: "{{a}}+{{b}}" } },
      "pending",
    );
    d.deps.wait("c", ["a", "b"]);
    await d.end(a, "succeeded", "A");
    expect(c.rec.status).toBe("pending");
    await d.end(b, "succeeded", "B");
    expect(c.rec.status).toBe("queued");
    expect(d.enqueued).toEqual(["c"]);
    const task = await d.deps.workerTask(c);
    expect(task.payload).toEqual({ text: "A+B" });
    expect(task.dependencies).toEqual({ a: "A", b: "B" });
  });

  it("a dependent of a failed task is skipped with DEPENDENCY_FAILED naming it, or runs by its policy", async () => {
    const d = await setup();
    const a = await d.add({ id: "a" }, "queued");
    const skip = await d.add({ id: "skip", dependsOn: ["a"] }, "pending");
    const run = await d.add({ id: "run", dependsOn: ["a"], onDependencyFailure: "run" }, "pending");
    d.deps.wait("skip", ["a"]);
    d.deps.wait("run", ["a"]);
    await d.end(a, "failed");
    expect(skip.rec.status).toBe("skipped");
    expect(skip.rec.result?.error).toMatchObject({
      code: "DEPENDENCY_FAILED",
      details: { dependency: "a", status: "failed" },
    });
    expect(run.rec.status).toBe("queued");
    expect(skip.finished).toBe(true);
  });

  it("a dependency output no longer in memory is read from the store", async () => {
    const d = await setup();
    const done = record({ id: "old" }, "succeeded");
    done.result = buildResult(done, undefined, "succeeded", 1, { output: { n: 7 } });
    await d.store.insertTasks([done]);
    const c = await d.add({ id: "c", dependsOn: ["old"], payload: "{{old.n}}" }, "queued");
    const task = await d.deps.workerTask(c);
    expect(task.payload).toBe(7);
  });
});
