import type { TaskRecord } from "../task/types.js";
import type { Worker, WorkerResult } from "../worker/types.js";

/**
 * A complete, queued {@link TaskRecord} with sensible defaults, overridden by `overrides`.
 * Handy for testing routing strategies, matchers and gates without an orchestrator.
 *
 * @example
 * ```ts
 * const task = makeTaskRecord({ type: "llm_request", target: { name: "client-acme-*" } });
 * registry.eligible(task);
 * ```
 */
export function makeTaskRecord(overrides: Partial<TaskRecord> = {}): TaskRecord {
  return {
    id: "task-1",
    type: "custom",
    payload: null,
    priority: 20,
    seq: 0,
    status: "queued",
    dependsOn: [],
    onDependencyFailure: "skip",
    retry: { maxAttempts: 1, initialDelayMs: 1000, maxDelayMs: 60_000, factor: 2, jitter: 0.2 },
    rateLimitKeys: [],
    approval: "none",
    metadata: {},
    attempt: 0,
    createdAt: 0,
    updatedAt: 0,
    version: 0,
    ...overrides,
  };
}

/**
 * A minimal plain-object {@link Worker} (kind `"stub"`, one slot, echoes its payload),
 * overridden by `overrides`.
 *
 * @example
 * ```ts
 * registry.add(makeStubWorker({ id: "gpu-1", taskTypes: ["render"], capabilities: ["gpu"] }));
 * ```
 */
export function makeStubWorker(overrides: Partial<Worker> & { id: string }): Worker {
  return {
    kind: "stub",
    taskTypes: ["*"],
    maxConcurrency: 1,
    async execute(task): Promise<WorkerResult> {
      return { output: task.payload };
    },
    ...overrides,
  };
}
