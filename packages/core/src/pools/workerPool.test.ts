import { describe, expect, it } from "vitest";
import { FakeClock } from "../testing/index.js";
import type { ExecutionContext, Worker } from "../worker/types.js";
import { type PoolHost, type QueueReading, WorkerPool } from "./workerPool.js";

function fakeHost() {
  const registered = new Map<string, Worker>();
  const removed: { id: string; drain: boolean }[] = [];
  const reading: QueueReading = { depth: 0, oldestWaitMs: 0 };
  const host: PoolHost = {
    registerWorker: (w) => void registered.set(w.id, w),
    unregisterWorker: (id, { drain }) => {
      registered.delete(id);
      removed.push({ id, drain });
    },
    queueReading: () => reading,
  };
  return { host, registered, removed, reading };
}

/** Advances in one-second steps, letting each evaluation finish and re-arm its timer. */
async function seconds(clock: FakeClock, n: number) {
  for (let i = 0; i < n; i++) {
    await clock.advance(1000);
  }
}

function factory(i: number): Worker {
  return {
    id: `w${i}`,
    kind: "test",
    taskTypes: ["job"],
    maxConcurrency: 1,
    execute: async (task) => {
      await (task.payload as Promise<void>);
      return { output: null };
    },
  };
}

describe("WorkerPool", () => {
  it("grows on queue depth and oldest wait, respecting max and the cooldown", async () => {
    const clock = new FakeClock({ now: 0 });
    const { host, registered, reading } = fakeHost();
    const pool = new WorkerPool({
      clock,
      factory,
      min: 1,
      max: 3,
      cooldownUpMs: 5000,
      intervalMs: 1000,
    });
    const sizes: number[] = [];
    pool.on("scale", (e) => sizes.push(e.size));
    await pool.start(host);
    expect([...registered.keys()]).toEqual(["w0"]);
    expect(registered.get("w0")?.labels).toEqual({ pool: "pool" });

    reading.depth = 5;
    await clock.advance(1000);
    expect(pool.size).toBe(2);
    await clock.advance(1000); // within the cooldown
    expect(pool.size).toBe(2);
    await seconds(clock, 3);
    expect(pool.size).toBe(2);
    await seconds(clock, 1); // 5 s after the first step
    expect(pool.size).toBe(3);
    await seconds(clock, 10); // at max
    expect(pool.size).toBe(3);
    expect(sizes).toEqual([1, 2, 3]);

    // The oldest wait alone triggers growth too.
    const p2 = new WorkerPool({
      clock,
      factory,
      max: 2,
      scaleUpQueueDepth: 10,
      scaleUpWaitMs: 3000,
      cooldownUpMs: 0,
    });
    const h2 = fakeHost();
    await p2.start(h2.host);
    h2.reading.depth = 1;
    h2.reading.oldestWaitMs = 2999;
    expect(await p2.evaluate()).toBe("up"); // size 0: any queued task
    expect(await p2.evaluate()).toBe(undefined); // 1 ≤ 1 × 10 and wait below 3 s
    h2.reading.oldestWaitMs = 3000;
    expect(await p2.evaluate()).toBe("up");
    expect(p2.size).toBe(2);
    await pool.stop();
    await p2.stop();
    expect(clock.pendingTimers).toBe(0);
  });

  it("shrinks idle workers down to min after the cooldown, draining them", async () => {
    const clock = new FakeClock({ now: 0 });
    const { host, registered, removed, reading } = fakeHost();
    const pool = new WorkerPool({
      clock,
      factory,
      min: 1,
      max: 3,
      cooldownUpMs: 0,
      cooldownDownMs: 30_000,
      scaleDownIdleMs: 60_000,
      intervalMs: 1000,
    });
    await pool.start(host);
    reading.depth = 10;
    await pool.evaluate();
    await pool.evaluate();
    expect(pool.size).toBe(3);
    reading.depth = 0;

    // w1 is busy with a long task; the others idle.
    let finish!: () => void;
    const running = registered.get("w1")!.execute(
      {
        id: "t",
        type: "job",
        payload: new Promise<void>((r) => (finish = r)),
        priority: 0,
        attempt: 1,
        metadata: {},
        dependencies: {},
        inputs: {},
      },
      {} as ExecutionContext,
    );
    await seconds(clock, 59);
    expect(pool.size).toBe(3);
    await seconds(clock, 1); // w0 and w2 idle 60 s
    expect(pool.size).toBe(2);
    expect(removed).toEqual([{ id: "w0", drain: true }]);
    await seconds(clock, 29); // down cooldown
    expect(pool.size).toBe(2);
    await seconds(clock, 1);
    expect(removed.map((r) => r.id)).toEqual(["w0", "w2"]);
    await seconds(clock, 120); // at min; w1 is busy anyway
    expect(pool.workerIds()).toEqual(["w1"]);
    finish();
    await running;
    await pool.stop({ drain: false });
    expect(removed.at(-1)).toEqual({ id: "w1", drain: false });
  });

  it("keeps going when the factory fails, and validates its options", async () => {
    const clock = new FakeClock({ now: 0 });
    const { host, reading } = fakeHost();
    let fail = true;
    const errors: unknown[] = [];
    const pool = new WorkerPool({
      clock,
      max: 2,
      cooldownUpMs: 0,
      factory: (i) => {
        if (fail) throw new Error("no capacity");
        return factory(i);
      },
    });
    pool.on("error", (e) => errors.push(e));
    await pool.start(host);
    reading.depth = 1;
    expect(await pool.evaluate()).toBe(undefined);
    expect(errors).toHaveLength(1);
    fail = false;
    expect(await pool.evaluate()).toBe("up");
    await pool.stop();
    expect(() => new WorkerPool({ factory, min: 3, max: 2 })).toThrow(
      /pool.min: min must not exceed max/,
    );
    expect(() => new WorkerPool({ factory, max: 0 })).toThrow(/pool.max/);
  });
});
