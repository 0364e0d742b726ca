import type {
  Logger,
  TaskQuery,
  TaskRecord,
  TaskResult,
  TaskSpec,
  Worker,
  WorkerInfo,
} from "@flotilla/core";

/** A submitted task as the adapter needs it: an id and a promise of its outcome. */
export interface TaskHandleLike {
  readonly id: string;
  result(): Promise<TaskResult>;
}

/**
 * The part of the orchestrator the HTTP adapter talks to. `Orchestrator` from
 * `@flotilla/core` satisfies it.
 */
export interface OrchestratorLike {
  submit(spec: TaskSpec): Promise<TaskHandleLike>;
  get(id: string): Promise<TaskRecord | undefined> | TaskRecord | undefined;
  list(query?: TaskQuery): Promise<TaskRecord[]> | TaskRecord[];
  cancel(id: string, reason?: string): Promise<unknown> | unknown;
  status(): unknown;
  // biome-ignore lint/suspicious/noExplicitAny: emitters type their listeners per event
  on(event: any, listener: (...args: any[]) => void): unknown;
  // biome-ignore lint/suspicious/noExplicitAny: emitters type their listeners per event
  off(event: any, listener: (...args: any[]) => void): unknown;
  registerWorker?(worker: Worker): unknown;
  register?(worker: Worker): unknown;
  unregisterWorker?(id: string): unknown;
  unregister?(id: string): unknown;
  listWorkers?(): WorkerInfo[];
  workers?(): WorkerInfo[];
}

/** Engine events the adapter relays (payloads as the engine emits them). */
export const RELAYED_EVENTS = [
  "task:transition",
  "task:progress",
  "worker:registered",
  "worker:unregistered",
  "worker:health",
  "worker:circuit",
  "resource:rate_limited",
  "resource:quota_exceeded",
  "resource:budget",
] as const;

/** Registers a worker at run time, whatever the engine calls the method. */
export async function registerWorker(o: OrchestratorLike, worker: Worker): Promise<void> {
  if (typeof o.registerWorker === "function") await o.registerWorker(worker);
  else if (typeof o.register === "function") await o.register(worker);
  else throw new Error("the orchestrator has no registerWorker method");
}

/** The registered workers as JSON-safe snapshots. */
export function listWorkers(o: OrchestratorLike): WorkerInfo[] {
  if (typeof o.listWorkers === "function") return o.listWorkers();
  if (typeof o.workers === "function") return o.workers();
  const s = safeStatus(o) as { workers?: unknown };
  if (Array.isArray(s?.workers)) return s.workers as WorkerInfo[];
  const list = (s?.workers as { list?: unknown } | undefined)?.list;
  return Array.isArray(list) ? (list as WorkerInfo[]) : [];
}

/** `status()` that never throws. */
export function safeStatus(o: OrchestratorLike, logger?: Logger): Record<string, unknown> {
  try {
    const s = o.status();
    return s && typeof s === "object" ? (s as Record<string, unknown>) : {};
  } catch (err) {
    logger?.warn({ err: String(err) }, "orchestrator status() failed");
    return {};
  }
}
