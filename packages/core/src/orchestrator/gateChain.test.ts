import { describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate } from "../resources/gate.js";
import { FunctionWorker } from "../worker/base.js";
import { GateChain } from "./gateChain.js";
import { record, testContext } from "./parts.test-helpers.js";

function entries(ctx: ReturnType<typeof testContext>["ctx"], ...ids: string[]): WorkerEntry[] {
  return ids.map((id) =>
    ctx.registry.add(new FunctionWorker({ id, taskTypes: ["t"], fn: async () => 1 })),
  );
}

describe("GateChain", () => {
  it("passes the workers every gate lets through, in gate order, and stops at the first refusal", () => {
    const { ctx } = testContext();
    const asked: string[] = [];
    const onlyW2: DispatchGate = {
      name: "only-w2",
      check: (_t, w) => {
        asked.push(`a:${w.id}`);
        return w.id === "w2" ? { ok: true } : { ok: false, reason: "not w2", retryAt: 500 };
      },
    };
    const second: DispatchGate = {
      name: "second",
      check: (_t, w) => {
        asked.push(`b:${w.id}`);
        return { ok: true };
      },
    };
    const chain = new GateChain(ctx, [onlyW2, second], 1_000);
    const check = chain.check(record({ id: "x" }), entries(ctx, "w1", "w2"));
    expect(check.passing.map((e) => e.id)).toEqual(["w2"]);
    expect(asked).toEqual(["a:w1", "a:w2", "b:w2"]);
  });

  it("when none passes: the earliest retry time, the first reason, and no block key when the keys differ", () => {
    const { ctx } = testContext();
    const gate: DispatchGate = {
      name: "limit",
      check: (_t, w) => ({
        ok: false,
        reason: `held ${w.id}`,
        blockKey: `key-${w.id}`,
        retryAt: w.id === "w1" ? 900 : 300,
      }),
    };
    const check = new GateChain(ctx, [gate], 1_000).check(
      record({ id: "x" }),
      entries(ctx, "w1", "w2"),
    );
    expect(check).toEqual({
      passing: [],
      retryAt: 300,
      reason: "held w1",
      gate: "limit",
    });
  });

  it("when every candidate is held on the same key: that key", () => {
    const { ctx } = testContext();
    const gate: DispatchGate = {
      name: "limit",
      check: (_t, w) => ({
        ok: false,
        reason: "limit",
        blockKey: "openai",
        retryAt: w.id === "w1" ? 900 : 300,
      }),
    };
    const check = new GateChain(ctx, [gate], 1_000).check(
      record({ id: "x" }),
      entries(ctx, "w1", "w2"),
    );
    expect(check).toMatchObject({ passing: [], retryAt: 300, blockKey: "openai" });
  });

  it("a refusal for good fails the task at once", () => {
    const { ctx } = testContext();
    const fail = new FlotillaError("QUOTA_EXCEEDED", "budget spent");
    const gate: DispatchGate = {
      name: "budget",
      check: () => ({ ok: false, reason: "spent", fail }),
    };
    expect(
      new GateChain(ctx, [gate], 1_000).check(record({ id: "x" }), entries(ctx, "w1")).fail,
    ).toBe(fail);
  });

  it("a refusal for one worker fails the task only when no other eligible worker would take it", () => {
    const { ctx, clock } = testContext();
    const spent = new FlotillaError("QUOTA_EXCEEDED", "w1 spent its day");
    const perWorker: DispatchGate = {
      name: "worker-budget",
      check: (_t, w) =>
        w.id === "w1" ? { ok: false, reason: "spent", fail: spent } : { ok: true },
    };
    const chain = new GateChain(ctx, [perWorker], 1_000);
    const [w1, w2] = entries(ctx, "w1", "w2");
    const task = record({ id: "x" });
    // w2 is busy (not a candidate now) but could run it: the task waits for it.
    expect(chain.check(task, [w1!], [w1!, w2!])).toEqual({
      passing: [],
      reason: "w1 spent its day",
      retryAt: clock.now() + 1_000,
    });
    // Both free: w2 takes it.
    expect(chain.check(task, [w1!, w2!]).passing.map((e) => e.id)).toEqual(["w2"]);
    // w1 is the only worker for it: the task fails.
    expect(chain.check(task, [w1!], [w1!]).fail).toBe(spent);
  });

  it("a gate that throws is isolated: reported, and the task held for the recheck interval", () => {
    const { ctx, clock, errors } = testContext();
    const gate: DispatchGate = {
      name: "broken",
      check: () => {
        throw new Error("bug in gate");
      },
      onSettle: () => {
        throw new Error("bug in settle");
      },
    };
    const chain = new GateChain(ctx, [gate], 1_000);
    const w = entries(ctx, "w1");
    const check = chain.check(record({ id: "x" }), w);
    expect(check).toMatchObject({
      passing: [],
      retryAt: clock.now() + 1_000,
      reason: "gate broken failed",
    });
    chain.settled([gate], record({ id: "x" }), w[0]!, { status: "succeeded" }, clock.now());
    expect(errors.map((e) => e.message)).toEqual(["bug in gate", "bug in settle"]);
  });

  it("a gate that blocks without a retry time and cannot wake the scheduler is polled", () => {
    const { ctx, clock } = testContext();
    const silent: DispatchGate = { name: "silent", check: () => ({ ok: false, reason: "held" }) };
    const waking: DispatchGate = {
      name: "waking",
      check: () => ({ ok: false, reason: "held" }),
      subscribe: () => () => {},
    };
    const w = entries(ctx, "w1");
    expect(new GateChain(ctx, [silent], 250).check(record({ id: "x" }), w).retryAt).toBe(
      clock.now() + 250,
    );
    expect(new GateChain(ctx, [waking], 250).check(record({ id: "x" }), w).retryAt).toBeUndefined();
  });
});
