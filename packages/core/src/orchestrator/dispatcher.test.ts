import { describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate } from "../resources/gate.js";
import { createRouter } from "../router/strategies.js";
import type { TaskSpec } from "../task/schema.js";
import { FunctionWorker } from "../worker/base.js";
import { Dispatcher, type DispatchTargets } from "./dispatcher.js";
import { GateChain } from "./gateChain.js";
import { Ownership } from "./ownership.js";
import { record, testContext } from "./parts.test-helpers.js";
import { Persistence } from "./persistence.js";
import { type Live, TaskTable } from "./taskTable.js";
import { Transitions } from "./transitions.js";

function setup(o: { concurrency?: number; gates?: DispatchGate[] } = {}) {
  const t = testContext();
  const table = new TaskTable(10);
  const persistence = new Persistence(t.ctx);
  const transitions = new Transitions(t.ctx, table, persistence);
  const launched: Array<[string, string]> = [];
  let inFlight = 0;
  const targets: DispatchTargets = {
    inFlight: () => inFlight,
    launch: (live, entry) => {
      inFlight++;
      launched.push([live.rec.id, entry.id]);
    },
    finished: async () => {},
    track: () => {},
  };
  const dispatcher = new Dispatcher(
    t.ctx,
    table,
    new GateChain(t.ctx, o.gates ?? [], 1_000),
    transitions,
    targets,
    {
      concurrency: o.concurrency ?? 10,
      routing: createRouter("least-loaded"),
      queue: {},
      ownership: new Ownership(undefined),
    },
  );
  let seq = 0;
  const add = (spec: Partial<TaskSpec> & { id: string }) => {
    const live: Live = { rec: record(spec), finished: false };
    live.rec.seq = ++seq;
    table.add(live);
    dispatcher.enqueue(live);
    return live;
  };
  const worker = (id: string, taskTypes = ["t"]): WorkerEntry =>
    t.ctx.registry.add(
      new FunctionWorker({ id, taskTypes, maxConcurrency: 10, fn: async () => 1 }),
    );
  const settle = () => t.clock.flush();
  return { ...t, dispatcher, add, worker, launched, settle, table };
}

describe("Dispatcher", () => {
  it("hands ready tasks out by priority, FIFO within one, up to the global cap", async () => {
    const d = setup({ concurrency: 3 });
    d.worker("w");
    d.add({ id: "n1" });
    d.add({ id: "low", priority: "low" });
    d.add({ id: "n2" });
    d.add({ id: "crit", priority: "critical" });
    d.dispatcher.schedule();
    await d.settle();
    expect(d.launched.map(([id]) => id)).toEqual(["crit", "n1", "n2"]);
  });

  it("a task no worker can run waits, and goes when a worker for it arrives", async () => {
    const d = setup();
    d.worker("w", ["other"]);
    d.add({ id: "a" });
    d.dispatcher.schedule();
    await d.settle();
    expect(d.launched).toEqual([]);
    d.worker("w2", ["t"]);
    d.dispatcher.wakeAllWaiting();
    await d.settle();
    expect(d.launched).toEqual([["a", "w2"]]);
  });

  it("a task a gate holds waits until the gate's retry time, then goes", async () => {
    let open = false;
    const gate: DispatchGate = {
      name: "later",
      check: (_t, _w, now) =>
        open ? { ok: true } : { ok: false, reason: "later", retryAt: now + 500 },
    };
    const d = setup({ gates: [gate] });
    d.worker("w");
    d.add({ id: "a" });
    d.dispatcher.schedule();
    await d.settle();
    expect(d.launched).toEqual([]);
    open = true;
    await d.clock.advance(499);
    expect(d.launched).toEqual([]);
    await d.clock.advance(1);
    await d.settle();
    expect(d.launched).toEqual([["a", "w"]]);
  });

  it("a task with a retry time waits in the delay queue until it is due", async () => {
    const d = setup();
    d.worker("w");
    const live = d.add({ id: "a" });
    d.dispatcher.remove("a");
    live.rec.notBefore = d.clock.now() + 1_000;
    d.dispatcher.enqueue(live);
    d.dispatcher.armDelayTimer();
    d.dispatcher.schedule();
    await d.settle();
    expect(d.dispatcher.delayed.size).toBe(1);
    await d.clock.advance(1_000);
    await d.settle();
    expect(d.launched).toEqual([["a", "w"]]);
  });

  it("a gate's refusal for good fails the queued task", async () => {
    const gate: DispatchGate = {
      name: "never",
      check: () => ({
        ok: false,
        reason: "spent",
        fail: new FlotillaError("QUOTA_EXCEEDED", "spent"),
      }),
    };
    const d = setup({ gates: [gate] });
    d.worker("w");
    const live = d.add({ id: "a" });
    d.dispatcher.schedule();
    await d.settle();
    expect(live.rec.status).toBe("failed");
    expect(live.rec.result?.error?.code).toBe("QUOTA_EXCEEDED");
    expect(d.launched).toEqual([]);
  });
});
