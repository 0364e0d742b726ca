import { describe, expect, it } from "vitest";
import { normalizeTaskSpec } from "../task/normalize.js";
import type { TaskSpec } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import { IndexedHeap } from "../util/heap.js";
import { backoffDelay } from "./backoff.js";
import { DelayQueue } from "./delayQueue.js";
import { FairShare } from "./fairness.js";
import { ReadyQueue } from "./readyQueue.js";
import { laneSignature } from "./signature.js";

let seq = 0;
const task = (spec: Partial<TaskSpec> = {}): TaskRecord =>
  normalizeTaskSpec({ type: "t", ...spec } as TaskSpec, { now: 0, seq: ++seq });

function drain(q: ReadyQueue): string[] {
  const out: string[] = [];
  for (;;) {
    const lane = q.popLane();
    if (!lane) return out;
    out.push(q.take(lane)!.id);
  }
}

describe("IndexedHeap", () => {
  it("pops in order and removes arbitrary items", () => {
    type N = { heapIndex: number; v: number };
    const h = new IndexedHeap<N>((a, b) => a.v < b.v);
    const nodes = [5, 3, 9, 1, 7, 2, 8].map((v) => ({ heapIndex: -1, v }));
    for (const n of nodes) h.push(n);
    h.remove(nodes[3]!); // 1
    h.remove(nodes[6]!); // 8
    const out: number[] = [];
    while (h.size) out.push(h.pop()!.v);
    expect(out).toEqual([2, 3, 5, 7, 9]);
  });
});

describe("ReadyQueue", () => {
  it("orders by priority, then FIFO, across lanes", () => {
    const q = new ReadyQueue();
    const specs: Array<Partial<TaskSpec>> = [
      { id: "n1" },
      { id: "gpu-h", priority: "high", requirements: { capabilities: ["gpu"] } },
      { id: "n2", rateLimitKey: "openai" },
      { id: "c", priority: "critical" },
      { id: "n3" },
    ];
    for (const s of specs) q.enqueue(task(s), 0);
    expect(q.laneCount).toBe(3);
    expect(drain(q)).toEqual(["c", "gpu-h", "n1", "n2", "n3"]);
    expect(q.size).toBe(0);
  });

  it("parks a lane whole without losing its place", () => {
    const q = new ReadyQueue();
    q.enqueue(task({ id: "gpu-1", priority: "high", requirements: { capabilities: ["gpu"] } }), 0);
    q.enqueue(task({ id: "gpu-2", priority: "high", requirements: { capabilities: ["gpu"] } }), 0);
    q.enqueue(task({ id: "cpu-1" }), 0);
    const gpu = q.popLane()!;
    expect(gpu.head!.task.id).toBe("gpu-1");
    q.park(gpu, "worker");
    expect(drain(q)).toEqual(["cpu-1"]);
    q.unparkAll("worker");
    expect(drain(q)).toEqual(["gpu-1", "gpu-2"]);
  });

  it("removes a task from the middle (cancel) and keeps depth by priority", () => {
    const q = new ReadyQueue();
    for (const id of ["a", "b", "c"]) q.enqueue(task({ id, priority: "low" }), 0);
    q.enqueue(task({ id: "h", priority: "high" }), 0);
    expect(Object.fromEntries(q.depthByPriority())).toEqual({ 10: 3, 30: 1 });
    q.remove("b");
    q.remove("h");
    expect(drain(q)).toEqual(["a", "c"]);
  });

  it("ages waiting tasks so background work overtakes newer urgent work", () => {
    const q = new ReadyQueue({ agingIntervalMs: 1_000 });
    q.enqueue(task({ id: "bg", priority: "background" }), 0);
    q.enqueue(task({ id: "crit-early", priority: "critical" }), 30_000);
    q.enqueue(task({ id: "crit-late", priority: "critical" }), 41_000);
    // bg: 0 - 0 = 0; crit-early: 40 - 30 = 10; crit-late: 40 - 41 = -1
    expect(drain(q)).toEqual(["crit-early", "bg", "crit-late"]);
  });

  it("shares fairly between tenants at equal priority by weight", () => {
    const q = new ReadyQueue({ tenantWeights: { quiet: 1, noisy: 1 } });
    for (let i = 0; i < 100; i++) q.enqueue(task({ id: `noisy-${i}`, tenant: "noisy" }), 0);
    for (let i = 0; i < 10; i++) q.enqueue(task({ id: `quiet-${i}`, tenant: "quiet" }), 0);
    const first20 = drain(q).slice(0, 20);
    expect(first20.filter((id) => id.startsWith("quiet")).length).toBe(10);
    const w = new ReadyQueue({ tenantWeights: { a: 3, b: 1 } });
    for (let i = 0; i < 100; i++) {
      w.enqueue(task({ id: `a-${i}`, tenant: "a" }), 0);
      w.enqueue(task({ id: `b-${i}`, tenant: "b" }), 0);
    }
    const first40 = drain(w).slice(0, 40);
    expect(first40.filter((id) => id.startsWith("a")).length).toBe(30);
  });

  it("keeps priority above fairness", () => {
    const q = new ReadyQueue();
    q.enqueue(task({ id: "x-low", tenant: "x", priority: "low" }), 0);
    q.enqueue(task({ id: "y-high-1", tenant: "y", priority: "high" }), 0);
    q.enqueue(task({ id: "y-high-2", tenant: "y", priority: "high" }), 0);
    expect(drain(q)).toEqual(["y-high-1", "y-high-2", "x-low"]);
  });

  // How its cost grows with the backlog is measured by the benchmark (bench/, "enqueue cost
  // as the backlog grows"), side by side with peers, not by a timed unit test.
  it("hands out 100k tasks across priorities, lanes and tenants in priority order", () => {
    const n = 100_000;
    const q = new ReadyQueue({ agingIntervalMs: 5_000 });
    for (let i = 0; i < n; i++) {
      q.enqueue(
        task({ priority: (i * 7) % 10, rateLimitKey: `k${i % 50}`, tenant: `t${i % 3}` }),
        i,
      );
    }
    let taken = 0;
    let maxBand = Number.POSITIVE_INFINITY;
    let outOfOrder = 0;
    for (;;) {
      const lane = q.popLane();
      if (!lane) break;
      const band = lane.head!.band;
      if (band > maxBand) outOfOrder++;
      maxBand = band;
      q.take(lane);
      taken++;
    }
    expect(taken).toBe(n);
    expect(outOfOrder).toBe(0);
  }, 60_000);
});

describe("lane signature", () => {
  it("is the same for tasks with the same constraints in any order", () => {
    const a = task({
      requirements: { capabilities: ["a", "b"], labels: { x: "1", y: "2" } },
      rateLimitKey: ["k2", "k1"],
    });
    const b = task({
      requirements: { capabilities: ["b", "a"], labels: { y: "2", x: "1" } },
      rateLimitKey: ["k1", "k2"],
    });
    expect(laneSignature(a)).toBe(laneSignature(b));
    expect(laneSignature(a)).not.toBe(
      laneSignature(task({ ...{ requirements: { capabilities: ["a"] } } })),
    );
  });
});

describe("backoff and delays", () => {
  it("grows exponentially, caps, and jitters downwards", () => {
    const p = { maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 1_000, factor: 2, jitter: 0.5 };
    expect([1, 2, 3, 4, 5].map((n) => backoffDelay(p, n, () => 0))).toEqual([
      100, 200, 400, 800, 1000,
    ]);
    expect(backoffDelay(p, 2, () => 1)).toBe(100);
    expect(backoffDelay(p, 2, () => 0.5)).toBe(150);
  });

  it("releases delayed values in time order", () => {
    const d = new DelayQueue<string>();
    d.add("b", 200);
    d.add("a", 100);
    d.add("c", 300);
    d.remove("c");
    expect(d.nextAt()).toBe(100);
    expect(d.takeDue(250)).toEqual(["a", "b"]);
    expect(d.size).toBe(0);
  });

  it("validates fair-share weights", () => {
    expect(() => new FairShare({ weights: { a: 0 } })).toThrow(/weights.a/);
  });
});

describe("FairShare.setWeights", () => {
  it("replaces every weight; tenants not named go back to the default", () => {
    const fair = new FairShare({ weights: { acme: 3, beta: 2 } });
    fair.setWeights({ beta: 4 });
    expect(fair.weight("acme")).toBe(1);
    expect(fair.weight("beta")).toBe(4);
    fair.activate("beta");
    fair.charge("beta");
    expect(fair.vt("beta")).toBeCloseTo(0.25);
  });

  it("changes nothing when a weight is bad", () => {
    const fair = new FairShare({ weights: { acme: 3 } });
    expect(() => fair.setWeights({ beta: 2, acme: 0 })).toThrow(
      /weights\.acme: expected a finite number > 0/,
    );
    expect(fair.weight("acme")).toBe(3);
    expect(fair.weight("beta")).toBe(1);
  });
});
