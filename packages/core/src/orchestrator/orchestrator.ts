import { EventEmitter } from "eventemitter3";
import { type Clock, systemClock, type TimerHandle } from "../clock.js";
import { resolveInputs, resolveTemplates } from "../dag/templates.js";
import { DependencyTracker } from "../dag/tracker.js";
import { orderBatch } from "../dag/validate.js";
import { ERROR_CODES, FlotillaError, RetryAfterError, type SerializedError } from "../errors.js";
import {
  type Claim,
  type ClaimOptions,
  ClaimOptionsSchema,
  type ClaimSlot,
  ClaimSlotSchema,
} from "../lease/types.js";
import { type Logger, silentLogger } from "../logger.js";
import { toJsonSafe } from "../registry/json-safe.js";
import { matchesTask } from "../registry/match.js";
import { type RegistryChange, WorkerRegistry } from "../registry/registry.js";
import type { WorkerEntry, WorkerInfo } from "../registry/types.js";
import type { DispatchGate, SettleOutcome } from "../resources/gate.js";
import { createRouter } from "../router/strategies.js";
import type { RoutingStrategy } from "../router/types.js";
import { backoffDelay } from "../scheduler/backoff.js";
import { DelayQueue } from "../scheduler/delayQueue.js";
import { type Lane, ReadyQueue } from "../scheduler/readyQueue.js";
import { toJson } from "../store/common.js";
import { MemoryStore } from "../store/memory.js";
import { OWNED_WRITES, type OwnedWrites, snapshotRecord } from "../store/owned.js";
import type { Store, StoredEvent, TaskQuery, UsageEntry } from "../store/types.js";
import type { OrchestratorEvents, ProgressEvent, TransitionEvent } from "../task/events.js";
import { assertTransition, isTerminalStatus } from "../task/lifecycle.js";
import { normalizeTaskSpec, type TaskDefaults } from "../task/normalize.js";
import {
  PRIORITY_NAMES,
  PRIORITY_VALUES,
  TASK_STATUSES,
  type TaskSpec,
  type TaskStatus,
  type Usage,
  UsageSchema,
} from "../task/schema.js";
import type { Lease, TaskRecord, TaskResult } from "../task/types.js";
import { parseOrThrow } from "../task/validation.js";
import { deferred } from "../util/deferred.js";
import { newId } from "../util/ids.js";
import type { ExecutionContext, Worker, WorkerResult, WorkerTask } from "../worker/types.js";
import { parseWorkerResult } from "../worker/validate.js";
import { resultPromise, settleResult, TaskHandle, type TaskState } from "./handle.js";
import {
  type OrchestratorOptions,
  OrchestratorOptionsSchema,
  type OrchestratorStatus,
  type StopOptions,
  type UnregisterOptions,
} from "./options.js";
import { OrchestratorTimers } from "./timers.js";

/** A pending write of a task's record; `resolve` acknowledges it once stored. */
interface DirtyWrite {
  rec: TaskRecord;
  resolve: () => void;
  reject: (err: unknown) => void;
  promise: Promise<void>;
  failures: number;
  sanitized?: boolean;
}

const NO_OUTPUTS: ReadonlyMap<string, unknown> = new Map();

/** How far back the usage ledger is replayed into the gates at start. */
const USAGE_REPLAY_MS = 48 * 3_600_000;

/** First and longest wait before a refused task write is tried again. */
const WRITE_RETRY_MIN_MS = 50;
const WRITE_RETRY_MAX_MS = 5_000;

/** Lease ids of in-process dispatches start with this. */
const LOCAL_LEASE_PREFIX = "local-";

/**
 * The kind of a registered worker whose slots are filled only by pull claims.
 *
 * @example
 * ```ts
 * await orchestrator.register({ id: "node-7", kind: REMOTE_NODE_KIND, taskTypes: ["*"], maxConcurrency: 1, local: false, execute });
 * ```
 */
export const REMOTE_NODE_KIND = "remote-node";

/** Live state of one task in this process. */
interface Live extends TaskState {
  attempt?: Attempt;
  /** Attempts that ended without failing (released, handed back, shutdown): not counted against `maxAttempts`. */
  freeAttempts?: number;
  firstQueuedAt?: number;
  startedAt?: number;
}

/** One attempt of a task on one worker slot or remote holder. */
interface Attempt {
  live: Live;
  n: number;
  entry: WorkerEntry;
  remote: boolean;
  /** Whether a registry slot was acquired (released on settle). */
  slot: boolean;
  lease: Lease;
  leaseMs: number;
  /** Created on first use of `ctx.signal` (most workers never look at it). */
  controller?: AbortController;
  /** Why the attempt was aborted, for a signal created after the fact. */
  abortReason?: FlotillaError;
  timeoutTimer?: TimerHandle;
  leaseTimer?: TimerHandle;
  settled: boolean;
  /** Whether the gates were told the attempt started. */
  started?: boolean;
  dispatchedAt: number;
  startedAt?: number;
  usage?: Usage;
  gates: DispatchGate[];
}

type AttemptEnd =
  | { kind: "success"; result: WorkerResult }
  | { kind: "error"; error: FlotillaError; retryAfterMs?: number }
  | { kind: "timeout" }
  | { kind: "cancelled"; reason: string }
  | { kind: "lost"; reason: string }
  | { kind: "requeue"; reason: string };

/** A transition as written to the store's event log. */
interface StoredTransition extends StoredEvent {
  taskId: string;
  data: {
    from: TaskStatus | null;
    to: TaskStatus;
    attempt: number;
    reason: string | undefined;
    error: SerializedError | undefined;
    workerId: string | undefined;
  };
}

/** `task:<status>` for every status, made once. */
const EVENT_TYPE = Object.fromEntries(TASK_STATUSES.map((s) => [s, `task:${s}`])) as Record<
  TaskStatus,
  string
>;

interface GateCheck {
  passing: WorkerEntry[];
  fail?: FlotillaError;
  retryAt?: number;
  blockKey?: string;
  reason?: string;
}

type State = "idle" | "running" | "stopping" | "stopped";

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
export class Orchestrator extends EventEmitter<OrchestratorEvents> {
  readonly clock: Clock;
  readonly store: Store;
  readonly registry: WorkerRegistry;
  readonly #logger: Logger;
  readonly #routing: RoutingStrategy;
  readonly #gates: DispatchGate[];
  readonly #defaults: TaskDefaults;
  readonly #concurrency: number;
  readonly #leaseMs: number;
  readonly #recheckMs: number;
  readonly #finishedCacheSize: number;
  readonly #random: () => number;
  readonly #timers: OrchestratorTimers;

  readonly #queue: ReadyQueue;
  readonly #delayed = new DelayQueue<string>();
  readonly #dag = new DependencyTracker();
  readonly #tasks = new Map<string, Live>();
  readonly #finished = new Map<string, Live>();
  readonly #finishedRing: string[] = [];
  #finishedHead = 0;
  readonly #idem = new Map<string, Promise<TaskHandle>>();
  readonly #attempts = new Set<Attempt>();
  readonly #counts = new Map<TaskStatus, number>();
  readonly #pendingWrites = new Set<Promise<unknown>>();
  readonly #laneTimers = new Set<Lane>();
  /** Lanes parked for want of a worker, by the ids of the workers that could run them. */
  readonly #waitingOn = new Map<string, Set<Lane>>();
  readonly #laneWaits = new Map<Lane, string[]>();

  /** Local lease ids: a per-process random prefix and a counter (no UUID per dispatch). */
  readonly #localLeasePrefix = `${LOCAL_LEASE_PREFIX}${newId()}-`;
  #localLeases = 0;
  /** Shared by every handle (one function, not one closure per task). */
  readonly #cancelFn = (id: string, reason?: string): Promise<boolean> => this.cancel(id, reason);
  #state: State = "idle";
  #startedAt = 0;
  #seq = 0;
  #inFlight = 0;
  #delayTimer: TimerHandle | undefined;
  #delayTimerAt: number | undefined;
  #pumpScheduled = false;
  #pumping = false;
  #pumpAgain = false;
  #unsubscribers: Array<() => void> = [];
  #eventBuffer: StoredEvent[] = [];
  #eventFlushScheduled = false;
  #execTotalMs = 0;
  #execCount = 0;
  #recovered = false;
  #workersStopped = false;
  readonly #settleListeners = new Set<() => void>();
  readonly #dirty = new Map<string, DirtyWrite>();
  /** Writes the store refused, waiting for the retry timer (by task id). */
  readonly #retrying = new Map<string, DirtyWrite>();
  /** Promises of task writes refused at least once (stop does not wait for them). */
  readonly #unacked = new Set<Promise<unknown>>();
  #retryTimer: TimerHandle | undefined;
  #retryDelayMs = WRITE_RETRY_MIN_MS;
  #dirtyFlushScheduled = false;
  readonly #owned: OwnedWrites | undefined;
  /** States of handles on unfinished tasks known only from the store, by id. */
  readonly #foreign = new Map<string, TaskState>();
  #foreignTimer: TimerHandle | undefined;

  constructor(options: OrchestratorOptions = {}) {
    super();
    const { clock, store, logger, routing, registry, random, ...plain } = options;
    parseOrThrow(OrchestratorOptionsSchema, plain, "options");
    this.clock = clock ?? systemClock;
    this.store = store ?? new MemoryStore({ clock: this.clock });
    this.#owned = (this.store as { [OWNED_WRITES]?: OwnedWrites })[OWNED_WRITES];
    this.#logger = (logger ?? silentLogger).child({ component: "orchestrator" });
    this.#routing = createRouter(routing ?? "least-loaded");
    this.#gates = [...(options.gates ?? [])];
    // A copy: defaults are read once (a task's default retry policy is parsed once).
    const d = options.defaults;
    this.#defaults = d ? { ...d, ...(d.retry ? { retry: { ...d.retry } } : {}) } : {};
    this.#concurrency = options.concurrency ?? Number.POSITIVE_INFINITY;
    this.#leaseMs = options.leaseMs ?? 60_000;
    this.#recheckMs = options.recheckIntervalMs ?? 1_000;
    this.#finishedCacheSize = options.finishedCacheSize ?? 10_000;
    this.#random = random ?? Math.random;
    this.#timers = new OrchestratorTimers(
      this.clock,
      options.keepAlive ?? this.clock === systemClock,
    );
    this.registry = new WorkerRegistry({
      ...registry,
      clock: this.clock,
      logger: logger ?? silentLogger,
    });
    const queueOptions: ConstructorParameters<typeof ReadyQueue>[0] = {
      epoch: this.clock.now(),
      onLaneDropped: (lane) => {
        this.#clearLaneTimer(lane);
        this.#forgetWaits(lane);
      },
    };
    if (options.aging) queueOptions.agingIntervalMs = options.aging.intervalMs;
    if (options.fairness?.weights) queueOptions.tenantWeights = options.fairness.weights;
    this.#queue = new ReadyQueue(queueOptions);
    for (const s of TASK_STATUSES) this.#counts.set(s, 0);
  }

  // ───────────────────────────── lifecycle ─────────────────────────────

  /** `idle` (never started), `running`, `stopping` or `stopped`. */
  get state(): State {
    return this.#state;
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
    if (this.#state === "running") return;
    if (this.#state === "stopping") {
      throw new FlotillaError("SHUTTING_DOWN", "start: the orchestrator is stopping");
    }
    await this.store.open();
    if (!this.#recovered) {
      this.#recovered = true;
      await this.#restoreGates();
      await this.#recover();
    }
    if (this.#workersStopped) {
      this.#workersStopped = false;
      for (const entry of this.registry.list()) {
        try {
          await entry.worker.start?.();
        } catch (err) {
          this.#internalError(err, `worker ${entry.id} failed to restart`);
        }
      }
    }
    this.#state = "running";
    this.#startedAt = this.clock.now();
    this.registry.start();
    const onChange = (change: RegistryChange) => {
      if (change.kind === "health") this.emit("worker:health", change);
      else this.emit("worker:circuit", change);
      this.#wakeWorker(change.workerId);
    };
    // A new worker may run anything that was waiting.
    const onAdded = () => this.#wakeAllWaiting();
    this.registry.on("change", onChange);
    this.registry.on("added", onAdded);
    this.#unsubscribers.push(() => {
      this.registry.off("change", onChange);
      this.registry.off("added", onAdded);
    });
    this.#wakeAllWaiting();
    for (const gate of this.#gates) {
      const unsubscribe = gate.subscribe?.(() => {
        this.#queue.unparkAll("gate");
        this.#schedulePump();
      });
      if (unsubscribe) this.#unsubscribers.push(unsubscribe);
    }
    for (const att of this.#attempts) {
      if (!att.remote) continue;
      this.#armLeaseTimer(att);
      if (att.live.rec.timeoutMs !== undefined) this.#armTimeout(att);
    }
    this.#armDelayTimer();
    this.#armWriteRetry();
    this.#armForeignPoll();
    this.#logger.info("orchestrator started");
    this.emit("orchestrator:started");
    this.#schedulePump();
  }

  /**
   * Stops dispatching and leaves no timer or handle behind. `drain` (default) lets running
   * tasks finish for up to `timeoutMs`; then (or at once with `abort`) running tasks are
   * aborted and go back to `queued`. Registered workers are stopped (and started again by
   * the next `start()`). Remote leases stay as they are (in the store) and their
   * timers are cleared; they run again on the next `start()`. Idempotent.
   *
   * @example
   * ```ts
   * await orchestrator.stop({ mode: "drain", timeoutMs: 10_000 });
   * ```
   */
  async stop(options: StopOptions = {}): Promise<void> {
    if (this.#state === "stopped" || this.#state === "idle") {
      this.#state = "stopped";
      this.#clearTimers();
      this.#clearWriteRetry();
      await this.#flushWrites();
      return;
    }
    if (this.#state === "stopping") {
      await new Promise<void>((resolve) => this.once("orchestrator:stopped", resolve));
      return;
    }
    const mode = options.mode ?? "drain";
    const timeoutMs = options.timeoutMs ?? 30_000;
    this.#state = "stopping";
    this.#clearTimers();
    if (mode === "drain") {
      await this.#waitUntil(() => this.#localAttempts() === 0, timeoutMs);
    }
    const settles: Promise<void>[] = [];
    for (const att of [...this.#attempts]) {
      if (att.remote) {
        this.#clearAttemptTimers(att);
        continue;
      }
      settles.push(this.#settle(att, { kind: "requeue", reason: "orchestrator stopped" }));
    }
    await Promise.allSettled(settles);
    this.#clearTimers();
    for (const u of this.#unsubscribers.splice(0)) u();
    this.registry.stop();
    await this.#stopWorkers();
    this.#clearWriteRetry();
    await this.#flushWrites();
    this.#state = "stopped";
    this.#logger.info("orchestrator stopped");
    this.emit("orchestrator:stopped");
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
        {
          cause: err,
        },
      );
    }
    const info = this.#workerInfo(entry.id)!;
    this.emit("worker:registered", info);
    this.#wakeAllWaiting();
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
    const info = this.#workerInfo(id)!;
    this.registry.setAccepting(id, false);
    const mine = () => [...this.#attempts].filter((a) => a.entry.id === id);
    if ((options.mode ?? "drain") === "drain" && entry.worker.kind !== REMOTE_NODE_KIND) {
      await this.#waitUntil(() => mine().length === 0, options.timeoutMs ?? 30_000);
    }
    await Promise.all(
      mine().map((a) => this.#settle(a, { kind: "requeue", reason: `worker ${id} unregistered` })),
    );
    this.registry.remove(id);
    try {
      await entry.worker.stop?.();
    } catch (err) {
      this.#logger.warn({ workerId: id, err: String(err) }, "worker stop failed");
    }
    this.emit("worker:unregistered", { ...info, accepting: false });
    this.#schedulePump();
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
    const [handle] = await this.#submitMany([spec], "task");
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
    return this.#submitMany(specs, "tasks");
  }

  async #submitMany(specs: readonly TaskSpec[], where: string): Promise<TaskHandle[]> {
    if (this.#state === "stopping") {
      throw new FlotillaError("SHUTTING_DOWN", "submit: the orchestrator is stopping");
    }
    const now = this.clock.now();
    const records = specs.map((spec, i) =>
      normalizeTaskSpec(spec, {
        now,
        seq: 0,
        defaults: this.#defaults,
        where: where === "task" ? "task" : `${where}[${i}]`,
      }),
    );
    // Idempotency: a key already used returns the existing task.
    const out: Array<TaskHandle | Promise<TaskHandle> | undefined> = new Array(records.length);
    const fresh: TaskRecord[] = [];
    const batchKeys = new Set<string>();
    for (let i = 0; i < records.length; i++) {
      const rec = records[i]!;
      const key = rec.idempotencyKey;
      if (key !== undefined) {
        const existing = this.#idem.get(key);
        if (existing) {
          out[i] = existing;
          continue;
        }
        if (batchKeys.has(key)) {
          throw new FlotillaError(
            "CONFLICT",
            `idempotency key "${key}" appears twice in the batch`,
          );
        }
        batchKeys.add(key);
      }
      fresh.push(rec);
    }
    // Reserve the keys at once, so a concurrent submit with the same key waits for this one.
    const reserved = new Map<string, ReturnType<typeof deferred<TaskHandle>>>();
    for (const rec of fresh) {
      const key = rec.idempotencyKey;
      if (key === undefined) continue;
      const d = deferred<TaskHandle>();
      d.promise.catch(() => {});
      reserved.set(key, d);
      this.#idem.set(key, d.promise);
    }
    try {
      const storedByKey = new Map<string, TaskRecord>();
      await Promise.all(
        [...reserved.keys()].map(async (key) => {
          const found = await this.store.getTaskByIdempotencyKey(key);
          if (found) storedByKey.set(key, found);
        }),
      );
      const toInsert: TaskRecord[] = [];
      for (let i = 0; i < records.length; i++) {
        if (out[i] !== undefined) continue;
        const rec = records[i]!;
        const prior = rec.idempotencyKey ? storedByKey.get(rec.idempotencyKey) : undefined;
        if (prior) {
          const handle = this.#handleFor(prior);
          out[i] = handle;
          reserved.get(rec.idempotencyKey!)?.resolve(handle);
          if (isTerminalStatus(prior.status)) this.#idem.delete(rec.idempotencyKey!);
          continue;
        }
        toInsert.push(rec);
      }
      if (toInsert.length > 0) await this.#insert(toInsert);
      for (let i = 0; i < records.length; i++) {
        if (out[i] !== undefined) continue;
        const rec = records[i]!;
        const handle = this.#handleOf(rec.id);
        out[i] = handle;
        if (rec.idempotencyKey !== undefined) {
          reserved.get(rec.idempotencyKey)?.resolve(handle);
          if (isTerminalStatus(rec.status)) this.#idem.delete(rec.idempotencyKey);
        }
      }
    } catch (err) {
      for (const [key, d] of reserved) {
        if (this.#idem.get(key) === d.promise) this.#idem.delete(key);
        d.reject(err);
      }
      throw err;
    }
    return Promise.all(out as Array<TaskHandle | Promise<TaskHandle>>);
  }

  async #insert(batch: TaskRecord[]): Promise<void> {
    const ids = new Set<string>();
    for (const rec of batch) {
      if (ids.has(rec.id) || this.#tasks.has(rec.id) || this.#finished.has(rec.id)) {
        throw new FlotillaError("CONFLICT", `task ${rec.id} already exists`, {
          details: { taskId: rec.id },
        });
      }
      ids.add(rec.id);
    }
    // Dependencies outside the batch: live in memory, or finished (cache or store).
    const external = new Map<string, TaskRecord>();
    const missing: string[] = [];
    for (const rec of batch) {
      for (const dep of rec.dependsOn) {
        if (ids.has(dep) || external.has(dep)) continue;
        const known = this.#tasks.get(dep) ?? this.#finished.get(dep);
        if (known) external.set(dep, known.rec);
        else missing.push(dep);
      }
    }
    await Promise.all(
      [...new Set(missing)].map(async (dep) => {
        const found = await this.store.getTask(dep);
        if (found) external.set(dep, found);
      }),
    );
    const ordered = orderBatch(batch, (id) => external.has(id));
    // FIFO follows submission order, whatever order the dependency sort produced.
    for (const rec of batch) rec.seq = ++this.#seq;
    // Initial status in dependency order.
    const statusOf = (id: string): TaskStatus | undefined =>
      this.#tasks.get(id)?.rec.status ??
      batchStatus.get(id) ??
      this.#finished.get(id)?.rec.status ??
      external.get(id)?.status;
    const batchStatus = new Map<string, TaskStatus>();
    const now = this.clock.now();
    for (const rec of ordered) {
      const initial = this.#initialStatus(rec, statusOf);
      rec.status = initial.status;
      if (initial.status === "skipped") {
        rec.result = this.#result(rec, undefined, "skipped", now, {
          error: initial.error!,
        });
      }
      if (initial.status === "queued" && rec.runAt !== undefined && rec.runAt > now) {
        rec.notBefore = rec.runAt;
      }
      batchStatus.set(rec.id, rec.status);
    }
    try {
      if (this.#owned) {
        // The free-form parts go through JSON once: what JSON cannot hold is refused
        // (VALIDATION), and the record no longer shares objects with the caller, so later
        // writes need no copy. (Every other field was built from the validated spec.)
        for (const rec of ordered) detach(rec);
        await this.#owned.insertTasks(ordered.map(snapshotRecord));
      } else await this.store.insertTasks(ordered);
    } catch (err) {
      throw err instanceof FlotillaError ? err : FlotillaError.from(err, "STORE_ERROR");
    }
    // Register in memory. Statuses of outside dependencies may have moved during the write.
    const lives: Live[] = [];
    for (const rec of ordered) {
      const live: Live = {
        rec,
        finished: false,
      };
      this.#tasks.set(rec.id, live);
      this.#count(undefined, rec.status);
      lives.push(live);
    }
    const follow: Array<Promise<void>> = [];
    for (const live of lives) {
      const rec = live.rec;
      this.#emitTransition(this.#event(rec, null, rec.status, { reason: "submitted" }), rec);
      if (rec.status === "skipped") {
        follow.push(this.#onTerminal(live));
        continue;
      }
      if (rec.dependsOn.length === 0) {
        if (rec.status === "queued") {
          live.firstQueuedAt = now;
          this.#enqueue(live);
        } else if (rec.status === "pending")
          follow.push(this.#makeReady(live, "dependencies done"));
        continue;
      }
      const unresolved = rec.dependsOn.filter((d) => {
        const s = statusOf(d);
        return s === undefined || !isTerminalStatus(s);
      });
      const failed = rec.dependsOn.filter((d) => {
        const s = statusOf(d);
        return s !== undefined && isTerminalStatus(s) && s !== "succeeded";
      });
      if (failed.length > 0 && rec.onDependencyFailure === "skip") {
        // A dependency failed while this batch was being written.
        follow.push(this.#skip(live, failed[0]!));
        continue;
      }
      this.#dag.add(rec.id, unresolved);
      if (rec.status === "queued") {
        live.firstQueuedAt = now;
        this.#enqueue(live);
      } else if (rec.status === "pending" && unresolved.length === 0) {
        follow.push(this.#makeReady(live, "dependencies done"));
      }
    }
    this.#schedulePump();
    await Promise.all(follow);
  }

  #initialStatus(
    rec: TaskRecord,
    statusOf: (id: string) => TaskStatus | undefined,
  ): { status: TaskStatus; error?: SerializedError } {
    let unresolved = 0;
    for (const dep of rec.dependsOn) {
      const s = statusOf(dep);
      if (s === undefined || !isTerminalStatus(s)) {
        unresolved++;
        continue;
      }
      if (s !== "succeeded" && rec.onDependencyFailure === "skip") {
        return {
          status: "skipped",
          error: {
            code: "DEPENDENCY_FAILED",
            message: `dependency ${dep} ended ${s}`,
            details: { dependency: dep, status: s },
          },
        };
      }
    }
    if (rec.approval === "before_run") return { status: "awaiting_approval" };
    return { status: unresolved > 0 ? "pending" : "queued" };
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
    const live = this.#tasks.get(id) ?? this.#finished.get(id);
    if (live) return structuredClone(live.rec);
    return this.store.getTask(id);
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
    const live = this.#tasks.get(id) ?? this.#finished.get(id);
    if (live) return new TaskHandle(live, this.#cancelFn);
    const rec = await this.store.getTask(id);
    return rec ? this.#handleFor(rec) : undefined;
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
    const counts: Record<string, number> = {};
    for (const [s, n] of this.#counts) counts[s] = n;
    const queueDepth: Record<string, number> = {};
    for (const [p, n] of this.#queue.depthByPriority()) {
      queueDepth[PRIORITY_NAME_BY_VALUE.get(p) ?? String(p)] = n;
    }
    return {
      state: this.#state,
      counts,
      queueDepth,
      queued: this.#queue.size,
      delayed: this.#delayed.size,
      inFlight: this.#inFlight,
      workers: this.registry.snapshot(),
      uptimeMs: this.#state === "running" ? this.clock.now() - this.#startedAt : 0,
      avgExecutionMs: this.#execCount === 0 ? 0 : this.#execTotalMs / this.#execCount,
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
   * if (depth > 100 || oldestWaitMs > 30_000) pool.scaleUp();
   * ```
   */
  queueReading(taskTypes?: string[]): { depth: number; oldestWaitMs: number } {
    if (taskTypes !== undefined && !Array.isArray(taskTypes)) {
      throw new FlotillaError("VALIDATION", "taskTypes: expected an array of task types");
    }
    const { depth, oldestAt } = this.#queue.reading(taskTypes);
    return {
      depth,
      oldestWaitMs: oldestAt === undefined ? 0 : Math.max(0, this.clock.now() - oldestAt),
    };
  }

  // ───────────────────────────── control ─────────────────────────────

  /**
   * Cancels a task: a waiting one at once; a running one has its worker's signal aborted
   * and is settled as `cancelled` without waiting for the worker. Resolves `true` if this
   * call cancelled it, `false` if it had already finished; `NOT_FOUND` for an unknown id.
   * Dependents are skipped (or run, by their policy).
   *
   * @example
   * ```ts
   * await orchestrator.cancel(handle.id, "no longer needed");
   * ```
   */
  async cancel(id: string, reason = "cancelled by request"): Promise<boolean> {
    checkId(id);
    reason = String(reason);
    const live = this.#tasks.get(id);
    if (!live) {
      if (this.#finished.has(id) || (await this.store.getTask(id))) return false;
      throw new FlotillaError("NOT_FOUND", `no task with id ${id}`);
    }
    const rec = live.rec;
    if (isTerminalStatus(rec.status)) return false;
    if (live.attempt) {
      const att = live.attempt;
      await this.#settle(att, { kind: "cancelled", reason });
      return rec.status === "cancelled";
    }
    if (rec.status === "leased" || rec.status === "running") return false;
    this.#queue.remove(id);
    this.#delayed.remove(id);
    this.#dag.forget(id);
    const error = new FlotillaError("CANCELLED", reason).toJSON();
    const now = this.clock.now();
    await this.#transition(live, "cancelled", {
      reason,
      error,
      patch: (r) => {
        r.result = this.#result(r, live, "cancelled", now, { error });
      },
    });
    await this.#onTerminal(live);
    this.#schedulePump();
    return true;
  }

  /**
   * Approves a task awaiting approval: a `before_run` task goes on to the queue (or waits
   * for its dependencies), an `after_run` task's held result is accepted (`succeeded`).
   * Approving an approved task again returns it unchanged; approving a task in any other
   * state is `INVALID_STATE` naming that state.
   *
   * @example
   * ```ts
   * await orchestrator.approve("deploy", { by: "alice", comment: "looks good" });
   * ```
   */
  async approve(id: string, decision: { by?: string; comment?: string } = {}): Promise<TaskRecord> {
    return this.#decide(id, "approved", decision);
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
  async reject(id: string, decision: { by?: string; comment?: string } = {}): Promise<TaskRecord> {
    return this.#decide(id, "rejected", decision);
  }

  async #decide(
    id: string,
    decision: "approved" | "rejected",
    info: { by?: string; comment?: string },
  ): Promise<TaskRecord> {
    checkId(id);
    if (info === null || typeof info !== "object") {
      throw new FlotillaError(
        "VALIDATION",
        `${decision === "approved" ? "approve" : "reject"}: expected an options object`,
      );
    }
    for (const f of ["by", "comment"] as const) {
      if (info[f] !== undefined && typeof info[f] !== "string") {
        throw new FlotillaError("VALIDATION", `${f}: expected a string`);
      }
    }
    const live = this.#tasks.get(id);
    const rec = live?.rec ?? this.#finished.get(id)?.rec ?? (await this.store.getTask(id));
    if (!rec) throw new FlotillaError("NOT_FOUND", `no task with id ${id}`);
    if (rec.approvalDecision?.decision === decision && rec.status !== "awaiting_approval") {
      return structuredClone(rec);
    }
    if (!live || rec.status !== "awaiting_approval") {
      throw new FlotillaError(
        "INVALID_STATE",
        `task ${id} is ${rec.status}, not awaiting approval`,
        { details: { taskId: id, status: rec.status } },
      );
    }
    const now = this.clock.now();
    const approval = { decision, at: now, ...info };
    const by = info.by ? ` by ${info.by}` : "";
    if (decision === "rejected") {
      const error = new FlotillaError(
        "REJECTED",
        `rejected${by}${info.comment ? `: ${info.comment}` : ""}`,
      ).toJSON();
      this.#dag.forget(id);
      await this.#transition(live, "rejected", {
        reason: `rejected${by}`,
        error,
        patch: (r) => {
          r.approvalDecision = approval;
          r.result = this.#result(r, live, "rejected", now, {
            error,
            output: r.result?.output,
            usage: r.result?.usage,
          });
        },
      });
      await this.#onTerminal(live);
    } else if (rec.approval === "after_run") {
      await this.#transition(live, "succeeded", {
        reason: `approved${by}`,
        patch: (r) => {
          r.approvalDecision = approval;
          if (r.result) {
            r.result.status = "succeeded";
            r.result.timings.finishedAt = now;
          }
        },
      });
      await this.#onTerminal(live);
    } else {
      const ready = this.#dag.remaining(id) === 0;
      await this.#transition(live, ready ? "queued" : "pending", {
        reason: `approved${by}`,
        patch: (r) => {
          r.approvalDecision = approval;
        },
      });
      if (ready) {
        live.firstQueuedAt ??= now;
        this.#enqueue(live);
        this.#schedulePump();
      }
    }
    return structuredClone(live.rec);
  }

  // ───────────────────────────── pull dispatch ─────────────────────────────

  /**
   * A free slot of a remote holder asks for work: returns the best ready task that slot can
   * run (same matching as local slots: priority, aging, fair share, FIFO, requirements,
   * target, gates), leased to `holderId` for `leaseMs`, or `null` when there is none. A
   * registered `remote-node` worker with this id is matched by its own declaration and its
   * slots are counted.
   *
   * @example
   * ```ts
   * const claim = await orchestrator.claim({ holderId: "node-7", taskTypes: ["remote_compute"] }, { leaseMs: 120_000 });
   * if (claim) run(claim.task, claim.lease.id);
   * ```
   */
  async claim(slot: ClaimSlot, options: ClaimOptions = {}): Promise<Claim | null> {
    const s = parseOrThrow(ClaimSlotSchema, slot, "slot");
    const o = parseOrThrow(ClaimOptionsSchema, options, "options");
    if (this.#state !== "running") return null;
    if (this.#inFlight >= this.#concurrency) return null;
    const registered = this.registry.get(s.holderId);
    if (registered && !this.registry.canTake(registered)) return null;
    const entry = registered ?? this.#syntheticEntry(s);
    const leaseMs = o.leaseMs ?? this.#leaseMs;
    for (const lane of this.#queue.lanesInOrder()) {
      const head = lane.head?.task;
      if (!head || !matchesTask(entry, head)) continue;
      const check = this.#checkGates(head, [entry]);
      if (check.fail) {
        this.#failQueued(head.id, check.fail);
        continue;
      }
      if (check.passing.length === 0) continue;
      const live = this.#tasks.get(head.id);
      if (!live) continue;
      this.#queue.takeTask(head.id);
      if (registered && !this.registry.acquireSlot(registered.id)) {
        this.#queue.enqueue(live.rec, this.clock.now());
        return null;
      }
      const att = this.#newAttempt(live, entry, { remote: true, slot: !!registered, leaseMs });
      // A remote holder starts the attempt when it claims it.
      this.#startGates(att);
      this.#armLeaseTimer(att);
      if (live.rec.timeoutMs !== undefined) this.#armTimeout(att);
      await this.#transition(live, "leased", {
        workerId: entry.id,
        reason: "claimed",
        patch: (r) => {
          r.attempt = att.n;
          r.lease = att.lease;
          r.workerId = entry.id;
          r.notBefore = undefined;
        },
      });
      const task = await this.#workerTask(live);
      return { lease: { ...att.lease }, task, record: structuredClone(live.rec) };
    }
    return null;
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
    if (extendMs !== undefined && !(Number.isInteger(extendMs) && extendMs > 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `extendMs: expected a positive integer, got ${String(extendMs)}`,
      );
    }
    const att = await this.#leaseAttempt(taskId, leaseId);
    this.#renew(att, extendMs);
    await this.#persist(att.live.rec);
    return { ...att.lease };
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
    const att = await this.#leaseAttempt(taskId, leaseId);
    this.#renew(att);
    const live = att.live;
    if (live.rec.status === "leased") {
      const now = this.clock.now();
      att.startedAt ??= now;
      live.startedAt = now;
      await this.#transition(live, "running", {
        workerId: att.entry.id,
        patch: (r) => {
          r.lease = att.lease;
        },
      });
    } else await this.#persist(live.rec);
    if (data !== undefined) this.#progress(att, data);
    return structuredClone(live.rec);
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
    const att = await this.#leaseAttempt(taskId, leaseId);
    await this.#settle(att, this.#toEnd(result));
    return structuredClone(att.live.rec);
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
    const att = await this.#leaseAttempt(taskId, leaseId);
    await this.#settle(att, this.#errorEnd(toFlotillaError(error), error));
    return structuredClone(att.live.rec);
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
    const att = await this.#leaseAttempt(taskId, leaseId);
    await this.#settle(att, { kind: "requeue", reason: String(reason) });
    return structuredClone(att.live.rec);
  }

  async #leaseAttempt(taskId: string, leaseId: string): Promise<Attempt> {
    if (typeof taskId !== "string" || typeof leaseId !== "string") {
      throw new FlotillaError("VALIDATION", "taskId and leaseId: expected strings");
    }
    const live = this.#tasks.get(taskId);
    if (!live) {
      const rec = this.#finished.get(taskId)?.rec ?? (await this.store.getTask(taskId));
      if (!rec) throw new FlotillaError("NOT_FOUND", `no task with id ${taskId}`);
      throw new FlotillaError(
        "INVALID_STATE",
        `task ${taskId} is ${rec.status}; its lease has ended`,
        {
          details: { taskId, status: rec.status },
        },
      );
    }
    const att = live.attempt;
    if (!att || att.lease.id !== leaseId) {
      throw new FlotillaError(
        "FORBIDDEN",
        `lease ${leaseId} does not hold task ${taskId} (task is ${live.rec.status})`,
        { details: { taskId, status: live.rec.status } },
      );
    }
    return att;
  }

  // ───────────────────────────── dispatch ─────────────────────────────

  #schedulePump(): void {
    if (this.#pumpScheduled || this.#state !== "running") return;
    this.#pumpScheduled = true;
    queueMicrotask(() => {
      this.#pumpScheduled = false;
      this.#pump();
    });
  }

  /**
   * Hands ready tasks to free local slots until the global cap is reached or no lane can
   * go. Lanes that no free worker can take, or that a gate holds, are parked whole; they
   * come back when a slot frees, a worker changes, a gate wakes or its retry time comes.
   */
  #pump(): void {
    if (this.#state !== "running") return;
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    const skipped: Lane[] = [];
    const blocked = new Map<string, number | undefined>();
    try {
      do {
        this.#pumpAgain = false;
        while (this.#inFlight < this.#concurrency) {
          const lane = this.#queue.popLane();
          if (!lane) break;
          const task = lane.head!.task;
          if (lane.blockKey !== undefined && blocked.has(lane.blockKey)) {
            this.#parkOnGate(lane, blocked.get(lane.blockKey));
            continue;
          }
          const eligible = this.registry.eligible(task);
          const candidates = eligible.filter(
            (e) => e.worker.kind !== REMOTE_NODE_KIND && this.registry.canTake(e),
          );
          if (candidates.length === 0) {
            this.#parkForWorkers(lane, eligible);
            continue;
          }
          const check = this.#checkGates(task, candidates);
          if (check.fail) {
            this.#queue.restore(lane);
            this.#failQueued(task.id, check.fail);
            continue;
          }
          if (check.passing.length === 0) {
            lane.blockKey = check.blockKey;
            if (check.blockKey !== undefined) blocked.set(check.blockKey, check.retryAt);
            this.#parkOnGate(lane, check.retryAt);
            continue;
          }
          lane.blockKey = undefined;
          let chosen: WorkerEntry | undefined;
          try {
            chosen = this.#routing.pick(task, check.passing);
          } catch (err) {
            this.#internalError(err, "routing strategy threw");
          }
          if (!chosen || !check.passing.includes(chosen)) {
            skipped.push(lane);
            continue;
          }
          const live = this.#tasks.get(task.id);
          this.#queue.take(lane);
          if (!live) continue;
          this.#dispatchLocal(live, chosen);
        }
        for (const lane of skipped.splice(0)) this.#queue.restore(lane);
      } while (this.#pumpAgain && this.#state === "running");
    } finally {
      for (const lane of skipped) this.#queue.restore(lane);
      this.#pumping = false;
    }
  }

  /**
   * Parks a lane no free worker can take, indexed by the workers that could run it: only a
   * slot freeing on one of them (or its health or circuit changing, or a new worker)
   * brings it back — a completion never scans unrelated parked lanes.
   */
  #parkForWorkers(lane: Lane, eligible: readonly WorkerEntry[]): void {
    this.#queue.park(lane, "worker");
    const ids = eligible.map((e) => e.id);
    this.#laneWaits.set(lane, ids);
    for (const id of ids) {
      let set = this.#waitingOn.get(id);
      if (!set) {
        set = new Set();
        this.#waitingOn.set(id, set);
      }
      set.add(lane);
    }
  }

  #forgetWaits(lane: Lane): void {
    const ids = this.#laneWaits.get(lane);
    if (!ids) return;
    this.#laneWaits.delete(lane);
    for (const id of ids) {
      const set = this.#waitingOn.get(id);
      if (!set) continue;
      set.delete(lane);
      if (set.size === 0) this.#waitingOn.delete(id);
    }
  }

  #wakeWorker(workerId: string): void {
    const set = this.#waitingOn.get(workerId);
    if (!set || set.size === 0) return;
    for (const lane of [...set]) {
      this.#forgetWaits(lane);
      this.#queue.unpark(lane);
    }
    this.#schedulePump();
  }

  #wakeAllWaiting(): void {
    for (const lane of [...this.#laneWaits.keys()]) {
      this.#forgetWaits(lane);
      this.#queue.unpark(lane);
    }
    this.#queue.unparkAll("worker");
    this.#schedulePump();
  }

  #parkOnGate(lane: Lane, retryAt: number | undefined): void {
    this.#queue.park(lane, "gate");
    this.#clearLaneTimer(lane);
    if (retryAt === undefined) return;
    lane.retryAt = retryAt;
    lane.timer = this.#timers.set(
      () => {
        lane.timer = undefined;
        this.#laneTimers.delete(lane);
        this.#queue.unpark(lane);
        this.#schedulePump();
      },
      Math.max(0, retryAt - this.clock.now()),
    );
    this.#laneTimers.add(lane);
  }

  #clearLaneTimer(lane: Lane): void {
    if (lane.timer !== undefined) this.#timers.clear(lane.timer as TimerHandle);
    lane.timer = undefined;
    this.#laneTimers.delete(lane);
  }

  #checkGates(task: TaskRecord, entries: WorkerEntry[]): GateCheck {
    if (this.#gates.length === 0) return { passing: entries };
    const now = this.clock.now();
    const passing: WorkerEntry[] = [];
    let retryAt: number | undefined;
    let blockKey: string | undefined;
    let reason: string | undefined;
    for (const entry of entries) {
      let ok = true;
      for (const gate of this.#gates) {
        let d: ReturnType<DispatchGate["check"]>;
        try {
          d = gate.check(task, entry, now);
        } catch (err) {
          this.#internalError(err, `gate ${gate.name} threw in check`);
          d = { ok: false, reason: `gate ${gate.name} failed`, retryAt: now + this.#recheckMs };
        }
        if (d.ok) continue;
        ok = false;
        if (d.fail) return { passing: [], fail: d.fail };
        // A gate that gives no retry time and cannot wake us is polled instead.
        const at = d.retryAt ?? (gate.subscribe ? undefined : now + this.#recheckMs);
        if (at !== undefined) retryAt = retryAt === undefined ? at : Math.min(retryAt, at);
        blockKey ??= d.blockKey;
        reason ??= d.reason;
        break;
      }
      if (ok) passing.push(entry);
    }
    const out: GateCheck = { passing };
    if (passing.length === 0) {
      if (retryAt !== undefined) out.retryAt = retryAt;
      if (blockKey !== undefined) out.blockKey = blockKey;
      if (reason !== undefined) out.reason = reason;
    }
    return out;
  }

  #failQueued(taskId: string, error: FlotillaError): void {
    const live = this.#tasks.get(taskId);
    if (live?.rec.status !== "queued") return;
    this.#queue.remove(taskId);
    const err = error.toJSON();
    const now = this.clock.now();
    this.#track(
      this.#transition(live, "failed", {
        reason: "refused by a dispatch gate",
        error: err,
        patch: (r) => {
          r.result = this.#result(r, live, "failed", now, { error: err });
        },
      }).then(() => this.#onTerminal(live)),
    );
  }

  #newAttempt(
    live: Live,
    entry: WorkerEntry,
    o: { remote: boolean; slot: boolean; leaseMs: number },
  ): Attempt {
    const now = this.clock.now();
    const att: Attempt = {
      live,
      n: live.rec.attempt + 1,
      entry,
      remote: o.remote,
      slot: o.slot,
      // Local leases are marked, so a restart knows their holder died with the old process.
      lease: {
        id: o.remote ? newId() : `${this.#localLeasePrefix}${++this.#localLeases}`,
        holder: entry.id,
        acquiredAt: now,
        expiresAt: now + o.leaseMs,
      },
      leaseMs: o.leaseMs,
      settled: false,
      dispatchedAt: now,
      gates: [],
    };
    live.attempt = att;
    this.#attempts.add(att);
    this.#inFlight++;
    for (const gate of this.#gates) {
      att.gates.push(gate);
      try {
        gate.onDispatch?.(live.rec, entry, now);
      } catch (err) {
        this.#internalError(err, `gate ${gate.name} threw in onDispatch`);
      }
    }
    return att;
  }

  /** Tells the attempt's gates that the worker starts it now (once, never after settle). */
  #startGates(att: Attempt): void {
    if (att.settled || att.started) return;
    att.started = true;
    const gates = att.gates;
    if (gates.length === 0) return;
    const now = this.clock.now();
    const rec = att.live.rec;
    for (const gate of gates) {
      if (gate.onStart === undefined) continue;
      try {
        gate.onStart(rec, att.entry, now);
      } catch (err) {
        this.#internalError(err, `gate ${gate.name} threw in onStart`);
      }
    }
  }

  #dispatchLocal(live: Live, entry: WorkerEntry): void {
    if (!this.registry.acquireSlot(entry.id)) {
      this.#queue.enqueue(live.rec, this.clock.now());
      return;
    }
    const leaseMs = live.rec.timeoutMs ?? this.#leaseMs;
    const att = this.#newAttempt(live, entry, { remote: false, slot: true, leaseMs });
    void this.#runLocal(att);
  }

  async #runLocal(att: Attempt): Promise<void> {
    const live = att.live;
    const entry = att.entry;
    try {
      const leased = this.#transition(live, "leased", {
        workerId: entry.id,
        patch: (r) => {
          r.attempt = att.n;
          r.lease = att.lease;
          r.workerId = entry.id;
          r.notBefore = undefined;
        },
      });
      const prepared = this.#workerTask(live);
      const task = prepared instanceof Promise ? await prepared : prepared;
      if (att.settled) return;
      const now = this.clock.now();
      att.startedAt = now;
      live.startedAt = now;
      // leased and running usually share one store write
      const running = this.#transition(live, "running", { workerId: entry.id });
      await leased;
      await running;
      if (att.settled) return;
      if (live.rec.timeoutMs !== undefined) this.#armTimeout(att);
      const ctx = this.#context(att);
      this.#startGates(att);
      let value: unknown;
      try {
        // A synchronous throw lands in the catch below like a rejection.
        value = await entry.worker.execute(task, ctx);
      } catch (err) {
        if (!att.settled) await this.#settle(att, this.#errorEnd(toFlotillaError(err), err));
        return;
      }
      if (!att.settled) await this.#settle(att, this.#toEnd(value));
    } catch (err) {
      this.#internalError(err, `attempt ${att.n} of task ${live.rec.id} failed internally`);
      if (!att.settled) {
        await this.#settle(att, {
          kind: "error",
          error: FlotillaError.from(err, "INTERNAL"),
        });
      }
    }
  }

  /** The worker's context; its signal and logger are made on first use. */
  #context(att: Attempt): ExecutionContext {
    let logger: Logger | undefined;
    const baseLogger = this.#logger;
    return {
      get signal() {
        if (!att.controller) {
          att.controller = new AbortController();
          if (att.abortReason !== undefined) att.controller.abort(att.abortReason);
        }
        return att.controller.signal;
      },
      progress: (data) => this.#progress(att, data),
      reportUsage: (usage) => this.#reportUsage(att, usage),
      get logger() {
        logger ??= baseLogger.child({
          taskId: att.live.rec.id,
          attempt: att.n,
          workerId: att.entry.id,
        });
        return logger;
      },
      clock: this.clock,
    };
  }

  #toEnd(value: unknown): AttemptEnd {
    try {
      let v = value;
      if (v !== null && typeof v === "object" && "usage" in v) {
        const usage = (v as { usage?: unknown }).usage;
        if (usage !== undefined && !UsageSchema.safeParse(usage).success) {
          this.#logger.warn({ usage: safeJson(usage) }, "worker reported malformed usage; ignored");
          const { usage: _ignored, ...rest } = v as Record<string, unknown>;
          v = rest;
        }
      }
      const result = parseWorkerResult(v);
      const out = result.output;
      if (out !== null && (typeof out === "object" || typeof out === "bigint")) {
        toJson(out, "output"); // refused now rather than failing every store write later
      }
      return { kind: "success", result };
    } catch (err) {
      return { kind: "error", error: FlotillaError.from(err, "WORKER_ERROR") };
    }
  }

  #errorEnd(error: FlotillaError, original: unknown): AttemptEnd {
    const end: AttemptEnd = { kind: "error", error };
    const retryAfterMs =
      original instanceof RetryAfterError
        ? original.retryAfterMs
        : typeof (error.details as { retryAfterMs?: unknown } | undefined)?.retryAfterMs ===
            "number"
          ? (error.details as { retryAfterMs: number }).retryAfterMs
          : undefined;
    if (retryAfterMs !== undefined) end.retryAfterMs = retryAfterMs;
    return end;
  }

  #armTimeout(att: Attempt): void {
    const ms = att.live.rec.timeoutMs!;
    att.timeoutTimer = this.#timers.set(() => {
      att.timeoutTimer = undefined;
      this.#track(this.#settle(att, { kind: "timeout" }));
    }, ms);
  }

  #armLeaseTimer(att: Attempt): void {
    if (att.leaseTimer !== undefined) this.#timers.clear(att.leaseTimer);
    if (this.#state !== "running" || att.settled) return;
    att.leaseTimer = this.#timers.set(
      () => {
        att.leaseTimer = undefined;
        this.#track(this.#settle(att, { kind: "lost", reason: `lease ${att.lease.id} expired` }));
      },
      Math.max(0, att.lease.expiresAt - this.clock.now()),
    );
  }

  #renew(att: Attempt, extendMs?: number): void {
    att.lease.expiresAt = this.clock.now() + (extendMs ?? att.leaseMs);
    att.live.rec.lease = att.lease;
    if (att.remote) this.#armLeaseTimer(att);
  }

  #progress(att: Attempt, data: unknown): void {
    if (att.settled) return;
    const live = att.live;
    this.#renew(att);
    live.rec.progress = storable(data);
    const ev: ProgressEvent = { taskId: live.rec.id, attempt: att.n, at: this.clock.now(), data };
    if (live.subscribers) for (const ch of live.subscribers) ch.push(ev);
    this.emit("task:progress", ev);
  }

  #reportUsage(att: Attempt, usage: Usage): void {
    if (att.settled) return;
    const parsed = UsageSchema.safeParse(usage);
    if (!parsed.success) {
      this.#logger.warn({ usage: safeJson(usage) }, "worker reported malformed usage; ignored");
      return;
    }
    att.usage = mergeUsage(att.usage, parsed.data);
  }

  #clearAttemptTimers(att: Attempt): void {
    if (att.timeoutTimer !== undefined) this.#timers.clear(att.timeoutTimer);
    if (att.leaseTimer !== undefined) this.#timers.clear(att.leaseTimer);
    att.timeoutTimer = undefined;
    att.leaseTimer = undefined;
  }

  /**
   * Ends an attempt exactly once, whatever comes first (result, error, timeout, cancel,
   * lease expiry, shutdown): frees the slot, tells the gates, and moves the task on.
   */
  #settle(att: Attempt, end: AttemptEnd): Promise<void> {
    if (att.settled) return Promise.resolve();
    att.settled = true;
    this.#clearAttemptTimers(att);
    this.#attempts.delete(att);
    const live = att.live;
    if (live.attempt === att) live.attempt = undefined;
    const rec = live.rec;
    const now = this.clock.now();
    const entry = att.entry;
    const durationMs = now - (att.startedAt ?? att.dispatchedAt);

    // Abort the worker's signal unless it finished on its own.
    if (end.kind !== "success" && end.kind !== "error" && att.abortReason === undefined) {
      const reason =
        end.kind === "timeout"
          ? new FlotillaError("TIMEOUT", `task ${rec.id} timed out after ${rec.timeoutMs} ms`)
          : end.kind === "cancelled"
            ? new FlotillaError("CANCELLED", end.reason)
            : new FlotillaError("WORKER_LOST", end.reason);
      att.abortReason = reason;
      att.controller?.abort(reason);
    }

    const usage = mergeUsage(att.usage, end.kind === "success" ? end.result.usage : undefined);
    let error: SerializedError | undefined;
    let attemptStatus: TaskStatus;
    switch (end.kind) {
      case "success":
        attemptStatus = "succeeded";
        break;
      case "error":
        error = end.error.toJSON();
        attemptStatus = "failed";
        break;
      case "timeout":
        error = new FlotillaError(
          "TIMEOUT",
          `task ${rec.id} timed out after ${rec.timeoutMs} ms (attempt ${att.n})`,
          {
            retryable: true,
          },
        ).toJSON();
        attemptStatus = "timed_out";
        break;
      case "cancelled":
        error = new FlotillaError("CANCELLED", end.reason).toJSON();
        attemptStatus = "cancelled";
        break;
      case "lost":
        error = new FlotillaError("WORKER_LOST", `${end.reason} (holder ${entry.id})`, {
          retryable: true,
        }).toJSON();
        attemptStatus = "failed";
        break;
      case "requeue":
        attemptStatus = "cancelled";
        break;
    }

    if (att.slot) {
      if (
        end.kind === "success" ||
        end.kind === "error" ||
        end.kind === "timeout" ||
        end.kind === "lost"
      ) {
        const taskFault =
          end.kind === "error" &&
          (end.error.code === "VALIDATION" ||
            (end.error.cause instanceof Error && end.error.cause.name === "UnrecoverableError"));
        const outcome: Parameters<WorkerRegistry["recordResult"]>[1] = {
          ok: end.kind === "success" || taskFault,
          durationMs,
        };
        if (error) outcome.error = error;
        this.registry.recordResult(entry.id, outcome);
      }
      this.registry.releaseSlot(entry.id);
    }
    this.#inFlight--;
    if (att.startedAt !== undefined && end.kind !== "requeue") {
      this.#execTotalMs += durationMs;
      this.#execCount++;
    }
    const settleOutcome: SettleOutcome = { status: attemptStatus };
    if (usage) settleOutcome.usage = usage;
    if (error) settleOutcome.error = error;
    if (end.kind === "error" && end.retryAfterMs !== undefined)
      settleOutcome.retryAfterMs = end.retryAfterMs;
    for (const gate of att.gates) {
      try {
        gate.onSettle?.(rec, entry, settleOutcome, now);
      } catch (err) {
        this.#internalError(err, `gate ${gate.name} threw in onSettle`);
      }
    }
    if (usage) this.#track(this.store.recordUsage(usageLine(rec, entry.id, usage, now)));
    // The slot is free: lanes waiting for this worker may go again, and so may lanes a
    // gate held (its answer may depend on what was running).
    this.#wakeWorker(entry.id);
    this.#queue.unparkGateHeads();

    const done = this.#afterAttempt(att, end, error, usage, now);
    this.#schedulePump();
    this.#notifyDrain();
    return done;
  }

  async #afterAttempt(
    att: Attempt,
    end: AttemptEnd,
    error: SerializedError | undefined,
    usage: Usage | undefined,
    now: number,
  ): Promise<void> {
    const live = att.live;
    const rec = live.rec;
    const workerId = att.entry.id;
    const clearLease = (r: TaskRecord) => {
      r.lease = undefined;
    };
    if (end.kind === "success") {
      const held = rec.approval === "after_run";
      const status: TaskStatus = held ? "awaiting_approval" : "succeeded";
      await this.#transition(live, status, {
        workerId,
        reason: held ? "result awaits approval" : undefined,
        patch: (r) => {
          clearLease(r);
          r.result = this.#result(r, live, status, now, {
            output: end.result.output,
            usage,
            workerId,
          });
        },
      });
      if (!held) await this.#onTerminal(live);
      return;
    }
    if (end.kind === "requeue") {
      live.freeAttempts = (live.freeAttempts ?? 0) + 1;
      await this.#requeue(live, end.reason, undefined, now);
      return;
    }
    if (end.kind === "cancelled") {
      await this.#transition(live, "cancelled", {
        workerId,
        reason: end.reason,
        error,
        patch: (r) => {
          clearLease(r);
          r.result = this.#result(r, live, "cancelled", now, { error, usage, workerId });
        },
      });
      await this.#onTerminal(live);
      return;
    }
    const retryable =
      end.kind === "timeout" ||
      end.kind === "lost" ||
      (end.kind === "error" &&
        end.error.retryable &&
        end.error.code !== "VALIDATION" &&
        end.error.code !== "CANCELLED");
    const counted = att.n - (live.freeAttempts ?? 0);
    if (retryable && counted < rec.retry.maxAttempts) {
      let delay = end.kind === "lost" ? 0 : backoffDelay(rec.retry, att.n, this.#random);
      if (end.kind === "error" && end.retryAfterMs !== undefined)
        delay = Math.max(delay, end.retryAfterMs);
      await this.#requeue(
        live,
        `retry after ${end.kind === "error" ? error?.code : end.kind}`,
        error,
        now + delay,
      );
      return;
    }
    const final: TaskStatus = end.kind === "timeout" ? "timed_out" : "failed";
    await this.#transition(live, final, {
      workerId,
      error,
      patch: (r) => {
        clearLease(r);
        r.result = this.#result(r, live, final, now, { error, usage, workerId });
      },
    });
    await this.#onTerminal(live);
  }

  async #requeue(
    live: Live,
    reason: string,
    error: SerializedError | undefined,
    notBefore: number | undefined,
  ): Promise<void> {
    const now = this.clock.now();
    await this.#transition(live, "queued", {
      reason,
      error,
      patch: (r) => {
        r.lease = undefined;
        if (notBefore !== undefined && notBefore > now) r.notBefore = notBefore;
        else r.notBefore = undefined;
      },
    });
    if (live.rec.status === "queued" && !live.attempt) {
      this.#enqueue(live);
      this.#schedulePump();
    }
  }

  /** Puts a queued task where it belongs: the ready queue, or the delay queue until `notBefore`. */
  #enqueue(live: Live): void {
    const rec = live.rec;
    const now = this.clock.now();
    if (rec.notBefore !== undefined && rec.notBefore > now) {
      this.#delayed.add(rec.id, rec.notBefore);
      this.#armDelayTimer();
      return;
    }
    this.#queue.enqueue(rec, now);
  }

  #armDelayTimer(): void {
    if (this.#state !== "running") return;
    const next = this.#delayed.nextAt();
    if (next === undefined) {
      if (this.#delayTimer !== undefined) this.#timers.clear(this.#delayTimer);
      this.#delayTimer = undefined;
      this.#delayTimerAt = undefined;
      return;
    }
    if (this.#delayTimer !== undefined && this.#delayTimerAt === next) return;
    if (this.#delayTimer !== undefined) this.#timers.clear(this.#delayTimer);
    this.#delayTimerAt = next;
    this.#delayTimer = this.#timers.set(
      () => {
        this.#delayTimer = undefined;
        this.#delayTimerAt = undefined;
        const now = this.clock.now();
        for (const id of this.#delayed.takeDue(now)) {
          const live = this.#tasks.get(id);
          if (live && live.rec.status === "queued") this.#queue.enqueue(live.rec, now);
        }
        this.#armDelayTimer();
        this.#schedulePump();
      },
      Math.max(0, next - this.clock.now()),
    );
  }

  #makeReady(live: Live, reason: string): Promise<void> {
    if (live.rec.status !== "pending") return Promise.resolve();
    const now = this.clock.now();
    live.firstQueuedAt ??= now;
    const p = this.#transition(live, "queued", {
      reason,
      patch: (r) => {
        if (r.runAt !== undefined && r.runAt > now) r.notBefore = r.runAt;
      },
    });
    this.#enqueue(live);
    this.#schedulePump();
    return p;
  }

  #skip(live: Live, failedDep: string): Promise<void> {
    const s = live.rec.status;
    if (s !== "pending" && s !== "awaiting_approval") return Promise.resolve();
    const depStatus =
      this.#tasks.get(failedDep)?.rec.status ??
      this.#finished.get(failedDep)?.rec.status ??
      "failed";
    const error: SerializedError = {
      code: "DEPENDENCY_FAILED",
      message: `dependency ${failedDep} ended ${depStatus}`,
      details: { dependency: failedDep, status: depStatus },
    };
    const now = this.clock.now();
    this.#dag.forget(live.rec.id);
    return this.#transition(live, "skipped", {
      reason: `dependency ${failedDep} ${depStatus}`,
      error,
      patch: (r) => {
        r.result = this.#result(r, live, "skipped", now, { error });
      },
    }).then(() => this.#onTerminal(live));
  }

  /** After a terminal transition is stored: resolve handles, release or skip dependents. */
  async #onTerminal(live: Live): Promise<void> {
    if (live.finished) return;
    live.finished = true;
    const rec = live.rec;
    this.#tasks.delete(rec.id);
    if (rec.idempotencyKey !== undefined) this.#idem.delete(rec.idempotencyKey);
    this.#remember(live);
    rec.result ??= this.#result(rec, live, rec.status, this.clock.now(), {});
    // A copy of the envelope (the output itself is shared, not cloned, to keep completion cheap).
    settleResult(live, { ...rec.result, timings: { ...rec.result.timings } });
    if (live.subscribers) {
      for (const ch of live.subscribers) ch.close();
      live.subscribers.clear();
    }
    if (!this.#dag.hasDependents(rec.id)) return;
    const ok = rec.status === "succeeded";
    const { ready, skip } = this.#dag.resolve(rec.id, ok, (id) => {
      const dep = this.#tasks.get(id);
      return dep ? dep.rec.onDependencyFailure : undefined;
    });
    const follow: Promise<void>[] = [];
    for (const id of ready) {
      const dep = this.#tasks.get(id);
      if (dep && dep.rec.status === "pending")
        follow.push(this.#makeReady(dep, `dependencies done`));
    }
    for (const id of skip) {
      const dep = this.#tasks.get(id);
      if (dep) follow.push(this.#skip(dep, rec.id));
    }
    await Promise.all(follow);
  }

  /**
   * Keeps the newest finished tasks in memory. Eviction order is a ring of ids: asking a
   * Map for its oldest key walks the holes earlier deletions left, which made this O(cache).
   */
  #remember(live: Live): void {
    const size = this.#finishedCacheSize;
    if (size === 0) return;
    const id = live.rec.id;
    this.#finished.set(id, live);
    if (!Number.isFinite(size)) return;
    const ring = this.#finishedRing;
    if (ring.length < size) {
      ring.push(id);
      return;
    }
    const oldest = ring[this.#finishedHead]!;
    ring[this.#finishedHead] = id;
    this.#finishedHead = (this.#finishedHead + 1) % size;
    if (oldest !== id) this.#finished.delete(oldest);
  }

  /** The worker's view of a task (synchronous when every dependency output is in memory). */
  #workerTask(live: Live): WorkerTask | Promise<WorkerTask> {
    const rec = live.rec;
    if (rec.dependsOn.length === 0) return this.#buildWorkerTask(rec, NO_OUTPUTS);
    const outputs = new Map<string, unknown>();
    const missing: string[] = [];
    for (const dep of rec.dependsOn) {
      const known = this.#finished.get(dep) ?? this.#tasks.get(dep);
      if (known) outputs.set(dep, known.rec.result?.output);
      else missing.push(dep);
    }
    if (missing.length === 0) return this.#buildWorkerTask(rec, outputs);
    return Promise.all(
      missing.map(async (dep) => outputs.set(dep, (await this.store.getTask(dep))?.result?.output)),
    ).then(() => {
      const ordered = new Map<string, unknown>();
      for (const dep of rec.dependsOn) ordered.set(dep, outputs.get(dep));
      return this.#buildWorkerTask(rec, ordered);
    });
  }

  #buildWorkerTask(rec: TaskRecord, outputs: ReadonlyMap<string, unknown>): WorkerTask {
    const task: WorkerTask = {
      id: rec.id,
      type: rec.type,
      payload: resolveTemplates(rec.payload, outputs),
      priority: rec.priority,
      attempt: rec.attempt,
      metadata: rec.metadata,
      dependencies: Object.fromEntries(outputs),
      inputs: resolveInputs(rec.inputs, outputs),
    };
    if (rec.timeoutMs !== undefined) task.timeoutMs = rec.timeoutMs;
    if (rec.estimate !== undefined) task.estimate = rec.estimate;
    if (rec.tenant !== undefined) task.tenant = rec.tenant;
    return task;
  }

  // ───────────────────────────── state changes ─────────────────────────────

  /**
   * The one way a task changes status: guarded by the lifecycle table, applied in memory,
   * written to the store, then emitted.
   */
  #transition(
    live: Live,
    to: TaskStatus,
    o: {
      reason?: string | undefined;
      error?: SerializedError | undefined;
      workerId?: string;
      patch?: (rec: TaskRecord) => void;
    } = {},
  ): Promise<void> {
    const rec = live.rec;
    const from = rec.status;
    assertTransition(from, to, rec.id);
    o.patch?.(rec);
    rec.status = to;
    rec.updatedAt = this.clock.now();
    this.#count(from, to);
    const stored = this.#event(rec, from, to, o);
    return this.#persist(rec).then(() => this.#emitTransition(stored, rec));
  }

  /** The transition as the store keeps it, taken when it happens (emitted once written). */
  #event(
    rec: TaskRecord,
    from: TaskStatus | null,
    to: TaskStatus,
    o: { reason?: string | undefined; error?: SerializedError | undefined; workerId?: string },
  ): StoredTransition {
    return {
      type: EVENT_TYPE[to],
      taskId: rec.id,
      at: rec.updatedAt,
      data: {
        from,
        to,
        attempt: rec.attempt,
        reason: o.reason,
        error: o.error,
        workerId: o.workerId,
      },
    };
  }

  /**
   * Writes a task's record. Changes of one task within the same tick share one write (the
   * latest state includes the earlier ones); every caller's promise resolves once it is stored.
   */
  #persist(rec: TaskRecord): Promise<void> {
    rec.version++;
    const pending = this.#dirty.get(rec.id);
    if (pending) return pending.promise;
    const d = deferred<void>();
    const w: DirtyWrite = {
      rec,
      resolve: d.resolve,
      reject: d.reject,
      promise: d.promise,
      failures: 0,
    };
    // A refused earlier write of this task is covered by this one (it holds the latest state).
    const refused = this.#retrying.get(rec.id);
    if (refused) {
      this.#retrying.delete(rec.id);
      w.failures = refused.failures;
      d.promise.then(refused.resolve, refused.reject);
    }
    this.#dirty.set(rec.id, w);
    if (!this.#dirtyFlushScheduled) {
      this.#dirtyFlushScheduled = true;
      queueMicrotask(() => this.#flushDirty());
    }
    return this.#track(d.promise);
  }

  #flushDirty(): void {
    this.#dirtyFlushScheduled = false;
    if (this.#dirty.size === 0) return;
    const batch = [...this.#dirty.values()];
    this.#dirty.clear();
    for (const w of batch) this.#write(w);
  }

  /**
   * Writes one task's latest state (a snapshot the store may keep as is). A refused write
   * is never acknowledged: it is tried again (backing off up to 5 s) until it is stored,
   * and only then does the transition it carries get emitted or resolve a handle.
   */
  #write(w: DirtyWrite): void {
    let p: Promise<unknown>;
    try {
      p = this.#owned ? this.#owned.saveTask(snapshotRecord(w.rec)) : this.store.saveTask(w.rec);
    } catch (err) {
      p = Promise.reject(err);
    }
    p.then(
      () => {
        this.#retryDelayMs = WRITE_RETRY_MIN_MS;
        w.resolve();
      },
      (err) => this.#writeFailed(w, err),
    );
  }

  #writeFailed(w: DirtyWrite, err: unknown): void {
    const id = w.rec.id;
    w.failures++;
    if (w.failures === 1) {
      this.#unacked.add(w.promise);
      const forget = () => this.#unacked.delete(w.promise);
      w.promise.then(forget, forget);
      this.#internalError(
        err,
        `store failed to save task ${id}; retrying (the change is not acknowledged until stored)`,
      );
    }
    const newer = this.#dirty.get(id);
    if (newer) {
      newer.promise.then(w.resolve, w.reject);
      return;
    }
    if (this.#state !== "running") {
      // Stopping (or not started): give up without acknowledging; the store keeps its last state.
      w.reject(FlotillaError.from(err, "STORE_ERROR"));
      return;
    }
    if ((err as { code?: unknown })?.code === "VALIDATION" && !w.sanitized) {
      // Something JSON cannot hold slipped into the record: store a JSON-safe version.
      w.sanitized = true;
      const rec = w.rec as unknown as Record<string, unknown>;
      for (const key of ["progress", "result", "metadata", "payload"]) {
        if (rec[key] !== undefined) rec[key] = toJsonSafe(rec[key]);
      }
      this.#dirty.set(id, w);
      this.#flushDirty();
      return;
    }
    this.#retrying.set(id, w);
    this.#armWriteRetry();
  }

  #armWriteRetry(): void {
    if (this.#retryTimer !== undefined || this.#retrying.size === 0) return;
    if (this.#state === "stopped" || this.#state === "idle") return;
    const delay = this.#retryDelayMs;
    this.#retryDelayMs = Math.min(WRITE_RETRY_MAX_MS, delay * 2);
    this.#retryTimer = this.#timers.set(() => {
      this.#retryTimer = undefined;
      for (const [id, w] of this.#retrying) {
        const newer = this.#dirty.get(id);
        if (!newer) this.#dirty.set(id, w);
        else newer.promise.then(w.resolve, w.reject);
      }
      this.#retrying.clear();
      this.#flushDirty();
    }, delay);
  }

  /**
   * Logs, records and emits a stored transition. The listeners' event object is only built
   * when someone listens.
   */
  #emitTransition(stored: StoredTransition, rec: TaskRecord): void {
    const d = stored.data;
    if (this.#logger !== silentLogger) {
      this.#logger.debug(
        { taskId: stored.taskId, from: d.from, to: d.to, attempt: d.attempt, reason: d.reason },
        "task transition",
      );
    }
    this.#eventBuffer.push(stored);
    if (!this.#eventFlushScheduled) {
      this.#eventFlushScheduled = true;
      queueMicrotask(() => this.#flushEvents());
    }
    const type = stored.type as "task:queued";
    const specific = this.listenerCount(type) > 0;
    if (!specific && this.listenerCount("task:transition") === 0) return;
    const ev: TransitionEvent = {
      taskId: stored.taskId,
      from: d.from,
      to: d.to,
      at: stored.at,
      attempt: d.attempt,
      task: rec,
    };
    if (d.reason !== undefined) ev.reason = d.reason;
    if (d.error !== undefined) ev.error = d.error;
    if (d.workerId !== undefined) ev.workerId = d.workerId;
    try {
      if (specific) this.emit(type, ev);
      this.emit("task:transition", ev);
    } catch (err) {
      this.#internalError(err, "an event listener threw");
    }
  }

  #flushEvents(): Promise<void> {
    this.#eventFlushScheduled = false;
    if (this.#eventBuffer.length === 0) return Promise.resolve();
    const batch = this.#eventBuffer;
    this.#eventBuffer = [];
    let p: Promise<void>;
    try {
      p = this.#owned ? this.#owned.appendEvents(batch) : this.store.appendEvents(batch);
    } catch (err) {
      p = Promise.reject(err);
    }
    return this.#track(p.catch((err) => this.#internalError(err, "store failed to append events")));
  }

  #count(from: TaskStatus | undefined, to: TaskStatus): void {
    if (from !== undefined) this.#counts.set(from, (this.#counts.get(from) ?? 1) - 1);
    this.#counts.set(to, (this.#counts.get(to) ?? 0) + 1);
  }

  #result(
    rec: TaskRecord,
    live: Live | undefined,
    status: TaskStatus,
    now: number,
    o: {
      output?: unknown;
      error?: SerializedError | undefined;
      usage?: Usage | undefined;
      workerId?: string;
    },
  ): TaskResult {
    const timings: TaskResult["timings"] = { createdAt: rec.createdAt, finishedAt: now };
    if (live?.firstQueuedAt !== undefined) timings.queuedAt = live.firstQueuedAt;
    if (live?.startedAt !== undefined) {
      timings.startedAt = live.startedAt;
      timings.durationMs = now - live.startedAt;
      if (live.firstQueuedAt !== undefined)
        timings.queueWaitMs = live.startedAt - live.firstQueuedAt;
    }
    const result: TaskResult = { taskId: rec.id, status, attempts: rec.attempt, timings };
    if (o.output !== undefined) result.output = o.output;
    if (o.error !== undefined) result.error = o.error;
    if (o.usage !== undefined) result.usage = o.usage;
    const workerId = o.workerId ?? rec.workerId;
    if (workerId !== undefined) result.workerId = workerId;
    return result;
  }

  // ───────────────────────────── helpers ─────────────────────────────

  #handleOf(id: string): TaskHandle {
    const live = this.#tasks.get(id) ?? this.#finished.get(id);
    if (!live) throw new FlotillaError("INTERNAL", `task ${id} vanished after submit`);
    return new TaskHandle(live, this.#cancelFn);
  }

  #handleFor(rec: TaskRecord): TaskHandle {
    const live = this.#tasks.get(rec.id) ?? this.#finished.get(rec.id);
    if (live) return new TaskHandle(live, this.#cancelFn);
    if (!isTerminalStatus(rec.status)) return this.#foreignHandle(rec);
    const state: TaskState = {
      rec,
      finished: true,
      final: structuredClone(
        rec.result ?? this.#result(rec, undefined, rec.status, rec.updatedAt, {}),
      ),
    };
    return new TaskHandle(state, this.#cancelFn);
  }

  /**
   * A handle on an unfinished task known only from the store. Before the first start it
   * becomes the live task's handle when recovery loads it; otherwise (another process owns
   * the task) the store is read every `recheckIntervalMs` until the task has finished.
   */
  #foreignHandle(rec: TaskRecord): TaskHandle {
    let state = this.#foreign.get(rec.id);
    if (!state) {
      state = { rec, finished: false };
      this.#foreign.set(rec.id, state);
      if (this.#recovered) this.#armForeignPoll();
    }
    return new TaskHandle(state, this.#cancelFn);
  }

  #armForeignPoll(): void {
    if (this.#foreignTimer !== undefined || this.#foreign.size === 0) return;
    if (this.#state !== "running") return;
    this.#foreignTimer = this.#timers.set(() => {
      this.#foreignTimer = undefined;
      void this.#pollForeign();
    }, this.#recheckMs);
  }

  async #pollForeign(): Promise<void> {
    for (const [id, state] of [...this.#foreign]) {
      const live = this.#tasks.get(id) ?? this.#finished.get(id);
      let rec: TaskRecord | undefined = live?.rec;
      if (!rec) {
        try {
          rec = await this.store.getTask(id);
        } catch (err) {
          this.#internalError(err, `store failed to read task ${id}`);
          continue;
        }
      }
      if (live) {
        this.#foreign.delete(id);
        resultPromise(live).then((r) => this.#finishForeign(state, r));
        continue;
      }
      if (!rec) continue;
      state.rec = rec;
      if (!isTerminalStatus(rec.status)) continue;
      this.#foreign.delete(id);
      this.#finishForeign(
        state,
        rec.result ?? this.#result(rec, undefined, rec.status, rec.updatedAt, {}),
      );
    }
    this.#armForeignPoll();
  }

  #finishForeign(state: TaskState, result: TaskResult): void {
    state.finished = true;
    settleResult(state, { ...result, timings: { ...result.timings } });
    if (state.subscribers) {
      for (const ch of state.subscribers) ch.close();
      state.subscribers.clear();
    }
  }

  #syntheticEntry(s: ReturnType<typeof ClaimSlotSchema.parse>): WorkerEntry {
    const worker: Worker = {
      id: s.holderId,
      kind: REMOTE_NODE_KIND,
      name: s.name ?? s.holderId,
      taskTypes: s.taskTypes ?? ["*"],
      capabilities: s.capabilities ?? [],
      labels: s.labels ?? {},
      maxConcurrency: 1,
      local: false,
      execute: () =>
        Promise.reject(new FlotillaError("INVALID_STATE", "remote slots are filled by claim")),
    };
    return {
      worker,
      id: s.holderId,
      registeredAt: this.clock.now(),
      health: "healthy",
      circuit: "closed",
      inFlight: 0,
      accepting: true,
      stats: { tasksCompleted: 0, tasksFailed: 0, avgExecutionMs: 0, consecutiveFailures: 0 },
    };
  }

  #workerInfo(id: string): WorkerInfo | undefined {
    return this.registry.info(id);
  }

  /** Stops every registered worker (they are started again by the next `start()`). */
  async #stopWorkers(): Promise<void> {
    this.#workersStopped = true;
    await Promise.all(
      this.registry.list().map(async (entry) => {
        try {
          await entry.worker.stop?.();
        } catch (err) {
          this.#logger.warn({ workerId: entry.id, err: String(err) }, "worker stop failed");
        }
      }),
    );
  }

  #localAttempts(): number {
    let n = 0;
    for (const a of this.#attempts) if (!a.remote) n++;
    return n;
  }

  #notifyDrain(): void {
    for (const listener of [...this.#settleListeners]) listener();
  }

  /** Resolves once `done()` holds (checked after every settled attempt) or `timeoutMs` passes. */
  #waitUntil(done: () => boolean, timeoutMs: number): Promise<void> {
    if (done()) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const finish = () => {
        this.#timers.clear(timer);
        this.#settleListeners.delete(check);
        resolve();
      };
      const check = () => {
        if (done()) finish();
      };
      const timer = this.#timers.set(finish, timeoutMs);
      this.#settleListeners.add(check);
    });
  }

  #clearTimers(): void {
    if (this.#foreignTimer !== undefined) this.#timers.clear(this.#foreignTimer);
    this.#foreignTimer = undefined;
    if (this.#delayTimer !== undefined) this.#timers.clear(this.#delayTimer);
    this.#delayTimer = undefined;
    this.#delayTimerAt = undefined;
    for (const lane of [...this.#laneTimers]) {
      this.#clearLaneTimer(lane);
      this.#queue.unpark(lane);
    }
    for (const att of this.#attempts) if (att.remote) this.#clearAttemptTimers(att);
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#pendingWrites.add(p);
    void p.then(
      () => this.#pendingWrites.delete(p),
      () => this.#pendingWrites.delete(p),
    );
    return p;
  }

  /** Waits for every write issued so far, except task writes the store keeps refusing. */
  async #flushWrites(): Promise<void> {
    for (;;) {
      await this.#flushEvents();
      const waiting = [...this.#pendingWrites].filter((p) => !this.#unacked.has(p));
      if (waiting.length === 0 && this.#eventBuffer.length === 0) return;
      await Promise.allSettled(waiting);
    }
  }

  /** At stop: task writes still refused are given up (never acknowledged) and rejected. */
  #clearWriteRetry(): void {
    if (this.#retryTimer !== undefined) this.#timers.clear(this.#retryTimer);
    this.#retryTimer = undefined;
    for (const w of this.#retrying.values()) {
      w.reject(
        new FlotillaError("STORE_ERROR", `task ${w.rec.id}: the store refused its last change`),
      );
    }
    this.#retrying.clear();
  }

  #internalError(err: unknown, message: string): void {
    const error = err instanceof Error ? err : new Error(String(err));
    this.#logger.error({ err: error.message }, message);
    try {
      this.emit("error", error);
    } catch {
      // a throwing error listener must not take the engine down
    }
  }

  /**
   * Hands every gate that can take it the usage ledger of the last 48 hours (first start),
   * so rate-limit windows and budgets continue where the previous process left them.
   */
  async #restoreGates(): Promise<void> {
    const gates = this.#gates.filter((g) => typeof g.restore === "function");
    if (gates.length === 0) return;
    const now = this.clock.now();
    const entries = await this.store.listUsage({ since: now - USAGE_REPLAY_MS });
    for (const gate of gates) {
      try {
        gate.restore!(entries, now);
      } catch (err) {
        this.#internalError(err, `gate ${gate.name} threw in restore`);
      }
    }
  }

  /** Restores unfinished tasks from the store (first start). */
  async #recover(): Promise<void> {
    const unfinished = await this.store.loadUnfinished();
    if (unfinished.length === 0) return;
    const now = this.clock.now();
    const fresh = unfinished.filter((r) => !this.#tasks.has(r.id));
    for (const rec of fresh) {
      this.#seq = Math.max(this.#seq, rec.seq);
      // A handle taken before the start becomes this task's own handle.
      const known = this.#foreign.get(rec.id);
      this.#foreign.delete(rec.id);
      const live: Live = known ?? {
        rec,
        finished: false,
      };
      live.rec = rec;
      this.#tasks.set(rec.id, live);
      this.#count(undefined, rec.status);
      if (rec.idempotencyKey !== undefined) {
        this.#idem.set(rec.idempotencyKey, Promise.resolve(new TaskHandle(live, this.#cancelFn)));
      }
    }
    const follow: Promise<void>[] = [];
    for (const rec of fresh) {
      const live = this.#tasks.get(rec.id)!;
      if (rec.status === "pending" || rec.status === "awaiting_approval") {
        const unresolved: string[] = [];
        let failed: string | undefined;
        for (const dep of rec.dependsOn) {
          const d = this.#tasks.get(dep)?.rec ?? (await this.store.getTask(dep));
          if (!d || !isTerminalStatus(d.status)) unresolved.push(dep);
          else if (d.status !== "succeeded" && rec.onDependencyFailure === "skip") failed ??= dep;
        }
        if (failed !== undefined) follow.push(this.#skip(live, failed));
        else {
          this.#dag.add(rec.id, unresolved);
          if (rec.status === "pending" && unresolved.length === 0)
            follow.push(this.#makeReady(live, "recovered"));
        }
      } else if (rec.status === "queued") {
        live.firstQueuedAt = now;
        this.#enqueue(live);
      } else if (rec.status === "leased" || rec.status === "running") {
        // It was held when the previous process stopped: a new attempt, or WORKER_LOST when spent.
        const lease = rec.lease;
        if (lease && lease.expiresAt > now && !lease.id.startsWith(LOCAL_LEASE_PREFIX)) {
          // A remote holder may still be working: keep its lease until it expires.
          const entry =
            this.registry.get(lease.holder) ?? this.#syntheticEntry({ holderId: lease.holder });
          const att: Attempt = {
            live,
            n: rec.attempt,
            entry,
            remote: true,
            slot: false,
            lease: { ...lease },
            leaseMs: Math.max(1, lease.expiresAt - lease.acquiredAt),
            settled: false,
            dispatchedAt: lease.acquiredAt,
            gates: [],
          };
          live.attempt = att;
          this.#attempts.add(att);
          this.#inFlight++;
          continue;
        }
        if (rec.attempt < rec.retry.maxAttempts) {
          follow.push(this.#requeue(live, "recovered after restart", undefined, undefined));
        } else {
          const error = new FlotillaError(
            "WORKER_LOST",
            `task ${rec.id} was running when the previous process stopped`,
          ).toJSON();
          follow.push(
            this.#transition(live, "failed", {
              error,
              reason: "recovered after restart",
              patch: (r) => {
                r.lease = undefined;
                r.result = this.#result(r, live, "failed", now, { error });
              },
            }).then(() => this.#onTerminal(live)),
          );
        }
      }
    }
    await Promise.all(follow);
  }
}

function checkId(id: unknown): asserts id is string {
  if (typeof id !== "string" || id.length === 0) {
    throw new FlotillaError("VALIDATION", `id: expected a non-empty string, got ${typeof id}`);
  }
}

function toFlotillaError(err: unknown): FlotillaError {
  if (
    !(err instanceof Error) &&
    err !== null &&
    typeof err === "object" &&
    typeof (err as SerializedError).code === "string" &&
    typeof (err as SerializedError).message === "string"
  ) {
    const s = err as SerializedError;
    const code = (
      FlotillaErrorCodes.has(s.code) ? s.code : "WORKER_ERROR"
    ) as SerializedError["code"];
    return new FlotillaError(code, s.message, {
      retryable: s.retryable ?? false,
      details: s.details,
    });
  }
  return FlotillaError.from(err, "WORKER_ERROR");
}

const FlotillaErrorCodes = new Set<string>(ERROR_CODES);

function mergeUsage(a: Usage | undefined, b: Usage | undefined): Usage | undefined {
  if (!a) return b ? { ...b } : undefined;
  if (!b) return { ...a };
  return { ...a, ...b };
}

/** Replaces a new record's payload and metadata by JSON copies (refusing what JSON cannot hold). */
function detach(rec: TaskRecord): void {
  const p = rec.payload;
  if (p !== null && (typeof p === "object" || typeof p === "bigint")) {
    rec.payload = JSON.parse(toJson(p, `task ${rec.id}: payload`));
  }
  const m = rec.metadata;
  if (m !== null && typeof m === "object") {
    for (const _ in m) {
      rec.metadata = JSON.parse(toJson(m, `task ${rec.id}: metadata`));
      break;
    }
  }
}

/** `value` itself when JSON can hold it, else a JSON-safe copy (so a later store write cannot fail on it). */
function storable(value: unknown): unknown {
  if (value === null || (typeof value !== "object" && typeof value !== "bigint")) return value;
  try {
    JSON.stringify(value);
    return value;
  } catch {
    return toJsonSafe(value);
  }
}

/**
 * The ledger line of one settled attempt: what budgets and rate limits replay after a
 * restart (provider: the task's first rate-limit key; model: `payload.model` when a string).
 */
function usageLine(rec: TaskRecord, workerId: string, usage: Usage, at: number): UsageEntry {
  const line: UsageEntry = { at, taskId: rec.id, workerId, usage };
  const provider = rec.rateLimitKeys[0];
  if (provider !== undefined) line.provider = provider;
  const model = (rec.payload as { model?: unknown } | null | undefined)?.model;
  if (typeof model === "string") line.model = model;
  if (rec.tenant !== undefined) line.tenant = rec.tenant;
  return line;
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value)?.slice(0, 200) ?? String(value);
  } catch {
    return String(value);
  }
}
