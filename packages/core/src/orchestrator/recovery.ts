import { FlotillaError } from "../errors.js";
import { isTerminalStatus } from "../task/lifecycle.js";
import type { TaskRecord } from "../task/types.js";
import type { Attempts } from "./attempts.js";
import { LOCAL_LEASE_PREFIX } from "./attempts.js";
import type { EngineContext } from "./context.js";
import type { Dependencies } from "./dependencies.js";
import type { Dispatcher } from "./dispatcher.js";
import type { Handles } from "./handles.js";
import { syntheticEntry } from "./leaseDesk.js";
import type { Persistence } from "./persistence.js";
import type { Submission } from "./submission.js";
import type { Live, TaskTable } from "./taskTable.js";
import { buildResult, type Transitions } from "./transitions.js";

/** The collaborators recovery restores into. */
export interface RecoveryParts {
  /** How many orchestrator stops a task may be cut off by (see `maxInterruptions`). */
  maxInterruptions: number;
  table: TaskTable;
  transitions: Transitions;
  dependencies: Dependencies;
  dispatcher: Dispatcher;
  attempts: Attempts;
  handles: Handles;
  submission: Submission;
  persistence: Persistence;
}

/**
 * Restores unfinished tasks from the store (those `only` accepts) at the first start, or when
 * a partition is adopted: queued tasks go back to the
 * queue in their order, pending ones rejoin the DAG, a remote holder's live lease is kept
 * until it expires, and a task that was running in the previous process gets a new attempt
 * (or fails with `WORKER_LOST` when its attempts are spent). @internal
 */
export async function recover(
  ctx: EngineContext,
  p: RecoveryParts,
  only?: (rec: TaskRecord) => boolean,
  loaded?: TaskRecord[],
): Promise<void> {
  const unfinished = loaded ?? (await ctx.store.loadUnfinished());
  if (unfinished.length === 0) return;
  const { table, handles, dependencies, attempts, dispatcher, transitions } = p;
  const now = ctx.clock.now();
  // Not tasks known here: live ones, and ones that finished here since the read began (a
  // finish that was never stored, its partition let go meanwhile, does not count).
  const known = (id: string) => {
    const k = table.known(id);
    return k !== undefined && (!k.finished || !p.persistence.unstored(k.rec));
  };
  const fresh = unfinished.filter((r) => !known(r.id) && (only === undefined || only(r)));
  for (const rec of fresh) {
    p.submission.seenSeq(rec.seq);
    p.persistence.noteStored(rec);
    // A handle taken before the start (or kept since the task was let go here) becomes this
    // task's own handle; nothing of its earlier life here goes on.
    const live: Live = handles.take(rec.id) ?? { rec, finished: false };
    if (live.attempt) attempts.handOver(live.attempt);
    live.attempt = undefined;
    live.finished = false;
    live.rec = rec;
    table.add(live);
    if (rec.idempotencyKey !== undefined) {
      table.reserve(rec.idempotencyKey, Promise.resolve(handles.of(live)));
    }
  }
  const follow: Promise<unknown>[] = [];
  for (const rec of fresh) {
    const live = table.live(rec.id)!;
    if (rec.status === "pending" || rec.status === "awaiting_approval") {
      const unresolved: string[] = [];
      let failed: string | undefined;
      for (const dep of rec.dependsOn) {
        const d = table.live(dep)?.rec ?? (await ctx.store.getTask(dep));
        if (!d || !isTerminalStatus(d.status)) unresolved.push(dep);
        else if (d.status !== "succeeded" && rec.onDependencyFailure === "skip") failed ??= dep;
      }
      if (failed !== undefined)
        follow.push(p.persistence.orGone(rec, dependencies.skip(live, failed)));
      else {
        dependencies.wait(rec.id, unresolved);
        if (rec.status === "pending" && unresolved.length === 0) {
          follow.push(p.persistence.orGone(rec, dependencies.makeReady(live, "recovered")));
        }
      }
    } else if (rec.status === "queued") {
      live.firstQueuedAt = now;
      dispatcher.enqueue(live);
    } else if (rec.status === "leased" || rec.status === "running") {
      // It was held when the previous process stopped: a new attempt, or WORKER_LOST when spent.
      const lease = rec.lease;
      if (lease && lease.expiresAt > now && !lease.id.startsWith(LOCAL_LEASE_PREFIX)) {
        // A remote holder may still be working: keep its lease until it expires.
        const entry =
          ctx.registry.get(lease.holder) ?? syntheticEntry({ holderId: lease.holder }, now);
        attempts.adopt(live, entry);
        continue;
      }
      // Cut off by the orchestrator's own stop: not the task's fault, so the attempt is free;
      // only `maxInterruptions` such stops end it.
      const interruptions = (rec.interruptions ?? 0) + 1;
      if (interruptions <= p.maxInterruptions) {
        follow.push(
          p.persistence.orGone(
            rec,
            attempts.requeue(live, "recovered after restart", undefined, undefined, interruptions),
          ),
        );
      } else {
        const error = new FlotillaError(
          "WORKER_LOST",
          `task ${rec.id} was cut off by the orchestrator stopping ${interruptions} times (maxInterruptions ${p.maxInterruptions})`,
          { details: { interruptions, maxInterruptions: p.maxInterruptions } },
        ).toJSON();
        follow.push(
          p.persistence.orGone(
            rec,
            transitions
              .apply(live, "failed", {
                error,
                reason: "recovered after restart",
                patch: (r) => {
                  r.lease = undefined;
                  r.interruptions = interruptions;
                  r.result = buildResult(r, live, "failed", now, { error });
                },
              })
              .then(() => dependencies.onTerminal(live)),
          ),
        );
      }
    }
  }
  await Promise.all(follow);
}
