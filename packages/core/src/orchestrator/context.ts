import type { EventEmitter } from "eventemitter3";
import type { Clock } from "../clock.js";
import type { Logger } from "../logger.js";
import type { WorkerRegistry } from "../registry/registry.js";
import type { OwnedWrites } from "../store/owned.js";
import type { Store } from "../store/types.js";
import type { OrchestratorEvents } from "../task/events.js";
import type { OrchestratorTimers } from "./timers.js";

/** The orchestrator's run state. */
export type EngineState = "idle" | "running" | "stopping" | "stopped";

/**
 * What every part of the engine shares: the clock and timers, the logger, the store, the
 * worker registry, the event emitter (the public `Orchestrator`) and the run state. It
 * holds no task state: that lives in the task table alone. @internal
 */
export class EngineContext {
  /** Set by the facade's `start`/`stop` only. */
  state: EngineState = "idle";

  constructor(
    readonly clock: Clock,
    readonly logger: Logger,
    readonly store: Store,
    /** The store's owned-write fast path, when it offers one. */
    readonly owned: OwnedWrites | undefined,
    readonly registry: WorkerRegistry,
    readonly timers: OrchestratorTimers,
    readonly events: EventEmitter<OrchestratorEvents>,
  ) {}

  get running(): boolean {
    return this.state === "running";
  }

  /** Logs an engine fault and emits it as `error`; never throws. */
  internalError(err: unknown, message: string): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.logger.error({ err: error.message }, message);
    try {
      this.events.emit("error", error);
    } catch {
      // a throwing error listener must not take the engine down
    }
  }
}
