import { resolveInputs, resolveTemplates } from "../dag/templates.js";
import { DependencyTracker } from "../dag/tracker.js";
import type { SerializedError } from "../errors.js";
import type { TaskRecord } from "../task/types.js";
import type { WorkerTask } from "../worker/types.js";
import type { EngineContext } from "./context.js";
import type { Live, TaskTable } from "./taskTable.js";
import { buildResult, type Transitions } from "./transitions.js";

const NO_OUTPUTS: ReadonlyMap<string, unknown> = new Map();

/** Where tasks that became ready go (the dispatcher). */
export interface ReadyTarget {
  enqueue(live: Live): void;
  schedule(): void;
}

/**
 * The DAG at run time: which unfinished tasks wait for which, and what happens when a task
 * ends — its handles get the result, dependents whose last dependency finished become
 * ready, dependents of a failed task are skipped (or run, by their policy) — and the
 * worker's view of a task with its dependencies' outputs. @internal
 */
export class Dependencies {
  readonly #ctx: EngineContext;
  readonly #table: TaskTable;
  readonly #transitions: Transitions;
  readonly #ready: ReadyTarget;
  readonly #dag = new DependencyTracker();

  constructor(ctx: EngineContext, table: TaskTable, transitions: Transitions, ready: ReadyTarget) {
    this.#ctx = ctx;
    this.#table = table;
    this.#transitions = transitions;
    this.#ready = ready;
  }

  /** `id` waits for `unresolved` (ids of unfinished tasks). */
  wait(id: string, unresolved: string[]): void {
    this.#dag.add(id, unresolved);
  }

  /** `id` ends without running (cancelled, rejected, skipped): it waits for nothing more. */
  forget(id: string): void {
    this.#dag.forget(id);
  }

  /** How many of `id`'s dependencies are unfinished. */
  remaining(id: string): number {
    return this.#dag.remaining(id);
  }

  /** After a terminal transition is stored: resolve handles, release or skip dependents. */
  async onTerminal(live: Live): Promise<void> {
    if (live.finished) return;
    const rec = live.rec;
    rec.result ??= buildResult(rec, live, rec.status, this.#ctx.clock.now(), {});
    // A copy of the envelope (the output itself is shared, not cloned, to keep completion cheap).
    this.#table.finish(live, { ...rec.result, timings: { ...rec.result.timings } });
    await this.#release(rec.id, rec.status === "succeeded");
  }

  /**
   * Dependencies that tasks here wait on and that are not unfinished here: with partitions,
   * tasks another orchestrator of the store schedules.
   */
  foreignDependencies(): string[] {
    const out: string[] = [];
    for (const id of this.#dag.awaited()) if (!this.#table.live(id)) out.push(id);
    return out;
  }

  /** A dependency that finished elsewhere (`rec`, read from the store): release or skip its dependents here. */
  resolveFinished(rec: TaskRecord): Promise<void> {
    return this.#release(rec.id, rec.status === "succeeded");
  }

  async #release(finishedId: string, ok: boolean): Promise<void> {
    if (!this.#dag.hasDependents(finishedId)) return;
    const { ready, skip } = this.#dag.resolve(finishedId, ok, (id) => {
      const dep = this.#table.live(id);
      return dep ? dep.rec.onDependencyFailure : undefined;
    });
    const follow: Promise<void>[] = [];
    for (const id of ready) {
      const dep = this.#table.live(id);
      if (dep && dep.rec.status === "pending")
        follow.push(this.makeReady(dep, "dependencies done"));
    }
    for (const id of skip) {
      const dep = this.#table.live(id);
      if (dep) follow.push(this.skip(dep, finishedId));
    }
    await Promise.all(follow);
  }

  /** A pending task whose dependencies are done goes to the queue. */
  makeReady(live: Live, reason: string): Promise<void> {
    if (live.rec.status !== "pending") return Promise.resolve();
    const now = this.#ctx.clock.now();
    live.firstQueuedAt ??= now;
    const p = this.#transitions.apply(live, "queued", {
      reason,
      patch: (r) => {
        if (r.runAt !== undefined && r.runAt > now) r.notBefore = r.runAt;
      },
    });
    this.#ready.enqueue(live);
    this.#ready.schedule();
    return p;
  }

  /** A task whose dependency `failedDep` did not succeed is skipped. */
  skip(live: Live, failedDep: string): Promise<void> {
    const s = live.rec.status;
    if (s !== "pending" && s !== "awaiting_approval") return Promise.resolve();
    const depStatus = this.#table.known(failedDep)?.rec.status ?? "failed";
    const error: SerializedError = {
      code: "DEPENDENCY_FAILED",
      message: `dependency ${failedDep} ended ${depStatus}`,
      details: { dependency: failedDep, status: depStatus },
    };
    const now = this.#ctx.clock.now();
    this.#dag.forget(live.rec.id);
    return this.#transitions
      .apply(live, "skipped", {
        reason: `dependency ${failedDep} ${depStatus}`,
        error,
        patch: (r) => {
          r.result = buildResult(r, live, "skipped", now, { error });
        },
      })
      .then(() => this.onTerminal(live));
  }

  /** The worker's view of a task (synchronous when every dependency output is in memory). */
  workerTask(live: Live): WorkerTask | Promise<WorkerTask> {
    const rec = live.rec;
    if (rec.dependsOn.length === 0) return buildWorkerTask(rec, NO_OUTPUTS);
    const outputs = new Map<string, unknown>();
    const missing: string[] = [];
    for (const dep of rec.dependsOn) {
      const known = this.#table.known(dep);
      if (known) outputs.set(dep, known.rec.result?.output);
      else missing.push(dep);
    }
    if (missing.length === 0) return buildWorkerTask(rec, outputs);
    const store = this.#ctx.store;
    return Promise.all(
      missing.map(async (dep) => outputs.set(dep, (await store.getTask(dep))?.result?.output)),
    ).then(() => {
      const ordered = new Map<string, unknown>();
      for (const dep of rec.dependsOn) ordered.set(dep, outputs.get(dep));
      return buildWorkerTask(rec, ordered);
    });
  }
}

function buildWorkerTask(rec: TaskRecord, outputs: ReadonlyMap<string, unknown>): WorkerTask {
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
