import {
  type ExecutionContext,
  parseHealthReport,
  parseWorkerResult,
  silentLogger,
  systemClock,
  validateWorker,
  type Worker,
  type WorkerTask,
} from "@flotilla/core";

/**
 * Names of the checks of the worker conformance suite.
 *
 * @example
 * ```ts
 * const skip: WorkerCheckName[] = ["abort"];
 * const findings = await checkWorkerConformance(makeWorker, { skip });
 * ```
 */
export const WORKER_CHECK_NAMES = [
  "declared-fields",
  "start-stop",
  "health-check",
  "abort",
  "errors-typed",
] as const;

/** One of {@link WORKER_CHECK_NAMES}. */
export type WorkerCheckName = (typeof WORKER_CHECK_NAMES)[number];

/** Builds a fresh worker for one check. Every check makes its own and stops it afterwards. */
export type MakeWorker = () => Worker | Promise<Worker>;

/** Options of the worker conformance suite. */
export interface WorkerConformanceOptions {
  /**
   * A task the worker can run successfully (only the fields you give are overridden).
   * @default `{ type: <first task type, or "custom" for "*">, payload: {} }`
   */
  task?: Partial<WorkerTask>;
  /**
   * A task that runs long enough to be aborted while running.
   * @default `task`
   */
  slowTask?: Partial<WorkerTask>;
  /**
   * A task the worker must fail (with an `Error`). Without it, the suite sends a task with
   * an `undefined` payload, which the worker may run or fail, but must fail with an `Error`.
   */
  failingTask?: Partial<WorkerTask>;
  /** Time a health check has to answer. @default 5_000 */
  healthTimeoutMs?: number;
  /** Time `execute` has to settle after its signal aborts. @default 1_000 */
  abortWithinMs?: number;
  /** Delay before aborting a running execution. @default 20 */
  abortAfterMs?: number;
  /** Time one `execute`, `start` or `stop` may take. @default 10_000 */
  callTimeoutMs?: number;
  /** Checks not to run (for instance `["abort"]` for a worker that truly cannot be interrupted). */
  skip?: readonly WorkerCheckName[];
}

/** A problem the suite found. */
export interface ConformanceFinding {
  check: WorkerCheckName;
  problem: string;
}

/** One check of the suite: resolves to the problems it found (empty when the worker conforms). */
export interface WorkerCheck {
  name: WorkerCheckName;
  title: string;
  run(makeWorker: MakeWorker, options?: WorkerConformanceOptions): Promise<string[]>;
}

type Settled<T> =
  | { state: "resolved"; value: T; ms: number }
  | { state: "rejected"; error: unknown; ms: number }
  | { state: "pending"; ms: number };

/** Runs `call` (catching synchronous throws) and waits at most `ms` for it to settle. */
async function settle<T>(call: () => Promise<T> | T, ms: number): Promise<Settled<T>> {
  const started = performance.now();
  const elapsed = () => Math.round(performance.now() - started);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<Settled<T>>((resolve) => {
    timer = setTimeout(() => resolve({ state: "pending", ms: elapsed() }), ms);
  });
  const run = (async () => call())().then(
    (value): Settled<T> => ({ state: "resolved", value, ms: elapsed() }),
    (error: unknown): Settled<T> => ({ state: "rejected", error, ms: elapsed() }),
  );
  try {
    return await Promise.race([run, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function describeValue(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  if (value === null) return "null";
  if (typeof value === "string") return `the string ${JSON.stringify(value)}`;
  if (typeof value === "object") return "a non-Error object";
  return `${typeof value} ${String(value)}`;
}

const defaults = (options: WorkerConformanceOptions = {}) => ({
  healthTimeoutMs: options.healthTimeoutMs ?? 5_000,
  abortWithinMs: options.abortWithinMs ?? 1_000,
  abortAfterMs: options.abortAfterMs ?? 20,
  callTimeoutMs: options.callTimeoutMs ?? 10_000,
});

function makeTask(worker: Worker, partial: Partial<WorkerTask> | undefined): WorkerTask {
  const first = Array.isArray(worker.taskTypes) ? worker.taskTypes[0] : undefined;
  return {
    id: `conformance-${Math.random().toString(36).slice(2, 10)}`,
    type: first === undefined || first === "*" ? "custom" : first,
    payload: {},
    priority: 20,
    attempt: 1,
    metadata: {},
    dependencies: {},
    inputs: {},
    ...partial,
  };
}

function makeContext(signal: AbortSignal): ExecutionContext {
  return {
    signal,
    progress: () => {},
    reportUsage: () => {},
    logger: silentLogger,
    clock: systemClock,
  };
}

/** Builds a worker, starts it, runs `body`, and stops it, reporting problems on the way. */
async function withWorker(
  makeWorker: MakeWorker,
  options: WorkerConformanceOptions | undefined,
  problems: string[],
  body: (worker: Worker) => Promise<void>,
): Promise<string[]> {
  const { callTimeoutMs } = defaults(options);
  let worker: Worker;
  try {
    worker = await makeWorker();
  } catch (err) {
    problems.push(`makeWorker() threw ${describeValue(err)}`);
    return problems;
  }
  if (typeof worker?.start === "function") {
    const started = await settle(() => worker.start!(), callTimeoutMs);
    if (started.state !== "resolved") {
      problems.push(
        started.state === "pending"
          ? `start() did not settle within ${callTimeoutMs} ms`
          : `start() rejected with ${describeValue(started.error)}`,
      );
      return problems;
    }
  }
  try {
    await body(worker);
  } finally {
    if (typeof worker?.stop === "function") await settle(() => worker.stop!(), callTimeoutMs);
  }
  return problems;
}

const declaredFields: WorkerCheck = {
  name: "declared-fields",
  title: "declares valid fields (id, kind, taskTypes, maxConcurrency, execute, ...)",
  async run(makeWorker) {
    const problems: string[] = [];
    let worker: Worker;
    try {
      worker = await makeWorker();
    } catch (err) {
      return [`makeWorker() threw ${describeValue(err)}`];
    }
    try {
      validateWorker(worker);
    } catch (err) {
      problems.push((err as Error).message);
    }
    return problems;
  },
};

const startStop: WorkerCheck = {
  name: "start-stop",
  title: "start() and stop() are idempotent",
  async run(makeWorker, options) {
    const { callTimeoutMs } = defaults(options);
    const problems: string[] = [];
    let worker: Worker;
    try {
      worker = await makeWorker();
    } catch (err) {
      return [`makeWorker() threw ${describeValue(err)}`];
    }
    const call = async (label: string, fn: (() => Promise<void>) | undefined) => {
      if (fn === undefined) return;
      const r = await settle(fn, callTimeoutMs);
      if (r.state === "pending")
        problems.push(`${label} did not settle within ${callTimeoutMs} ms`);
      if (r.state === "rejected") problems.push(`${label} rejected with ${describeValue(r.error)}`);
    };
    const start = worker.start ? () => worker.start!() : undefined;
    const stop = worker.stop ? () => worker.stop!() : undefined;
    await call("stop() before start()", stop);
    await call("first start()", start);
    await call("second start()", start);
    await call(
      "concurrent start()",
      start && (async () => void (await Promise.all([start(), start()]))),
    );
    await call("first stop()", stop);
    await call("second stop()", stop);
    await call("start() after stop()", start);
    await call("final stop()", stop);
    return problems;
  },
};

const healthCheck: WorkerCheck = {
  name: "health-check",
  title: "healthCheck() answers with a valid report within the timeout",
  async run(makeWorker, options) {
    const { healthTimeoutMs } = defaults(options);
    const problems: string[] = [];
    return withWorker(makeWorker, options, problems, async (worker) => {
      if (worker.healthCheck === undefined) return; // the registry treats it as healthy
      const r = await settle(
        () => worker.healthCheck!(new AbortController().signal),
        healthTimeoutMs,
      );
      if (r.state === "pending") {
        problems.push(`healthCheck() did not answer within ${healthTimeoutMs} ms`);
      } else if (r.state === "rejected") {
        problems.push(
          `healthCheck() rejected with ${describeValue(r.error)}; answer { status: "unhealthy", message } instead`,
        );
      } else {
        try {
          parseHealthReport(r.value);
        } catch (err) {
          problems.push((err as Error).message);
        }
      }
      const aborted = new AbortController();
      aborted.abort(new Error("health check timed out"));
      const a = await settle(() => worker.healthCheck!(aborted.signal), healthTimeoutMs);
      if (a.state === "pending") {
        problems.push(
          `healthCheck() with an aborted signal did not settle within ${healthTimeoutMs} ms`,
        );
      }
    });
  },
};

const abort: WorkerCheck = {
  name: "abort",
  title: "execute() honours abort: rejects promptly when its signal aborts",
  async run(makeWorker, options) {
    const { abortWithinMs, abortAfterMs } = defaults(options);
    const problems: string[] = [];
    return withWorker(makeWorker, options, problems, async (worker) => {
      const pre = new AbortController();
      pre.abort(new Error("cancelled before start"));
      const r = await settle(
        () => worker.execute(makeTask(worker, options?.task), makeContext(pre.signal)),
        abortWithinMs,
      );
      if (r.state === "pending") {
        problems.push(
          `execute() with an already aborted signal did not settle within ${abortWithinMs} ms`,
        );
      } else if (r.state === "resolved") {
        problems.push("execute() resolved although its signal was already aborted; it must reject");
      } else if (!(r.error instanceof Error)) {
        problems.push(
          `execute() rejected an aborted run with ${describeValue(r.error)}, not an Error`,
        );
      }

      const controller = new AbortController();
      let settledAfterAbort = false;
      const running = settle(
        () =>
          Promise.resolve(
            worker.execute(
              makeTask(worker, options?.slowTask ?? options?.task),
              makeContext(controller.signal),
            ),
          ).finally(() => {
            settledAfterAbort = controller.signal.aborted;
          }),
        abortAfterMs + abortWithinMs,
      );
      await new Promise((resolve) => setTimeout(resolve, abortAfterMs));
      controller.abort(new Error("cancelled while running"));
      const m = await running;
      if (m.state === "pending") {
        problems.push(
          `execute() did not settle within ${abortWithinMs} ms after its signal aborted (abort at ${abortAfterMs} ms)`,
        );
      } else if (m.state === "rejected" && !(m.error instanceof Error)) {
        problems.push(
          `execute() rejected an aborted run with ${describeValue(m.error)}, not an Error`,
        );
      } else if (m.state === "resolved" && settledAfterAbort) {
        problems.push("execute() resolved after its signal aborted; it must reject");
      }
    });
  },
};

const errorsTyped: WorkerCheck = {
  name: "errors-typed",
  title: "errors are typed: results match WorkerResult, failures are Error instances",
  async run(makeWorker, options) {
    const { callTimeoutMs } = defaults(options);
    const problems: string[] = [];
    return withWorker(makeWorker, options, problems, async (worker) => {
      const exec = async (label: string, partial: Partial<WorkerTask> | undefined) => {
        const signal = new AbortController().signal;
        const task = makeTask(worker, partial);
        let returned: unknown;
        try {
          returned = worker.execute(task, makeContext(signal));
        } catch (err) {
          problems.push(
            `execute(${label}) threw synchronously (${describeValue(err)}); return a rejected promise`,
          );
          return undefined;
        }
        if (typeof (returned as Promise<unknown> | undefined)?.then !== "function") {
          problems.push(`execute(${label}) did not return a promise`);
          return undefined;
        }
        const r = await settle(() => returned as Promise<unknown>, callTimeoutMs);
        if (r.state === "pending") {
          problems.push(`execute(${label}) did not settle within ${callTimeoutMs} ms`);
        } else if (r.state === "rejected" && !(r.error instanceof Error)) {
          problems.push(`execute(${label}) rejected with ${describeValue(r.error)}, not an Error`);
        } else if (r.state === "resolved") {
          try {
            parseWorkerResult(r.value);
          } catch (err) {
            problems.push(`execute(${label}): ${(err as Error).message}`);
          }
        }
        return r;
      };

      const ok = await exec("task", options?.task);
      if (ok?.state === "rejected" && ok.error instanceof Error) {
        problems.push(
          `execute(task) failed with ${describeValue(ok.error)}; pass options.task with a task this worker can run`,
        );
      }
      if (options?.failingTask !== undefined) {
        const failed = await exec("failingTask", options.failingTask);
        if (failed?.state === "resolved")
          problems.push("execute(failingTask) resolved; it must reject");
      } else {
        await exec("a task with an undefined payload", { ...options?.task, payload: undefined });
      }
    });
  },
};

/**
 * The checks of the worker conformance suite, runnable as plain functions: each resolves to
 * the list of problems it found, so a test can assert that a deliberately broken worker
 * fails them.
 *
 * @example
 * ```ts
 * for (const check of workerConformanceChecks) {
 *   console.log(check.name, await check.run(() => new MyWorker()));
 * }
 * ```
 */
export const workerConformanceChecks: readonly WorkerCheck[] = Object.freeze([
  declaredFields,
  startStop,
  healthCheck,
  abort,
  errorsTyped,
]);

/**
 * Runs every check (except `options.skip`) and returns all problems found; an empty array
 * means the worker conforms.
 *
 * @example
 * ```ts
 * const findings = await checkWorkerConformance(() => new MyWorker(), { task: { payload: { n: 1 } } });
 * if (findings.length > 0) console.table(findings);
 * ```
 */
export async function checkWorkerConformance(
  makeWorker: MakeWorker,
  options: WorkerConformanceOptions = {},
): Promise<ConformanceFinding[]> {
  const findings: ConformanceFinding[] = [];
  for (const check of workerConformanceChecks) {
    if (options.skip?.includes(check.name)) continue;
    for (const problem of await check.run(makeWorker, options)) {
      findings.push({ check: check.name, problem });
    }
  }
  return findings;
}

/**
 * How long one check of the suite may take in all under `options`: three calls, two health
 * checks, two abort waits and the abort delay (used as the per-check test timeout).
 *
 * @example
 * ```ts
 * workerConformanceTimeoutMs({}); // 3 * 10_000 + 2 * 5_000 + 2 * 1_000 + 20 = 42_020
 * ```
 */
export function workerConformanceTimeoutMs(options: WorkerConformanceOptions = {}): number {
  const d = defaults(options);
  return 3 * d.callTimeoutMs + 2 * d.healthTimeoutMs + 2 * d.abortWithinMs + d.abortAfterMs;
}
