import { hostname } from "node:os";
import type { Logger, Orchestrator } from "@flotilla/core";
import type { PartitionLeases, PostgresStore } from "@flotilla/store-postgres";

/** How many partitions a shared schema's work is split into. */
export const SHARED_PARTITIONS = 64;

/** Options of {@link shareSchema}. */
export interface ShareOptions {
  /** This server's name among those sharing the schema. @default `<host>-<pid>` */
  instanceId?: string;
  /** How long a partition lease lasts without renewal. */
  leaseMs: number;
  /** How often every held partition is looked at again (tasks stored by others, changes). @default 2000 */
  sweepMs?: number;
  logger: Logger;
}

/** A server's part in a shared schema; `stop()` hands its partitions over. */
export interface Sharing {
  readonly leases: PartitionLeases;
  stop(): Promise<void>;
}

/**
 * Makes `orchestrator` one of the servers sharing `store`'s schema: it leases its share of
 * the partitions (handing a partition's work over before giving its lease up), adopts what
 * it gains, tells the holder when it stores a task of a partition held elsewhere, adopts
 * again when told, and looks at every held partition again every `sweepMs` (for what a
 * missed message would have said, dependencies run elsewhere, and changes made by others).
 *
 * @example
 * ```ts
 * const sharing = await shareSchema(store, orchestrator, { leaseMs: 15_000, logger });
 * await sharing.stop();
 * ```
 */
export async function shareSchema(
  store: PostgresStore,
  orchestrator: Orchestrator,
  o: ShareOptions,
): Promise<Sharing> {
  const { logger } = o;
  const messages = store.notifications();
  const adopt = (partitions: number[]) =>
    orchestrator
      .adopt(partitions)
      .catch((err: unknown) =>
        logger.warn({ partitions, err: String(err) }, "adopting partitions failed"),
      );
  const leases = store.partitionLeases({
    instanceId: o.instanceId ?? `${hostname()}-${process.pid}`,
    partitions: SHARED_PARTITIONS,
    leaseMs: o.leaseMs,
    logger,
    release: (partitions) => orchestrator.release(partitions),
  });
  leases.onChange(({ acquired }) => {
    if (acquired.length > 0) void adopt(acquired);
  });
  // A task stored here for a partition held elsewhere: tell the holder (batched per turn).
  const toTell = new Set<number>();
  const tell = () => {
    const ps = [...toTell];
    toTell.clear();
    for (const p of ps) messages.notify("task", String(p)).catch(() => {});
  };
  const onTransition = (e: { from: string | null; task: { id: string; partition?: number } }) => {
    if (e.from !== null) return;
    const p = orchestrator.partitions().of(e.task);
    if (leases.owns(p)) return;
    if (toTell.size === 0) setImmediate(tell);
    toTell.add(p);
  };
  orchestrator.on("task:transition", onTransition);
  const offTask = messages.on("task", (payload) => {
    const p = Number(payload);
    if (Number.isInteger(p) && leases.owns(p)) void adopt([p]);
  });
  const sweep = setInterval(() => {
    const held = orchestrator.partitions().held;
    if (held.length > 0) void adopt(held);
  }, o.sweepMs ?? 2000);
  sweep.unref();
  await leases.start();
  return {
    leases,
    async stop() {
      clearInterval(sweep);
      offTask();
      orchestrator.off("task:transition", onTransition);
      await leases.stop();
    },
  };
}
