import { FakeClock } from "../testing/index.js";
import { FunctionWorker, type WorkerFunction } from "../worker/base.js";
import type { OrchestratorOptions } from "./options.js";
import { Orchestrator } from "./orchestrator.js";

/** An orchestrator on a fake clock, started. */
export async function started(options: OrchestratorOptions = {}) {
  const clock = new FakeClock();
  const orchestrator = new Orchestrator({ clock, random: () => 0, ...options });
  await orchestrator.start();
  return { clock, orchestrator };
}

export function fnWorker(
  id: string,
  taskTypes: string[],
  fn: WorkerFunction,
  more: { maxConcurrency?: number; capabilities?: string[]; labels?: Record<string, string> } = {},
) {
  return new FunctionWorker({ id, taskTypes, fn, ...more });
}

/** Resolves after `ms` of fake time (a worker that takes time). */
export function sleep(clock: FakeClock, ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const t = clock.setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clock.clearTimeout(t);
      reject(signal.reason);
    });
  });
}
