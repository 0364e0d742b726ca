import { EventEmitter } from "eventemitter3";
import type { Clock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { TaskRecord } from "../task/types.js";
import type { HealthReport, Worker } from "../worker/types.js";
import { parseHealthReport, validateWorker } from "../worker/validate.js";
import { CircuitBreaker } from "./circuit.js";
import { Entry, serializeError } from "./entry.js";
import { HealthMonitor } from "./health.js";
import { toJsonSafe } from "./json-safe.js";
import { matchesTask } from "./match.js";
import {
  type CircuitBreakerOptions,
  type ExecutionOutcome,
  type HealthMonitorOptions,
  type RegistryChange,
  resolveRegistryOptions,
  type WorkerRegistryEvents,
  type WorkerRegistryOptions,
} from "./options.js";
import { REMOTE_NODE_KIND, type WorkerEntry, type WorkerInfo } from "./types.js";
import { isUnconstrained, WorkerIndex } from "./workerIndex.js";

export {
  type CircuitBreakerOptions,
  DEFAULT_CIRCUIT_OPTIONS,
  DEFAULT_HEALTH_OPTIONS,
  type ExecutionOutcome,
  type HealthMonitorOptions,
  type RegistryChange,
  type WorkerRegistryEvents,
  type WorkerRegistryOptions,
} from "./options.js";

/**
 * The set of registered workers, indexed for dispatch, with their health, circuit breaker,
 * slots in use and statistics.
 *
 * - **Matching**: {@link WorkerRegistry.eligible} answers "who may ever run this task" from
 *   indexes by task type, capability and label, starting from the smallest candidate set, so
 *   it does not scan every worker of a large fleet. {@link WorkerRegistry.available} further
 *   keeps workers that can take it now.
 * - **Health**: after {@link WorkerRegistry.start}, every worker with a `healthCheck` is
 *   checked each `intervalMs`, concurrently, each check bounded by `timeoutMs`. Failed checks
 *   move a worker healthy → degraded → unhealthy; `recoverAfter` consecutive good checks bring
 *   it back. Unhealthy workers keep being checked, so they always can recover. A worker
 *   without `healthCheck` stays healthy.
 * - **Circuit breaker**: `failureThreshold` consecutive execution failures open the circuit
 *   (no new tasks); after `cooldownMs` it is `half_open` and admits one probe task; a success
 *   closes it, a failure opens it again.
 *
 * The registry does not start or stop workers; whoever owns their lifecycle does. A
 * worker's declared fields (task types, capabilities, labels, concurrency) are read when it
 * is added: to change them, remove it and add it again.
 *
 * @example
 * ```ts
 * const registry = new WorkerRegistry({
 *   clock: systemClock,
 *   health: { intervalMs: 10_000, timeoutMs: 2_000 },
 *   circuit: { failureThreshold: 3, cooldownMs: 15_000 },
 *   onChange: (c) => console.log(`${c.workerId} ${c.kind}: ${c.from} -> ${c.to}`),
 * });
 * registry.add(new FunctionWorker({ id: "echo", taskTypes: ["echo"], fn: async (p) => p }));
 * registry.start();
 * const [worker] = registry.available(task);
 * if (worker && registry.acquireSlot(worker.id)) {
 *   // ... run, then:
 *   registry.recordResult(worker.id, { ok: true, durationMs: 12 });
 *   registry.releaseSlot(worker.id);
 * }
 * registry.stop();
 * ```
 */
export class WorkerRegistry extends EventEmitter<WorkerRegistryEvents> {
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #health: HealthMonitorOptions;
  readonly #breaker: CircuitBreaker;
  readonly #monitor: HealthMonitor;
  readonly #onChange: ((change: RegistryChange) => void) | undefined;
  readonly #alpha: number;

  readonly #entries = new Map<string, Entry>();
  readonly #index = new WorkerIndex();
  #seq = 0;
  #monitoring = false;

  constructor(options: WorkerRegistryOptions = {}) {
    super();
    const o = resolveRegistryOptions(options);
    this.#clock = o.clock;
    this.#logger = o.logger;
    this.#health = o.health;
    this.#onChange = o.onChange;
    this.#alpha = o.alpha;
    this.#breaker = new CircuitBreaker(o.clock, o.logger, o.circuit, (c) => this.#notify(c));
    this.#monitor = new HealthMonitor(o.clock, o.logger, o.health, {
      entries: () => this.#entries.values(),
      notify: (c) => this.#notify(c),
    });
  }

  /**
   * Effective health options (defaults applied).
   *
   * @example
   * ```ts
   * new WorkerRegistry().healthOptions.intervalMs; // 30000
   * ```
   */
  get healthOptions(): Readonly<HealthMonitorOptions> {
    return this.#health;
  }

  /**
   * Effective circuit breaker options (defaults applied).
   *
   * @example
   * ```ts
   * new WorkerRegistry().circuitOptions.failureThreshold; // 5
   * ```
   */
  get circuitOptions(): Readonly<CircuitBreakerOptions> {
    return this.#breaker.options;
  }

  /**
   * Number of registered workers.
   *
   * @example
   * ```ts
   * registry.size; // 0 for a new registry
   * ```
   */
  get size(): number {
    return this.#entries.size;
  }

  /**
   * Registers a worker (validated with `validateWorker`). Throws `VALIDATION` naming the
   * wrong field, or `CONFLICT` when a worker with the same id is registered.
   *
   * @example
   * ```ts
   * const entry = registry.add(new FunctionWorker({ taskTypes: ["echo"], fn: async (p) => p }));
   * entry.health; // "healthy"
   * ```
   */
  add(worker: Worker): WorkerEntry {
    validateWorker(worker);
    if (this.#entries.has(worker.id)) {
      throw new FlotillaError("CONFLICT", `a worker with id "${worker.id}" is already registered`, {
        details: { workerId: worker.id },
      });
    }
    const entry = new Entry(worker, this.#clock.now(), this.#seq++);
    this.#entries.set(entry.id, entry);
    this.#index.add(entry);
    this.#logger.debug({ workerId: entry.id, kind: worker.kind }, "worker registered");
    this.#emit("added", entry);
    return entry;
  }

  /**
   * Unregisters a worker: it gets no new task, its pending health check is aborted and its
   * timers cleared. Tasks it is running are not touched. Returns false for an unknown id.
   *
   * @example
   * ```ts
   * registry.remove("echo"); // true
   * ```
   */
  remove(id: string): boolean {
    const entry = this.#entries.get(id);
    if (entry === undefined) return false;
    this.#entries.delete(id);
    entry.removed = true;
    entry.accepting = false;
    this.#index.remove(entry);
    this.#breaker.clearCooldown(entry);
    entry.check?.cancel();
    this.#logger.debug({ workerId: id }, "worker unregistered");
    this.#emit("removed", entry);
    return true;
  }

  /**
   * The entry of a registered worker.
   *
   * @example
   * ```ts
   * registry.get("echo")?.inFlight;
   * ```
   */
  get(id: string): WorkerEntry | undefined {
    return this.#entries.get(id);
  }

  /**
   * Every registered worker, in registration order.
   *
   * @example
   * ```ts
   * for (const entry of registry.list()) console.log(entry.id, entry.health);
   * ```
   */
  list(): WorkerEntry[] {
    return [...this.#entries.values()];
  }

  /**
   * Marks a worker as accepting new tasks or not (draining). Returns false for an unknown id.
   *
   * @example
   * ```ts
   * registry.setAccepting("gpu-1", false); // finish current tasks, take no more
   * ```
   */
  setAccepting(id: string, accepting: boolean): boolean {
    const entry = this.#entries.get(id);
    if (entry === undefined) return false;
    entry.accepting = accepting;
    return true;
  }

  /**
   * Whether `entry` may ever run `task` (type or `"*"`, required capabilities and labels,
   * target worker id, name glob and tags), ignoring load, health and circuit.
   *
   * @example
   * ```ts
   * registry.matches(registry.get("client-acme-prod-1")!, { ...task, target: { name: "client-acme-*" } }); // true
   * ```
   */
  matches(entry: WorkerEntry, task: TaskRecord): boolean {
    return matchesTask(entry, task);
  }

  /**
   * Workers that may ever run `task` (see {@link WorkerRegistry.matches}), in registration
   * order. Uses the indexes: it starts from the smallest of the sets of workers offering the
   * task type, each required capability, each required label and tag, and checks only those.
   *
   * @example
   * ```ts
   * registry.eligible({ ...task, type: "llm_request", requirements: { capabilities: ["vision"] } });
   * ```
   */
  eligible(task: TaskRecord): WorkerEntry[] {
    return this.#collect(task, false);
  }

  /**
   * Eligible workers that can take `task` now: accepting, not `unhealthy`, circuit closed or
   * half-open without a probe running, and a free slot (`inFlight < maxConcurrency`).
   *
   * @example
   * ```ts
   * const candidates = registry.available(task);
   * const chosen = candidates.length > 0 ? router.pick(task, candidates) : undefined;
   * ```
   */
  available(task: TaskRecord): WorkerEntry[] {
    return this.#collect(task, true);
  }

  /**
   * {@link WorkerRegistry.available} or {@link WorkerRegistry.eligible} for the dispatcher,
   * bounded: where more than `window` workers are indexed for the task, at most `window` of
   * them (per index set scanned), the next scan continuing where the previous one stopped,
   * so that a dispatch costs the same with ten workers or ten thousand and successive
   * dispatches take turns through a large fleet. Smaller sets come back whole, in
   * registration order. With `only.local`, remote fleet nodes (whose slots only their own
   * claims fill) are passed over.
   *
   * @example
   * ```ts
   * const free = registry.windowed(task, { free: true, local: true }, 64); // at most 64
   * ```
   * @internal
   */
  windowed(
    task: TaskRecord,
    only: { free: boolean; local: boolean },
    window: number,
  ): WorkerEntry[] {
    return this.#collect(task, only.free, window, only.local);
  }

  /**
   * Matching workers in registration order, optionally only those that can take a task now.
   * Scans the smallest index set that every match must belong to. The type index and the
   * wildcard set are each in registration order (sets keep insertion order), so when both
   * are scanned their results are merged, not sorted.
   */
  #collect(task: TaskRecord, onlyAvailable: boolean, window?: number, local = false): Entry[] {
    // Workers taken from the type index (or the wildcard set) already match a task that has
    // no other constraint, so only availability is left to check: the common, broad case.
    const free = local
      ? (entry: Entry) => entry.worker.kind !== REMOTE_NODE_KIND && this.#canTakeEntry(entry)
      : (entry: Entry) => this.#canTakeEntry(entry);
    const keep = isUnconstrained(task)
      ? onlyAvailable
        ? free
        : () => true
      : (entry: Entry) => matchesTask(entry, task) && (!onlyAvailable || free(entry));
    const targetId = task.target?.workerId;
    if (targetId !== undefined) {
      const entry = this.#entries.get(targetId);
      return entry !== undefined && keep(entry) ? [entry] : [];
    }
    return this.#index.candidates(task, keep, window);
  }

  /**
   * Whether a worker can take a task now (accepting, not unhealthy, circuit allows, free slot).
   *
   * @example
   * ```ts
   * registry.canTake(registry.get("echo")!);
   * ```
   */
  canTake(entry: WorkerEntry): boolean {
    const e = this.#entries.get(entry.id);
    return e !== undefined && this.#canTakeEntry(e);
  }

  #canTakeEntry(e: Entry): boolean {
    return (
      !e.removed &&
      e.accepting &&
      e.health !== "unhealthy" &&
      e.inFlight < e.worker.maxConcurrency &&
      this.#breaker.allows(e)
    );
  }

  /**
   * Takes one slot of a worker for a task about to run. Returns false (and takes nothing)
   * when the worker is unknown or cannot take a task now (see {@link WorkerRegistry.canTake}).
   * On a half-open circuit the slot is the probe: no other task is admitted until
   * {@link WorkerRegistry.recordResult} (or {@link WorkerRegistry.releaseSlot}).
   *
   * @example
   * ```ts
   * if (registry.acquireSlot("echo")) {
   *   try { await run(); } finally { registry.releaseSlot("echo"); }
   * }
   * ```
   */
  acquireSlot(id: string): boolean {
    const entry = this.#entries.get(id);
    if (entry === undefined || !this.canTake(entry)) return false;
    entry.inFlight++;
    if (entry.circuit === "half_open") entry.probeInFlight = true;
    return true;
  }

  /**
   * Gives back a slot taken with {@link WorkerRegistry.acquireSlot}. Unknown ids and extra
   * releases are ignored. Call {@link WorkerRegistry.recordResult} first, so a half-open probe
   * is judged before another task is admitted.
   *
   * @example
   * ```ts
   * registry.releaseSlot("echo");
   * ```
   */
  releaseSlot(id: string): void {
    const entry = this.#entries.get(id);
    if (entry === undefined) return;
    if (entry.inFlight > 0) entry.inFlight--;
    entry.probeInFlight = false;
  }

  /**
   * Records how an execution ended: updates counters and the execution-time EWMA, and drives
   * the circuit breaker (`failureThreshold` consecutive failures open it; in `half_open` a
   * success closes it and a failure opens it again). Unknown ids are ignored.
   *
   * @example
   * ```ts
   * registry.recordResult("echo", { ok: false, durationMs: 30, error: new Error("boom") });
   * ```
   */
  recordResult(id: string, outcome: ExecutionOutcome): void {
    const entry = this.#entries.get(id);
    if (entry === undefined) return;
    const stats = entry.stats;
    const d = outcome.durationMs;
    if (Number.isFinite(d) && d >= 0) {
      stats.avgExecutionMs =
        entry.samples === 0 ? d : this.#alpha * d + (1 - this.#alpha) * stats.avgExecutionMs;
      entry.samples++;
    }
    entry.probeInFlight = false;
    if (outcome.ok) {
      stats.tasksCompleted++;
      stats.consecutiveFailures = 0;
      this.#breaker.succeeded(entry);
      return;
    }
    stats.tasksFailed++;
    stats.consecutiveFailures++;
    const error = serializeError(outcome.error);
    if (error !== undefined) stats.lastError = error;
    this.#breaker.failed(entry, error);
  }

  /**
   * Starts health monitoring: a round of checks now, then every `intervalMs` (measured from
   * the start of a round; a round never overlaps the next). Idempotent.
   *
   * @example
   * ```ts
   * registry.start();
   * ```
   */
  start(): void {
    const breaker = this.#breaker;
    breaker.stopped = false;
    if (this.#monitoring) return;
    this.#monitoring = true;
    for (const entry of this.#entries.values()) {
      if (entry.circuit === "open") breaker.armCooldown(entry);
    }
    this.#monitor.start();
  }

  /**
   * Stops health monitoring and clears every timer of the registry (pending checks are
   * aborted; open circuits then turn half-open lazily, when next asked). Idempotent;
   * `start()` resumes.
   *
   * @example
   * ```ts
   * registry.stop();
   * ```
   */
  stop(): void {
    this.#breaker.stopped = true;
    this.#monitoring = false;
    for (const entry of this.#entries.values()) this.#breaker.clearCooldown(entry);
    this.#monitor.stop();
  }

  /**
   * Runs health checks now: of one worker, or of every worker with a `healthCheck`.
   * Resolves when they have been applied. Rejects with `NOT_FOUND` for an unknown id.
   *
   * @example
   * ```ts
   * await registry.checkNow("ollama-local");
   * registry.get("ollama-local")?.health;
   * ```
   */
  async checkNow(id?: string): Promise<void> {
    if (id !== undefined) {
      const entry = this.#entries.get(id);
      if (entry === undefined) {
        throw new FlotillaError("NOT_FOUND", `no worker with id "${id}" is registered`);
      }
      await this.#monitor.checkOne(entry);
      return;
    }
    await this.#monitor.checkAll();
  }

  /**
   * Feeds a health report obtained elsewhere (a remote node's heartbeat, a status push)
   * into the worker's health state machine, exactly as a check result. Returns false for an
   * unknown id. Throws `VALIDATION` for a malformed report.
   *
   * @example
   * ```ts
   * registry.reportHealth("node-7", { status: "degraded", message: "disk 95% full" });
   * ```
   */
  reportHealth(id: string, report: HealthReport): boolean {
    const entry = this.#entries.get(id);
    if (entry === undefined) return false;
    let parsed: HealthReport;
    try {
      parsed = parseHealthReport(report);
    } catch (err) {
      throw new FlotillaError("VALIDATION", (err as Error).message);
    }
    this.#monitor.apply(entry, parsed);
    return true;
  }

  /**
   * A JSON-safe picture of every worker (no `Infinity`, `NaN`, functions or cycles), for
   * status endpoints and dashboards.
   *
   * @example
   * ```ts
   * JSON.stringify(registry.snapshot());
   * ```
   */
  snapshot(): WorkerInfo[] {
    const out: WorkerInfo[] = [];
    for (const entry of this.#entries.values()) out.push(this.#info(entry));
    return out;
  }

  /**
   * The JSON-safe picture of one worker (as in {@link WorkerRegistry.snapshot}), or
   * `undefined` for an unknown id.
   *
   * @example
   * ```ts
   * registry.info("echo")?.stats.avgExecutionMs;
   * ```
   */
  info(id: string): WorkerInfo | undefined {
    const entry = this.#entries.get(id);
    return entry === undefined ? undefined : this.#info(entry);
  }

  #info(entry: Entry): WorkerInfo {
    this.#breaker.allows(entry); // turn a cooled-down open circuit half-open before reporting
    const w = entry.worker;
    const info: WorkerInfo = {
      id: entry.id,
      kind: w.kind,
      name: w.name ?? entry.id,
      taskTypes: [...w.taskTypes],
      capabilities: [...(w.capabilities ?? [])],
      labels: { ...(w.labels ?? {}) },
      local: w.local ?? true,
      maxConcurrency: w.maxConcurrency,
      inFlight: entry.inFlight,
      health: entry.health,
      circuit: entry.circuit,
      accepting: entry.accepting,
      registeredAt: entry.registeredAt,
      stats: { ...entry.stats },
    };
    return toJsonSafe(info) as WorkerInfo;
  }

  // ---- events ----

  #notify(change: RegistryChange): void {
    if (this.#onChange !== undefined) {
      try {
        this.#onChange(change);
      } catch (err) {
        this.#logger.error({ err, workerId: change.workerId }, "registry onChange threw");
      }
    }
    this.#emit("change", change);
  }

  #emit<K extends keyof WorkerRegistryEvents>(event: K, ...args: WorkerRegistryEvents[K]): void {
    try {
      (this.emit as (e: K, ...a: WorkerRegistryEvents[K]) => boolean)(event, ...args);
    } catch (err) {
      this.#logger.error({ err, event }, "registry event listener threw");
    }
  }
}
