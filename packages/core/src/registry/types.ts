import type { SerializedError } from "../errors.js";
import type { TaskRecord } from "../task/types.js";
import type { HealthReport, Worker } from "../worker/types.js";

/** The kind of a registered worker whose slots are filled only by pull claims. */
export const REMOTE_NODE_KIND = "remote-node";

/** Health of a registered worker. `unhealthy` workers get no tasks until checks recover them. */
export type WorkerHealthState = "healthy" | "degraded" | "unhealthy";

/** Circuit breaker state: `open` after consecutive execution failures, `half_open` while probing. */
export type CircuitState = "closed" | "open" | "half_open";

/** Counters kept per worker. */
export interface WorkerStats {
  tasksCompleted: number;
  tasksFailed: number;
  /** Exponentially weighted moving average of execution time. */
  avgExecutionMs: number;
  consecutiveFailures: number;
  lastError?: SerializedError;
  lastHealthCheckAt?: number;
  lastHealthReport?: HealthReport;
}

/** A registered worker as the registry tracks it. */
export interface WorkerEntry {
  readonly worker: Worker;
  readonly id: string;
  readonly registeredAt: number;
  health: WorkerHealthState;
  circuit: CircuitState;
  /** Tasks it is running now (slots in use). */
  inFlight: number;
  /** When false the worker takes no new task (being drained or removed). */
  accepting: boolean;
  /** While its circuit is open: when it turns half-open (ms since epoch). */
  readonly openUntil?: number;
  readonly stats: WorkerStats;
}

/** A JSON-safe snapshot of a worker, for `status()` and the HTTP API. */
export interface WorkerInfo {
  id: string;
  kind: string;
  name: string;
  taskTypes: string[];
  capabilities: string[];
  labels: Record<string, string>;
  local: boolean;
  maxConcurrency: number;
  inFlight: number;
  health: WorkerHealthState;
  circuit: CircuitState;
  accepting: boolean;
  registeredAt: number;
  stats: WorkerStats;
}

/** Decides whether `entry` may ever run `task` (type, capabilities, labels, target); ignores load and health. */
export type TaskMatcher = (entry: WorkerEntry, task: TaskRecord) => boolean;
