import { describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import { silentLogger } from "../logger.js";
import { WorkerRegistry } from "../registry/registry.js";
import { FakeClock } from "../testing/index.js";
import { BaseWorker, FunctionWorker } from "./base.js";
import type { ExecutionContext, WorkerResult, WorkerTask } from "./types.js";
import { parseHealthReport, parseWorkerResult, validateWorker } from "./validate.js";

function ctx(signal = new AbortController().signal): ExecutionContext {
  return {
    signal,
    progress: () => {},
    reportUsage: () => {},
    logger: silentLogger,
    clock: new FakeClock(),
  };
}
const task = (payload: unknown = { n: 2 }): WorkerTask => ({
  id: "t1",
  type: "double",
  payload,
  priority: 20,
  attempt: 1,
  metadata: {},
  dependencies: {},
  inputs: {},
});

describe("FunctionWorker", () => {
  it("wraps a function: output is its return value; documented defaults apply", async () => {
    const worker = new FunctionWorker({
      taskTypes: ["double"],
      fn: async (p: { n: number }) => p.n * 2,
    });
    expect(await worker.execute(task(), ctx())).toEqual({ output: 4 });
    expect(worker.kind).toBe("function");
    expect(worker.id).toMatch(/^function-[0-9a-f]{8}$/);
    expect(worker.name).toBe(worker.id);
    expect(worker.maxConcurrency).toBe(1);
    expect(worker.capabilities).toEqual([]);
    expect(worker.labels).toEqual({});
    expect(worker.local).toBe(true);
    expect(new FunctionWorker({ taskTypes: ["x"], fn: () => 1 }).id).not.toBe(worker.id);
  });

  it("passes payload, context and task; accepts a synchronous function", async () => {
    let seen: unknown[] = [];
    const c = ctx();
    const worker = new FunctionWorker({
      id: "sync",
      name: "client-acme-1",
      taskTypes: ["*"],
      maxConcurrency: 3,
      capabilities: ["tools"],
      labels: { region: "eu" },
      fn: (payload, context, t) => {
        seen = [payload, context, t.id];
        return "done";
      },
    });
    expect(await worker.execute(task("p"), c)).toEqual({ output: "done" });
    expect(seen).toEqual(["p", c, "t1"]);
    expect(worker).toMatchObject({ id: "sync", name: "client-acme-1", maxConcurrency: 3 });
    expect(() => validateWorker(worker)).not.toThrow();
  });

  it("rejects with the thrown Error; non-Error throws become WORKER_ERROR", async () => {
    const boom = new TypeError("bad");
    const thrower = new FunctionWorker({
      taskTypes: ["x"],
      fn: () => {
        throw boom;
      },
    });
    await expect(thrower.execute(task(), ctx())).rejects.toBe(boom);
    const stringly = new FunctionWorker({
      taskTypes: ["x"],
      fn: async () => {
        throw "nope";
      },
    });
    await expect(stringly.execute(task(), ctx())).rejects.toMatchObject({
      code: "WORKER_ERROR",
      message: "nope",
    });
  });

  it("rejects at once when aborted, even if the function ignores the signal", async () => {
    const worker = new FunctionWorker({ taskTypes: ["x"], fn: () => new Promise(() => {}) });
    const controller = new AbortController();
    const run = worker.execute(task(), ctx(controller.signal));
    const reason = new FlotillaError("TIMEOUT", "task timed out");
    controller.abort(reason);
    await expect(run).rejects.toBe(reason);

    const pre = new AbortController();
    pre.abort();
    let called = false;
    const lazy = new FunctionWorker({
      taskTypes: ["x"],
      fn: () => {
        called = true;
      },
    });
    await expect(lazy.execute(task(), ctx(pre.signal))).rejects.toBeInstanceOf(Error);
    expect(called).toBe(false);

    const stringReason = new AbortController();
    stringReason.abort("user asked");
    await expect(lazy.execute(task(), ctx(stringReason.signal))).rejects.toMatchObject({
      code: "CANCELLED",
      message: "user asked",
    });
  });

  it("validates options, naming the field", () => {
    const fn = () => 1;
    expect(() => new FunctionWorker({ taskTypes: [], fn })).toThrow(
      /options\.taskTypes: expected at least one task type/,
    );
    expect(() => new FunctionWorker({ taskTypes: ["x"], maxConcurrency: 0, fn })).toThrow(
      /options\.maxConcurrency: expected an integer >= 1/,
    );
    expect(() => new FunctionWorker({ taskTypes: ["x"], maxConcurrency: 1.5, fn })).toThrow(
      /options\.maxConcurrency/,
    );
    expect(() => new FunctionWorker({ id: "", taskTypes: ["x"], fn })).toThrow(/options\.id/);
    expect(() => new FunctionWorker({ taskTypes: [""], fn })).toThrow(/options\.taskTypes\[0\]/);
    expect(
      () => new FunctionWorker({ taskTypes: ["x"], labels: { a: 1 as unknown as string }, fn }),
    ).toThrow(/options\.labels\.a/);
    expect(() => new FunctionWorker({ taskTypes: ["x"] } as never)).toThrow(/options\.fn/);
    expect(() => new FunctionWorker({ taskTypes: ["x"], fn })).not.toThrow();
    try {
      new FunctionWorker({ taskTypes: ["x"], maxConcurrency: -1, fn });
    } catch (err) {
      expect(err).toBeInstanceOf(FlotillaError);
      expect((err as FlotillaError).code).toBe("VALIDATION");
    }
  });
});

describe("BaseWorker", () => {
  class Counting extends BaseWorker {
    readonly kind = "counting";
    starts = 0;
    stops = 0;
    failStart = false;
    constructor() {
      super({ taskTypes: ["count"] }, "counting");
    }
    protected override async onStart() {
      await Promise.resolve();
      if (this.failStart) throw new Error("cannot start");
      this.starts++;
    }
    protected override async onStop() {
      this.stops++;
    }
    async execute(): Promise<WorkerResult> {
      return { output: this.starts };
    }
  }

  it("makes start and stop idempotent, even when called concurrently, and restartable", async () => {
    const w = new Counting();
    expect(w.id).toMatch(/^counting-/);
    await w.stop(); // stop before start: nothing to undo
    expect(w.stops).toBe(0);
    await Promise.all([w.start(), w.start()]);
    await w.start();
    expect(w.starts).toBe(1);
    expect(w.running).toBe(true);
    await Promise.all([w.stop(), w.stop()]);
    expect(w.stops).toBe(1);
    expect(w.running).toBe(false);
    await w.start();
    expect(w.starts).toBe(2);
  });

  it("reports healthy by default and unhealthy once stopped", async () => {
    const w = new Counting();
    const signal = new AbortController().signal;
    expect(await w.healthCheck(signal)).toEqual({ status: "healthy" });
    await w.start();
    await w.stop();
    expect(await w.healthCheck(signal)).toMatchObject({ status: "unhealthy" });
  });

  it("a failed start rejects, and a later start tries again", async () => {
    const w = new Counting();
    w.failStart = true;
    await expect(w.start()).rejects.toThrow("cannot start");
    expect(w.running).toBe(false);
    w.failStart = false;
    await w.start();
    expect(w.running).toBe(true);
  });
});

describe("parseWorkerResult", () => {
  it("accepts { output } with optional usage and raw", () => {
    expect(parseWorkerResult({ output: null })).toEqual({ output: null });
    expect(parseWorkerResult({ output: undefined })).toEqual({ output: undefined });
    expect(
      parseWorkerResult({ output: "hi", usage: { inputTokens: 3, costUsd: 0.01 }, raw: { id: 1 } }),
    ).toEqual({ output: "hi", usage: { inputTokens: 3, costUsd: 0.01 }, raw: { id: 1 } });
  });

  it("throws WORKER_ERROR naming what is wrong", () => {
    const cases: [unknown, RegExp][] = [
      [undefined, /expected an object with an `output` field, got undefined/],
      ["text", /got string/],
      [[1], /got an array/],
      [{ result: 1 }, /result\.output: missing/],
      [{ output: 1, usage: { inputTokens: -1 } }, /result\.usage\.inputTokens/],
      [{ output: 1, usage: "lots" }, /result\.usage/],
    ];
    for (const [value, message] of cases) {
      let caught: unknown;
      try {
        parseWorkerResult(value);
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(FlotillaError);
      expect((caught as FlotillaError).code).toBe("WORKER_ERROR");
      expect((caught as FlotillaError).message).toMatch(message);
    }
  });
});

describe("validateWorker", () => {
  const ok = {
    id: "w",
    kind: "k",
    taskTypes: ["t"],
    maxConcurrency: 1,
    execute: async () => ({ output: 1 }),
  };

  it("accepts a valid plain object and a class instance", () => {
    expect(() => validateWorker(ok)).not.toThrow();
    expect(() =>
      validateWorker(new FunctionWorker({ taskTypes: ["x"], fn: () => 1 })),
    ).not.toThrow();
  });

  it("throws VALIDATION naming each wrong field", () => {
    const cases: [unknown, RegExp][] = [
      [null, /worker: expected an object/],
      [{ ...ok, id: "" }, /worker\.id: expected a non-empty string/],
      [{ ...ok, id: 7 }, /worker\.id/],
      [{ ...ok, kind: undefined }, /worker\.kind/],
      [{ ...ok, taskTypes: [] }, /worker\.taskTypes: expected at least one task type/],
      [{ ...ok, maxConcurrency: 0 }, /worker\.maxConcurrency: expected an integer >= 1/],
      [{ ...ok, maxConcurrency: 2.5 }, /worker\.maxConcurrency/],
      [{ ...ok, maxConcurrency: Number.POSITIVE_INFINITY }, /worker\.maxConcurrency/],
      [{ ...ok, capabilities: "gpu" }, /worker\.capabilities/],
      [{ ...ok, labels: { a: 1 } }, /worker\.labels\.a/],
      [{ ...ok, execute: undefined }, /worker\.execute: expected a function/],
      [{ ...ok, healthCheck: true }, /worker\.healthCheck/],
    ];
    for (const [value, message] of cases) {
      expect(() => validateWorker(value)).toThrow(message);
      expect(() => validateWorker(value)).toThrow(expect.objectContaining({ code: "VALIDATION" }));
    }
  });
});

describe("parseHealthReport", () => {
  it("accepts the three statuses and rejects others with WORKER_ERROR", () => {
    expect(parseHealthReport({ status: "degraded", message: "slow" })).toEqual({
      status: "degraded",
      message: "slow",
    });
    expect(() => parseHealthReport({ status: "ok" })).toThrow(/report\.status/);
    expect(() => parseHealthReport(undefined)).toThrow(
      expect.objectContaining({ code: "WORKER_ERROR" }),
    );
  });
});

describe("FunctionWorker health check", () => {
  it("uses the healthCheck of its options, and the registry acts on it", async () => {
    const clock = new FakeClock();
    let up = false;
    const worker = new FunctionWorker({
      id: "probe",
      taskTypes: ["t"],
      fn: async () => 1,
      healthCheck: async () =>
        up ? { status: "healthy" } : { status: "unhealthy", message: "down" },
    });
    expect(await worker.healthCheck(new AbortController().signal)).toEqual({
      status: "unhealthy",
      message: "down",
    });
    const registry = new WorkerRegistry({ clock, health: { unhealthyAfter: 1, degradedAfter: 1 } });
    registry.add(worker);
    await registry.checkNow("probe");
    expect(registry.get("probe")?.health).toBe("unhealthy");
    up = true;
    await registry.checkNow("probe");
    await registry.checkNow("probe"); // recoverAfter: 2 good checks
    expect(registry.get("probe")?.health).toBe("healthy");
    expect(
      () => new FunctionWorker({ taskTypes: ["t"], fn: async () => 1, healthCheck: 5 as never }),
    ).toThrow("options.healthCheck: expected a function");
    const plain = new FunctionWorker({ taskTypes: ["t"], fn: async () => 1 });
    expect(await plain.healthCheck(new AbortController().signal)).toEqual({ status: "healthy" });
  });
});
