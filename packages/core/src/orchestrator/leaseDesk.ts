import { FlotillaError } from "../errors.js";
import {
  type Claim,
  type ClaimOptions,
  ClaimOptionsSchema,
  type ClaimSlot,
  ClaimSlotSchema,
} from "../lease/types.js";
import { matchesTask } from "../registry/match.js";
import { REMOTE_NODE_KIND, type WorkerEntry } from "../registry/types.js";
import type { Lease, TaskRecord } from "../task/types.js";
import { parseOrThrow } from "../task/validation.js";
import type { Worker, WorkerResult } from "../worker/types.js";
import { type Attempt, errorEnd, type RemoteAttempt, successEnd } from "./attempt.js";
import type { Attempts } from "./attempts.js";
import type { EngineContext } from "./context.js";
import type { Dependencies } from "./dependencies.js";
import type { Dispatcher } from "./dispatcher.js";
import type { GateChain } from "./gateChain.js";
import type { Ownership } from "./ownership.js";
import type { Persistence } from "./persistence.js";
import type { Live, TaskTable } from "./taskTable.js";
import type { Transitions } from "./transitions.js";

/** How many task types of a remote holder a claim of a task held elsewhere looks at. */
const ELSEWHERE_TYPES = 8;
/** How many of the oldest queued tasks of each type such a claim reads from the store. */
const ELSEWHERE_LOOK = 50;

/** The collaborators the lease desk talks to. */
export interface LeaseDeskParts {
  table: TaskTable;
  transitions: Transitions;
  gates: GateChain;
  dispatcher: Dispatcher;
  attempts: Attempts;
  dependencies: Dependencies;
  persistence: Persistence;
  ownership: Ownership;
}

/**
 * The pull API: a remote slot claims the best ready task it can run (the same matching as
 * a local slot) under a lease, then renews it, reports progress, completes, fails or
 * releases it. Every call names the lease; a lease that no longer holds the task is
 * refused. @internal
 */
export class LeaseDesk {
  readonly #ctx: EngineContext;
  readonly #p: LeaseDeskParts;
  readonly #leaseMs: number;

  constructor(ctx: EngineContext, parts: LeaseDeskParts, leaseMs: number) {
    this.#ctx = ctx;
    this.#p = parts;
    this.#leaseMs = leaseMs;
  }

  async claim(slot: ClaimSlot, options: ClaimOptions): Promise<Claim | null> {
    const s = parseOrThrow(ClaimSlotSchema, slot, "slot");
    const o = parseOrThrow(ClaimOptionsSchema, options, "options");
    const { registry, clock } = this.#ctx;
    const { dispatcher, gates, attempts, table } = this.#p;
    if (!this.#ctx.running || !dispatcher.hasRoom) return null;
    const registered = registry.get(s.holderId);
    if (registered && !registry.canTake(registered)) return null;
    const entry = registered ?? syntheticEntry(s, clock.now());
    const leaseMs = o.leaseMs ?? this.#leaseMs;
    for (const lane of dispatcher.queue.lanesInOrder()) {
      const head = lane.head?.task;
      if (!head || !matchesTask(entry, head)) continue;
      const check = gates.check(head, [entry]);
      if (check.fail) {
        dispatcher.failQueued(head.id, check.fail);
        continue;
      }
      if (check.passing.length === 0) continue;
      const live = table.live(head.id);
      if (!live) continue;
      dispatcher.queue.takeTask(head.id);
      if (registered && !registry.acquireSlot(registered.id)) {
        dispatcher.queue.enqueue(live.rec, clock.now());
        return null;
      }
      live.waitingKind = undefined;
      const att = attempts.create(live, entry, {
        remote: true,
        slot: !!registered,
        leaseMs,
      }) as RemoteAttempt;
      // A remote holder starts the attempt when it claims it.
      attempts.start(att);
      attempts.armLeaseTimer(att);
      if (live.rec.timeoutMs !== undefined) attempts.armTimeout(att);
      await this.#leased(live, att);
      return this.#claimOf(live, att);
    }
    if (this.#p.ownership.count === undefined) return null;
    return this.#claimHeldElsewhere(entry, registered !== undefined, leaseMs);
  }

  /**
   * With partitions, a remote holder may be sent to any orchestrator of the store: when none
   * of the tasks held here suits it, it gets the best one queued in a partition held
   * elsewhere. The claim is a versioned write (the partition's holder may be dispatching the
   * task at the same moment: whichever write lands first has it); the task stays here, as
   * `foreign`, for as long as the attempt runs, and goes back to its holder afterwards.
   */
  async #claimHeldElsewhere(
    entry: WorkerEntry,
    registered: boolean,
    leaseMs: number,
  ): Promise<Claim | null> {
    const { registry, clock, store } = this.#ctx;
    const { dispatcher, gates, attempts, table, ownership, persistence } = this.#p;
    const types = entry.worker.taskTypes;
    const found = new Map<string, TaskRecord>();
    for (const type of types.includes("*") ? [undefined] : types.slice(0, ELSEWHERE_TYPES)) {
      const recs = await store.listTasks({
        status: "queued",
        ...(type === undefined ? {} : { type }),
        newestFirst: false,
        limit: ELSEWHERE_LOOK,
      });
      for (const rec of recs) found.set(rec.id, rec);
    }
    const now = clock.now();
    const candidates = [...found.values()]
      .filter(
        (rec) =>
          !ownership.owns(rec) &&
          (rec.notBefore === undefined || rec.notBefore <= now) &&
          matchesTask(entry, rec),
      )
      .sort((a, b) => b.priority - a.priority || a.seq - b.seq);
    for (const rec of candidates) {
      if (!this.#ctx.running || !dispatcher.hasRoom) return null;
      if (table.known(rec.id) || ownership.owns(rec)) continue;
      const check = gates.check(rec, [entry]);
      if (check.fail || check.passing.length === 0) continue;
      if (registered && !registry.acquireSlot(entry.id)) return null;
      const live: Live = { rec, finished: false, foreign: true };
      persistence.noteStored(rec);
      table.add(live);
      const att = attempts.create(live, entry, {
        remote: true,
        slot: registered,
        leaseMs,
      }) as RemoteAttempt;
      attempts.start(att);
      const stored = await persistence
        .orGone(
          rec,
          this.#leased(live, att).then(() => true),
        )
        .catch(() => false);
      // Another orchestrator changed it first (its holder ran it): it was let go; the next.
      if (stored !== true || table.live(rec.id) !== live || live.attempt !== att) {
        if (table.live(rec.id) === live) {
          // Refused for another reason: nothing of it stays here.
          attempts.handOver(att);
          persistence.forget(rec);
          table.drop(live);
        }
        continue;
      }
      attempts.armLeaseTimer(att);
      if (live.rec.timeoutMs !== undefined) attempts.armTimeout(att);
      return this.#claimOf(live, att);
    }
    return null;
  }

  /** The task moves to `leased` under the attempt's lease (resolves once stored). */
  #leased(live: Live, att: RemoteAttempt): Promise<void> {
    const holder = att.entry.id;
    return this.#p.transitions.apply(live, "leased", {
      workerId: holder,
      reason: "claimed",
      patch: (r) => {
        r.attempt = att.n;
        r.lease = att.lease;
        r.workerId = holder;
        r.notBefore = undefined;
      },
    });
  }

  /** What the remote holder gets: the lease, the task as a worker sees it, the record. */
  async #claimOf(live: Live, att: RemoteAttempt): Promise<Claim> {
    const task = await this.#p.dependencies.workerTask(live);
    return { lease: { ...att.lease }, task, record: structuredClone(live.rec) };
  }

  async renew(taskId: string, leaseId: string, extendMs?: number): Promise<Lease> {
    if (extendMs !== undefined && !(Number.isInteger(extendMs) && extendMs > 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `extendMs: expected a positive integer, got ${String(extendMs)}`,
      );
    }
    const att = await this.#holding(taskId, leaseId);
    this.#p.attempts.renew(att, extendMs);
    await this.#p.persistence.save(att.live.rec);
    return { ...att.lease };
  }

  async progress(taskId: string, leaseId: string, data?: unknown): Promise<TaskRecord> {
    const att = await this.#holding(taskId, leaseId);
    const { attempts, transitions, persistence } = this.#p;
    attempts.renew(att);
    const live = att.live;
    if (live.rec.status === "leased") {
      const now = this.#ctx.clock.now();
      att.startedAt ??= now;
      live.startedAt = now;
      await transitions.apply(live, "running", {
        workerId: att.entry.id,
        patch: (r) => {
          r.lease = att.lease;
        },
      });
    } else await persistence.save(live.rec);
    if (data !== undefined) attempts.progress(att, data);
    return structuredClone(live.rec);
  }

  async complete(taskId: string, leaseId: string, result: WorkerResult): Promise<TaskRecord> {
    const att = await this.#holding(taskId, leaseId);
    await this.#p.attempts.settle(att, successEnd(result, this.#ctx.logger));
    return structuredClone(att.live.rec);
  }

  async fail(taskId: string, leaseId: string, error: unknown): Promise<TaskRecord> {
    const att = await this.#holding(taskId, leaseId);
    await this.#p.attempts.settle(att, errorEnd(error));
    return structuredClone(att.live.rec);
  }

  async release(taskId: string, leaseId: string, reason: string): Promise<TaskRecord> {
    const att = await this.#holding(taskId, leaseId);
    await this.#p.attempts.settle(att, { kind: "requeue", reason });
    return structuredClone(att.live.rec);
  }

  /** The attempt that `leaseId` holds on `taskId`, or the error that says why not. */
  async #holding(taskId: string, leaseId: string): Promise<Attempt> {
    if (typeof taskId !== "string" || typeof leaseId !== "string") {
      throw new FlotillaError("VALIDATION", "taskId and leaseId: expected strings");
    }
    const live = this.#p.table.live(taskId);
    if (!live) {
      const rec = this.#p.table.finished(taskId)?.rec ?? (await this.#ctx.store.getTask(taskId));
      if (!rec) throw new FlotillaError("NOT_FOUND", `no task with id ${taskId}`);
      const { ownership } = this.#p;
      if (!ownership.owns(rec) && rec.lease?.id === leaseId) {
        const partition = ownership.partitionOf(rec);
        throw new FlotillaError(
          "INVALID_STATE",
          `task ${taskId} is held by another orchestrator sharing the store (partition ${partition}): send its lease calls to the server that gave the lease`,
          { details: { taskId, status: rec.status, partition, heldElsewhere: true } },
        );
      }
      throw new FlotillaError(
        "INVALID_STATE",
        `task ${taskId} is ${rec.status}; its lease has ended`,
        { details: { taskId, status: rec.status } },
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
}

/** The registry entry of a remote holder that is not registered (matched by its own claim). @internal */
export function syntheticEntry(
  s: Pick<ClaimSlot, "holderId" | "name" | "taskTypes" | "capabilities" | "labels">,
  now: number,
): WorkerEntry {
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
    registeredAt: now,
    health: "healthy",
    circuit: "closed",
    inFlight: 0,
    accepting: true,
    stats: { tasksCompleted: 0, tasksFailed: 0, avgExecutionMs: 0, consecutiveFailures: 0 },
  };
}
