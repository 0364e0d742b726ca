/** Flotilla reduced to the benchmark shapes, through its public API only. */
import { FunctionWorker, Orchestrator, type Store } from "@flotilla/core";
import type { DispatchRun } from "./peers.js";

export interface FlotillaRunOptions {
  concurrency: number;
  usePriority: boolean;
  store?: Store;
}

/** Submits every task first, then lets one worker with `concurrency` slots drain the backlog. */
export async function flotillaRun(
  priorities: readonly number[],
  options: FlotillaRunOptions,
): Promise<DispatchRun> {
  const startOrder: number[] = [];
  let completed = 0;
  const orchestrator = new Orchestrator({
    concurrency: options.concurrency,
    ...(options.store ? { store: options.store } : {}),
  });
  await orchestrator.start();
  const handles = await orchestrator.submitBatch(
    priorities.map((p) => ({
      type: "noop",
      payload: p,
      ...(options.usePriority ? { priority: p } : {}),
    })),
  );
  await orchestrator.register(
    new FunctionWorker({
      id: "noop",
      taskTypes: ["noop"],
      maxConcurrency: options.concurrency,
      fn: async (payload) => {
        startOrder.push(payload as number);
        completed++;
        return null;
      },
    }),
  );
  await Promise.all(handles.map((h) => h.result()));
  await orchestrator.stop();
  return { startOrder, completed };
}

/** Submits `n` tasks with priorities and no worker, and holds them queued until `release`. */
export async function flotillaQueued(n: number): Promise<{ release(): Promise<void> }> {
  const orchestrator = new Orchestrator();
  await orchestrator.start();
  for (let i = 0; i < n; i += 10_000) {
    await orchestrator.submitBatch(
      Array.from({ length: Math.min(10_000, n - i) }, (_, k) => ({
        type: "noop",
        priority: ((i + k) % 5) * 10,
      })),
    );
  }
  return { release: () => orchestrator.stop({ mode: "abort" }) };
}
