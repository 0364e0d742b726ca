import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { EventFollow, Logger, Orchestrator, UsageEntry } from "@flotilla/core";
import type { ResourcePolicy } from "@flotilla/http-adapter";
import type { PartitionLeases, PostgresStore } from "@flotilla/store-postgres";

/** How many partitions a shared schema's work is split into. */
export const SHARED_PARTITIONS = 64;

/** Options of {@link shareSchema}. */
export interface ShareOptions {
  /** This server's name among those sharing the schema. @default `<host>-<pid>` */
  instanceId?: string;
  /** How long a partition lease lasts without renewal. */
  leaseMs: number;
  /** How often every held partition is looked at again (tasks stored by others, changes). @default 5000 */
  sweepMs?: number;
  /**
   * How long the tasks running in a partition handed over to rebalance (a server joined)
   * may go on here before they are aborted and run again by the next holder. @default 30000
   */
  drainMs?: number;
  /** Rate limits split between the servers: each admits `1 / servers` of every limit. */
  limiter?: { setShare(share: number): void };
  /** Budgets held across the servers: each counts the spend the others record. */
  budgets?: { countElsewhere(lines: readonly UsageEntry[]): void };
  /**
   * Applies a resource policy another server published (`PUT …/resources/config`, a reload):
   * the last one published is in force on every server, one starting later included.
   */
  applyPolicy?: (policy: ResourcePolicy) => Promise<unknown>;
  /** Failed authentications counted across the servers: each tells the others of its own. */
  authThrottle?: {
    onFailure(listener: (source: string, at: number) => void): () => void;
    countElsewhere(source: string, at: number): void;
  };
  /** Where failed adoptions and hand-overs are reported. */
  logger: Logger;
}

/** A server's part in a shared schema; `stop()` hands its partitions over. */
export interface Sharing {
  readonly leases: PartitionLeases;
  /** Makes `policy` (applied here) the one in force on every server of the schema. */
  publishPolicy(policy: ResourcePolicy): Promise<void>;
  stop(): Promise<void>;
}

/** Where the published resource policy is kept (the store's key-value space). */
const POLICY = { collection: "settings", key: "resource-policy" } as const;

interface PublishedPolicy {
  policy: ResourcePolicy;
  /** This publication (the stored one is the latest: no server's clock decides). */
  id: string;
  /** When it was published (ms, for people reading it), and by which server. */
  at: number;
  by: string;
}

/**
 * Makes `orchestrator` one of the servers sharing `store`'s schema: it leases its share of
 * the partitions (handing a partition's work over before giving its lease up), adopts what
 * it gains, tells the holder when it changes a task of a partition held elsewhere (a
 * submission, a cancel or a decision), adopts again when told, and looks at every held
 * partition again every `sweepMs` (for what a missed message would have said, and
 * dependencies run elsewhere). With `limiter`, this server admits `1 / n` of every rate
 * limit, `n` being the servers alive at the last renewal; with `budgets`, the spend the
 * others record counts against this server's budgets; with `applyPolicy`, the resource
 * policy last published by any server (`publishPolicy`) is in force here too; with
 * `authThrottle`, failed authentications are counted across the servers.
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
  // Looks at partitions again, one look at a time: what is asked for meanwhile is looked at
  // together next (each look reads the unfinished tasks of the partitions looked at).
  const wanted = new Set<number>();
  let looking = false;
  const adopt = (partitions: readonly number[]) => {
    for (const p of partitions) wanted.add(p);
    if (looking) return;
    looking = true;
    void (async () => {
      while (wanted.size > 0) {
        const ps = [...wanted].filter((p) => leases.owns(p));
        wanted.clear();
        if (ps.length === 0) continue;
        await orchestrator
          .adopt(ps)
          .catch((err: unknown) =>
            logger.warn({ partitions: ps, err: String(err) }, "adopting partitions failed"),
          );
      }
      looking = false;
    })();
  };
  const instanceId = o.instanceId ?? `${hostname()}-${process.pid}`;
  // The published resource policy: applied when another server publishes one (told, and
  // looked at again at every sweep), and at start.
  let policyId: string | undefined;
  let policyLook = Promise.resolve();
  const lookAtPolicy = () => {
    const apply = o.applyPolicy;
    if (!apply) return policyLook;
    policyLook = policyLook.then(async () => {
      const published = await store
        .kvGet<PublishedPolicy>(POLICY.collection, POLICY.key)
        .catch(() => undefined); // the next sweep looks again
      if (!published || published.id === policyId) return;
      policyId = published.id;
      if (published.by === instanceId) return; // applied here when published
      await apply(published.policy).then(
        () =>
          logger.info({ by: published.by }, "resource policy published by another server applied"),
        (err: unknown) =>
          logger.error(
            { by: published.by, err: String(err) },
            "a published resource policy was not applied",
          ),
      );
    });
    return policyLook;
  };
  const offPolicy = messages.on("policy", () => void lookAtPolicy());
  // Failed authentications: told to the others in batches (at most one message per 100 ms,
  // 40 failures each), counted from theirs. Messages are hints: one lost while a listener
  // reconnects leaves that server counting fewer.
  const throttle = o.authThrottle;
  let failures: Array<[string, number]> = [];
  let telling: ReturnType<typeof setTimeout> | undefined;
  const tellFailures = () => {
    telling = undefined;
    const batch = failures;
    failures = [];
    for (let i = 0; i < batch.length; i += 40) {
      const f = batch.slice(i, i + 40).map(([src, at]) => [src.slice(0, 100), at]);
      messages.notify("auth", JSON.stringify({ by: instanceId, f })).catch(() => {});
    }
  };
  const offFailures = throttle?.onFailure((source, at) => {
    failures.push([source, at]);
    telling ??= setTimeout(tellFailures, 100);
    telling.unref?.();
  });
  const offAuth = messages.on("auth", (payload) => {
    if (!throttle) return;
    try {
      const m = JSON.parse(payload) as { by?: unknown; f?: unknown };
      if (m.by === instanceId || !Array.isArray(m.f)) return;
      for (const e of m.f) {
        if (Array.isArray(e) && typeof e[0] === "string" && typeof e[1] === "number") {
          throttle.countElsewhere(e[0], e[1]);
        }
      }
    } catch {
      // not a message of this version: ignored
    }
  });
  const leases = store.partitionLeases({
    instanceId,
    partitions: SHARED_PARTITIONS,
    leaseMs: o.leaseMs,
    logger,
    // To rebalance, running tasks finish here first (up to drainMs); a lapse or a stop
    // hands them back at once.
    release: (partitions, how) =>
      orchestrator.release(partitions, { drainMs: how?.drain ? (o.drainMs ?? 30_000) : 0 }),
  });
  // Each server admits its share of every rate limit: together they admit the limit.
  const share = () => o.limiter?.setShare(1 / Math.max(1, leases.instances));
  leases.onChange(({ acquired }) => {
    share();
    if (acquired.length > 0) adopt(acquired);
  });
  // A task of a partition held elsewhere changed here (submitted, or cancelled, approved or
  // rejected through the store): tell the holder, once per partition and turn.
  const toTell = new Set<number>();
  const partitionOf = orchestrator.partitions().of; // reads the live ownership
  const tell = () => {
    const ps = [...toTell];
    toTell.clear();
    for (const p of ps) messages.notify("task", String(p)).catch(() => {});
  };
  const onTransition = (e: { task: { id: string; partition?: number } }) => {
    const p = partitionOf(e.task);
    if (leases.owns(p)) return;
    if (toTell.size === 0) setImmediate(tell);
    toTell.add(p);
  };
  orchestrator.on("task:transition", onTransition);
  const offTask = messages.on("task", (payload) => {
    const p = Number(payload);
    if (Number.isInteger(p) && leases.owns(p)) adopt([p]);
  });
  // The others' spend counts against this server's budgets as they record it.
  const budgets = o.budgets;
  const usage: EventFollow | undefined = budgets
    ? store.followUsage((lines) => budgets.countElsewhere(lines))
    : undefined;
  await usage?.ready;
  // The progress of tasks run here, for the clients of other servers that stream them.
  const offProgress = store.relayProgress(orchestrator);
  const sweep = setInterval(() => {
    const held = orchestrator.partitions().held;
    if (held.length > 0) adopt(held);
    void lookAtPolicy();
  }, o.sweepMs ?? 5000);
  sweep.unref();
  await leases.start();
  share();
  await lookAtPolicy();
  return {
    leases,
    async publishPolicy(policy) {
      const id = randomUUID();
      const published: PublishedPolicy = { policy, id, at: Date.now(), by: instanceId };
      await store.kvPut(POLICY.collection, POLICY.key, published);
      policyId = id;
      await messages.notify("policy").catch(() => {}); // the others' sweeps look too
    },
    async stop() {
      clearInterval(sweep);
      usage?.close();
      offProgress();
      offTask();
      offPolicy();
      offFailures?.();
      offAuth();
      if (telling) clearTimeout(telling);
      orchestrator.off("task:transition", onTransition);
      await leases.stop();
    },
  };
}
