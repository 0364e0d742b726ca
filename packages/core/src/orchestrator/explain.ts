import { FlotillaError, type SerializedError } from "../errors.js";
import { matchesTask } from "../registry/match.js";
import { REMOTE_NODE_KIND, type WorkerEntry } from "../registry/types.js";
import { isTerminalStatus } from "../task/lifecycle.js";
import type { TaskStatus } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import type { EngineContext } from "./context.js";
import type { Dispatcher } from "./dispatcher.js";
import { GATE_KINDS, type GateChain } from "./gateChain.js";
import type { Ownership } from "./ownership.js";
import type { TaskTable } from "./taskTable.js";

/** Why a task is not running now: one reason, with what a person needs to act on it. */
export type WaitingReason =
  /** Dependencies not finished yet. */
  | { kind: "dependencies"; message: string; waitingFor: string[] }
  /** Waiting for someone to approve it (before it runs, or its result after it ran). */
  | { kind: "approval"; message: string; stage: "before_run" | "after_run" }
  /** Its retry delay, or its `runAt`, has not come. */
  | { kind: "retry_delay" | "run_at"; message: string; until: number }
  /**
   * No registered worker could ever run it: `missing` names what none offers (`type`, a
   * `capability`, a `label`, or its `target`). It runs as soon as such a worker registers.
   */
  | { kind: "no_worker"; message: string; missing: string; value: string }
  /** Only remote nodes could run it: it waits for one of them to poll for work. */
  | { kind: "remote_poll"; message: string; nodes: string[] }
  /** Workers could run it, but none can take it now (busy, unhealthy, circuit open, draining). */
  | {
      kind: "workers_unavailable";
      message: string;
      /** Each worker and why it cannot take it; `until` is when an open circuit turns half-open. */
      workers: Array<{
        id: string;
        why: "busy" | "unhealthy" | "circuit_open" | "not_accepting";
        until?: number;
      }>;
    }
  /** A dispatch gate holds it: a rate limit, a budget, a concurrency cap, admission control. */
  | {
      kind: "rate_limit" | "budget" | "concurrency_cap" | "admission" | "gate";
      message: string;
      gate: string;
      key?: string;
      until?: number;
    }
  /** The orchestrator's own concurrency cap is reached. */
  | { kind: "orchestrator_busy"; message: string }
  /** Another orchestrator of the store schedules it (its partition is held there). */
  | { kind: "held_elsewhere"; message: string; partition: number }
  /** A gate refuses it for good: it fails on the next dispatch round. */
  | { kind: "refused"; message: string; error: SerializedError };

/** A task's status and why it is not running now (empty `reasons` when it runs or ended). */
export interface TaskExplanation {
  taskId: string;
  status: TaskStatus;
  reasons: WaitingReason[];
}

/** The collaborators an explanation reads. */
export interface ExplainParts {
  table: TaskTable;
  gates: GateChain;
  dispatcher: Dispatcher;
  ownership: Ownership;
}

/**
 * Explains why a task is not running now, from what the engine knows: its dependencies,
 * approval, retry delay or `runAt`, whether any worker could run it (and what none
 * offers), which workers are busy, unhealthy or cut off by their circuit, and which gate
 * holds it (with the key and until when). Reads only; changes nothing. @internal
 */
export async function explain(
  ctx: EngineContext,
  p: ExplainParts,
  id: string,
): Promise<TaskExplanation> {
  const live = p.table.live(id);
  const rec = live?.rec ?? p.table.finished(id)?.rec ?? (await ctx.store.getTask(id));
  if (!rec) throw new FlotillaError("NOT_FOUND", `no task with id ${id}`);
  const out: TaskExplanation = { taskId: id, status: rec.status, reasons: [] };
  const elsewhere = !live && p.ownership.count !== undefined && !isTerminalStatus(rec.status);
  if (elsewhere) {
    // What the stored record says (dependencies, approval, a retry delay or `runAt`) holds
    // wherever it is asked; the rest (workers, gates) only its holder knows.
    out.reasons.push(...(await recordReasons(ctx, p, rec, true)));
    if (out.reasons.length > 0) return out;
    const partition = p.ownership.partitionOf(rec);
    out.reasons.push({
      kind: "held_elsewhere",
      message: `scheduled by another orchestrator of the store (it holds partition ${partition}); ask it which worker or limit it waits for`,
      partition,
    });
    return out;
  }
  if (!live || isTerminalStatus(rec.status)) return out;
  out.reasons.push(...(await recordReasons(ctx, p, rec, false)));
  if (rec.status === "queued" && out.reasons.length === 0) {
    out.reasons.push(...workerReasons(ctx, p, rec));
  }
  return out;
}

/**
 * The reasons the task's own record gives: dependencies not finished, an approval, a retry
 * delay or `runAt`. `stored`: the task is held elsewhere, so dependencies not known here
 * are read from the store.
 */
async function recordReasons(
  ctx: EngineContext,
  p: ExplainParts,
  rec: TaskRecord,
  stored: boolean,
): Promise<WaitingReason[]> {
  const reasons: WaitingReason[] = [];
  const now = ctx.clock.now();
  const statuses = new Map<string, TaskStatus | undefined>();
  if (rec.status === "pending") {
    for (const d of rec.dependsOn) {
      let s = p.table.known(d)?.rec.status;
      if (s === undefined && stored) s = (await ctx.store.getTask(d))?.status;
      statuses.set(d, s);
    }
  }
  switch (rec.status) {
    case "pending": {
      const waitingFor = rec.dependsOn.filter((d) => {
        const s = statuses.get(d);
        return s === undefined || !isTerminalStatus(s);
      });
      if (waitingFor.length > 0) {
        reasons.push({
          kind: "dependencies",
          message: `waiting for ${waitingFor.length} dependenc${waitingFor.length === 1 ? "y" : "ies"}: ${waitingFor.join(", ")}`,
          waitingFor,
        });
      }
      return reasons;
    }
    case "awaiting_approval": {
      const stage = rec.approval === "after_run" ? "after_run" : "before_run";
      reasons.push({
        kind: "approval",
        message:
          stage === "after_run"
            ? "its result waits for approval"
            : "waits for approval before it runs",
        stage,
      });
      return reasons;
    }
    case "queued":
      break;
    default:
      return reasons; // leased or running
  }
  if (rec.notBefore !== undefined && rec.notBefore > now) {
    const runAt = rec.runAt !== undefined && rec.notBefore === rec.runAt;
    reasons.push({
      kind: runAt ? "run_at" : "retry_delay",
      message: `${runAt ? "scheduled" : "retrying"} at ${new Date(rec.notBefore).toISOString()}`,
      until: rec.notBefore,
    });
  }
  return reasons;
}

function workerReasons(ctx: EngineContext, p: ExplainParts, rec: TaskRecord): WaitingReason[] {
  const registry = ctx.registry;
  const eligible = registry.eligible(rec);
  if (eligible.length === 0) return [missingWorker(registry.list(), rec)];
  const local = eligible.filter((e) => e.worker.kind !== REMOTE_NODE_KIND);
  if (local.length === 0) {
    const nodes = eligible.map((e) => e.id);
    return [
      {
        kind: "remote_poll",
        message: `waits for a node to ask for work (${nodes.join(", ")})`,
        nodes,
      },
    ];
  }
  const free = local.filter((e) => registry.canTake(e));
  if (free.length === 0) {
    const workers = local.map((e) => {
      const why = unavailable(e);
      const w: { id: string; why: typeof why; until?: number } = { id: e.id, why };
      if (why === "circuit_open" && e.openUntil !== undefined && e.circuit === "open") {
        w.until = e.openUntil;
      }
      return w;
    });
    return [
      {
        kind: "workers_unavailable",
        message: `every worker that can run it is taken: ${workers.map((w) => `${w.id} (${w.why.replace("_", " ")}${w.until === undefined ? "" : ` until ${new Date(w.until).toISOString()}`})`).join(", ")}`,
        workers,
      },
    ];
  }
  const check = p.gates.check(rec, free, eligible);
  if (check.fail) {
    return [{ kind: "refused", message: check.fail.message, error: check.fail.toJSON() }];
  }
  if (check.passing.length === 0) {
    const gate = check.gate ?? "gate";
    const reason: WaitingReason = {
      kind: (GATE_KINDS[gate] ?? "gate") as "gate",
      message: check.reason ?? `held by ${gate}`,
      gate,
    };
    if (check.blockKey !== undefined) reason.key = check.blockKey;
    if (check.retryAt !== undefined) reason.until = check.retryAt;
    return [reason];
  }
  if (!p.dispatcher.hasRoom) {
    return [
      {
        kind: "orchestrator_busy",
        message: "the orchestrator's concurrency cap is reached",
      },
    ];
  }
  return []; // it goes on the next dispatch round
}

function unavailable(e: WorkerEntry): "busy" | "unhealthy" | "circuit_open" | "not_accepting" {
  if (!e.accepting) return "not_accepting";
  if (e.health === "unhealthy") return "unhealthy";
  if (e.circuit !== "closed") return "circuit_open";
  return "busy";
}

/** What no registered worker offers, checked in the order a person would look. */
function missingWorker(all: WorkerEntry[], rec: TaskRecord): WaitingReason {
  const none = (missing: string, value: string, what: string): WaitingReason => ({
    kind: "no_worker",
    message: `no registered worker ${what}; it runs as soon as one registers`,
    missing,
    value,
  });
  let pool = all.filter(
    (e) => e.worker.taskTypes.includes(rec.type) || e.worker.taskTypes.includes("*"),
  );
  if (pool.length === 0) return none("type", rec.type, `runs "${rec.type}" tasks`);
  const target = rec.target;
  if (target?.workerId !== undefined) {
    pool = pool.filter((e) => e.id === target.workerId);
    if (pool.length === 0)
      return none("target.workerId", target.workerId, `has id "${target.workerId}"`);
  }
  if (target?.name !== undefined) {
    const narrowed = pool.filter((e) =>
      matchesTask(e, { ...rec, requirements: undefined, target: { name: target.name } }),
    );
    if (narrowed.length === 0)
      return none("target.name", target.name, `is named like "${target.name}"`);
    pool = narrowed;
  }
  for (const [key, value] of Object.entries({ ...target?.tags, ...rec.requirements?.labels })) {
    const narrowed = pool.filter((e) => e.worker.labels?.[key] === value);
    if (narrowed.length === 0)
      return none("label", `${key}=${value}`, `has the label ${key}=${value}`);
    pool = narrowed;
  }
  for (const cap of rec.requirements?.capabilities ?? []) {
    const narrowed = pool.filter((e) => e.worker.capabilities?.includes(cap));
    if (narrowed.length === 0) return none("capability", cap, `offers the capability "${cap}"`);
    pool = narrowed;
  }
  return none("match", rec.type, "matches all of its requirements together");
}
