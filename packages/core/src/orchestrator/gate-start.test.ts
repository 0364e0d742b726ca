import { afterEach, describe, expect, it } from "vitest";
import type { DispatchGate } from "../resources/gate.js";
import { FakeClock } from "../testing/index.js";
import { Orchestrator } from "./orchestrator.js";
import { fnWorker, sleep } from "./testkit.test-helpers.js";

const running: Orchestrator[] = [];
afterEach(async () => {
  for (const o of running.splice(0)) await o.stop({ mode: "abort" });
});

/** A gate recording every call as `<hook>:<task>:<attempt>@<time>`. */
function recordingGate(clock: FakeClock, calls: string[]): DispatchGate {
  return {
    name: "rec",
    check: () => ({ ok: true }),
    onDispatch: (t) => calls.push(`dispatch:${t.id}:${t.attempt}`),
    onStart: (t, _w, now) => calls.push(`start:${t.id}@${now - clock.now()}`),
    onSettle: (t, _w, o) => calls.push(`settle:${t.id}:${o.status}`),
  };
}

async function setup(calls: string[]) {
  const clock = new FakeClock();
  const o = new Orchestrator({ clock, gates: [recordingGate(clock, calls)], random: () => 0 });
  running.push(o);
  await o.start();
  return { o, clock };
}

describe("gate onStart", () => {
  it("is called once per attempt, right when the worker runs it, after onDispatch and before onSettle", async () => {
    const calls: string[] = [];
    const { o, clock } = await setup(calls);
    await o.register(
      fnWorker(
        "w",
        ["t"],
        async (_p, ctx, t) => {
          calls.push(`exec:${t.id}`);
          if (t.id === "flaky" && t.attempt === 1) throw new Error("once");
          if (t.id === "slow") await sleep(clock, 1_000, ctx.signal);
          if (t.id === "hang") await sleep(clock, 60_000, ctx.signal);
          return t.id;
        },
        { maxConcurrency: 4 },
      ),
    );
    const [ok, flaky, slow] = await o.submitBatch([
      { id: "ok", type: "t" },
      { id: "flaky", type: "t", retry: { maxAttempts: 2, initialDelayMs: 10 } },
      { id: "slow", type: "t", timeoutMs: 100, retry: { maxAttempts: 1 } },
    ]);
    await clock.advance(200);
    expect((await ok!.result()).status).toBe("succeeded");
    expect((await flaky!.result()).status).toBe("succeeded");
    expect((await slow!.result()).status).toBe("timed_out");
    const hang = await o.submit({ id: "hang", type: "t" });
    await clock.advance(10);
    await o.cancel(hang.id);
    expect((await hang.result()).status).toBe("cancelled");

    const of = (id: string) => calls.filter((c) => c.split(":")[1]?.startsWith(id));
    expect(of("ok")).toEqual(["dispatch:ok:0", "start:ok@0", "exec:ok", "settle:ok:succeeded"]);
    expect(of("flaky")).toEqual([
      "dispatch:flaky:0",
      "start:flaky@0",
      "exec:flaky",
      "settle:flaky:failed",
      "dispatch:flaky:1",
      "start:flaky@0",
      "exec:flaky",
      "settle:flaky:succeeded",
    ]);
    expect(of("slow")).toEqual([
      "dispatch:slow:0",
      "start:slow@0",
      "exec:slow",
      "settle:slow:timed_out",
    ]);
    expect(of("hang")).toEqual([
      "dispatch:hang:0",
      "start:hang@0",
      "exec:hang",
      "settle:hang:cancelled",
    ]);
    // The start is reported at the very moment the worker is invoked.
    for (const id of ["ok", "flaky", "slow", "hang"]) {
      const seq = of(id);
      seq.forEach((c, i) => {
        if (c.startsWith("exec:")) expect(seq[i - 1]).toMatch(/^start:/);
      });
    }
  });

  it("is never called after onSettle, whenever a cancel lands", async () => {
    const calls: string[] = [];
    const { o, clock } = await setup(calls);
    await o.register(fnWorker("w", ["t"], async () => 1, { maxConcurrency: 8 }));
    // Cancel at every point of the first ticks after submit.
    for (let ticks = 0; ticks < 6; ticks++) {
      const h = await o.submit({ id: `c${ticks}`, type: "t" });
      for (let k = 0; k < ticks; k++) await Promise.resolve();
      await o.cancel(h.id);
      await clock.advance(10);
      await h.result();
      const seq = calls.filter((c) => c.split(":")[1]?.startsWith(`c${ticks}`));
      expect(seq.filter((c) => c.startsWith("start:")).length).toBeLessThanOrEqual(1);
      const settle = seq.findIndex((c) => c.startsWith("settle:"));
      if (settle >= 0) expect(settle).toBe(seq.length - 1);
      if (seq.some((c) => c.startsWith("start:"))) expect(seq[0]).toMatch(/^dispatch:/);
    }
  });

  it("for a remote claim, is called once at claim time", async () => {
    const calls: string[] = [];
    const { o, clock } = await setup(calls);
    const h = await o.submit({ id: "r", type: "remote_compute" });
    const claim = await o.claim({ holderId: "n1" });
    expect(claim?.task.id).toBe("r");
    expect(calls).toEqual(["dispatch:r:0", "start:r@0"]);
    await clock.advance(50);
    await o.completeLease(h.id, claim!.lease.id, { output: 1 });
    expect((await h.result()).status).toBe("succeeded");
    expect(calls).toEqual(["dispatch:r:0", "start:r@0", "settle:r:succeeded"]);
  });
});
