import type { SerializedError } from "../errors.js";
import { silentLogger } from "../logger.js";
import type { StoredEvent } from "../store/types.js";
import type { TransitionEvent } from "../task/events.js";
import { assertTransition } from "../task/lifecycle.js";
import { TASK_STATUSES, type TaskStatus, type Usage } from "../task/schema.js";
import type { TaskRecord, TaskResult } from "../task/types.js";
import type { EngineContext } from "./context.js";
import type { Persistence } from "./persistence.js";
import type { Live, TaskTable } from "./taskTable.js";

/** What a transition records besides the new status. */
export interface TransitionInfo {
  reason?: string | undefined;
  error?: SerializedError | undefined;
  workerId?: string;
  /** Changes to the record made together with the status (same write, same event). */
  patch?: (rec: TaskRecord) => void;
}

/** What a result is built from besides the record and its live timings. */
export interface ResultParts {
  output?: unknown;
  error?: SerializedError | undefined;
  usage?: Usage | undefined;
  workerId?: string;
}

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

/**
 * The one place a task's status changes: guarded by the lifecycle table, applied to the
 * record, written to the store, then logged, added to the history and emitted. @internal
 */
export class Transitions {
  readonly #ctx: EngineContext;
  readonly #table: TaskTable;
  readonly #persistence: Persistence;

  constructor(ctx: EngineContext, table: TaskTable, persistence: Persistence) {
    this.#ctx = ctx;
    this.#table = table;
    this.#persistence = persistence;
  }

  /** Moves a live task to `to`; resolves once the change is stored (and emitted). */
  apply(live: Live, to: TaskStatus, o: TransitionInfo = {}): Promise<void> {
    const rec = live.rec;
    const from = rec.status;
    assertTransition(from, to, rec.id);
    o.patch?.(rec);
    rec.status = to;
    rec.updatedAt = this.#ctx.clock.now();
    this.#table.count(from, to);
    const stored = event(rec, from, to, o);
    return this.#persistence.save(rec).then(() => this.#emit(stored, rec));
  }

  /**
   * Moves a stored task this orchestrator does not hold (another orchestrator of the store
   * holds its partition) to `to`, as a versioned write of a changed copy: resolves the
   * written record (logged, recorded and emitted here), or `undefined` when the stored
   * version moved meanwhile (read it again and retry).
   */
  async applyStored(
    rec: TaskRecord,
    to: TaskStatus,
    o: TransitionInfo = {},
  ): Promise<TaskRecord | undefined> {
    const from = rec.status;
    assertTransition(from, to, rec.id);
    const next: TaskRecord = { ...rec };
    o.patch?.(next);
    next.status = to;
    next.updatedAt = this.#ctx.clock.now();
    next.version = rec.version + 1;
    if (!(await this.#ctx.store.saveTask(next, rec.version))) return undefined;
    this.#emit(event(next, from, to, o), next);
    return next;
  }

  /**
   * Sets the first status of a record that is not stored yet (submission decides it from
   * its dependencies and approval); `announce` emits it once the record is stored.
   */
  initial(rec: TaskRecord, status: TaskStatus): void {
    rec.status = status;
  }

  /** Emits the `submitted` transition of a record that was just stored. */
  announce(rec: TaskRecord): void {
    this.#emit(event(rec, null, rec.status, { reason: "submitted" }), rec);
  }

  /**
   * Logs, records and emits a stored transition. The listeners' event object is only built
   * when someone listens.
   */
  #emit(stored: StoredTransition, rec: TaskRecord): void {
    const d = stored.data;
    const { logger, events } = this.#ctx;
    if (logger !== silentLogger) {
      logger.debug(
        { taskId: stored.taskId, from: d.from, to: d.to, attempt: d.attempt, reason: d.reason },
        "task transition",
      );
    }
    this.#persistence.appendEvent(stored);
    const type = stored.type as "task:queued";
    const specific = events.listenerCount(type) > 0;
    if (!specific && events.listenerCount("task:transition") === 0) return;
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
      if (specific) events.emit(type, ev);
      events.emit("task:transition", ev);
    } catch (err) {
      this.#ctx.internalError(err, "an event listener threw");
    }
  }
}

/** The transition as the store keeps it, taken when it happens (emitted once written). */
function event(
  rec: TaskRecord,
  from: TaskStatus | null,
  to: TaskStatus,
  o: TransitionInfo,
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
 * A task's result as of `now`. `live` adds the queue and run timings this process saw.
 *
 * @internal
 */
export function buildResult(
  rec: TaskRecord,
  live: Pick<Live, "firstQueuedAt" | "startedAt"> | undefined,
  status: TaskStatus,
  now: number,
  o: ResultParts,
): TaskResult {
  const timings: TaskResult["timings"] = { createdAt: rec.createdAt, finishedAt: now };
  if (live?.firstQueuedAt !== undefined) timings.queuedAt = live.firstQueuedAt;
  if (live?.startedAt !== undefined) {
    timings.startedAt = live.startedAt;
    timings.durationMs = now - live.startedAt;
    if (live.firstQueuedAt !== undefined) timings.queueWaitMs = live.startedAt - live.firstQueuedAt;
  }
  const result: TaskResult = { taskId: rec.id, status, attempts: rec.attempt, timings };
  if (o.output !== undefined) result.output = o.output;
  if (o.error !== undefined) result.error = o.error;
  if (o.usage !== undefined) result.usage = o.usage;
  const workerId = o.workerId ?? rec.workerId;
  if (workerId !== undefined) result.workerId = workerId;
  return result;
}
