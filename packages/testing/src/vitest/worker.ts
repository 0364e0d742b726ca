import { describe, expect, it } from "vitest";
import {
  type MakeWorker,
  type WorkerConformanceOptions,
  workerConformanceChecks,
  workerConformanceTimeoutMs,
} from "../worker-conformance.js";

/**
 * Declares a vitest `describe` block that checks a custom worker against Flotilla's worker
 * contract: valid declared fields, idempotent `start`/`stop`, a health check that answers
 * within a timeout, `execute` rejecting promptly when its signal aborts, and typed results
 * and errors. Run it in your worker package's tests.
 *
 * @param name shown in the test report.
 * @param makeWorker builds a fresh worker; called once or more per check.
 * @example
 * ```ts
 * import { describeWorkerConformance } from "@flotilla/testing/vitest";
 *
 * describeWorkerConformance("MyWorker", () => new MyWorker({ baseUrl }), {
 *   task: { type: "my_task", payload: { text: "hi" } },
 *   slowTask: { type: "my_task", payload: { text: "hi", delayMs: 5_000 } },
 * });
 * ```
 */
export function describeWorkerConformance(
  name: string,
  makeWorker: MakeWorker,
  options: WorkerConformanceOptions = {},
): void {
  const timeout = workerConformanceTimeoutMs(options);
  describe(`${name}: worker conformance`, () => {
    for (const check of workerConformanceChecks) {
      const test = options.skip?.includes(check.name) ? it.skip : it;
      test(
        check.title,
        async () => {
          const problems = await check.run(makeWorker, options);
          expect(problems, problems.join("\n")).toEqual([]);
        },
        timeout,
      );
    }
  });
}
