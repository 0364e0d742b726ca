import type { EngineApi } from "../orchestrator/engineApi.js";
import type { PoolHost } from "./workerPool.js";

/**
 * Adapts an engine (an `Orchestrator`) to a {@link PoolHost}: registers and unregisters
 * (drain or hand back) through it, and reads queue depth and the oldest wait per task type
 * from the engine's own ready queue (`queueReading`), so it sees tasks queued before it was
 * made and keeps no copy of the queue. A pool serving `"*"` reads every type.
 *
 * @example
 * ```ts
 * await pool.start(orchestratorPoolHost(orchestrator));
 * // on shutdown
 * await pool.stop();
 * ```
 */
export function orchestratorPoolHost(engine: EngineApi): PoolHost {
  return {
    registerWorker: (worker) => engine.register(worker),
    unregisterWorker: (id, { drain }) =>
      engine.unregister(id, { mode: drain ? "drain" : "handback" }),
    queueReading: (taskTypes) =>
      engine.queueReading(taskTypes.includes("*") ? undefined : [...taskTypes]),
  };
}
