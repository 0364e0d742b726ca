import {
  BaseWorker,
  type ExecutionContext,
  FunctionWorker,
  type HealthReport,
  type Worker,
  type WorkerResult,
  type WorkerTask,
} from "@flotilla/core";
import { describe, expect, it } from "vitest";
import { describeWorkerConformance } from "./vitest/index.js";
import {
  checkWorkerConformance,
  WORKER_CHECK_NAMES,
  workerConformanceChecks,
} from "./worker-conformance.js";

const fast = { healthTimeoutMs: 200, abortWithinMs: 200, callTimeoutMs: 500 };

// The suite as a worker author runs it, against FunctionWorker...
describeWorkerConformance(
  "FunctionWorker",
  () => new FunctionWorker({ taskTypes: ["double"], fn: async (p: { n: number }) => p.n * 2 }),
  { ...fast, task: { payload: { n: 2 } } },
);

/** A well-behaved custom worker: sleeps `payload.ms`, watching its signal. */
class SleepWorker extends BaseWorker {
  readonly kind = "sleep";
  constructor() {
    super({ taskTypes: ["sleep"], maxConcurrency: 2 }, "sleep");
  }
  execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult> {
    const { ms } = (task.payload ?? {}) as { ms?: number };
    if (typeof ms !== "number") return Promise.reject(new TypeError("payload.ms must be a number"));
    return new Promise((resolve, reject) => {
      if (ctx.signal.aborted) return reject(ctx.signal.reason);
      const t = setTimeout(() => resolve({ output: ms }), ms);
      ctx.signal.addEventListener("abort", () => {
        clearTimeout(t);
        reject(ctx.signal.reason);
      });
    });
  }
}

// ... and against a custom BaseWorker subclass, with a task slow enough to be aborted mid-run.
describeWorkerConformance("SleepWorker", () => new SleepWorker(), {
  ...fast,
  task: { payload: { ms: 1 } },
  slowTask: { payload: { ms: 5_000 } },
  failingTask: { payload: { ms: "soon" } },
});

/** Breaks every rule the suite checks. */
class BrokenWorker implements Worker {
  readonly id = "";
  readonly kind = "broken";
  readonly taskTypes: string[] = ["broken"];
  readonly maxConcurrency = 0;
  #started = false;
  async start() {
    if (this.#started) throw new Error("already started");
    this.#started = true;
  }
  async stop() {
    if (!this.#started) throw "not started";
    this.#started = false;
  }
  execute(task: WorkerTask): Promise<WorkerResult> {
    if (task.payload === undefined) throw "no payload"; // synchronous, and not an Error
    // Ignores its signal and answers with a malformed result.
    return new Promise((resolve) =>
      setTimeout(() => resolve({ result: 1 } as unknown as WorkerResult), 250),
    );
  }
  healthCheck(): Promise<HealthReport> {
    return new Promise(() => {}); // never answers
  }
}

describe("the worker conformance checks", () => {
  it("find nothing wrong with FunctionWorker", async () => {
    const findings = await checkWorkerConformance(
      () => new FunctionWorker({ taskTypes: ["double"], fn: async (p: { n: number }) => p.n * 2 }),
      { ...fast, task: { payload: { n: 2 } } },
    );
    expect(findings).toEqual([]);
  });

  it("catch every rule a broken worker breaks", async () => {
    const findings = await checkWorkerConformance(() => new BrokenWorker(), {
      ...fast,
      callTimeoutMs: 400,
      abortWithinMs: 100,
      healthTimeoutMs: 100,
    });
    const by = (name: string) => findings.filter((f) => f.check === name).map((f) => f.problem);
    for (const name of WORKER_CHECK_NAMES) expect(by(name), name).not.toEqual([]);
    expect(by("declared-fields").join("\n")).toMatch(/worker\.id: expected a non-empty string/);
    expect(by("declared-fields").join("\n")).toMatch(
      /worker\.maxConcurrency: expected an integer >= 1/,
    );
    expect(by("start-stop")).toEqual(
      expect.arrayContaining([
        'stop() before start() rejected with the string "not started"',
        "second start() rejected with Error: already started",
      ]),
    );
    expect(by("health-check")).toContain("healthCheck() did not answer within 100 ms");
    expect(by("abort")).toEqual(
      expect.arrayContaining([
        "execute() with an already aborted signal did not settle within 100 ms",
        expect.stringMatching(/did not settle within 100 ms after its signal aborted/),
      ]),
    );
    expect(by("errors-typed")).toEqual(
      expect.arrayContaining([
        expect.stringMatching(
          /execute\(task\): worker returned a malformed result: result\.output: missing/,
        ),
        expect.stringMatching(/threw synchronously \(the string "no payload"\)/),
      ]),
    );
  });

  it("report a worker that resolves after abort, and one whose factory throws", async () => {
    const ignoresAbort = () =>
      new FunctionWorker({ taskTypes: ["x"], fn: async () => 1 }) as Worker;
    const resolvesAnyway: Worker = {
      ...ignoresAbort(),
      id: "late",
      kind: "late",
      taskTypes: ["x"],
      maxConcurrency: 1,
      execute: () => new Promise((r) => setTimeout(() => r({ output: 1 }), 40)),
    };
    const abortCheck = workerConformanceChecks.find((c) => c.name === "abort")!;
    const problems = await abortCheck.run(() => resolvesAnyway, {
      abortAfterMs: 10,
      abortWithinMs: 200,
    });
    expect(problems).toEqual([
      "execute() resolved although its signal was already aborted; it must reject",
      "execute() resolved after its signal aborted; it must reject",
    ]);
    const findings = await checkWorkerConformance(() => {
      throw new Error("no config");
    });
    expect(findings.map((f) => f.check)).toEqual([...WORKER_CHECK_NAMES]);
    expect(findings[0]!.problem).toBe("makeWorker() threw Error: no config");
  });

  it("skip what the options say", async () => {
    const findings = await checkWorkerConformance(() => new BrokenWorker(), {
      ...fast,
      healthTimeoutMs: 50,
      skip: ["abort", "errors-typed", "start-stop", "declared-fields"],
    });
    expect(new Set(findings.map((f) => f.check))).toEqual(new Set(["health-check"]));
  });
});
