import type { Clock } from "../clock.js";
import { systemClock } from "../clock.js";
import type { TaskStatus } from "../task/schema.js";
import type { Worker } from "../worker/types.js";
import type { PoolHost, QueueReading } from "./workerPool.js";

/** A lifecycle transition as a pool host reads it (a subset of the orchestrator's event). */
interface TransitionLike {
  taskId: string;
  from: TaskStatus | null;
  to: TaskStatus;
  at: number;
  task: { readonly type: string };
}

/** The part of an `Orchestrator` a pool host uses. */
export interface PoolOrchestrator {
  register(worker: Worker): Promise<unknown>;
  unregister(id: string, options?: { mode?: "drain" | "handback" }): Promise<unknown>;
  on(event: "task:transition", fn: (ev: TransitionLike) => void): unknown;
  off(event: "task:transition", fn: (ev: TransitionLike) => void): unknown;
}

/**
 * Adapts an `Orchestrator` to a {@link PoolHost}: registers and unregisters (drain or hand
 * back) through it, and reads queue depth and oldest wait per task type by following its
 * `task:transition` events. Create it before submitting work (tasks queued earlier are not
 * seen); call `close()` to stop listening.
 *
 * @example
 * ```ts
 * const host = orchestratorPoolHost(orchestrator);
 * await pool.start(host);
 * // on shutdown
 * await pool.stop();
 * host.close();
 * ```
 */
export function orchestratorPoolHost(
  orchestrator: PoolOrchestrator,
  options: { clock?: Clock } = {},
): PoolHost & { close(): void } {
  const clock = options.clock ?? systemClock;
  // Insertion order is queueing order, so the first entry of a type is its oldest.
  const queued = new Map<string, { type: string; since: number }>();
  const listener = (ev: TransitionLike) => {
    if (ev.to === "queued") {
      queued.delete(ev.taskId);
      queued.set(ev.taskId, { type: ev.task.type, since: ev.at });
    } else if (ev.from === "queued" || queued.has(ev.taskId)) {
      queued.delete(ev.taskId);
    }
  };
  orchestrator.on("task:transition", listener);
  return {
    registerWorker: (worker) => orchestrator.register(worker),
    unregisterWorker: (id, { drain }) =>
      orchestrator.unregister(id, { mode: drain ? "drain" : "handback" }),
    queueReading(taskTypes: readonly string[]): QueueReading {
      const any = taskTypes.includes("*");
      let depth = 0;
      let oldest = Number.POSITIVE_INFINITY;
      for (const q of queued.values()) {
        if (!any && !taskTypes.includes(q.type)) continue;
        depth++;
        if (q.since < oldest) oldest = q.since;
      }
      return { depth, oldestWaitMs: depth === 0 ? 0 : Math.max(0, clock.now() - oldest) };
    },
    close: () => void orchestrator.off("task:transition", listener),
  };
}
