import { isTerminalStatus } from "../task/lifecycle.js";
import type { EngineContext } from "./context.js";
import type { EngineParts } from "./engine.js";
import { recover } from "./recovery.js";
import type { Live } from "./taskTable.js";

/**
 * Holds `partitions` from now on and takes in their unfinished tasks from the store: queued
 * ones join the queue, pending ones the DAG, a remote holder's live lease is kept, and a
 * task left running by an orchestrator that stopped gets a new attempt (as at a restart).
 * Tasks already here stay as they are unless another orchestrator changed them in the store
 * (cancelled there, or ran them after this one's leases lapsed): those are let go and taken
 * in as stored. Adopting a held partition again so picks up what other orchestrators
 * submitted or changed meanwhile; dependencies that finished elsewhere release the tasks
 * here that waited on them. @internal
 */
export async function adoptPartitions(
  ctx: EngineContext,
  p: EngineParts,
  partitions: readonly number[],
): Promise<void> {
  const { ownership, attempts, dependencies, dispatcher, table, persistence } = p;
  ownership.add(partitions);
  const held = new Set(partitions);
  const mine = (rec: { id: string; partition?: number | undefined }) =>
    held.has(ownership.partitionOf(rec));
  // Tasks here that another orchestrator changed in the store meanwhile (cancelled there,
  // or run there after a lapse): let go, and taken in again below as the store has them.
  // Tasks claimed here from these partitions while another orchestrator held them are this
  // one's own now.
  for (const live of table.lives()) if (live.foreign && mine(live.rec)) live.foreign = undefined;
  const readAt = ctx.clock.now();
  const unfinished = await ctx.store.loadUnfinished({ partitions });
  const versions = new Map(unfinished.map((r) => [r.id, r.version]));
  for (const live of [...table.lives()]) {
    if (!mine(live.rec) || persistence.busy(live.rec)) continue;
    let version = versions.get(live.rec.id);
    if (version === undefined) {
      if (live.rec.createdAt > readAt) continue; // submitted since the read began
      // Not unfinished in that read: stored since, or finished elsewhere. Read it now.
      const now = await ctx.store.getTask(live.rec.id);
      if (!now || table.live(live.rec.id) !== live) continue;
      version = now.version;
    }
    // (Routine for a remote holder's task whose lease calls another orchestrator serves.)
    if (persistence.changedElsewhere(live.rec, version)) letGo(ctx, p, live.rec.id, "debug");
  }
  const before = new Set(attempts.list());
  await recover(ctx, p, mine, unfinished);
  for (const att of attempts.list()) {
    if (before.has(att) || att.kind !== "remote") continue;
    attempts.armLeaseTimer(att);
    if (att.live.rec.timeoutMs !== undefined) attempts.armTimeout(att);
  }
  // Dependencies another orchestrator ran: read them, and release what waits on them.
  for (const id of dependencies.foreignDependencies()) {
    if (table.live(id)) continue;
    const rec = table.known(id)?.rec ?? (await ctx.store.getTask(id));
    if (rec && isTerminalStatus(rec.status)) await dependencies.resolveFinished(rec);
  }
  dispatcher.schedule();
  ctx.logger.debug(
    { partitions, held: ownership.held().length, tasks: unfinished.length },
    "partitions adopted",
  );
}

/**
 * Stops holding `partitions`: their queued and waiting tasks leave this process, local
 * attempts are aborted and handed back (`queued`, a new attempt that does not count
 * against the task's retries), remote holders' leases stay in the store for the next
 * holder. Resolves once every write about them is stored, so the next holder reads their
 * last state. Handles on them keep working: they read the store from then on. @internal
 */
export async function releasePartitions(
  ctx: EngineContext,
  p: EngineParts,
  partitions: readonly number[],
): Promise<void> {
  const { ownership, attempts, dependencies, dispatcher, table, handles, persistence } = p;
  ownership.remove(partitions);
  // (A task claimed here from a partition held elsewhere stays until its attempt settles.)
  const leaving = [...table.lives()].filter((live) => !live.foreign && !ownership.owns(live.rec));
  // Out of the queue before anything awaits, so none of them is dispatched meanwhile.
  for (const live of leaving) if (!live.attempt) dispatcher.remove(live.rec.id);
  // Their writes are waited for, within a bound: a store that does not answer must not hold
  // this orchestrator's other partition changes back for ever.
  const deadline = ctx.clock.now() + RELEASE_WAIT_MS;
  const settled = await within(
    ctx,
    Promise.allSettled(
      leaving
        .filter((live) => live.attempt?.kind === "local")
        .map((live) =>
          persistence.orGone(
            live.rec,
            attempts.settle(live.attempt!, { kind: "requeue", reason: "partition released" }),
          ),
        ),
    ),
    RELEASE_WAIT_MS,
  );
  for (const live of leaving) {
    if (live.attempt?.kind === "remote") attempts.handOver(live.attempt);
    if (live.finished || table.live(live.rec.id) !== live) continue;
    dispatcher.remove(live.rec.id);
    dependencies.forget(live.rec.id);
    table.drop(live);
    handles.detach(live);
  }
  const flushed =
    settled && (await within(ctx, persistence.flush(), Math.max(0, deadline - ctx.clock.now())));
  if (!flushed) {
    ctx.logger.warn(
      { partitions, waitedMs: RELEASE_WAIT_MS },
      "handing partitions over: the store did not take every write in time; the next holder goes on from what it has",
    );
  }
  // What the store still refuses (it is unreachable) is not this process's to write any
  // more: the next holder starts from the last stored state, and a record taken in again
  // later must not be overwritten by these.
  for (const live of leaving) persistence.forget(live.rec);
  ctx.logger.debug({ partitions, tasks: leaving.length }, "partitions released");
}

/** How long a release waits for the store to take the writes of the tasks it hands over. */
const RELEASE_WAIT_MS = 10_000;

/** Whether `p` settled within `ms` (on the orchestrator's clock). */
async function within(ctx: EngineContext, p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: ReturnType<EngineContext["timers"]["set"]> | undefined;
  const late = new Promise<boolean>((resolve) => {
    timer = ctx.timers.set(() => resolve(false), ms);
  });
  try {
    return await Promise.race([p.then(() => true), late]);
  } finally {
    ctx.timers.clear(timer);
  }
}

/**
 * The first step of draining `partitions` before releasing them: this orchestrator stops
 * holding them for dispatch (their queued tasks leave the queue; new ones are left to the
 * next holder), while the attempts running go on. @internal
 */
export async function stopDispatching(
  p: EngineParts,
  partitions: readonly number[],
): Promise<void> {
  const { ownership, table, dispatcher } = p;
  ownership.remove(partitions);
  for (const live of table.lives()) {
    if (!live.attempt && !live.foreign && !ownership.owns(live.rec)) dispatcher.remove(live.rec.id);
  }
}

/**
 * Resolves once no local attempt of a task of `partitions` (not held for dispatch any more)
 * is running here, or after `ms`. @internal
 */
export function drained(p: EngineParts, partitions: readonly number[], ms: number): Promise<void> {
  const { attempts, ownership } = p;
  const set = new Set(partitions);
  const done = () =>
    !attempts
      .list()
      .some(
        (a) =>
          a.kind === "local" &&
          !a.live.foreign &&
          set.has(ownership.partitionOf(a.live.rec)) &&
          !ownership.owns(a.live.rec),
      );
  return attempts.waitUntil(done, ms);
}

/**
 * A task this orchestrator ran was changed in the store by another one (a versioned write
 * was refused): its partition moved on without this orchestrator letting it go first (its
 * leases lapsed). It leaves this process at once, without another write: a running local
 * attempt is aborted, the task leaves the queue and the DAG, and handles on it read the
 * store. @internal
 */
export function letGo(
  ctx: EngineContext,
  p: EngineParts,
  id: string,
  level: "warn" | "debug" = "warn",
): void {
  const { attempts, dependencies, dispatcher, table, handles, persistence } = p;
  const live = table.live(id);
  if (!live) return;
  persistence.forget(live.rec);
  if (live.attempt) attempts.handOver(live.attempt);
  dispatcher.remove(id);
  dependencies.forget(id);
  table.drop(live);
  handles.detach(live);
  ctx.logger[level](
    { taskId: id },
    "task changed in the store by another orchestrator: letting it go",
  );
}

/**
 * A task claimed here from a partition another orchestrator holds has settled its attempt
 * (its outcome is stored): unless it finished, it goes back to its holder (queued again,
 * or waiting for approval), which takes it in when told or at its next sweep. @internal
 */
export function leaveForeign(ctx: EngineContext, p: EngineParts, live: Live): void {
  const { dependencies, dispatcher, table, handles, ownership } = p;
  if (!live.foreign || live.finished || live.attempt) return;
  if (table.live(live.rec.id) !== live || ownership.owns(live.rec)) return;
  dispatcher.remove(live.rec.id);
  dependencies.forget(live.rec.id);
  table.drop(live);
  handles.detach(live);
  ctx.logger.debug(
    { taskId: live.rec.id, status: live.rec.status },
    "task claimed from a partition held elsewhere handed back to its holder",
  );
}
