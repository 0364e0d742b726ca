import type { WorkerEntry } from "../../registry/types.js";
import type { TaskRecord } from "../../task/types.js";
import type { Worker } from "../../worker/types.js";

let seq = 0;

/** A queued task record with sensible defaults. */
export function makeTask(over: Partial<TaskRecord> = {}): TaskRecord {
  seq++;
  return {
    id: over.id ?? `t${seq}`,
    type: "llm_request",
    payload: {},
    priority: 20,
    seq,
    status: "queued",
    dependsOn: [],
    onDependencyFailure: "skip",
    retry: { maxAttempts: 1, initialDelayMs: 1000, maxDelayMs: 60_000, factor: 2, jitter: 0 },
    rateLimitKeys: [],
    approval: "none",
    metadata: {},
    attempt: 0,
    createdAt: 0,
    updatedAt: 0,
    version: 1,
    ...over,
  };
}

/** A registry entry around a do-nothing worker. */
export function makeEntry(over: Partial<Worker> = {}): WorkerEntry {
  const worker: Worker = {
    id: "w1",
    kind: "openai",
    taskTypes: ["*"],
    maxConcurrency: 100,
    execute: async () => ({ output: null }),
    ...over,
  };
  return {
    worker,
    id: worker.id,
    registeredAt: 0,
    health: "healthy",
    circuit: "closed",
    inFlight: 0,
    accepting: true,
    stats: { tasksCompleted: 0, tasksFailed: 0, avgExecutionMs: 0, consecutiveFailures: 0 },
  };
}

/** Largest number of units inside any half-open window (t - windowMs, t]. */
export function maxInWindow(
  events: ReadonlyArray<{ t: number; w: number }>,
  windowMs: number,
): number {
  let max = 0;
  let sum = 0;
  let j = 0;
  for (let i = 0; i < events.length; i++) {
    sum += events[i]!.w;
    while (events[j]!.t <= events[i]!.t - windowMs) {
      sum -= events[j]!.w;
      j++;
    }
    // Events sharing the same timestamp all belong to the window ending at that time.
    let k = i + 1;
    let extra = 0;
    while (k < events.length && events[k]!.t === events[i]!.t) {
      extra += events[k]!.w;
      k++;
    }
    max = Math.max(max, sum + extra);
  }
  return max;
}
