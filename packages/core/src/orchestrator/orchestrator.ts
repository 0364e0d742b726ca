import { EventEmitter } from "eventemitter3";
import { type Clock, systemClock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { Claim, ClaimOptions, ClaimSlot } from "../lease/types.js";
import { silentLogger } from "../logger.js";
import { WorkerRegistry } from "../registry/registry.js";
import type { WorkerInfo } from "../registry/types.js";
import { REMOTE_NODE_KIND as NODE_KIND } from "../registry/types.js";
import { createRouter } from "../router/strategies.js";
import { MemoryStore } from "../store/memory.js";
import { OWNED_WRITES, type OwnedWrites } from "../store/owned.js";
import type { Store, StoredEvent, TaskQuery, UsageEntry } from "../store/types.js";
import type { OrchestratorEvents } from "../task/events.js";
import { PRIORITY_NAMES, PRIORITY_VALUES, type TaskSpec } from "../task/schema.js";
import type { Lease, TaskRecord } from "../task/types.js";
import { parseOrThrow } from "../task/validation.js";
import type { HealthReport, Worker, WorkerResult } from "../worker/types.js";
import { EngineContext, type EngineState } from "./context.js";
import type { Decision } from "./control.js";
import { ROUTING_WINDOW as WINDOW } from "./dispatcher.js";
import { assemble, type EngineParts } from "./engine.js";
import type { EngineApi } from "./engineApi.js";
import { explain, type TaskExplanation } from "./explain.js";
import type { TaskHandle } from "./handle.js";
import {
  type OrchestratorOptions,
  OrchestratorOptionsSchema,
  type OrchestratorStatus,
  type StopOptions,
  type UnregisterOptions,
} from "./options.js";
import { adoptPartitions, drained, releasePartitions, stopDispatching } from "./partitioning.js";
import type { TaskTelemetry } from "./telemetry.js";
import { OrchestratorTimers } from "./timers.js";

/**
 * The kind of a registered worker whose slots are filled only by pull claims.
 *
 * @example
 * ```ts
 * await orchestrator.register({ id: "node-7", kind: REMOTE_NODE_KIND, taskTypes: ["*"], maxConcurrency: 1, local: false, execute });
 * ```
 */
export const REMOTE_NODE_KIND = NODE_KIND;

/**
 * The most free workers one dispatch offers the routing strategy: where more are free for
 * a task, the strategy chooses among this many and the next dispatch is offered the next
 * ones, so a dispatch costs the same in a fleet of ten workers or ten thousand.
 *
 * @example
 * ```ts
 * // Up to ROUTING_WINDOW free workers, a strategy sees every one of them.
 * console.log(ROUTING_WINDOW); // 64
 * ```
 */
export const ROUTING_WINDOW = WINDOW;

const PRIORITY_NAME_BY_VALUE = new Map<number, string>(
  PRIORITY_NAMES.map((n) => [PRIORITY_VALUES[n], n]),
);

/**
 * The engine: accepts tasks, tracks their dependencies, queues ready ones by priority
 * (with aging and fair share between tenants), matches them to free worker slots through
 * the dispatch gates and the routing strategy, runs them with timeouts, retries and
 * cancellation, and hands out leases to remote slots that pull work. Every state change is
 * written to the store before it is emitted or acknowledged. No global state: create as
 * many as you like.
 *
 * @example
 * ```ts
 * import { FunctionWorker, Orchestrator } from "@flotilla/core";
 *
 * const orchestrator = new Orchestrator({ concurrency: 8 });
 * await orchestrator.register(
 *   new FunctionWorker({ taskTypes: ["add"], fn: async (p: { a: number; b: number }) => p.a + p.b }),
 * );
 * await orchestrator.start();
 * const handle = await orchestrator.submit({ type: "add", payload: { a: 1, b: 2 } });
 * console.log((await handle.result()).output); // 3
 * await orchestrator.stop();
 * ```
 */
export class Orchestrator extends EventEmitter<OrchestratorEvents> implements EngineApi {
  readonly clock: Clock;
  readonly store: Store;
  readonly registry: WorkerRegistry;
  readonly #ctx: EngineContext;
  readonly #e: EngineParts;
  #partitionOps: Promise<void> = Promise.resolve();

  constructor(options: OrchestratorOptions = {}) {
    super();
    const { clock, store, logger, routing, registry, random, ...plain } = options;
    parseOrThrow(OrchestratorOptionsSchema, plain, "options");
    this.clock = clock ?? systemClock;
    this.store = store ?? new MemoryStore({ clock: this.clock });
    this.registry = new WorkerRegistry({
      ...registry,
      clock: this.clock,
      logger: logger ?? silentLogger,
    });
    this.#ctx = new EngineContext(
      this.clock,
      (logger ?? silentLogger).child({ component: "orchestrator" }),
      this.store,
      (this.store as { [OWNED_WRITES]?: OwnedWrites })[OWNED_WRITES],
      this.registry,
      new OrchestratorTimers(this.clock, options.keepAlive ?? this.clock === systemClock),
      this,
    );
    this.#e = assemble(
      this.#ctx,
      {
        ...options,
        routing: createRouter(routing ?? "least-loaded"),
        random: random ?? Math.random,
      },
      (id, reason) => this.cancel(id, reason),
    );
  }

  // ───────────────────────────── lifecycle ─────────────────────────────

  /** `idle` (never started), `running`, `stopping` or `stopped`. */
  get state(): EngineState {
    return this.#ctx.state;
  }

  /**
   * Opens the store, restores unfinished tasks it holds (first start only), starts health
   * monitoring and dispatch. Idempotent.
   *
   * @example
   * ```ts
   * await orchestrator.start();
   * ```
   */
  async start(): Promise<void> {
    return this.#e.lifecycle.start();
  }

  /**
   * Stops dispatching and leaves no timer or handle behind. `drain` (default) lets running
   * tasks finish for up to `timeoutMs`; then (or at once with `abort`) running tasks are
   * aborted and go back to `queued`. Registered workers are stopped (and started again by
   * the next `start()`). Remote leases stay as they are (in the store) and their
   * timers are cleared; they run again on the next `start()`. Every write is flushed; the
   * store stays open — whoever created it closes it (`store.close()` checkpoints SQLite and
   * releases its file). Idempotent.
   *
   * @example
   * ```ts
   * await orchestrator.stop({ mode: "drain", timeoutMs: 10_000 });
   * await store.close();
   * ```
   */
  async stop(options: StopOptions = {}): Promise<void> {
    return this.#e.lifecycle.stop(options);
  }

  // ───────────────────────────── workers ─────────────────────────────

  /**
   * Registers a worker (validated; `CONFLICT` on a duplicate id) and calls its `start()`.
   * Workers of kind `remote-node` take work only through {@link Orchestrator.claim}.
   *
   * @example
   * ```ts
   * await orchestrator.register(new FunctionWorker({ taskTypes: ["echo"], fn: async (p) => p }));
   * ```
   */
  async register(worker: Worker): Promise<WorkerInfo> {
    const entry = this.registry.add(worker);
    try {
      await worker.start?.();
    } catch (err) {
      this.registry.remove(entry.id);
      throw new FlotillaError(
        "WORKER_ERROR",
        `worker ${entry.id} failed to start: ${String((err as Error)?.message ?? err)}`,
        { cause: err },
      );
    }
    const info = this.registry.info(entry.id)!;
    this.emit("worker:registered", info);
    this.#e.dispatcher.wakeAllWaiting();
    return info;
  }

  /**
   * Unregisters a worker: it takes no new task; with `drain` (default) its running tasks
   * finish (up to `timeoutMs`), with `handback` (or after the drain timeout) they are
   * aborted and requeued as a new attempt. A remote node's leased tasks are requeued.
   * Resolves `false` for an unknown id.
   *
   * @example
   * ```ts
   * await orchestrator.unregister("gpu-1", { mode: "handback" });
   * ```
   */
  async unregister(id: string, options: UnregisterOptions = {}): Promise<boolean> {
    const entry = this.registry.get(id);
    if (!entry) return false;
    const info = this.registry.info(id)!;
    const attempts = this.#e.attempts;
    this.registry.setAccepting(id, false);
    if ((options.mode ?? "drain") === "drain" && entry.worker.kind !== REMOTE_NODE_KIND) {
      await attempts.waitUntil(
        () => attempts.ofWorker(id).length === 0,
        options.timeoutMs ?? 30_000,
      );
    }
    await Promise.all(
      attempts
        .ofWorker(id)
        .map((a) => attempts.settle(a, { kind: "requeue", reason: `worker ${id} unregistered` })),
    );
    this.registry.remove(id);
    try {
      await entry.worker.stop?.();
    } catch (err) {
      this.#ctx.logger.warn({ workerId: id, err: String(err) }, "worker stop failed");
    }
    this.emit("worker:unregistered", { ...info, accepting: false });
    this.#e.dispatcher.schedule();
    return true;
  }

  /**
   * Snapshots of every registered worker.
   *
   * @example
   * ```ts
   * orchestrator.listWorkers().map((w) => `${w.id}: ${w.inFlight}/${w.maxConcurrency}`);
   * ```
   */
  listWorkers(): WorkerInfo[] {
    return this.registry.snapshot();
  }

  /**
   * Feeds a health report obtained elsewhere (a remote node's liveness, a status push) into
   * the worker's health state machine, as a check result would. `false` for an unknown id;
   * `VALIDATION` for a malformed report.
   *
   * @example
   * ```ts
   * orchestrator.reportHealth("node-7", { status: "degraded", message: "offline: no heartbeat" });
   * ```
   */
  reportHealth(id: string, report: HealthReport): boolean {
    return this.registry.reportHealth(id, report);
  }

  // ───────────────────────────── submission ─────────────────────────────

  /**
   * Validates and submits one task. Resolves with its handle once it is stored. A task
   * with an `idempotencyKey` already used resolves with the existing task's handle.
   * Rejects with `VALIDATION` (naming the field), `UNKNOWN_DEPENDENCY`, `CYCLE_DETECTED`,
   * `CONFLICT` (duplicate id) or `SHUTTING_DOWN`.
   *
   * @example
   * ```ts
   * const handle = await orchestrator.submit({ type: "llm_request", payload: { prompt: "hi" }, priority: "high" });
   * ```
   */
  async submit<TOutput = unknown>(spec: TaskSpec): Promise<TaskHandle<TOutput>> {
    const [handle] = await this.#e.submission.submit([spec], "task");
    return handle as TaskHandle<TOutput>;
  }

  /**
   * Submits several tasks atomically: all are stored or none. Dependencies may point to
   * tasks in the batch (in any order) or submitted earlier; independent tasks run in
   * parallel. Handles come back in the order of `specs`.
   *
   * @example
   * ```ts
   * const [fetch, summarize] = await orchestrator.submitBatch([
   *   { id: "fetch", type: "http", payload: { url } },
   *   { id: "summarize", type: "llm_request", dependsOn: ["fetch"], payload: { prompt: "Summarize: {{fetch.body}}" } },
   * ]);
   * ```
   */
  async submitBatch(specs: readonly TaskSpec[]): Promise<TaskHandle[]> {
    if (!Array.isArray(specs)) {
      throw new FlotillaError("VALIDATION", "tasks: expected an array of task specs");
    }
    return this.#e.submission.submit(specs, "tasks");
  }

  // ───────────────────────────── queries ─────────────────────────────

  /**
   * The task's record (a copy), from memory or the store; `undefined` when unknown.
   *
   * @example
   * ```ts
   * const rec = await orchestrator.get("summarize");
   * rec?.status;
   * ```
   */
  async get(id: string): Promise<TaskRecord | undefined> {
    checkId(id);
    const live = this.#e.table.known(id);
    if (live) return structuredClone(live.rec);
    return this.store.getTask(id);
  }

  /**
   * Builds an answer from a task without copying it: `render` is called at once, with the
   * engine's own record when the task is in memory (read it; do not keep it or change it —
   * it changes as the task moves on), and its answer returned; `undefined` when the task is
   * unknown. Use `get` for a record to keep.
   *
   * @example
   * ```ts
   * const line = await orchestrator.view("summarize", (rec) => `${rec.id}: ${rec.status}`);
   * ```
   */
  async view<T>(id: string, render: (rec: Readonly<TaskRecord>) => T): Promise<T | undefined> {
    checkId(id);
    const live = this.#e.table.known(id);
    if (live) return render(live.rec);
    const rec = await this.store.getTask(id);
    return rec ? render(rec) : undefined;
  }

  /**
   * A handle on an existing task (to await its result or follow its progress);
   * `undefined` when unknown.
   *
   * @example
   * ```ts
   * const handle = await orchestrator.handle("summarize");
   * await handle?.result();
   * ```
   */
  async handle(id: string): Promise<TaskHandle | undefined> {
    checkId(id);
    const live = this.#e.table.known(id);
    if (live) return this.#e.handles.of(live);
    const rec = await this.store.getTask(id);
    return rec ? this.#e.handles.forRecord(rec) : undefined;
  }

  /**
   * Tasks matching a query, from the store (newest first by default).
   *
   * @example
   * ```ts
   * await orchestrator.list({ status: ["queued", "running"], limit: 50 });
   * ```
   */
  async list(query?: TaskQuery): Promise<TaskRecord[]> {
    return this.store.listTasks(query);
  }

  /**
   * A synchronous snapshot: counts by status, queue depth by priority, workers, uptime,
   * average execution time.
   *
   * @example
   * ```ts
   * const { counts, queueDepth, inFlight } = orchestrator.status();
   * ```
   */
  status(): OrchestratorStatus {
    const queue = this.#e.dispatcher.queue;
    const queueDepth: Record<string, number> = {};
    for (const [p, n] of queue.depthByPriority()) {
      queueDepth[PRIORITY_NAME_BY_VALUE.get(p) ?? String(p)] = n;
    }
    const running = this.#ctx.state === "running";
    return {
      state: this.#ctx.state,
      counts: this.#e.table.counts(),
      queueDepth,
      queued: queue.size,
      delayed: this.#e.dispatcher.delayed.size,
      inFlight: this.#e.attempts.inFlight,
      workers: this.registry.snapshot(),
      uptimeMs: running ? this.clock.now() - this.#e.lifecycle.startedAt : 0,
      avgExecutionMs: this.#e.attempts.avgExecutionMs,
    };
  }

  /**
   * A cheap reading of the ready queue for autoscaling: how many tasks (of `taskTypes`, or
   * of every type) are queued and ready to run, and how long the oldest of them has waited
   * since it became ready (0 when none). Tasks waiting for dependencies, an approval, a
   * retry delay or `runAt` are not counted. O(number of task types asked for).
   *
   * @example
   * ```ts
   * const { depth, oldestWaitMs } = orchestrator.queueReading(["llm_request"]);
   * if (depth > 100 || oldestWaitMs > 30_000) console.warn(`backlog: ${depth} waiting`);
   * ```
   */
  queueReading(taskTypes?: string[]): { depth: number; oldestWaitMs: number } {
    if (taskTypes !== undefined && !Array.isArray(taskTypes)) {
      throw new FlotillaError("VALIDATION", "taskTypes: expected an array of task types");
    }
    const { depth, oldestAt } = this.#e.dispatcher.queue.reading(taskTypes);
    return {
      depth,
      oldestWaitMs: oldestAt === undefined ? 0 : Math.max(0, this.clock.now() - oldestAt),
    };
  }

  /**
   * Replaces the tenants' fair-share weights while it runs (e.g. from a reloaded config):
   * at equal priority a tenant of weight 3 gets three dispatches for every one of a weight-1
   * tenant; tenants not named get weight 1. Throws `VALIDATION` for a weight that is not a
   * positive number, and then changes nothing.
   *
   * @example
   * ```ts
   * orchestrator.setTenantWeights({ acme: 3, beta: 1 });
   * ```
   */
  setTenantWeights(weights: Record<string, number>): void {
    if (!weights || typeof weights !== "object" || Array.isArray(weights)) {
      throw new FlotillaError("VALIDATION", "weights: expected { tenant: weight }");
    }
    this.#e.dispatcher.queue.fair.setWeights(weights);
    this.#e.dispatcher.schedule();
  }

  /**
   * A task's lifecycle history from the store, oldest first: one `task:<status>` event per
   * transition, with `{ from, to, attempt, reason?, error?, workerId? }` as `data` and the
   * store's `seq`. Lines not yet written are written first, so the history is complete up to
   * the call. Resumable streams (SSE's `Last-Event-ID`) replay from it.
   *
   * @example
   * ```ts
   * for (const ev of await orchestrator.history(id)) console.log(ev.type, new Date(ev.at));
   * ```
   */
  async history(taskId: string): Promise<StoredEvent[]> {
    await this.#e.persistence.flushHistory();
    return this.#ctx.store.listEvents({ taskId });
  }

  /**
   * The telemetry a task's worker reported (kept in memory, bounded by
   * `options.telemetry`): its newest samples with CPU, memory in MB, current tool or step
   * pulled out, the latest of each, and how many streamed token and output chunks it sent.
   * `undefined` when it reported nothing or was evicted (or after a restart).
   *
   * @example
   * ```ts
   * const t = orchestrator.telemetry(handle.id);
   * console.log(t?.latest.cpuPercent, t?.latest.memoryMb, t?.latest.tool);
   * ```
   */
  telemetry(taskId: string): TaskTelemetry | undefined {
    return this.#e.telemetry.get(taskId);
  }

  /** The tenants' fair-share weights in force (others have weight 1). @example orchestrator.tenantWeights() // { acme: 3 } */
  tenantWeights(): Record<string, number> {
    return this.#e.dispatcher.queue.fair.weights();
  }

  /**
   * The usage ledger from the store: one line per settled attempt that reported usage
   * (tokens, cost, requests), with its task, worker, provider, model and tenant, oldest
   * first. `since` inclusive, `until` exclusive.
   *
   * @example
   * ```ts
   * const today = await orchestrator.usage({ since: Date.parse("2026-12-07T00:00:00Z") });
   * const cost = today.reduce((sum, line) => sum + (line.usage.costUsd ?? 0), 0);
   * ```
   */
  async usage(query: { since?: number; until?: number } = {}): Promise<UsageEntry[]> {
    return this.store.listUsage(query);
  }

  /**
   * Why a task is not running now: its status and each reason with what a person needs to
   * act on it — unfinished dependencies, an approval, a retry delay or `runAt`, no worker
   * that could run it (and what none offers), workers busy or cut off (circuit, health), a
   * gate holding it (rate limit, budget, concurrency cap, admission: which key, until when).
   * No reasons when it runs, has ended, or goes on the next dispatch round. `NOT_FOUND` for
   * an unknown id. Reads only.
   *
   * @example
   * ```ts
   * const { status, reasons } = await orchestrator.explain(handle.id);
   * for (const r of reasons) console.log(r.kind, r.message);
   * ```
   */
  async explain(id: string): Promise<TaskExplanation> {
    checkId(id);
    return explain(this.#ctx, this.#e, id);
  }

  // ───────────────────────────── control ─────────────────────────────

  /**
   * Cancels a task: a waiting one at once; a running one has its worker's signal aborted
   * and is settled as `cancelled` without waiting for the worker. Resolves `true` if this
   * call cancelled it, `false` if it had already finished; `NOT_FOUND` for an unknown id.
   * Dependents are skipped (or run, by their policy). With `partitions`, a task another
   * orchestrator of the store holds is cancelled through the store (a versioned write); its
   * holder lets it go at its next `adopt`.
   *
   * @example
   * ```ts
   * await orchestrator.cancel(handle.id, "no longer needed");
   * ```
   */
  async cancel(id: string, reason = "cancelled by request"): Promise<boolean> {
    checkId(id);
    return this.#e.control.cancel(id, String(reason));
  }

  /**
   * Approves a task awaiting approval: a `before_run` task goes on to the queue (or waits
   * for its dependencies), an `after_run` task's held result is accepted (`succeeded`).
   * Approving an approved task again returns it unchanged; approving a task in any other
   * state is `INVALID_STATE` naming that state. With `partitions`, a task another
   * orchestrator of the store holds is decided through the store (a versioned write); its
   * holder goes on at its next `adopt`.
   *
   * @example
   * ```ts
   * await orchestrator.approve("deploy", { by: "alice", comment: "looks good" });
   * ```
   */
  async approve(id: string, decision: Decision = {}): Promise<TaskRecord> {
    checkId(id);
    return this.#e.control.decide(id, "approved", decision);
  }

  /**
   * Rejects a task awaiting approval: it ends `rejected` (error `REJECTED` with the
   * comment) and its dependents are skipped. Idempotent on a rejected task;
   * `INVALID_STATE` naming the state otherwise.
   *
   * @example
   * ```ts
   * await orchestrator.reject("deploy", { by: "bob", comment: "wrong branch" });
   * ```
   */
  async reject(id: string, decision: Decision = {}): Promise<TaskRecord> {
    checkId(id);
    return this.#e.control.decide(id, "rejected", decision);
  }

  // ───────────────────────────── partitions ─────────────────────────────

  /**
   * With the `partitions` option: holds `partitions` from now on and takes in their
   * unfinished tasks from the store (queued ones queue here, a task left running by an
   * orchestrator that stopped gets a new attempt). Adopting a held partition again picks
   * up what other orchestrators of the store submitted to it since, and dependencies they
   * finished, and lets go of tasks another orchestrator changed in the store. Call it when a
   * partition lease is gained, and again on a wake-up or a timer. Calls to `adopt` and
   * `release` take turns. `INVALID_STATE` without the option; `VALIDATION` for a partition
   * out of range.
   *
   * @example
   * ```ts
   * const orchestrator = new Orchestrator({ store, partitions: { count: 64 } });
   * await orchestrator.start();
   * leases.onChange(({ acquired }) => void orchestrator.adopt(acquired));
   * ```
   */
  async adopt(partitions: readonly number[]): Promise<void> {
    const ps = this.#e.ownership.check(partitions, "adopt");
    await this.#inTurn(() => adoptPartitions(this.#ctx, this.#e, ps), `adopt ${ps.length}`);
  }

  /** Adopting and releasing take turns: one never sees the other half done. */
  #inTurn(op: () => Promise<void>, what?: string): Promise<void> {
    const log = this.#ctx.logger;
    const timed = async () => {
      log.debug({ op: what }, "partition op starts");
      try {
        await op();
      } finally {
        log.debug({ op: what }, "partition op ends");
      }
    };
    const run = this.#partitionOps.then(timed, timed);
    this.#partitionOps = run.catch(() => {});
    return run;
  }

  /**
   * With the `partitions` option: stops holding `partitions`. Their tasks leave this
   * orchestrator: running ones are aborted and go back to `queued` (a new attempt that
   * does not count against their retries), remote holders keep their leases (in the
   * store). Resolves once every write about them is stored — give the partition lease up
   * only then, so the next holder reads their last state. Handles on them keep working
   * (they read the store).
   *
   * With `drainMs`, the partitions are drained first: their tasks are no longer dispatched
   * here (new ones are left to the next holder) while the local attempts running go on, for
   * at most `drainMs`; only those still running then are aborted. Partitions adopted again
   * meanwhile stay. `drainMs` defaults to 0: running tasks are aborted at once.
   *
   * @example
   * ```ts
   * await orchestrator.release([3, 17]);
   * await orchestrator.release([4], { drainMs: 30_000 }); // let its running tasks finish
   * ```
   */
  async release(partitions: readonly number[], options: { drainMs?: number } = {}): Promise<void> {
    const e = this.#e;
    const ps = e.ownership.check(partitions, "release");
    const drainMs = options?.drainMs ?? 0;
    if (!(Number.isInteger(drainMs) && drainMs >= 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `release: drainMs: expected a non-negative integer, got ${String(drainMs)}`,
      );
    }
    if (drainMs > 0) {
      await this.#inTurn(async () => stopDispatching(e, ps), `drain ${ps.length}`);
      await drained(e, ps, drainMs);
    }
    await this.#inTurn(
      () =>
        releasePartitions(
          this.#ctx,
          e,
          drainMs > 0 ? ps.filter((n) => !e.ownership.held().includes(n)) : ps,
        ),
      `release ${ps.length}`,
    );
  }

  /**
   * The partitions this orchestrator holds, ascending (`[]` without the `partitions`
   * option, where it runs every task), and the partition of a task.
   *
   * @example
   * ```ts
   * orchestrator.partitions().held; // [0, 1, 5]
   * orchestrator.partitions().of((await orchestrator.get(id))!); // 5
   * ```
   */
  partitions(): {
    count: number | undefined;
    held: number[];
    of(task: Pick<TaskRecord, "id" | "partition">): number;
  } {
    const ownership = this.#e.ownership;
    return {
      count: ownership.count,
      held: ownership.held(),
      of: (task) => ownership.partitionOf(task),
    };
  }

  // ───────────────────────────── pull dispatch ─────────────────────────────

  /**
   * A free slot of a remote holder asks for work: returns the best ready task that slot can
   * run (same matching as local slots: priority, aging, fair share, FIFO, requirements,
   * target, gates), leased to `holderId` for `leaseMs`, or `null` when there is none. A
   * registered `remote-node` worker with this id is matched by its own declaration and its
   * slots are counted. With `partitions`, when nothing held here suits the slot, it gets the
   * best of the oldest queued tasks (50 per task type) of partitions held elsewhere, by a
   * versioned write; this orchestrator serves that attempt's lease calls and hands the task
   * back to its holder when the attempt ends.
   *
   * @example
   * ```ts
   * const claim = await orchestrator.claim({ holderId: "node-7", taskTypes: ["remote_compute"] }, { leaseMs: 120_000 });
   * if (claim) run(claim.task, claim.lease.id);
   * ```
   */
  async claim(slot: ClaimSlot, options: ClaimOptions = {}): Promise<Claim | null> {
    return this.#e.leases.claim(slot, options);
  }

  /**
   * Extends a lease (from now by `extendMs`, default the lease's own length). `NOT_FOUND`
   * for an unknown task, `FORBIDDEN` when `leaseId` does not hold it, `INVALID_STATE` when
   * it has finished.
   *
   * @example
   * ```ts
   * await orchestrator.renewLease(taskId, leaseId, 60_000);
   * ```
   */
  async renewLease(taskId: string, leaseId: string, extendMs?: number): Promise<Lease> {
    return this.#e.leases.renew(taskId, leaseId, extendMs);
  }

  /**
   * Reports progress of a leased task (renews the lease, marks it `running`, emits
   * `task:progress` when `data` is given).
   *
   * @example
   * ```ts
   * await orchestrator.reportProgress(taskId, leaseId, { percent: 40 });
   * ```
   */
  async reportProgress(taskId: string, leaseId: string, data?: unknown): Promise<TaskRecord> {
    return this.#e.leases.progress(taskId, leaseId, data);
  }

  /**
   * Completes a leased task with the holder's `WorkerResult` (a malformed one fails the
   * task with `WORKER_ERROR`). Resolves with the record after the transition.
   *
   * @example
   * ```ts
   * await orchestrator.completeLease(taskId, leaseId, { output: { answer: 42 } });
   * ```
   */
  async completeLease(taskId: string, leaseId: string, result: WorkerResult): Promise<TaskRecord> {
    return this.#e.leases.complete(taskId, leaseId, result);
  }

  /**
   * Fails a leased task's attempt with an error (retried per its policy when retryable;
   * an `UnrecoverableError` or a `{ code, message, retryable: false }` never is).
   *
   * @example
   * ```ts
   * await orchestrator.failLease(taskId, leaseId, new Error("exit code 2"));
   * ```
   */
  async failLease(taskId: string, leaseId: string, error: unknown): Promise<TaskRecord> {
    return this.#e.leases.fail(taskId, leaseId, error);
  }

  /**
   * Gives a leased task back: it returns to `queued` (a new attempt on the next claim that
   * does not count against `maxAttempts`). `reason` goes into the transition event.
   *
   * @example
   * ```ts
   * await orchestrator.releaseLease(taskId, leaseId);
   * ```
   */
  async releaseLease(
    taskId: string,
    leaseId: string,
    reason = "lease released",
  ): Promise<TaskRecord> {
    return this.#e.leases.release(taskId, leaseId, String(reason));
  }
}

function checkId(id: unknown): asserts id is string {
  if (typeof id !== "string" || id.length === 0) {
    throw new FlotillaError("VALIDATION", `id: expected a non-empty string, got ${typeof id}`);
  }
}
