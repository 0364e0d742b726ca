import { FlotillaError } from "../errors.js";
import { isTerminalStatus } from "../task/lifecycle.js";
import type { TaskStatus } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import type { Attempts } from "./attempts.js";
import type { EngineContext } from "./context.js";
import type { Dependencies } from "./dependencies.js";
import type { Dispatcher } from "./dispatcher.js";
import type { Ownership } from "./ownership.js";
import type { Live, TaskTable } from "./taskTable.js";
import { buildResult, type TransitionInfo, type Transitions } from "./transitions.js";

/** The collaborators a cancel or an approval decision talks to. */
export interface ControlParts {
  table: TaskTable;
  transitions: Transitions;
  dependencies: Dependencies;
  dispatcher: Dispatcher;
  attempts: Attempts;
  ownership: Ownership;
}

/** Who decided, and why. */
export interface Decision {
  by?: string;
  comment?: string;
}

/**
 * Operator actions on one task: cancel (a waiting task at once, a running one through its
 * attempt) and approval decisions (approve or reject a task awaiting approval). @internal
 */
export class Control {
  readonly #ctx: EngineContext;
  readonly #p: ControlParts;

  constructor(ctx: EngineContext, parts: ControlParts) {
    this.#ctx = ctx;
    this.#p = parts;
  }

  async cancel(id: string, reason: string): Promise<boolean> {
    const { table, attempts, dispatcher, dependencies, transitions } = this.#p;
    const live = table.live(id);
    if (!live) {
      if (table.finished(id)) return false;
      const stored = await this.#ctx.store.getTask(id);
      if (!stored) throw new FlotillaError("NOT_FOUND", `no task with id ${id}`);
      if (this.#p.ownership.count !== undefined && !isTerminalStatus(stored.status)) {
        return this.#cancelStored(stored, reason);
      }
      return false;
    }
    const rec = live.rec;
    if (isTerminalStatus(rec.status)) return false;
    if (live.attempt) {
      await attempts.settle(live.attempt, { kind: "cancelled", reason });
      return rec.status === "cancelled";
    }
    if (rec.status === "leased" || rec.status === "running") return false;
    dispatcher.remove(id);
    dependencies.forget(id);
    const error = new FlotillaError("CANCELLED", reason).toJSON();
    const now = this.#ctx.clock.now();
    await transitions.apply(live, "cancelled", {
      reason,
      error,
      patch: (r) => {
        r.result = buildResult(r, live, "cancelled", now, { error });
      },
    });
    await dependencies.onTerminal(live);
    dispatcher.schedule();
    return true;
  }

  /**
   * Cancels a task another orchestrator of the store runs (its partition is held there):
   * a versioned write of the cancelled record. Its holder finds the change at its next
   * `adopt` (or its next write of the task is refused) and lets the task go, aborting it
   * if it runs. Resolves `false` when the task had finished meanwhile.
   */
  async #cancelStored(first: TaskRecord, reason: string): Promise<boolean> {
    const store = this.#ctx.store;
    let rec: TaskRecord | undefined = first;
    for (let tries = 0; tries < 5 && rec; tries++) {
      if (isTerminalStatus(rec.status)) return false;
      const error = new FlotillaError("CANCELLED", reason).toJSON();
      const done = await this.#p.transitions.applyStored(rec, "cancelled", {
        reason,
        error,
        patch: (r) => {
          r.lease = undefined;
          r.notBefore = undefined;
          r.result = buildResult(r, undefined, "cancelled", this.#ctx.clock.now(), { error });
        },
      });
      if (done) return true;
      rec = await store.getTask(rec.id);
    }
    if (!rec) throw new FlotillaError("NOT_FOUND", `no task with id ${first.id}`);
    throw new FlotillaError(
      "CONFLICT",
      `task ${first.id} kept changing while it was being cancelled; try again`,
      { details: { taskId: first.id } },
    );
  }

  /**
   * Decides on a task another orchestrator of the store holds: a versioned write of the
   * decided record (`before_run` approved: `pending`, which its holder queues once its
   * dependencies are done). Its holder finds the change at its next `adopt`.
   */
  async #decideStored(
    first: TaskRecord,
    decision: "approved" | "rejected",
    info: Decision,
  ): Promise<TaskRecord> {
    const store = this.#ctx.store;
    let rec: TaskRecord | undefined = first;
    for (let tries = 0; tries < 5 && rec; tries++) {
      if (rec.approvalDecision?.decision === decision && rec.status !== "awaiting_approval") {
        return rec;
      }
      if (rec.status !== "awaiting_approval") {
        throw new FlotillaError(
          "INVALID_STATE",
          `task ${rec.id} is ${rec.status}, not awaiting approval`,
          { details: { taskId: rec.id, status: rec.status } },
        );
      }
      const { to, change } = decisionChange(rec, decision, info, this.#ctx.clock.now(), "pending");
      const done = await this.#p.transitions.applyStored(rec, to, change);
      if (done) return done;
      rec = await store.getTask(rec.id);
    }
    if (!rec) throw new FlotillaError("NOT_FOUND", `no task with id ${first.id}`);
    throw new FlotillaError(
      "CONFLICT",
      `task ${first.id} kept changing while the decision was being stored; try again`,
      { details: { taskId: first.id } },
    );
  }

  async decide(id: string, decision: "approved" | "rejected", info: Decision): Promise<TaskRecord> {
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
    const { table, transitions, dependencies, dispatcher } = this.#p;
    const live = table.live(id);
    const rec = live?.rec ?? table.finished(id)?.rec ?? (await this.#ctx.store.getTask(id));
    if (!rec) throw new FlotillaError("NOT_FOUND", `no task with id ${id}`);
    if (rec.approvalDecision?.decision === decision && rec.status !== "awaiting_approval") {
      return structuredClone(rec);
    }
    if (!live && this.#p.ownership.count !== undefined && !isTerminalStatus(rec.status)) {
      return this.#decideStored(rec, decision, info);
    }
    if (!live || rec.status !== "awaiting_approval") {
      throw new FlotillaError(
        "INVALID_STATE",
        `task ${id} is ${rec.status}, not awaiting approval`,
        {
          details: { taskId: id, status: rec.status },
        },
      );
    }
    const now = this.#ctx.clock.now();
    const ready = dependencies.remaining(id) === 0;
    const { to, change } = decisionChange(
      rec,
      decision,
      info,
      now,
      ready ? "queued" : "pending",
      live,
    );
    if (to === "rejected") dependencies.forget(id);
    await transitions.apply(live, to, change);
    if (to === "rejected" || to === "succeeded") await dependencies.onTerminal(live);
    else if (to === "queued") {
      live.firstQueuedAt ??= now;
      dispatcher.enqueue(live);
      dispatcher.schedule();
    }
    return structuredClone(live.rec);
  }
}

/**
 * The status a decision moves a task awaiting approval to, and the change made with it:
 * rejected (error `REJECTED` with the comment, any held result kept), an `after_run` result
 * accepted (`succeeded`), or a `before_run` task let go on (`beforeRun`: queued when its
 * dependencies are done, else pending).
 */
function decisionChange(
  rec: TaskRecord,
  decision: "approved" | "rejected",
  info: Decision,
  now: number,
  beforeRun: "queued" | "pending",
  live?: Live,
): { to: TaskStatus; change: TransitionInfo } {
  const by = info.by ? ` by ${info.by}` : "";
  const approval = { decision, at: now, ...info };
  if (decision === "rejected") {
    const error = new FlotillaError(
      "REJECTED",
      `rejected${by}${info.comment ? `: ${info.comment}` : ""}`,
    ).toJSON();
    return {
      to: "rejected",
      change: {
        reason: `rejected${by}`,
        error,
        patch: (r) => {
          r.approvalDecision = approval;
          r.result = buildResult(r, live, "rejected", now, {
            error,
            output: r.result?.output,
            usage: r.result?.usage,
          });
        },
      },
    };
  }
  if (rec.approval === "after_run") {
    return {
      to: "succeeded",
      change: {
        reason: `approved${by}`,
        patch: (r) => {
          r.approvalDecision = approval;
          if (r.result) {
            r.result = {
              ...r.result,
              status: "succeeded",
              timings: { ...r.result.timings, finishedAt: now },
            };
          }
        },
      },
    };
  }
  return {
    to: beforeRun,
    change: {
      reason: `approved${by}`,
      patch: (r) => {
        r.approvalDecision = approval;
      },
    },
  };
}
