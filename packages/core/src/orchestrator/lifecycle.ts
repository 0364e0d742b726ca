import { FlotillaError } from "../errors.js";
import type { RegistryChange } from "../registry/registry.js";
import type { Attempts } from "./attempts.js";
import type { EngineContext } from "./context.js";
import type { Dispatcher } from "./dispatcher.js";
import type { GateChain } from "./gateChain.js";
import type { Handles } from "./handles.js";
import type { StopOptions } from "./options.js";
import type { Ownership } from "./ownership.js";
import type { Persistence } from "./persistence.js";
import { type RecoveryParts, recover } from "./recovery.js";

/** The parts that start and stop. */
export interface LifecycleParts extends RecoveryParts {
  gates: GateChain;
  dispatcher: Dispatcher;
  attempts: Attempts;
  handles: Handles;
  persistence: Persistence;
  ownership: Ownership;
}

/**
 * Starting and stopping the engine: opening the store, recovery (first start only), the
 * registry's and gates' wake-ups, timers, draining or handing back running work, flushing
 * writes, stopping and restarting workers. @internal
 */
export class Lifecycle {
  readonly #ctx: EngineContext;
  readonly #e: LifecycleParts;
  #recovered = false;
  #workersStopped = false;
  #unsubscribers: Array<() => void> = [];
  /** When the engine last started (clock time). */
  startedAt = 0;

  constructor(ctx: EngineContext, parts: LifecycleParts) {
    this.#ctx = ctx;
    this.#e = parts;
  }

  async start(): Promise<void> {
    const ctx = this.#ctx;
    if (ctx.state === "running") return;
    if (ctx.state === "stopping") {
      throw new FlotillaError("SHUTTING_DOWN", "start: the orchestrator is stopping");
    }
    await ctx.store.open();
    if (!this.#recovered) {
      this.#recovered = true;
      await this.#e.gates.restore();
      // Partitioned: nothing is held yet; `adopt` restores each partition's tasks.
      if (this.#e.ownership.count === undefined) await recover(ctx, this.#e);
      this.#e.handles.recovered = true;
    }
    if (this.#workersStopped) {
      this.#workersStopped = false;
      for (const entry of ctx.registry.list()) {
        try {
          await entry.worker.start?.();
        } catch (err) {
          ctx.internalError(err, `worker ${entry.id} failed to restart`);
        }
      }
    }
    ctx.state = "running";
    this.startedAt = ctx.clock.now();
    ctx.registry.start();
    const dispatcher = this.#e.dispatcher;
    const onChange = (change: RegistryChange) => {
      if (change.kind === "health") ctx.events.emit("worker:health", change);
      else ctx.events.emit("worker:circuit", change);
      dispatcher.wakeWorker(change.workerId);
    };
    // A new worker may run anything that was waiting.
    const onAdded = () => dispatcher.wakeAllWaiting();
    ctx.registry.on("change", onChange);
    ctx.registry.on("added", onAdded);
    this.#unsubscribers.push(() => {
      ctx.registry.off("change", onChange);
      ctx.registry.off("added", onAdded);
    });
    dispatcher.wakeAllWaiting();
    this.#unsubscribers.push(...this.#e.gates.subscribe((keys) => dispatcher.wakeGates(keys)));
    this.#e.attempts.armRemote();
    dispatcher.armDelayTimer();
    this.#e.persistence.armRetry();
    this.#e.handles.arm();
    ctx.logger.info("orchestrator started");
    ctx.events.emit("orchestrator:started");
    dispatcher.schedule();
  }

  async stop(options: StopOptions = {}): Promise<void> {
    const ctx = this.#ctx;
    if (ctx.state === "stopped" || ctx.state === "idle") {
      ctx.state = "stopped";
      this.#clearTimers();
      await this.#e.persistence.retryOnceThenGiveUp();
      await this.#e.persistence.flush();
      return;
    }
    if (ctx.state === "stopping") {
      await new Promise<void>((resolve) => ctx.events.once("orchestrator:stopped", resolve));
      return;
    }
    const attempts = this.#e.attempts;
    ctx.state = "stopping";
    this.#clearTimers();
    if ((options.mode ?? "drain") === "drain") {
      await attempts.waitUntil(() => attempts.localCount() === 0, options.timeoutMs ?? 30_000);
    }
    await Promise.allSettled(
      attempts
        .list()
        .filter((att) => att.kind === "local")
        .map((att) => attempts.settle(att, { kind: "requeue", reason: "orchestrator stopped" })),
    );
    this.#clearTimers();
    for (const u of this.#unsubscribers.splice(0)) u();
    this.#ctx.registry.stop();
    await this.#stopWorkers();
    await this.#e.persistence.retryOnceThenGiveUp();
    await this.#e.persistence.flush();
    ctx.state = "stopped";
    ctx.logger.info("orchestrator stopped");
    ctx.events.emit("orchestrator:stopped");
  }

  /** Stops every registered worker (they are started again by the next `start()`). */
  async #stopWorkers(): Promise<void> {
    this.#workersStopped = true;
    await Promise.all(
      this.#ctx.registry.list().map(async (entry) => {
        try {
          await entry.worker.stop?.();
        } catch (err) {
          this.#ctx.logger.warn({ workerId: entry.id, err: String(err) }, "worker stop failed");
        }
      }),
    );
  }

  #clearTimers(): void {
    this.#e.handles.clearTimer();
    this.#e.dispatcher.clearTimers();
    this.#e.attempts.clearRemoteTimers();
  }
}
