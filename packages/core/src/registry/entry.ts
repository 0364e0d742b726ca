import type { TimerHandle } from "../clock.js";
import { FlotillaError, type SerializedError } from "../errors.js";
import { type HealthCounters, initialHealthCounters } from "../health/state.js";
import type { HealthReport, Worker } from "../worker/types.js";
import { toJsonSafe } from "./json-safe.js";
import type { CircuitState, WorkerEntry, WorkerHealthState, WorkerStats } from "./types.js";

/** The registry's own entry: the public {@link WorkerEntry} plus bookkeeping. @internal */
export class Entry implements WorkerEntry {
  readonly id: string;
  health: WorkerHealthState = "healthy";
  circuit: CircuitState = "closed";
  inFlight = 0;
  accepting = true;
  readonly stats: WorkerStats = {
    tasksCompleted: 0,
    tasksFailed: 0,
    avgExecutionMs: 0,
    consecutiveFailures: 0,
  };
  /** Execution-time samples averaged so far. */
  samples = 0;
  healthCounters: HealthCounters = initialHealthCounters();
  openUntil = 0;
  cooldownTimer: TimerHandle | undefined;
  /** A half-open circuit admits one probe task at a time. */
  probeInFlight = false;
  check: PendingCheck | undefined;
  removed = false;
  indexed: { types: string[]; capabilities: string[]; labels: string[] } = {
    types: [],
    capabilities: [],
    labels: [],
  };

  constructor(
    readonly worker: Worker,
    readonly registeredAt: number,
    readonly seq: number,
  ) {
    this.id = worker.id;
  }
}

export interface PendingCheck {
  promise: Promise<HealthReport>;
  cancel(): void;
}

/** A failure as a JSON-safe serialized error (for a worker's `lastError`). @internal */
export function serializeError(error: unknown): SerializedError | undefined {
  if (error === undefined) return undefined;
  if (
    typeof error === "object" &&
    error !== null &&
    !(error instanceof Error) &&
    typeof (error as SerializedError).code === "string" &&
    typeof (error as SerializedError).message === "string"
  ) {
    return toJsonSafe(error) as SerializedError;
  }
  return toJsonSafe(FlotillaError.from(error, "WORKER_ERROR").toJSON()) as SerializedError;
}
