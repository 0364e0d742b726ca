import { EventEmitter } from "eventemitter3";
import { z } from "zod";
import { type Clock, systemClock, type TimerHandle } from "../clock.js";
import { FlotillaError, type SerializedError } from "../errors.js";
import { startHealthCheck } from "../health/check.js";
import { type HealthCounters, initialHealthCounters, nextHealthState } from "../health/state.js";
import { type Logger, silentLogger } from "../logger.js";
import type { TaskRecord } from "../task/types.js";
import type { HealthReport, Worker } from "../worker/types.js";
import { formatIssues, parseHealthReport, validateWorker } from "../worker/validate.js";
import { toJsonSafe } from "./json-safe.js";
import { matchesTask } from "./match.js";
import type {
  CircuitState,
  WorkerEntry,
  WorkerHealthState,
  WorkerInfo,
  WorkerStats,
} from "./types.js";

/** Health monitoring options of {@link WorkerRegistry}. */
export interface HealthMonitorOptions {
  /** Time between the starts of two health rounds. @default 30_000 */
  intervalMs: number;
  /** A check not answered within this time counts as failed (its signal is aborted). @default 5_000 */
  timeoutMs: number;
  /** Consecutive failed checks that make a healthy worker `degraded`. @default 1 */
  degradedAfter: number;
  /** Consecutive failed checks that make a worker `unhealthy` (no new tasks). @default 3 */
  unhealthyAfter: number;
  /** Consecutive good checks that bring a worker back to `healthy`. @default 2 */
  recoverAfter: number;
  /** Health checks running at once in a round. @default 16 */
  concurrency: number;
}

/** Circuit breaker options of {@link WorkerRegistry}. */
export interface CircuitBreakerOptions {
  /** Consecutive execution failures that open the circuit. @default 5 */
  failureThreshold: number;
  /** Time an open circuit waits before admitting one probe task (`half_open`). @default 30_000 */
  cooldownMs: number;
}

/** A health or circuit state change of one worker, as `onChange` and the `change` event get it. */
export type RegistryChange =
  | {
      kind: "health";
      workerId: string;
      from: WorkerHealthState;
      to: WorkerHealthState;
      /** The report (or synthesized failure) that caused the change. */
      report: HealthReport;
      at: number;
    }
  | {
      kind: "circuit";
      workerId: string;
      from: CircuitState;
      to: CircuitState;
      /** The failure that opened the circuit, when it opened. */
      error?: SerializedError;
      at: number;
    };

/** How one execution on a worker ended, for {@link WorkerRegistry.recordResult}. */
export interface ExecutionOutcome {
  /** Whether the worker did its job. Pass `true` for failures that are the task's own fault. */
  ok: boolean;
  /** Wall time of the execution, ms. Non-finite or negative values are not averaged. */
  durationMs: number;
  /** The failure (a `FlotillaError`, any thrown value, or its serialized form). */
  error?: unknown;
}

/** Options of {@link WorkerRegistry}. */
export interface WorkerRegistryOptions {
  /** Time source for health rounds, check timeouts and circuit cooldowns. @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
  /**
   * Health rounds: interval, timeout and the thresholds between states.
   * @default { intervalMs: 30_000, timeoutMs: 5_000, degradedAfter: 1, unhealthyAfter: 3, recoverAfter: 2, concurrency: 16 }
   */
  health?: Partial<HealthMonitorOptions>;
  /**
   * Circuit breaker per worker.
   * @default { failureThreshold: 5, cooldownMs: 30_000 }
   */
  circuit?: Partial<CircuitBreakerOptions>;
  /** Called on every health or circuit state change (after the state has changed). */
  onChange?: (change: RegistryChange) => void;
  /** Weight of the newest sample in the execution-time EWMA, in (0, 1]. @default 0.2 */
  ewmaAlpha?: number;
}

/** Events of {@link WorkerRegistry}. */
export interface WorkerRegistryEvents {
  change: [change: RegistryChange];
  added: [entry: WorkerEntry];
  removed: [entry: WorkerEntry];
}

/**
 * Default health monitoring options.
 *
 * @example
 * ```ts
 * new WorkerRegistry({ health: { ...DEFAULT_HEALTH_OPTIONS, intervalMs: 5_000 } });
 * ```
 */
export const DEFAULT_HEALTH_OPTIONS: Readonly<HealthMonitorOptions> = Object.freeze({
  intervalMs: 30_000,
  timeoutMs: 5_000,
  degradedAfter: 1,
  unhealthyAfter: 3,
  recoverAfter: 2,
  concurrency: 16,
});

/**
 * Default circuit breaker options.
 *
 * @example
 * ```ts
 * new WorkerRegistry({ circuit: { ...DEFAULT_CIRCUIT_OPTIONS, failureThreshold: 3 } });
 * ```
 */
export const DEFAULT_CIRCUIT_OPTIONS: Readonly<CircuitBreakerOptions> = Object.freeze({
  failureThreshold: 5,
  cooldownMs: 30_000,
});

const positiveInt = z.number().int().min(1);
const OptionsSchema = z.object({
  health: z
    .object({
      intervalMs: positiveInt.optional(),
      timeoutMs: positiveInt.optional(),
      degradedAfter: positiveInt.optional(),
      unhealthyAfter: positiveInt.optional(),
      recoverAfter: positiveInt.optional(),
      concurrency: positiveInt.optional(),
    })
    .optional(),
  circuit: z
    .object({
      failureThreshold: positiveInt.optional(),
      cooldownMs: z.number().int().min(0).optional(),
    })
    .optional(),
  ewmaAlpha: z.number().gt(0).max(1).optional(),
});

/** The registry's own entry: the public {@link WorkerEntry} plus bookkeeping. */
class Entry implements WorkerEntry {
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

interface PendingCheck {
  promise: Promise<HealthReport>;
  cancel(): void;
}

const labelKey = (key: string, value: string) => `${key}\u0000${value}`;

function addTo<K>(index: Map<K, Set<Entry>>, key: K, entry: Entry): void {
  let set = index.get(key);
  if (set === undefined) {
    set = new Set();
    index.set(key, set);
  }
  set.add(entry);
}

function removeFrom<K>(index: Map<K, Set<Entry>>, key: K, entry: Entry): void {
  const set = index.get(key);
  if (set === undefined) return;
  set.delete(entry);
  if (set.size === 0) index.delete(key);
}

function serializeError(error: unknown): SerializedError | undefined {
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
  readonly #circuit: CircuitBreakerOptions;
  readonly #onChange: ((change: RegistryChange) => void) | undefined;
  readonly #alpha: number;

  readonly #entries = new Map<string, Entry>();
  readonly #byType = new Map<string, Set<Entry>>();
  /** Workers whose task types include `"*"`. */
  readonly #anyType = new Set<Entry>();
  readonly #byCapability = new Map<string, Set<Entry>>();
  readonly #byLabel = new Map<string, Set<Entry>>();
  #seq = 0;

  #monitoring = false;
  #generation = 0;
  #stopped = false;
  #roundTimer: TimerHandle | undefined;
  #round: Promise<void> | undefined;

  constructor(options: WorkerRegistryOptions = {}) {
    super();
    const parsed = OptionsSchema.safeParse({
      health: options.health,
      circuit: options.circuit,
      ewmaAlpha: options.ewmaAlpha,
    });
    if (!parsed.success) {
      throw new FlotillaError(
        "VALIDATION",
        `invalid registry options: ${formatIssues(parsed.error, "options")}`,
      );
    }
    if (options.onChange !== undefined && typeof options.onChange !== "function") {
      throw new FlotillaError(
        "VALIDATION",
        "invalid registry options: options.onChange: expected a function",
      );
    }
    const clock = options.clock;
    if (
      clock !== undefined &&
      (typeof clock?.now !== "function" ||
        typeof clock.setTimeout !== "function" ||
        typeof clock.clearTimeout !== "function")
    ) {
      throw new FlotillaError(
        "VALIDATION",
        "invalid registry options: options.clock: expected a Clock (now, setTimeout, clearTimeout)",
      );
    }
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
    this.#health = { ...DEFAULT_HEALTH_OPTIONS, ...stripUndefined(options.health) };
    this.#circuit = { ...DEFAULT_CIRCUIT_OPTIONS, ...stripUndefined(options.circuit) };
    if (this.#health.degradedAfter > this.#health.unhealthyAfter) {
      throw new FlotillaError(
        "VALIDATION",
        `invalid registry options: options.health.degradedAfter (${this.#health.degradedAfter}) must be <= options.health.unhealthyAfter (${this.#health.unhealthyAfter})`,
      );
    }
    this.#onChange = options.onChange;
    this.#alpha = options.ewmaAlpha ?? 0.2;
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
    return this.#circuit;
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
    // The keys are kept so that remove() undoes exactly what add() indexed.
    entry.indexed = {
      types: [...new Set(worker.taskTypes)],
      capabilities: [...new Set(worker.capabilities ?? [])],
      labels: Object.entries(worker.labels ?? {}).map(([k, v]) => labelKey(k, v)),
    };
    for (const type of entry.indexed.types) {
      if (type === "*") this.#anyType.add(entry);
      else addTo(this.#byType, type, entry);
    }
    for (const cap of entry.indexed.capabilities) addTo(this.#byCapability, cap, entry);
    for (const key of entry.indexed.labels) addTo(this.#byLabel, key, entry);
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
    this.#anyType.delete(entry);
    for (const type of entry.indexed.types) removeFrom(this.#byType, type, entry);
    for (const cap of entry.indexed.capabilities) removeFrom(this.#byCapability, cap, entry);
    for (const key of entry.indexed.labels) removeFrom(this.#byLabel, key, entry);
    this.#clearCooldown(entry);
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
   * Matching workers in registration order, optionally only those that can take a task now.
   * Scans the smallest index set that every match must belong to. The type index and the
   * wildcard set are each in registration order (sets keep insertion order), so when both
   * are scanned their results are merged, not sorted.
   */
  #collect(task: TaskRecord, onlyAvailable: boolean): Entry[] {
    // Workers taken from the type index (or the wildcard set) already match a task that has
    // no other constraint, so only availability is left to check: the common, broad case.
    const keep = isUnconstrained(task)
      ? (entry: Entry) => !onlyAvailable || this.#canTakeEntry(entry)
      : (entry: Entry) => matchesTask(entry, task) && (!onlyAvailable || this.#canTakeEntry(entry));
    const targetId = task.target?.workerId;
    if (targetId !== undefined) {
      const entry = this.#entries.get(targetId);
      return entry !== undefined && keep(entry) ? [entry] : [];
    }
    const typed = this.#byType.get(task.type);
    let narrowest: Set<Entry> | undefined;
    let size = (typed?.size ?? 0) + this.#anyType.size;
    if (size === 0) return [];
    for (const cap of task.requirements?.capabilities ?? []) {
      const set = this.#byCapability.get(cap);
      if (set === undefined) return [];
      if (set.size < size) {
        narrowest = set;
        size = set.size;
      }
    }
    for (const pairs of [task.requirements?.labels, task.target?.tags]) {
      if (pairs === undefined) continue;
      for (const key in pairs) {
        const set = this.#byLabel.get(labelKey(key, pairs[key]!));
        if (set === undefined) return [];
        if (set.size < size) {
          narrowest = set;
          size = set.size;
        }
      }
    }
    const out: Entry[] = [];
    if (narrowest !== undefined) {
      for (const entry of narrowest) if (keep(entry)) out.push(entry);
      return out;
    }
    const a: Entry[] = [];
    if (typed !== undefined) for (const entry of typed) if (keep(entry)) a.push(entry);
    if (this.#anyType.size === 0) return a;
    const b: Entry[] = [];
    for (const entry of this.#anyType) if (keep(entry)) b.push(entry);
    if (a.length === 0) return b;
    if (b.length === 0) return a;
    let i = 0;
    let j = 0;
    while (i < a.length && j < b.length) out.push(a[i]!.seq < b[j]!.seq ? a[i++]! : b[j++]!);
    while (i < a.length) out.push(a[i++]!);
    while (j < b.length) out.push(b[j++]!);
    return out;
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
      this.#circuitAllows(e)
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
      if (entry.circuit !== "closed") {
        this.#clearCooldown(entry);
        this.#setCircuit(entry, "closed");
      }
      return;
    }
    stats.tasksFailed++;
    stats.consecutiveFailures++;
    const error = serializeError(outcome.error);
    if (error !== undefined) stats.lastError = error;
    if (
      entry.circuit === "half_open" ||
      (entry.circuit === "closed" && stats.consecutiveFailures >= this.#circuit.failureThreshold)
    ) {
      this.#open(entry, error);
    }
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
    this.#stopped = false;
    if (this.#monitoring) return;
    this.#monitoring = true;
    for (const entry of this.#entries.values()) {
      if (entry.circuit === "open") this.#armCooldown(entry);
    }
    this.#scheduleRound(0);
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
    this.#stopped = true;
    this.#monitoring = false;
    this.#generation++;
    if (this.#roundTimer !== undefined) this.#clock.clearTimeout(this.#roundTimer);
    this.#roundTimer = undefined;
    for (const entry of this.#entries.values()) {
      this.#clearCooldown(entry);
      entry.check?.cancel();
    }
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
      await this.#checkOne(entry);
      return;
    }
    await this.#checkAll();
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
    this.#applyHealth(entry, parsed);
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
    this.#circuitAllows(entry); // turn a cooled-down open circuit half-open before reporting
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

  // ---- circuit breaker ----

  #circuitAllows(entry: Entry): boolean {
    if (entry.circuit === "closed") return true;
    if (entry.circuit === "open") {
      if (this.#clock.now() < entry.openUntil) return false;
      this.#clearCooldown(entry);
      this.#setCircuit(entry, "half_open");
    }
    return !entry.probeInFlight;
  }

  #open(entry: Entry, error: SerializedError | undefined): void {
    entry.openUntil = this.#clock.now() + this.#circuit.cooldownMs;
    this.#clearCooldown(entry);
    this.#armCooldown(entry);
    if (entry.circuit !== "open") this.#setCircuit(entry, "open", error);
  }

  #armCooldown(entry: Entry): void {
    if (this.#stopped || entry.removed) return;
    const delay = Math.max(0, entry.openUntil - this.#clock.now());
    entry.cooldownTimer = this.#clock.setTimeout(() => {
      entry.cooldownTimer = undefined;
      if (!entry.removed && entry.circuit === "open") this.#setCircuit(entry, "half_open");
    }, delay);
  }

  #clearCooldown(entry: Entry): void {
    if (entry.cooldownTimer !== undefined) this.#clock.clearTimeout(entry.cooldownTimer);
    entry.cooldownTimer = undefined;
  }

  #setCircuit(entry: Entry, to: CircuitState, error?: SerializedError): void {
    const from = entry.circuit;
    if (from === to) return;
    entry.circuit = to;
    const change: RegistryChange = {
      kind: "circuit",
      workerId: entry.id,
      from,
      to,
      at: this.#clock.now(),
    };
    if (error !== undefined) change.error = error;
    this.#logger[to === "open" ? "warn" : "info"](
      { workerId: entry.id, from, to },
      `circuit ${from} -> ${to}`,
    );
    this.#notify(change);
  }

  // ---- health ----

  /**
   * Arms the next round. `#generation` changes on every stop(), so a round still finishing
   * from before a stop()/start() pair cannot arm a second, parallel loop.
   */
  #scheduleRound(delay: number): void {
    if (!this.#monitoring) return;
    const generation = this.#generation;
    if (this.#roundTimer !== undefined) this.#clock.clearTimeout(this.#roundTimer);
    this.#roundTimer = this.#clock.setTimeout(() => {
      this.#roundTimer = undefined;
      const startedAt = this.#clock.now();
      void this.#checkAll().then(() => {
        if (generation !== this.#generation) return;
        const next = Math.max(0, startedAt + this.#health.intervalMs - this.#clock.now());
        this.#scheduleRound(next);
      });
    }, delay);
  }

  /** One round: every worker with a health check, `concurrency` at a time. */
  #checkAll(): Promise<void> {
    if (this.#round !== undefined) return this.#round;
    const queue = [...this.#entries.values()].filter((e) => e.worker.healthCheck !== undefined);
    let next = 0;
    const lane = async () => {
      while (next < queue.length) {
        const e = queue[next++]!;
        if (!e.removed) await this.#checkOne(e);
      }
    };
    const lanes = Array.from({ length: Math.min(this.#health.concurrency, queue.length) }, lane);
    this.#round = Promise.all(lanes).then(
      () => {
        this.#round = undefined;
      },
      (err) => {
        this.#round = undefined;
        this.#logger.error({ err }, "health round failed");
      },
    );
    return this.#round;
  }

  /** Runs one check (joining a check already running for that worker) and applies it. */
  #checkOne(entry: Entry): Promise<HealthReport> {
    if (entry.worker.healthCheck === undefined) return Promise.resolve({ status: entry.health });
    if (entry.check !== undefined) return entry.check.promise;
    const running = startHealthCheck(entry.worker, {
      clock: this.#clock,
      timeoutMs: this.#health.timeoutMs,
    });
    const pending: PendingCheck = {
      cancel: running.cancel,
      promise: running.result.then((report) => {
        if (entry.check === pending) entry.check = undefined;
        if (report === undefined) return { status: entry.health }; // cancelled: nothing learned
        if (!entry.removed) this.#applyHealth(entry, report);
        return report;
      }),
    };
    entry.check = pending;
    return pending.promise;
  }

  #applyHealth(entry: Entry, report: HealthReport): void {
    entry.stats.lastHealthCheckAt = this.#clock.now();
    entry.stats.lastHealthReport = report;
    const from = entry.health;
    const next = nextHealthState(from, entry.healthCounters, report, this.#health);
    entry.healthCounters = next.counters;
    const to = next.state;
    if (to === from) return;
    entry.health = to;
    this.#logger[to === "healthy" ? "info" : "warn"](
      { workerId: entry.id, from, to, message: report.message },
      `worker health ${from} -> ${to}`,
    );
    this.#notify({
      kind: "health",
      workerId: entry.id,
      from,
      to,
      report,
      at: this.#clock.now(),
    });
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

function isEmpty(record: Readonly<Record<string, string>> | undefined): boolean {
  if (record === undefined) return true;
  for (const _ in record) return false;
  return true;
}

/** True when nothing but the task type constrains which workers may run `task`. */
function isUnconstrained(task: TaskRecord): boolean {
  const req = task.requirements;
  const target = task.target;
  return (
    (req === undefined || ((req.capabilities?.length ?? 0) === 0 && isEmpty(req.labels))) &&
    (target === undefined ||
      (target.workerId === undefined && target.name === undefined && isEmpty(target.tags)))
  );
}

function stripUndefined<T extends object>(value: T | undefined): Partial<T> {
  const out: Partial<T> = {};
  if (value === undefined) return out;
  for (const [k, v] of Object.entries(value))
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  return out;
}
