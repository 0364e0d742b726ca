import type { TimerHandle } from "../clock.js";
import { FlotillaError } from "../errors.js";
import { matchesTask } from "../registry/match.js";
import { REMOTE_NODE_KIND, type WorkerEntry } from "../registry/types.js";
import type { RoutingStrategy } from "../router/types.js";
import { DelayQueue } from "../scheduler/delayQueue.js";
import { type Lane, ReadyQueue, type ReadyQueueOptions } from "../scheduler/readyQueue.js";
import type { WaitingEvent } from "../task/events.js";
import type { EngineContext } from "./context.js";
import { GATE_KINDS, type GateChain, type GateCheck } from "./gateChain.js";
import type { Ownership } from "./ownership.js";
import type { Live, TaskTable } from "./taskTable.js";
import { buildResult, type Transitions } from "./transitions.js";

/**
 * The most free workers one dispatch considers: where more are free for a task, the
 * router chooses among this many, and the next dispatch takes the next ones in turn.
 */
export const ROUTING_WINDOW = 64;

/**
 * The most eligible workers a lane parked for want of a free one is indexed under, one by
 * one; a lane with more waits for a slot freeing on any worker that matches it.
 */
const WAIT_INDEX_LIMIT = 64;

const FREE_LOCAL = { free: true, local: true } as const;
const ANY = { free: false, local: false } as const;

/** Where the dispatcher hands work and finished tasks (the attempts and dependencies parts). */
export interface DispatchTargets {
  /** Attempts leased or running now, local and remote. */
  inFlight(): number;
  /** Starts an attempt of `live` on `entry` (a free local slot). */
  launch(live: Live, entry: WorkerEntry): void;
  /** A task reached a terminal status: release or skip its dependents. */
  finished(live: Live): Promise<void>;
  /** Keeps a write in flight among those `stop()` waits for. */
  track(p: Promise<unknown>): void;
}

/** Dispatcher settings from the orchestrator's options. */
export interface DispatcherOptions {
  concurrency: number;
  /** Fail a task no registered worker could run after this long (off when undefined). */
  unroutableTimeoutMs?: number | undefined;
  routing: RoutingStrategy;
  queue: ReadyQueueOptions;
  /** Which tasks this orchestrator schedules (the partitions it holds). */
  ownership: Ownership;
}

/**
 * The pump: takes lanes from the ready queue in priority order, asks the gate chain and the
 * router, and hands each task to a free local slot until the global cap is reached. Lanes
 * that no free worker can take, or that a gate holds, are parked whole and woken in
 * priority order (a slot frees, a worker changes, a gate wakes, a retry time comes). Tasks
 * with a retry delay or `runAt` wait in the delay queue. @internal
 */
export class Dispatcher {
  readonly queue: ReadyQueue;
  readonly delayed = new DelayQueue<string>();
  readonly #ctx: EngineContext;
  readonly #table: TaskTable;
  readonly #gates: GateChain;
  readonly #transitions: Transitions;
  readonly #targets: DispatchTargets;
  readonly #concurrency: number;
  readonly #routing: RoutingStrategy;
  readonly #ownership: Ownership;
  readonly #laneTimers = new Set<Lane>();
  /**
   * Lanes a gate holds on a key (a rate-limit key, a budget), by that key: when the key's
   * retry time comes, they all go back to the queue together, so the best task among them —
   * not the lane whose timer happened to fire first — takes the reopened capacity.
   */
  readonly #heldOnKey = new Map<string, Set<Lane>>();
  readonly #keyOfLane = new Map<Lane, string>();
  /** Timers that fail the tasks of lanes no registered worker could run (`unroutableTimeoutMs`). */
  readonly #unroutable = new Map<Lane, TimerHandle>();
  readonly #unroutableTimeoutMs: number | undefined;
  /** Lanes parked for want of a worker, by the ids of the workers that could run them. */
  readonly #waitingOn = new Map<string, Set<Lane>>();
  readonly #laneWaits = new Map<Lane, string[]>();
  /**
   * Lanes parked for want of a worker among more eligible workers than are indexed one by
   * one: a slot freeing on any worker that matches the lane's head wakes them.
   */
  readonly #broadWaits = new Set<Lane>();
  /** Block keys (`undefined`: none) of lanes a gate parked without a retry time. */
  readonly #untimedKeys = new Set<string | undefined>();
  #delayTimer: TimerHandle | undefined;
  #delayTimerAt: number | undefined;
  #pumpScheduled = false;
  #pumping = false;
  #pumpAgain = false;

  constructor(
    ctx: EngineContext,
    table: TaskTable,
    gates: GateChain,
    transitions: Transitions,
    targets: DispatchTargets,
    options: DispatcherOptions,
  ) {
    this.#ctx = ctx;
    this.#table = table;
    this.#gates = gates;
    this.#transitions = transitions;
    this.#targets = targets;
    this.#concurrency = options.concurrency;
    this.#routing = options.routing;
    this.#ownership = options.ownership;
    this.#unroutableTimeoutMs = options.unroutableTimeoutMs;
    this.queue = new ReadyQueue({
      ...options.queue,
      onLaneDropped: (lane) => {
        this.#clearLaneTimer(lane);
        this.#forgetWaits(lane);
        this.#clearUnroutable(lane);
      },
    });
  }

  /** Whether the global cap leaves room for another attempt. */
  get hasRoom(): boolean {
    return this.#targets.inFlight() < this.#concurrency;
  }

  /** Puts a queued task where it belongs: the ready queue, or the delay queue until `notBefore`. */
  enqueue(live: Live): void {
    const rec = live.rec;
    // A task of a partition given up meanwhile is its new holder's to run.
    if (!this.#ownership.owns(rec)) return;
    const now = this.#ctx.clock.now();
    if (rec.notBefore !== undefined && rec.notBefore > now) {
      this.delayed.add(rec.id, rec.notBefore);
      this.armDelayTimer();
      return;
    }
    this.queue.enqueue(rec, now);
  }

  /** Takes a task out of both queues (cancelled while waiting). */
  remove(id: string): void {
    this.queue.remove(id);
    this.delayed.remove(id);
  }

  /** Runs the pump on the next microtask (once, however often it is asked). */
  schedule(): void {
    if (this.#pumpScheduled || !this.#ctx.running) return;
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
    if (!this.#ctx.running) return;
    if (this.#pumping) {
      this.#pumpAgain = true;
      return;
    }
    this.#pumping = true;
    const skipped: Lane[] = [];
    const blocked = new Map<string, number | undefined>();
    const registry = this.#ctx.registry;
    try {
      do {
        this.#pumpAgain = false;
        while (this.hasRoom) {
          const lane = this.queue.popLane();
          if (!lane) break;
          const task = lane.head!.task;
          if (lane.blockKey !== undefined && blocked.has(lane.blockKey)) {
            this.#parkOnGate(lane, blocked.get(lane.blockKey));
            continue;
          }
          // The free local workers, at most a window of them (taking turns through a large
          // fleet), so a dispatch costs the same with ten workers or ten thousand; the
          // eligible ones only when needed (nothing free, or the gates hold it).
          const candidates = registry.windowed(task, FREE_LOCAL, ROUTING_WINDOW);
          if (candidates.length === 0) {
            const eligible = registry.windowed(task, ANY, WAIT_INDEX_LIMIT + 1);
            this.#parkForWorkers(lane, eligible);
            if (eligible.length === 0) this.#armUnroutable(lane);
            this.#waiting(task.id, () =>
              eligible.length === 0
                ? "no_worker"
                : allRemote(eligible) &&
                    (eligible.length <= WAIT_INDEX_LIMIT || allRemote(registry.eligible(task)))
                  ? "remote_poll"
                  : "workers_unavailable",
            );
            continue;
          }
          const check = this.#gates.check(task, candidates);
          if (check.fail) {
            this.queue.restore(lane);
            this.failQueued(task.id, check.fail);
            continue;
          }
          if (check.passing.length === 0) {
            lane.blockKey = check.blockKey;
            if (check.blockKey !== undefined) blocked.set(check.blockKey, check.retryAt);
            this.#parkOnGate(lane, check.retryAt);
            // A busy worker the gates were not asked about may take it once a slot frees. In
            // a fleet too large to index worker by worker, the gate's own wake-up or retry
            // time brings the lane back (and the next window is asked then).
            const eligible = registry.windowed(task, ANY, WAIT_INDEX_LIMIT + 1);
            if (eligible.length <= WAIT_INDEX_LIMIT && candidates.length < eligible.length) {
              this.#indexWaits(lane, eligible, candidates);
            }
            this.#waitingOnGate(task.id, check);
            continue;
          }
          lane.blockKey = undefined;
          let chosen: WorkerEntry | undefined;
          try {
            chosen = this.#routing.pick(task, check.passing);
          } catch (err) {
            this.#ctx.internalError(err, "routing strategy threw");
          }
          if (!chosen || !check.passing.includes(chosen)) {
            skipped.push(lane);
            continue;
          }
          const live = this.#table.live(task.id);
          this.queue.take(lane);
          if (!live) continue;
          live.waitingKind = undefined;
          this.#targets.launch(live, chosen);
        }
        for (const lane of skipped.splice(0)) this.queue.restore(lane);
      } while (this.#pumpAgain && this.#ctx.running);
    } finally {
      for (const lane of skipped) this.queue.restore(lane);
      this.#pumping = false;
    }
  }

  /**
   * Emits `task:waiting` when a parked task's reason changes kind. Nothing is built when no
   * one listens, and a task parked again for the same kind says nothing.
   */
  #waiting(taskId: string, kindOf: string | (() => string), gate?: GateCheck): void {
    const events = this.#ctx.events;
    if (events.listenerCount("task:waiting") === 0) return;
    const kind = typeof kindOf === "string" ? kindOf : kindOf();
    const live = this.#table.live(taskId);
    if (!live || live.waitingKind === kind) return;
    live.waitingKind = kind;
    const event: WaitingEvent = { taskId, kind, at: this.#ctx.clock.now() };
    if (gate?.gate !== undefined) event.gate = gate.gate;
    if (gate?.blockKey !== undefined) event.key = gate.blockKey;
    if (gate?.reason !== undefined) event.reason = gate.reason;
    if (gate?.retryAt !== undefined) event.until = gate.retryAt;
    events.emit("task:waiting", event);
  }

  #waitingOnGate(taskId: string, check: GateCheck): void {
    const name = check.gate ?? "gate";
    this.#waiting(taskId, GATE_KINDS[name] ?? "gate", check);
  }

  /** A gate refused a queued task for good: it fails with the gate's error. */
  failQueued(taskId: string, error: FlotillaError): void {
    const live = this.#table.live(taskId);
    if (live?.rec.status !== "queued") return;
    this.queue.remove(taskId);
    const err = error.toJSON();
    const now = this.#ctx.clock.now();
    const done = this.#transitions
      .apply(live, "failed", {
        reason: "refused by a dispatch gate",
        error: err,
        patch: (r) => {
          r.result = buildResult(r, live, "failed", now, { error: err });
        },
      })
      .then(() => this.#targets.finished(live));
    this.#targets.track(done);
  }

  /**
   * Parks a lane no free worker can take, indexed by the workers that could run it: only a
   * slot freeing on one of them (or its health or circuit changing, or a new worker)
   * brings it back — a completion never scans unrelated parked lanes.
   */
  #parkForWorkers(lane: Lane, eligible: readonly WorkerEntry[]): void {
    this.queue.park(lane, "worker");
    if (eligible.length <= WAIT_INDEX_LIMIT) this.#indexWaits(lane, eligible);
    else {
      this.#forgetWaits(lane);
      this.#broadWaits.add(lane);
    }
  }

  /** Indexes a parked lane by the workers (of `eligible`, except `except`) whose free slot wakes it. */
  #indexWaits(lane: Lane, eligible: readonly WorkerEntry[], except?: readonly WorkerEntry[]): void {
    this.#forgetWaits(lane);
    const skip = except && except.length > 0 ? new Set(except) : undefined;
    const ids: string[] = [];
    for (const e of eligible) if (!skip?.has(e)) ids.push(e.id);
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
    this.#broadWaits.delete(lane);
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

  /** A slot freed on a worker, or its health or circuit changed: lanes waiting for it go again. */
  wakeWorker(workerId: string): void {
    const set = this.#waitingOn.get(workerId);
    let woke = false;
    if (set !== undefined && set.size > 0) {
      for (const lane of [...set]) {
        this.#forgetWaits(lane);
        this.queue.unpark(lane);
      }
      woke = true;
    }
    if (this.#broadWaits.size > 0) {
      const entry = this.#ctx.registry.get(workerId);
      for (const lane of [...this.#broadWaits]) {
        const head = lane.head?.task;
        if (head !== undefined && entry !== undefined && !matchesTask(entry, head)) continue;
        this.#forgetWaits(lane);
        this.queue.unpark(lane);
        woke = true;
      }
    }
    if (woke) this.schedule();
  }

  /** A worker was added: every lane waiting for a worker goes again. */
  wakeAllWaiting(): void {
    for (const lane of [...this.#broadWaits, ...this.#laneWaits.keys()]) {
      this.#forgetWaits(lane);
      this.queue.unpark(lane);
    }
    this.queue.unparkAll("worker");
    this.schedule();
  }

  /**
   * A gate says held work may go now: all of it, or (with `keys`) the lanes held on those
   * keys and the lanes no single key holds.
   */
  wakeGates(keys?: readonly string[]): void {
    if (keys === undefined) this.queue.unparkAll("gate");
    else {
      for (const key of keys) this.queue.unparkGateGroup(key);
      this.queue.unparkGateGroup(undefined);
    }
    this.schedule();
  }

  /**
   * An attempt settled: of the lanes a gate holds with no retry time (its answer may depend
   * on what runs, e.g. a concurrency cap), the first of each key goes again. Lanes held
   * until a retry time wait for it or for their gate's wake-up, so a settle costs the same
   * with 10 000 keys held by rate limits or budgets as with none.
   */
  settled(): void {
    for (const key of this.#untimedKeys) {
      if (!this.queue.unparkGateHead(key)) this.#untimedKeys.delete(key);
    }
  }

  #parkOnGate(lane: Lane, retryAt: number | undefined): void {
    this.queue.park(lane, "gate");
    this.#clearLaneTimer(lane);
    lane.retryAt = retryAt;
    if (retryAt === undefined) {
      this.#untimedKeys.add(lane.blockKey);
      return;
    }
    const key = lane.blockKey;
    if (key !== undefined) {
      let held = this.#heldOnKey.get(key);
      if (!held) {
        held = new Set();
        this.#heldOnKey.set(key, held);
      }
      held.add(lane);
      this.#keyOfLane.set(lane, key);
    }
    lane.timer = this.#ctx.timers.set(
      () => {
        const key = this.#keyOfLane.get(lane);
        const lanes = key === undefined ? [lane] : [...(this.#heldOnKey.get(key) ?? [lane])];
        for (const l of lanes) {
          this.#clearLaneTimer(l);
          this.queue.unpark(l);
        }
        this.schedule();
      },
      Math.max(0, retryAt - this.#ctx.clock.now()),
    );
    this.#laneTimers.add(lane);
  }

  #clearLaneTimer(lane: Lane): void {
    if (lane.timer !== undefined) this.#ctx.timers.clear(lane.timer as TimerHandle);
    lane.timer = undefined;
    this.#laneTimers.delete(lane);
    const key = this.#keyOfLane.get(lane);
    if (key === undefined) return;
    this.#keyOfLane.delete(lane);
    const held = this.#heldOnKey.get(key);
    held?.delete(lane);
    if (held?.size === 0) this.#heldOnKey.delete(key);
  }

  /**
   * With `unroutableTimeoutMs`: fails the tasks of a lane no registered worker could run
   * once each has waited that long since it was queued (a worker registering first wakes
   * the lane, and the task runs instead).
   */
  #armUnroutable(lane: Lane): void {
    const after = this.#unroutableTimeoutMs;
    if (after === undefined) return;
    this.#clearUnroutable(lane);
    const head = lane.head?.task;
    if (!head) return;
    const since = this.#table.live(head.id)?.firstQueuedAt ?? this.#ctx.clock.now();
    const timer = this.#ctx.timers.set(
      () => {
        this.#unroutable.delete(lane);
        const now = this.#ctx.clock.now();
        for (;;) {
          const task = lane.head?.task;
          if (!task || this.#ctx.registry.eligible(task).length > 0) return;
          const queuedAt = this.#table.live(task.id)?.firstQueuedAt ?? now;
          if (queuedAt + after > now) {
            this.#armUnroutable(lane);
            return;
          }
          this.failQueued(
            task.id,
            new FlotillaError(
              "NO_ELIGIBLE_WORKER",
              `task ${task.id}: no registered worker can run "${task.type}" tasks with its requirements; waited ${now - queuedAt} ms (unroutableTimeoutMs ${after})`,
              {
                details: { type: task.type, waitedMs: now - queuedAt, unroutableTimeoutMs: after },
              },
            ),
          );
        }
      },
      Math.max(0, since + after - this.#ctx.clock.now()),
    );
    this.#unroutable.set(lane, timer);
  }

  #clearUnroutable(lane: Lane): void {
    const timer = this.#unroutable.get(lane);
    if (timer === undefined) return;
    this.#ctx.timers.clear(timer);
    this.#unroutable.delete(lane);
  }

  /** Arms the timer that moves delayed tasks to the ready queue when they are due. */
  armDelayTimer(): void {
    if (!this.#ctx.running) return;
    const timers = this.#ctx.timers;
    const next = this.delayed.nextAt();
    if (next === undefined) {
      timers.clear(this.#delayTimer);
      this.#delayTimer = undefined;
      this.#delayTimerAt = undefined;
      return;
    }
    if (this.#delayTimer !== undefined && this.#delayTimerAt === next) return;
    timers.clear(this.#delayTimer);
    this.#delayTimerAt = next;
    this.#delayTimer = timers.set(
      () => {
        this.#delayTimer = undefined;
        this.#delayTimerAt = undefined;
        const now = this.#ctx.clock.now();
        for (const id of this.delayed.takeDue(now)) {
          const live = this.#table.live(id);
          if (live && live.rec.status === "queued") this.queue.enqueue(live.rec, now);
        }
        this.armDelayTimer();
        this.schedule();
      },
      Math.max(0, next - this.#ctx.clock.now()),
    );
  }

  /** Clears the delay and lane timers (lanes held by a timer go back to the queue). */
  clearTimers(): void {
    for (const lane of [...this.#unroutable.keys()]) this.#clearUnroutable(lane);
    this.#ctx.timers.clear(this.#delayTimer);
    this.#delayTimer = undefined;
    this.#delayTimerAt = undefined;
    for (const lane of [...this.#laneTimers]) {
      this.#clearLaneTimer(lane);
      this.queue.unpark(lane);
    }
  }
}

/** Whether every one of `entries` is a remote node (whose slots only pull claims fill). */
function allRemote(entries: readonly WorkerEntry[]): boolean {
  for (const e of entries) if (e.worker.kind !== REMOTE_NODE_KIND) return false;
  return true;
}
