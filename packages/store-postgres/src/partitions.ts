import { randomUUID } from "node:crypto";
import {
  type Clock,
  FlotillaError,
  type Logger,
  parseOrThrow,
  partitionOf,
  silentLogger,
  systemClock,
} from "@flotilla/core";
import type pg from "pg";
import { z } from "zod";
import { pgError } from "./errors.js";
import type { Notifications } from "./notifications.js";
import { DB_NOW } from "./sql.js";

/** Options of {@link PartitionLeases}. */
export interface PartitionLeaseOptions {
  /** This instance's name among those sharing the schema (unique per live instance). @default a random UUID */
  instanceId?: string;
  /**
   * How many virtual partitions the schema's work is hashed into. Fixed per schema by the
   * first instance that leases: another count is refused. @default 64
   */
  partitions?: number;
  /**
   * How long a lease lasts without renewal, on the database's clock. An instance that stops
   * (a crash, a lost host) leaves its partitions to the others after this long. @default 15000
   */
  leaseMs?: number;
  /**
   * How often leases are renewed and the share rebalanced; at most half of `leaseMs`. An
   * instance that cannot renew gives its partitions up this long before its lease would
   * lapse (on its own clock), so what ran there is handed back before another instance may
   * take it. @default leaseMs / 3
   */
  renewEveryMs?: number;
  /**
   * Hands partitions over before they are given up: called with the partitions this
   * instance is about to give up, while its leases on them still hold, and they are handed
   * back once it resolves (if it throws, they are held again and the next renewal tries
   * again). To rebalance it is called with `{ drain: true }`: the partitions are no longer
   * among those held (`owns`), but their leases are renewed until it resolves, so it may
   * let the work running there finish first. At `stop()`, `{ drain: false }`; and when
   * leases are given up because renewals failed, `{ drain: false }` without waiting. With an
   * orchestrator: `(ps, how) => orchestrator.release(ps, { drainMs: how?.drain ? 30_000 : 0 })`.
   * Without it, partitions are handed back at once.
   */
  release?: (partitions: number[], how?: { drain: boolean }) => Promise<void>;
  /**
   * Local time, for when an instance that cannot reach the database must give its
   * partitions up (`leaseMs - renewEveryMs` after the start of its last successful renewal).
   * @default systemClock
   */
  clock?: Clock;
  /** Where renewal failures and lapses are reported. @default the store's logger */
  logger?: Logger;
}

const OptionsSchema = z.object({
  instanceId: z.string().min(1).max(200).optional(),
  partitions: z.number().int().min(1).max(4096).optional(),
  leaseMs: z.number().int().min(100).optional(),
  renewEveryMs: z.number().int().min(10).optional(),
  release: z
    .custom<(partitions: number[], how?: { drain: boolean }) => Promise<void>>(
      (f) => typeof f === "function",
    )
    .optional(),
  clock: z.custom<Clock>((c) => typeof (c as { now?: unknown })?.now === "function").optional(),
  logger: z.custom<Logger>((l) => typeof (l as { info?: unknown })?.info === "function").optional(),
});

/** What changed at a renewal: the partitions held now, and those gained and given up. */
export interface PartitionChange {
  owned: ReadonlySet<number>;
  acquired: number[];
  lost: number[];
}

/** The partition of a task id (the core's hash, so every package agrees). */
export { partitionOf };

/**
 * The share of `partitions` the instance at `rank` (0-based, in id order) among `live`
 * instances holds: an even split, the first `partitions % live` holding one more.
 *
 * @example
 * ```ts
 * [0, 1, 2].map((rank) => shareOf(64, 3, rank)); // [22, 21, 21]
 * ```
 */
export function shareOf(partitions: number, live: number, rank: number): number {
  if (live <= 0 || rank < 0) return 0;
  return Math.floor(partitions / live) + (rank < partitions % live ? 1 : 0);
}

/**
 * Leases on the virtual partitions of one schema, for an instance among several sharing it.
 * Every renewal (one transaction) records the instance as alive, renews the leases it holds,
 * gives up those over its even share (so an instance that joins gets work) and takes free
 * or lapsed ones up to it. Leases run on the database's clock; an instance that cannot
 * renew gives its partitions up on its own clock `leaseMs` after the start of its last
 * successful renewal — before the database lets another instance take them — so two live
 * instances never hold one partition at once. Each takeover raises the partition's `epoch`.
 *
 * @example
 * ```ts
 * import { PostgresStore, partitionOf } from "@flotilla/store-postgres";
 *
 * const store = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
 * await store.open();
 * const leases = store.partitionLeases({ instanceId: "api-1" });
 * leases.onChange(({ acquired, lost }) => console.log("gained", acquired, "gave up", lost));
 * await leases.start();
 * leases.owns(partitionOf(taskId, leases.partitions)); // schedule it here?
 * await leases.stop(); // hands them over at once
 * ```
 */
export class PartitionLeases {
  readonly instanceId: string;
  readonly partitions: number;
  readonly leaseMs: number;
  readonly renewEveryMs: number;
  readonly #pool: () => pg.Pool;
  readonly #t: (table: string) => string;
  readonly #where: string;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #listeners: Array<(change: PartitionChange) => void> = [];
  #owned = new Set<number>();
  /** Local time by which the partitions held must be given up unless renewed. */
  #validUntil = 0;
  #timer: ReturnType<Clock["setTimeout"]> | undefined;
  /** Fires at `#validUntil`, so a renewal that hangs cannot keep partitions past it. */
  #lapse: ReturnType<Clock["setTimeout"]> | undefined;
  #running = false;
  #renewing: Promise<void> | undefined;
  /** Another renewal was asked for while one ran. */
  #again = false;
  readonly #notifications: Notifications | undefined;
  readonly #release:
    | ((partitions: number[], how?: { drain: boolean }) => Promise<void>)
    | undefined;
  /** Partitions being handed over (drained): still leased and renewed, no longer held. */
  readonly #leaving = new Set<number>();
  #instances = 1;
  #unsubscribe: Array<() => void> = [];

  /** @internal Made by `PostgresStore.partitionLeases`. */
  constructor(
    pool: () => pg.Pool,
    table: (name: string) => string,
    where: string,
    options: PartitionLeaseOptions = {},
    notifications?: Notifications,
  ) {
    this.#notifications = notifications;
    parseOrThrow(OptionsSchema, options ?? {}, "partition leases");
    this.#pool = pool;
    this.#t = table;
    this.#where = where;
    this.instanceId = options.instanceId ?? randomUUID();
    this.partitions = options.partitions ?? 64;
    this.leaseMs = options.leaseMs ?? 15_000;
    this.renewEveryMs = options.renewEveryMs ?? Math.max(10, Math.floor(this.leaseMs / 3));
    if (this.renewEveryMs * 2 > this.leaseMs) {
      throw new FlotillaError(
        "VALIDATION",
        `partition leases: renewEveryMs (${this.renewEveryMs}) must be at most half of leaseMs (${this.leaseMs}): an instance gives its partitions up renewEveryMs before its lease lapses`,
      );
    }
    this.#release = options.release;
    this.#clock = options.clock ?? systemClock;
    this.#logger = options.logger ?? silentLogger;
  }

  /**
   * The partitions this instance holds now (a copy).
   *
   * @example
   * ```ts
   * console.log(`serving ${leases.owned().size} of ${leases.partitions} partitions`);
   * ```
   */
  owned(): ReadonlySet<number> {
    this.#expireIfLate();
    return new Set(this.#owned);
  }

  /**
   * How many instances (this one included) were live at the last renewal: what a limit
   * shared between them is divided by.
   *
   * @example
   * ```ts
   * limiter.setShare(1 / leases.instances);
   * ```
   */
  get instances(): number {
    return this.#instances;
  }

  /**
   * Whether this instance holds partition `n` now.
   *
   * @example
   * ```ts
   * if (leases.owns(partitionOf(taskId, leases.partitions))) schedule(taskId);
   * ```
   */
  owns(n: number): boolean {
    this.#expireIfLate();
    return this.#owned.has(n);
  }

  /**
   * Calls `listener` after every renewal that gained or gave up partitions (and when they
   * lapse or are handed back). Returns a remover.
   *
   * @example
   * ```ts
   * const off = leases.onChange(({ acquired, lost }) => reload(acquired, lost));
   * off();
   * ```
   */
  onChange(listener: (change: PartitionChange) => void): () => void {
    this.#listeners.push(listener);
    return () => {
      const i = this.#listeners.indexOf(listener);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }

  /**
   * Joins: checks the schema's partition count (setting it if this is the first instance),
   * takes a first share, and renews every `renewEveryMs` until `stop()`. A count other than
   * the schema's is `VALIDATION`.
   *
   * @example
   * ```ts
   * await leases.start();
   * ```
   */
  async start(): Promise<void> {
    if (this.#running) return;
    const pool = this.#pool();
    const count = await pool
      .query<{ value: string }>(
        `WITH set AS (
           INSERT INTO ${this.#t("meta")} (key, value) VALUES ('partitions', $1)
           ON CONFLICT (key) DO NOTHING RETURNING value
         )
         SELECT value FROM set UNION ALL SELECT value FROM ${this.#t("meta")} WHERE key = 'partitions'`,
        [String(this.partitions)],
      )
      .catch((err: unknown) => {
        throw pgError(this.#where, "cannot read the partition count", err);
      });
    // An instance starting at the same moment may have set it after this statement's
    // snapshot was taken (its row was not visible, and the insert gave way to it): read again.
    const value =
      count.rows[0]?.value ??
      (
        await pool
          .query<{ value: string }>(`SELECT value FROM ${this.#t("meta")} WHERE key = 'partitions'`)
          .catch((err: unknown) => {
            throw pgError(this.#where, "cannot read the partition count", err);
          })
      ).rows[0]?.value;
    const n = Number(value);
    if (n !== this.partitions) {
      throw new FlotillaError(
        "VALIDATION",
        `${this.#where}: the schema's work is split into ${n} partitions; this instance was given ${this.partitions} (every instance sharing a schema must use the same count)`,
        { details: { schema: n, given: this.partitions } },
      );
    }
    await pool
      .query(
        `INSERT INTO ${this.#t("partitions")} (n) SELECT generate_series(0, $1::integer - 1)
         ON CONFLICT (n) DO NOTHING`,
        [this.partitions],
      )
      .catch((err: unknown) => {
        throw pgError(this.#where, "cannot create the partitions", err);
      });
    this.#running = true;
    const messages = this.#notifications;
    if (messages) {
      // Others say when they join, leave or give partitions up: renew at once instead of at
      // the next tick, so a rebalance takes milliseconds. Missed messages: the tick.
      this.#unsubscribe = [
        messages.on("partitions", (from) => {
          if (from !== this.instanceId) this.#soon();
        }),
        messages.onReconnect(() => this.#soon()),
      ];
      await messages.start().catch((err: unknown) => {
        this.#logger.warn(
          { database: this.#where, err: (err as Error).message },
          "no notifications between instances; partitions rebalance at each renewal",
        );
      });
    }
    await this.renew();
    this.#schedule();
    this.#announce();
  }

  /** Tells the other instances to look at the partitions again. */
  #announce(): void {
    this.#notifications?.notify("partitions", this.instanceId).catch(() => {});
  }

  /** A renewal now, or right after the one running. */
  #soon(): void {
    if (!this.#running) return;
    if (this.#renewing) {
      this.#again = true;
      return;
    }
    void this.renew();
  }

  /**
   * Leaves: stops renewing and hands the partitions held back at once (the others take
   * them at their next renewal, without waiting for the leases to lapse).
   *
   * @example
   * ```ts
   * process.once("SIGTERM", () => void leases.stop());
   * ```
   */
  async stop(): Promise<void> {
    if (!this.#running) return;
    this.#running = false;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    if (this.#lapse !== undefined) this.#clock.clearTimeout(this.#lapse);
    this.#timer = undefined;
    this.#lapse = undefined;
    for (const off of this.#unsubscribe.splice(0)) off();
    await this.#renewing?.catch(() => {});
    const lost = [...this.#owned];
    const all = [...lost, ...this.#leaving];
    this.#leaving.clear();
    this.#owned = new Set();
    if (this.#release && all.length > 0) {
      try {
        await this.#release(all, { drain: false });
      } catch (err) {
        this.#logger.error(
          { database: this.#where, err: String(err) },
          "handing partitions over failed; they pass on when their leases lapse",
        );
        if (lost.length > 0) this.#notify({ owned: new Set(), acquired: [], lost });
        return;
      }
    }
    try {
      await this.#pool().query(
        `WITH gone AS (DELETE FROM ${this.#t("instances")} WHERE id = $1)
         UPDATE ${this.#t("partitions")} SET owner = NULL, expires_at = 0 WHERE owner = $1`,
        [this.instanceId],
      );
    } catch (err) {
      this.#logger.warn(
        { database: this.#where, err: (err as Error).message },
        "could not hand partitions back; they pass on when their leases lapse",
      );
    }
    if (lost.length > 0) this.#notify({ owned: new Set(), acquired: [], lost });
    this.#announce();
  }

  /**
   * One renewal now (the timer calls it; a test or a wake-up may too): resolves when done.
   * A failure keeps the partitions held until their local deadline, then gives them up.
   *
   * @example
   * ```ts
   * await leases.renew(); // e.g. when told another instance left
   * ```
   */
  renew(): Promise<void> {
    this.#renewing ??= this.#renew().finally(() => {
      this.#renewing = undefined;
      if (this.#again) {
        this.#again = false;
        this.#soon();
      }
    });
    return this.#renewing;
  }

  async #renew(): Promise<void> {
    const began = this.#clock.now();
    let client: pg.PoolClient | undefined;
    try {
      client = await this.#pool().connect();
      await client.query("BEGIN");
      const me = this.instanceId;
      const live = (
        await client.query<{ id: string }>(
          `WITH beat AS (
             INSERT INTO ${this.#t("instances")} (id, started_at, expires_at)
             VALUES ($1, ${DB_NOW}, ${DB_NOW} + $2)
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at
           )
           SELECT id FROM ${this.#t("instances")} WHERE expires_at > ${DB_NOW} AND id <> $1
           UNION SELECT $1 ORDER BY 1`,
          [me, this.leaseMs],
        )
      ).rows.map((r) => r.id);
      const share = shareOf(this.partitions, live.length, live.indexOf(me));
      this.#instances = live.length;
      // Renew what is still ours; a lease that lapsed meanwhile is no longer held.
      const held = (
        await client.query<{ n: number }>(
          `UPDATE ${this.#t("partitions")} SET expires_at = ${DB_NOW} + $2
           WHERE owner = $1 AND expires_at > ${DB_NOW} RETURNING n`,
          [me, this.leaseMs],
        )
      ).rows
        .map((r) => r.n)
        .filter((n) => !this.#leaving.has(n)) // renewed while they are handed over
        .sort((a, b) => a - b);
      let mine = held;
      let gaveUp = false;
      let handOver: number[] = [];
      if (held.length > share) {
        const extra = held.slice(share);
        mine = held.slice(0, share);
        if (this.#release) handOver = extra;
        else {
          await client.query(
            `UPDATE ${this.#t("partitions")} SET owner = NULL, expires_at = 0
             WHERE owner = $1 AND n = ANY($2::integer[])`,
            [me, extra],
          );
          gaveUp = true;
        }
      } else if (held.length < share) {
        const taken = (
          await client.query<{ n: number }>(
            `UPDATE ${this.#t("partitions")} p
             SET owner = $1, expires_at = ${DB_NOW} + $2, epoch = p.epoch + 1
             WHERE p.n IN (
               SELECT n FROM ${this.#t("partitions")}
               WHERE owner IS NULL OR expires_at <= ${DB_NOW}
               ORDER BY n LIMIT $3 FOR UPDATE SKIP LOCKED
             )
             RETURNING p.n`,
            [me, this.leaseMs, share - held.length],
          )
        ).rows.map((r) => r.n);
        mine = [...held, ...taken];
      }
      // Instances gone for ten leases are forgotten.
      await client.query(
        `DELETE FROM ${this.#t("instances")} WHERE expires_at < ${DB_NOW} - $1::bigint * 10`,
        [this.leaseMs],
      );
      await client.query("COMMIT");
      if (!this.#running) {
        // Stopped meanwhile: what this renewal took is handed back by stop().
        return;
      }
      // Leases that lapsed before this renewal began were given up (their work handed
      // over), even if retaken now: whoever uses them reloads their work.
      if (began >= this.#validUntil) this.#expireIfLate();
      this.#validUntil = began + this.leaseMs - this.renewEveryMs;
      for (const n of handOver) this.#leaving.add(n);
      this.#apply(new Set(mine));
      if (handOver.length > 0) void this.#handOver(handOver);
      if (gaveUp) this.#announce();
      if (this.#lapse !== undefined) this.#clock.clearTimeout(this.#lapse);
      this.#lapse = this.#clock.setTimeout(
        () => {
          this.#lapse = undefined;
          this.#expireIfLate();
        },
        Math.max(0, this.#validUntil - this.#clock.now()),
      );
    } catch (err) {
      await client?.query("ROLLBACK").catch(() => {});
      this.#logger.warn(
        { database: this.#where, err: (err as Error).message },
        "partition leases not renewed",
      );
      this.#expireIfLate();
    } finally {
      client?.release();
    }
  }

  /**
   * Partitions over this instance's share, still leased (and renewed) while the `release`
   * hook drains them; then handed back. Partitions given up meanwhile (the leases lapsed,
   * or `stop()`) are not touched. If the hook throws, they are held again.
   */
  async #handOver(partitions: number[]): Promise<void> {
    let ok = true;
    try {
      await this.#release!(partitions, { drain: true });
    } catch (err) {
      ok = false;
      this.#logger.error(
        { database: this.#where, partitions, err: String(err) },
        "handing partitions over failed; held again",
      );
    }
    const still = partitions.filter((n) => this.#leaving.has(n));
    for (const n of still) this.#leaving.delete(n);
    if (still.length === 0 || !this.#running) return;
    if (!ok) {
      this.#apply(new Set([...this.#owned, ...still]));
      return;
    }
    try {
      await this.#pool().query(
        `UPDATE ${this.#t("partitions")} SET owner = NULL, expires_at = 0
         WHERE owner = $1 AND n = ANY($2::integer[])`,
        [this.instanceId, still],
      );
      this.#announce();
    } catch (err) {
      this.#logger.warn(
        { database: this.#where, err: (err as Error).message },
        "could not hand partitions back; they pass on when their leases lapse",
      );
    }
  }

  #schedule(): void {
    if (!this.#running) return;
    this.#timer = this.#clock.setTimeout(() => {
      this.#timer = undefined;
      void this.renew().finally(() => this.#schedule());
    }, this.renewEveryMs);
  }

  /** Gives every partition up once the last renewal is `leaseMs` old (local clock). */
  #expireIfLate(): void {
    const leaving = this.#leaving.size;
    if (this.#owned.size + leaving > 0 && this.#clock.now() >= this.#validUntil) {
      this.#logger.warn(
        { database: this.#where, partitions: this.#owned.size + leaving },
        "partition leases lapsed without renewal: giving them up",
      );
      const lost = [...this.#owned, ...this.#leaving];
      this.#leaving.clear();
      this.#apply(new Set());
      this.#release?.(lost, { drain: false }).catch((err: unknown) =>
        this.#logger.error(
          { database: this.#where, err: String(err) },
          "handing lapsed partitions over failed",
        ),
      );
    }
  }

  #apply(next: Set<number>): void {
    const acquired = [...next].filter((n) => !this.#owned.has(n));
    const lost = [...this.#owned].filter((n) => !next.has(n));
    this.#owned = next;
    if (acquired.length > 0 || lost.length > 0) this.#notify({ owned: next, acquired, lost });
  }

  #notify(change: PartitionChange): void {
    for (const l of [...this.#listeners]) {
      try {
        l({ owned: new Set(change.owned), acquired: change.acquired, lost: change.lost });
      } catch (err) {
        this.#logger.error({ err: String(err) }, "a partition listener threw");
      }
    }
  }
}
