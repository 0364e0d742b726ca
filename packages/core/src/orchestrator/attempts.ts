import { FlotillaError, type SerializedError } from "../errors.js";
import type { Logger } from "../logger.js";
import type { WorkerRegistry } from "../registry/registry.js";
import type { WorkerEntry } from "../registry/types.js";
import type { SettleOutcome } from "../resources/gate.js";
import type { ProgressEvent } from "../task/events.js";
import { type Usage, UsageSchema } from "../task/schema.js";
import { newId } from "../util/ids.js";
import type { ExecutionContext } from "../worker/types.js";
import {
  type Attempt,
  errorEnd,
  type LocalAttempt,
  mergeUsage,
  type RemoteAttempt,
  safeJson,
  storable,
  successEnd,
  usageLine,
} from "./attempt.js";
import type { EngineContext } from "./context.js";
import type { Dependencies } from "./dependencies.js";
import type { Dispatcher } from "./dispatcher.js";
import type { GateChain } from "./gateChain.js";
import { type AttemptEnd, judgeAttempt, nextStep } from "./outcome.js";
import type { Persistence } from "./persistence.js";
import type { Live } from "./taskTable.js";
import type { TaskTelemetryLog } from "./telemetry.js";
import { buildResult, type Transitions } from "./transitions.js";

/** Lease ids of in-process dispatches start with this. */
export const LOCAL_LEASE_PREFIX = "local-";

/** The collaborators an attempt talks to. */
export interface AttemptParts {
  transitions: Transitions;
  gates: GateChain;
  dispatcher: Dispatcher;
  dependencies: Dependencies;
  persistence: Persistence;
  telemetry: TaskTelemetryLog;
  /** Lets a `foreign` task go once its attempt has settled and its outcome is stored. */
  leave?: (live: Live) => void;
}

/**
 * Runs attempts: one per dispatch of a task to a local slot or a remote holder. Holds the
 * attempts in flight, their timeout and lease timers, the worker's context (signal,
 * progress, usage), and settles each attempt exactly once, whatever ends it first — then
 * applies the outcome policy (retry, hold for approval, finish). @internal
 */
export class Attempts {
  readonly #ctx: EngineContext;
  readonly #p: AttemptParts;
  readonly #random: () => number;
  readonly #leaseMs: number;
  readonly #all = new Set<Attempt>();
  #inFlight = 0;
  /** Local lease ids: a per-process random prefix and a counter (no UUID per dispatch). */
  readonly #localLeasePrefix = `${LOCAL_LEASE_PREFIX}${newId()}-`;
  #localLeases = 0;
  readonly #settleListeners = new Set<() => void>();
  #execTotalMs = 0;
  #execCount = 0;

  constructor(
    ctx: EngineContext,
    parts: AttemptParts,
    options: { random: () => number; leaseMs: number },
  ) {
    this.#ctx = ctx;
    this.#p = parts;
    this.#random = options.random;
    this.#leaseMs = options.leaseMs;
  }

  /** Attempts leased or running now. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Mean wall time of finished attempts, ms. */
  get avgExecutionMs(): number {
    return this.#execCount === 0 ? 0 : this.#execTotalMs / this.#execCount;
  }

  /** Attempts in flight on worker `id`. */
  ofWorker(id: string): Attempt[] {
    return [...this.#all].filter((a) => a.entry.id === id);
  }

  /** Local attempts in flight. */
  localCount(): number {
    let n = 0;
    for (const a of this.#all) if (a.kind === "local") n++;
    return n;
  }

  /** Attempts in flight (a copy). */
  list(): Attempt[] {
    return [...this.#all];
  }

  /** A new attempt of `live` on `entry`, told to the gates as dispatched. */
  create(
    live: Live,
    entry: WorkerEntry,
    o: { remote: boolean; slot: boolean; leaseMs: number },
  ): Attempt {
    const now = this.#ctx.clock.now();
    const att: Attempt = {
      kind: o.remote ? "remote" : "local",
      live,
      n: live.rec.attempt + 1,
      entry,
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
      gates: this.#p.gates.dispatched(live.rec, entry, now),
    };
    this.#add(att);
    return att;
  }

  /** Takes back a remote holder's live lease found at recovery (its gates were told before). */
  adopt(live: Live, entry: WorkerEntry): RemoteAttempt {
    const lease = live.rec.lease!;
    const att: RemoteAttempt = {
      kind: "remote",
      live,
      n: live.rec.attempt,
      entry,
      slot: false,
      lease: { ...lease },
      leaseMs: Math.max(1, lease.expiresAt - lease.acquiredAt),
      settled: false,
      dispatchedAt: lease.acquiredAt,
      gates: [],
    };
    this.#add(att);
    return att;
  }

  #add(att: Attempt): void {
    att.live.attempt = att;
    this.#all.add(att);
    this.#inFlight++;
  }

  /** Tells the attempt's gates that the worker starts it now (once, never after settle). */
  start(att: Attempt): void {
    if (att.settled || att.started) return;
    att.started = true;
    if (att.gates.length === 0) return;
    this.#p.gates.started(att.gates, att.live.rec, att.entry, this.#ctx.clock.now());
  }

  /** Runs `live` on a free local slot of `entry` (the dispatcher chose it). */
  launch(live: Live, entry: WorkerEntry): void {
    if (!this.#ctx.registry.acquireSlot(entry.id)) {
      this.#p.dispatcher.queue.enqueue(live.rec, this.#ctx.clock.now());
      return;
    }
    // A local attempt's lease lasts its timeout, else the default lease.
    const leaseMs = live.rec.timeoutMs ?? this.#leaseMs;
    const att = this.create(live, entry, { remote: false, slot: true, leaseMs }) as LocalAttempt;
    void this.#runLocal(att);
  }

  async #runLocal(att: LocalAttempt): Promise<void> {
    const { transitions, dependencies } = this.#p;
    const live = att.live;
    const entry = att.entry;
    try {
      const leased = transitions.apply(live, "leased", {
        workerId: entry.id,
        patch: (r) => {
          r.attempt = att.n;
          r.lease = att.lease;
          r.workerId = entry.id;
          r.notBefore = undefined;
        },
      });
      const prepared = dependencies.workerTask(live);
      const task = prepared instanceof Promise ? await prepared : prepared;
      if (att.settled) return;
      const now = this.#ctx.clock.now();
      att.startedAt = now;
      live.startedAt = now;
      // leased and running usually share one store write
      const running = transitions.apply(live, "running", { workerId: entry.id });
      await leased;
      await running;
      if (att.settled) return;
      if (live.rec.timeoutMs !== undefined) this.armTimeout(att);
      const ctx = this.#context(att);
      this.start(att);
      let value: unknown;
      try {
        // A synchronous throw lands in the catch below like a rejection.
        value = await entry.worker.execute(task, ctx);
      } catch (err) {
        if (!att.settled) await this.settle(att, errorEnd(err));
        return;
      }
      if (!att.settled) await this.settle(att, successEnd(value, this.#ctx.logger));
    } catch (err) {
      this.#ctx.internalError(err, `attempt ${att.n} of task ${live.rec.id} failed internally`);
      if (!att.settled) {
        await this.settle(att, { kind: "error", error: FlotillaError.from(err, "INTERNAL") });
      }
    }
  }

  /** The worker's context (one object; its signal and logger are made on first use). */
  #context(att: LocalAttempt): ExecutionContext {
    return new LocalContext(this, att, this.#ctx.logger, this.#ctx.clock);
  }

  /** Arms the attempt's timeout (`timeoutMs` of the task). */
  armTimeout(att: Attempt): void {
    const ms = att.live.rec.timeoutMs!;
    att.timeoutTimer = this.#ctx.timers.set(() => {
      att.timeoutTimer = undefined;
      const { persistence } = this.#p;
      persistence.track(persistence.orGone(att.live.rec, this.settle(att, { kind: "timeout" })));
    }, ms);
  }

  /** Arms (again) a remote attempt's lease expiry: an expired lease loses the attempt. */
  armLeaseTimer(att: RemoteAttempt): void {
    const timers = this.#ctx.timers;
    timers.clear(att.leaseTimer);
    att.leaseTimer = undefined;
    if (!this.#ctx.running || att.settled) return;
    att.leaseTimer = timers.set(
      () => {
        att.leaseTimer = undefined;
        const { persistence } = this.#p;
        persistence.track(
          persistence.orGone(
            att.live.rec,
            this.settle(att, { kind: "lost", reason: `lease ${att.lease.id} expired` }),
          ),
        );
      },
      Math.max(0, att.lease.expiresAt - this.#ctx.clock.now()),
    );
  }

  /** At start: remote attempts get their lease and timeout timers again. */
  armRemote(): void {
    for (const att of this.#all) {
      if (att.kind !== "remote") continue;
      this.armLeaseTimer(att);
      if (att.live.rec.timeoutMs !== undefined) this.armTimeout(att);
    }
  }

  /** At stop: remote attempts' timers are cleared (their leases stay in the store). */
  clearRemoteTimers(): void {
    for (const att of this.#all) if (att.kind === "remote") this.#clearTimers(att);
  }

  /** Extends the lease from now by `extendMs` (default the lease's own length). */
  renew(att: Attempt, extendMs?: number): void {
    att.lease.expiresAt = this.#ctx.clock.now() + (extendMs ?? att.leaseMs);
    att.live.rec.lease = att.lease;
    if (att.kind === "remote") this.armLeaseTimer(att);
  }

  /** Progress of a running attempt: renews its lease and tells subscribers and listeners. */
  progress(att: Attempt, data: unknown): void {
    if (att.settled) return;
    const live = att.live;
    this.renew(att);
    live.rec.progress = storable(data);
    const ev: ProgressEvent = {
      taskId: live.rec.id,
      attempt: att.n,
      at: this.#ctx.clock.now(),
      data,
    };
    this.#p.telemetry.record(ev);
    if (live.subscribers) for (const ch of live.subscribers) ch.push(ev);
    this.#ctx.events.emit("task:progress", ev);
  }

  /** Usage a worker reported before returning, merged into the attempt's. @internal */
  reportUsage(att: Attempt, usage: Usage): void {
    if (att.settled) return;
    const parsed = UsageSchema.safeParse(usage);
    if (!parsed.success) {
      this.#ctx.logger.warn({ usage: safeJson(usage) }, "worker reported malformed usage; ignored");
      return;
    }
    att.usage = mergeUsage(att.usage, parsed.data);
  }

  #clearTimers(att: Attempt): void {
    const timers = this.#ctx.timers;
    timers.clear(att.timeoutTimer);
    att.timeoutTimer = undefined;
    if (att.kind === "remote") {
      timers.clear(att.leaseTimer);
      att.leaseTimer = undefined;
    }
  }

  /**
   * Ends an attempt exactly once, whatever comes first (result, error, timeout, cancel,
   * lease expiry, shutdown): frees the slot, tells the gates, and moves the task on.
   */
  settle(att: Attempt, end: AttemptEnd): Promise<void> {
    if (att.settled) return Promise.resolve();
    att.settled = true;
    this.#clearTimers(att);
    this.#all.delete(att);
    const live = att.live;
    if (live.attempt === att) live.attempt = undefined;
    const rec = live.rec;
    const now = this.#ctx.clock.now();
    const entry = att.entry;
    const registry: WorkerRegistry = this.#ctx.registry;
    const durationMs = now - (att.startedAt ?? att.dispatchedAt);
    const verdict = judgeAttempt(end, {
      taskId: rec.id,
      attempt: att.n,
      holder: entry.id,
      timeoutMs: rec.timeoutMs,
    });

    // Abort the worker's signal unless it finished on its own.
    if (att.kind === "local" && verdict.abort !== undefined && att.abortReason === undefined) {
      if (end.kind !== "success" && end.kind !== "error") {
        att.abortReason = verdict.abort;
        att.controller?.abort(verdict.abort);
      }
    }
    const usage = mergeUsage(att.usage, end.kind === "success" ? end.result.usage : undefined);
    if (att.slot) {
      if (verdict.healthy !== undefined) {
        const outcome: Parameters<WorkerRegistry["recordResult"]>[1] = {
          ok: verdict.healthy,
          durationMs,
        };
        if (verdict.error) outcome.error = verdict.error;
        registry.recordResult(entry.id, outcome);
      }
      registry.releaseSlot(entry.id);
    }
    this.#inFlight--;
    if (att.startedAt !== undefined && end.kind !== "requeue") {
      this.#execTotalMs += durationMs;
      this.#execCount++;
    }
    const settleOutcome: SettleOutcome = { status: verdict.status };
    if (usage) settleOutcome.usage = usage;
    if (verdict.error) settleOutcome.error = verdict.error;
    if (end.kind === "error" && end.retryAfterMs !== undefined) {
      settleOutcome.retryAfterMs = end.retryAfterMs;
    }
    this.#p.gates.settled(att.gates, rec, entry, settleOutcome, now);
    if (usage) this.#p.persistence.recordUsage(usageLine(rec, entry.id, usage, now));
    // The slot is free: lanes waiting for this worker may go again, and so may lanes a
    // gate held (its answer may depend on what was running).
    const dispatcher = this.#p.dispatcher;
    dispatcher.wakeWorker(entry.id);
    dispatcher.settled();

    let done = this.#after(att, end, verdict.error, usage, now);
    // A task claimed here from a partition held elsewhere goes back to its holder.
    if (live.foreign) done = done.then(() => this.#p.leave?.(live));
    dispatcher.schedule();
    for (const listener of [...this.#settleListeners]) listener();
    return done;
  }

  /** Applies the outcome policy to the task after its attempt settled. */
  async #after(
    att: Attempt,
    end: AttemptEnd,
    error: SerializedError | undefined,
    usage: Usage | undefined,
    now: number,
  ): Promise<void> {
    const { transitions, dependencies } = this.#p;
    const live = att.live;
    const rec = live.rec;
    const workerId = att.entry.id;
    const step = nextStep(end, {
      attempt: att.n,
      freeAttempts: rec.freeAttempts ?? 0,
      interruptions: rec.interruptions ?? 0,
      retry: rec.retry,
      approval: rec.approval,
      now,
      random: this.#random,
    });
    if (step.kind === "requeue") {
      if (step.free) rec.freeAttempts = (rec.freeAttempts ?? 0) + 1; // stored with the requeue
      await this.requeue(live, step.reason, error, step.notBefore);
      return;
    }
    const status = step.kind === "hold" ? "awaiting_approval" : step.status;
    const output = end.kind === "success" ? end.result.output : undefined;
    await transitions.apply(live, status, {
      workerId,
      reason:
        step.kind === "hold"
          ? "result awaits approval"
          : end.kind === "cancelled"
            ? end.reason
            : undefined,
      error,
      patch: (r) => {
        r.lease = undefined;
        r.result = buildResult(r, live, status, now, { output, error, usage, workerId });
      },
    });
    if (step.kind !== "hold") await dependencies.onTerminal(live);
  }

  /**
   * Lets go of an attempt without writing anything: its task's partition went to another
   * orchestrator, which takes a remote holder's lease over from the store (a local attempt
   * is aborted). The slot and the gates' share are freed here.
   */
  handOver(att: Attempt): void {
    if (att.settled) return;
    att.settled = true;
    if (att.kind === "local" && att.abortReason === undefined) {
      const reason = new FlotillaError(
        "CANCELLED",
        `task ${att.live.rec.id} is run by another orchestrator now`,
      );
      att.abortReason = reason;
      att.controller?.abort(reason);
    }
    this.#clearTimers(att);
    this.#all.delete(att);
    const live = att.live;
    if (live.attempt === att) live.attempt = undefined;
    if (att.slot) this.#ctx.registry.releaseSlot(att.entry.id);
    this.#inFlight--;
    const now = this.#ctx.clock.now();
    this.#p.gates.settled(att.gates, live.rec, att.entry, { status: "queued" }, now);
    this.#p.dispatcher.wakeWorker(att.entry.id);
    this.#p.dispatcher.settled();
    this.#p.dispatcher.schedule();
    for (const listener of [...this.#settleListeners]) listener();
  }

  /** Back to `queued` (from `notBefore` on, when later than now) as a new attempt. */
  async requeue(
    live: Live,
    reason: string,
    error: SerializedError | undefined,
    notBefore: number | undefined,
    interruptions?: number,
  ): Promise<void> {
    const now = this.#ctx.clock.now();
    await this.#p.transitions.apply(live, "queued", {
      reason,
      error,
      patch: (r) => {
        r.lease = undefined;
        if (interruptions !== undefined) r.interruptions = interruptions;
        if (notBefore !== undefined && notBefore > now) r.notBefore = notBefore;
        else r.notBefore = undefined;
      },
    });
    if (live.rec.status === "queued" && !live.attempt) {
      this.#p.dispatcher.enqueue(live);
      this.#p.dispatcher.schedule();
    }
  }

  /** Resolves once `done()` holds (checked after every settled attempt) or `timeoutMs` passes. */
  waitUntil(done: () => boolean, timeoutMs: number): Promise<void> {
    if (done()) return Promise.resolve();
    const timers = this.#ctx.timers;
    return new Promise<void>((resolve) => {
      const finish = () => {
        timers.clear(timer);
        this.#settleListeners.delete(check);
        resolve();
      };
      const check = () => {
        if (done()) finish();
      };
      const timer = timers.set(finish, timeoutMs);
      this.#settleListeners.add(check);
    });
  }
}

/**
 * What a local worker's `execute` gets as its context: one object per attempt, its signal
 * and child logger made only when the worker asks for them.
 */
class LocalContext implements ExecutionContext {
  readonly #attempts: Attempts;
  readonly #att: LocalAttempt;
  readonly #baseLogger: Logger;
  #logger: Logger | undefined;
  #progress: ((data: unknown) => void) | undefined;
  #reportUsage: ((usage: Usage) => void) | undefined;
  readonly clock: EngineContext["clock"];

  constructor(
    attempts: Attempts,
    att: LocalAttempt,
    logger: Logger,
    clock: EngineContext["clock"],
  ) {
    this.#attempts = attempts;
    this.#att = att;
    this.#baseLogger = logger;
    this.clock = clock;
  }

  get signal(): AbortSignal {
    const att = this.#att;
    if (!att.controller) {
      att.controller = new AbortController();
      if (att.abortReason !== undefined) att.controller.abort(att.abortReason);
    }
    return att.controller.signal;
  }

  get logger(): Logger {
    const att = this.#att;
    this.#logger ??= this.#baseLogger.child({
      taskId: att.live.rec.id,
      attempt: att.n,
      workerId: att.entry.id,
    });
    return this.#logger;
  }

  // Made on first use, bound: a worker may pass `ctx.progress` on or destructure it.
  get progress(): (data: unknown) => void {
    this.#progress ??= (data) => this.#attempts.progress(this.#att, data);
    return this.#progress;
  }

  get reportUsage(): (usage: Usage) => void {
    this.#reportUsage ??= (usage) => this.#attempts.reportUsage(this.#att, usage);
    return this.#reportUsage;
  }
}
