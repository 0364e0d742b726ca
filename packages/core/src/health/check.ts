import { type Clock, systemClock, type TimerHandle } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { HealthReport, Worker } from "../worker/types.js";
import { parseHealthReport } from "../worker/validate.js";

/** Options of {@link checkWorkerHealth}. */
export interface HealthCheckOptions {
  /** Time source of the timeout. @default systemClock */
  clock?: Clock;
  /** A check not answered within this time counts as `unhealthy`; its signal is aborted. @default 5_000 */
  timeoutMs?: number;
  /** Cancels the check early (as {@link RunningHealthCheck.cancel} does). */
  signal?: AbortSignal;
}

/** A health check in progress. */
export interface RunningHealthCheck {
  /** The outcome: the worker's report, or an `unhealthy` one for a throw, timeout or malformed answer; `undefined` when cancelled. */
  readonly result: Promise<HealthReport | undefined>;
  /** Aborts the check's signal, clears its timer and resolves `result` to `undefined`. */
  cancel(): void;
}

/**
 * Starts one health check of `worker`, bounded by a timeout through the clock. It never
 * rejects: a throw, a timeout or a malformed answer becomes `{ status: "unhealthy", message }`.
 * A worker without `healthCheck` is reported healthy.
 *
 * @example
 * ```ts
 * const check = startHealthCheck(worker, { timeoutMs: 2_000 });
 * const report = await check.result; // { status: "healthy" } or { status: "unhealthy", message: "..." }
 * ```
 */
export function startHealthCheck(
  worker: Worker,
  options: HealthCheckOptions = {},
): RunningHealthCheck {
  if (worker.healthCheck === undefined) {
    return { result: Promise.resolve({ status: "healthy" }), cancel() {} };
  }
  const clock = options.clock ?? systemClock;
  const timeoutMs = options.timeoutMs ?? 5_000;
  const controller = new AbortController();
  let timer: TimerHandle | undefined;
  let done = false;
  let resolveResult!: (r: HealthReport | undefined) => void;
  const result = new Promise<HealthReport | undefined>((resolve) => {
    resolveResult = resolve;
  });
  const finish = (report: HealthReport | undefined) => {
    if (done) return;
    done = true;
    if (timer !== undefined) clock.clearTimeout(timer);
    timer = undefined;
    options.signal?.removeEventListener("abort", cancel);
    resolveResult(report);
  };
  const cancel = () => {
    if (done) return;
    controller.abort(new FlotillaError("CANCELLED", "health check cancelled"));
    finish(undefined);
  };
  if (options.signal?.aborted) {
    cancel();
    return { result, cancel };
  }
  options.signal?.addEventListener("abort", cancel, { once: true });
  timer = clock.setTimeout(() => {
    timer = undefined;
    const message = `health check timed out after ${timeoutMs} ms`;
    controller.abort(new FlotillaError("TIMEOUT", message));
    finish({ status: "unhealthy", message });
  }, timeoutMs);
  (async () => worker.healthCheck!(controller.signal))().then(
    (value) => {
      let report: HealthReport;
      try {
        report = parseHealthReport(value);
      } catch (err) {
        report = { status: "unhealthy", message: (err as Error).message };
      }
      finish(report);
    },
    (err: unknown) => {
      const message = err instanceof Error ? err.message : String(err);
      finish({ status: "unhealthy", message: `health check failed: ${message}` });
    },
  );
  return { result, cancel };
}

/**
 * Runs one health check of `worker` and resolves to its report (never rejects; see
 * {@link startHealthCheck}). Resolves `{ status: "unhealthy", message: "health check cancelled" }`
 * when `options.signal` aborts first.
 *
 * @example
 * ```ts
 * const report = await checkWorkerHealth(ollamaWorker, { timeoutMs: 1_000 });
 * if (report.status !== "healthy") console.warn(report.message);
 * ```
 */
export async function checkWorkerHealth(
  worker: Worker,
  options: HealthCheckOptions = {},
): Promise<HealthReport> {
  const report = await startHealthCheck(worker, options).result;
  return report ?? { status: "unhealthy", message: "health check cancelled" };
}
