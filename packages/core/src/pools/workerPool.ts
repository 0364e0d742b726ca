import { EventEmitter } from "eventemitter3";
import { z } from "zod";
import { type Clock, systemClock, type TimerHandle } from "../clock.js";
import { type Logger, silentLogger } from "../logger.js";
import { parseConfig } from "../resources/validate.js";
import type { ExecutionContext, Worker, WorkerTask } from "../worker/types.js";

/** How busy the queue is for a pool's task types. */
export interface QueueReading {
  /** Ready tasks the pool's workers could run. */
  depth: number;
  /** How long the oldest of them has waited, in ms (0 when none). */
  oldestWaitMs: number;
}

/**
 * What a pool needs from the orchestrator: add and remove workers, and read the queue.
 *
 * @example
 * ```ts
 * const host: PoolHost = {
 *   registerWorker: (w) => orchestrator.register(w),
 *   unregisterWorker: (id, { drain }) =>
 *     orchestrator.unregister(id, { mode: drain ? "drain" : "handback" }),
 *   queueReading: (types) => orchestrator.queueReading([...types]),
 * };
 * ```
 */
export interface PoolHost {
  registerWorker(worker: Worker): unknown;
  /** `drain: true` lets the worker finish its tasks first; `false` hands them back to the queue. */
  unregisterWorker(id: string, options: { drain: boolean }): unknown;
  queueReading(taskTypes: readonly string[]): QueueReading;
}

const Int = (min: number) => z.number().int({ error: "must be a whole number" }).min(min);

/** Validates the numeric options of {@link WorkerPool}. @example WorkerPoolConfigSchema.parse({ min: 1, max: 4 }) */
export const WorkerPoolConfigSchema = z
  .object({
    name: z.string().min(1).default("pool"),
    min: Int(0).default(0),
    max: Int(1),
    taskTypes: z.array(z.string().min(1)).min(1).default(["*"]),
    scaleUpQueueDepth: z.number().positive().default(1),
    scaleUpWaitMs: Int(0).default(5_000),
    scaleUpStep: Int(1).default(1),
    scaleDownIdleMs: Int(0).default(60_000),
    cooldownUpMs: Int(0).default(10_000),
    cooldownDownMs: Int(0).default(60_000),
    intervalMs: Int(10).default(1_000),
    drain: z.boolean().default(true),
  })
  .strict()
  .refine((c) => c.min <= c.max, { error: "min must not exceed max", path: ["min"] });

/** Options of {@link WorkerPool}. */
export interface WorkerPoolOptions {
  /** Makes the n-th worker (ids must be unique). */
  factory: (index: number) => Worker | Promise<Worker>;
  /** Pool name in logs, events and worker labels. @default "pool" */
  name?: string;
  /** Workers kept at all times. @default 0 */
  min?: number;
  /** Workers at most. */
  max: number;
  /** Task types the pool serves (for the queue reading). @default ["*"] */
  taskTypes?: string[];
  /** Grow when queued tasks exceed `size × scaleUpQueueDepth`. @default 1 */
  scaleUpQueueDepth?: number;
  /** Grow when the oldest queued task has waited this long. @default 5000 */
  scaleUpWaitMs?: number;
  /** Workers added per step. @default 1 */
  scaleUpStep?: number;
  /** Shrink by one when a worker has been idle this long and nothing is queued. @default 60000 */
  scaleDownIdleMs?: number;
  /** Time between two growth steps. @default 10000 */
  cooldownUpMs?: number;
  /** Time after any scaling before shrinking. @default 60000 */
  cooldownDownMs?: number;
  /** Evaluation period. @default 1000 */
  intervalMs?: number;
  /** Removed workers finish their tasks (`true`) or hand them back (`false`). @default true */
  drain?: boolean;
  /** @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
}

/** Events of {@link WorkerPool}. */
export interface WorkerPoolEvents {
  scale: [event: { direction: "up" | "down"; workerId: string; size: number; reason: string }];
  error: [err: unknown];
}

interface Member {
  worker: Worker;
  inFlight: number;
  lastBusyAt: number;
}

/**
 * A worker pool: keeps between `min` and `max` workers made by a factory, grows on queue
 * depth or on the oldest task's wait, shrinks when a worker has been idle, with cooldowns
 * between steps (all timed on the injected Clock). Scaled-down workers finish their tasks
 * first (`drain`) or hand them back to the queue.
 *
 * @example
 * ```ts
 * const pool = new WorkerPool({
 *   name: "sandbox",
 *   taskTypes: ["code_execution"],
 *   min: 1,
 *   max: 8,
 *   factory: (i) => new DockerWorker({ id: `sandbox-${i}`, image: "python:3.12" }),
 * });
 * await pool.start(orchestrator); // the orchestrator is the PoolHost
 * // …
 * await pool.stop();
 * ```
 */
export class WorkerPool extends EventEmitter<WorkerPoolEvents> {
  readonly name: string;
  readonly #cfg: z.output<typeof WorkerPoolConfigSchema>;
  readonly #factory: (index: number) => Worker | Promise<Worker>;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #members = new Map<string, Member>();
  #host: PoolHost | undefined;
  #timer: TimerHandle | undefined;
  #index = 0;
  #lastUpAt = Number.NEGATIVE_INFINITY;
  #lastScaleAt = Number.NEGATIVE_INFINITY;
  #busy = false;

  constructor(options: WorkerPoolOptions) {
    super();
    const { factory, clock, logger, ...config } = options;
    this.#cfg = parseConfig(WorkerPoolConfigSchema, config, "pool");
    this.name = this.#cfg.name;
    this.#factory = factory;
    this.#clock = clock ?? systemClock;
    this.#logger = logger ?? silentLogger;
  }

  /** Workers in the pool now (draining ones excluded). @example pool.size // 3 */
  get size(): number {
    return this.#members.size;
  }

  /** Ids of the pool's workers. @example pool.workerIds() */
  workerIds(): string[] {
    return [...this.#members.keys()];
  }

  /**
   * Attaches the pool to a host, creates `min` workers, and starts evaluating every
   * `intervalMs`. @example await pool.start(orchestrator)
   */
  async start(host: PoolHost): Promise<void> {
    if (this.#host) return;
    this.#host = host;
    while (this.#members.size < this.#cfg.min) {
      if (!(await this.#add("min size"))) break;
    }
    this.#schedule();
  }

  /**
   * Stops evaluating and removes every worker (draining by default).
   * @example await pool.stop()
   */
  async stop(options: { drain?: boolean } = {}): Promise<void> {
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
    const host = this.#host;
    this.#host = undefined;
    if (!host) return;
    const drain = options.drain ?? this.#cfg.drain;
    await Promise.all(
      [...this.#members.keys()].map(async (id) => {
        this.#members.delete(id);
        try {
          await host.unregisterWorker(id, { drain });
        } catch (err) {
          this.#logger.warn({ err, workerId: id }, "unregistering a pool worker failed");
        }
      }),
    );
  }

  #schedule(): void {
    if (!this.#host) return;
    this.#timer = this.#clock.setTimeout(() => {
      void this.evaluate().finally(() => this.#schedule());
    }, this.#cfg.intervalMs);
  }

  /**
   * One scaling decision now (what the timer does every `intervalMs`). Returns what changed.
   * @example await pool.evaluate() // "up" | "down" | undefined
   */
  async evaluate(): Promise<"up" | "down" | undefined> {
    const host = this.#host;
    if (!host || this.#busy) return undefined;
    this.#busy = true;
    try {
      const now = this.#clock.now();
      for (const m of this.#members.values()) if (m.inFlight > 0) m.lastBusyAt = now;
      let reading: QueueReading;
      try {
        reading = host.queueReading(this.#cfg.taskTypes);
      } catch (err) {
        this.#logger.warn({ err }, "queue reading failed");
        return undefined;
      }
      const size = this.#members.size;
      const c = this.#cfg;
      if (size < c.max && reading.depth > 0 && now - this.#lastUpAt >= c.cooldownUpMs) {
        let reason: string | undefined;
        if (reading.depth > size * c.scaleUpQueueDepth) reason = `queue depth ${reading.depth}`;
        else if (reading.oldestWaitMs >= c.scaleUpWaitMs)
          reason = `oldest wait ${reading.oldestWaitMs} ms`;
        if (reason) {
          let added = 0;
          for (let i = 0; i < c.scaleUpStep && this.#members.size < c.max; i++) {
            if (await this.#add(reason)) added++;
          }
          if (added > 0) {
            this.#lastUpAt = now;
            this.#lastScaleAt = now;
            return "up";
          }
          return undefined;
        }
      }
      if (size > c.min && reading.depth === 0 && now - this.#lastScaleAt >= c.cooldownDownMs) {
        let victim: Member | undefined;
        for (const m of this.#members.values()) {
          if (m.inFlight === 0 && now - m.lastBusyAt >= c.scaleDownIdleMs) {
            if (!victim || m.lastBusyAt < victim.lastBusyAt) victim = m;
          }
        }
        if (victim) {
          this.#members.delete(victim.worker.id);
          this.#lastScaleAt = now;
          this.emit("scale", {
            direction: "down",
            workerId: victim.worker.id,
            size: this.#members.size,
            reason: `idle ${now - victim.lastBusyAt} ms`,
          });
          try {
            await host.unregisterWorker(victim.worker.id, { drain: c.drain });
          } catch (err) {
            this.#logger.warn(
              { err, workerId: victim.worker.id },
              "unregistering a pool worker failed",
            );
          }
          return "down";
        }
      }
      return undefined;
    } finally {
      this.#busy = false;
    }
  }

  async #add(reason: string): Promise<boolean> {
    const host = this.#host;
    if (!host) return false;
    try {
      const inner = await this.#factory(this.#index++);
      const member: Member = { worker: inner, inFlight: 0, lastBusyAt: this.#clock.now() };
      const wrapped = this.#wrap(inner, member);
      member.worker = wrapped;
      await host.registerWorker(wrapped);
      this.#members.set(wrapped.id, member);
      this.emit("scale", {
        direction: "up",
        workerId: wrapped.id,
        size: this.#members.size,
        reason,
      });
      return true;
    } catch (err) {
      this.#logger.error({ err, pool: this.name }, "pool could not add a worker");
      if (this.listenerCount("error") > 0) this.emit("error", err);
      return false;
    }
  }

  /** Wraps a worker to count its running tasks (for idle detection) and label it with the pool. */
  #wrap(w: Worker, member: Member): Worker {
    const clock = this.#clock;
    const out: Worker = {
      id: w.id,
      kind: w.kind,
      name: w.name ?? w.id,
      taskTypes: w.taskTypes,
      capabilities: w.capabilities,
      labels: { ...w.labels, pool: this.name },
      maxConcurrency: w.maxConcurrency,
      local: w.local,
      async execute(task: WorkerTask, ctx: ExecutionContext) {
        member.inFlight++;
        try {
          return await w.execute(task, ctx);
        } finally {
          member.inFlight--;
          member.lastBusyAt = clock.now();
        }
      },
    };
    if (w.start) out.start = () => w.start!();
    if (w.stop) out.stop = () => w.stop!();
    if (w.healthCheck) out.healthCheck = (signal) => w.healthCheck!(signal);
    if (w.estimateCost) out.estimateCost = (task) => w.estimateCost!(task);
    return out;
  }

  /** Size, bounds and each worker's load. @example pool.snapshot().size */
  snapshot(): {
    name: string;
    size: number;
    min: number;
    max: number;
    workers: { id: string; inFlight: number; lastBusyAt: number }[];
  } {
    return {
      name: this.name,
      size: this.size,
      min: this.#cfg.min,
      max: this.#cfg.max,
      workers: [...this.#members.values()].map((m) => ({
        id: m.worker.id,
        inFlight: m.inFlight,
        lastBusyAt: m.lastBusyAt,
      })),
    };
  }
}
