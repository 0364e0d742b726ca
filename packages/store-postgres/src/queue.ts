import type { Logger } from "@flotilla/core";
import type { Pool, PoolClient } from "pg";
import { pgError } from "./errors.js";

/**
 * Writes of one kind that a batch may run as one statement (many tasks' rows in one upsert,
 * many appends in one insert). Each gets the items in issue order; the ops' results are
 * `undefined` for `events` and `true` for `save`. @internal
 */
export interface Mergers {
  /** One statement per kind. */
  kinds: Record<string, (client: PoolClient, items: unknown[]) => Promise<void>>;
  /**
   * A batch of mergeable writes only, every kind in one statement (atomic by itself: no
   * BEGIN/COMMIT, one round trip for the batch).
   */
  all?: (client: PoolClient, groups: Map<string, unknown[]>) => Promise<void>;
}

/** What a mergeable op contributes to its kind's statement, and what it resolves with. */
interface Merge {
  kind: string;
  item: unknown;
  value: unknown;
}

interface Op {
  run: (client: PoolClient) => Promise<unknown>;
  merge: Merge | undefined;
  /** The write is one statement (atomic by itself): alone, it needs no BEGIN/COMMIT. */
  single: boolean;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
}

/**
 * The store's access to PostgreSQL. Writes go through one connection in issue order: the
 * writes issued while a transaction is running share the next one (group commit, one WAL
 * flush for many writes), and each resolves only after that transaction's COMMIT. If any
 * write of a batch fails, the batch is rolled back and its writes run again one
 * transaction each, so one failing write (a duplicate id) does not undo the others. Reads
 * run on a pool of connections, after the writes issued before them. @internal
 */
export class PgQueue {
  readonly #writer: Pool;
  readonly #readers: Pool;
  readonly #where: string;
  readonly #logger: Logger;
  readonly #beforeWrite: () => Promise<void>;
  readonly #mergers: Mergers;
  #pending: Op[] = [];
  /** Settles when every write issued so far has settled. */
  #idle: Promise<void> = Promise.resolve();
  #running = false;
  #closed = false;

  /** `beforeWrite` runs before each write transaction; if it throws, the batch fails with it. */
  constructor(
    writer: Pool,
    readers: Pool,
    where: string,
    logger: Logger,
    beforeWrite: () => Promise<void>,
    mergers: Mergers = { kinds: {} },
  ) {
    this.#beforeWrite = beforeWrite;
    this.#mergers = mergers;
    this.#writer = writer;
    this.#readers = readers;
    this.#where = where;
    this.#logger = logger;
  }

  /** Refuses further calls (the store's close). Pending writes still run. */
  close(): Promise<void> {
    this.#closed = true;
    return this.#idle;
  }

  #closedError(): Error {
    return pgError(this.#where, "the store is not open (call open())", undefined);
  }

  /** A read on a pooled connection, after the writes issued before it. */
  async read<T>(run: (client: PoolClient) => Promise<T>): Promise<T> {
    if (this.#closed) throw this.#closedError();
    if (this.#running || this.#pending.length > 0) await this.#idle;
    let client: PoolClient;
    try {
      client = await this.#readers.connect();
    } catch (err) {
      throw pgError(this.#where, "cannot connect", err);
    }
    try {
      return await run(client);
    } catch (err) {
      throw pgError(this.#where, "read failed", err);
    } finally {
      client.release();
    }
  }

  /**
   * A write, committed with the others issued while the previous transaction ran.
   * `single`: it is one statement, so alone it runs without BEGIN/COMMIT (two round trips
   * fewer). `merge`: in a batch, it joins the other writes of its kind in one statement
   * (see {@link Mergers}), between the batch's other writes in issue order; alone, or when
   * its batch is written one at a time, `run` writes it.
   */
  write<T>(
    run: (client: PoolClient) => Promise<T>,
    options: { single?: boolean; merge?: Merge | undefined } = {},
  ): Promise<T> {
    if (this.#closed) return Promise.reject(this.#closedError());
    const single = options.single ?? false;
    const merge = options.merge;
    const done = new Promise<T>((resolve, reject) => {
      this.#pending.push({ run, single, merge, resolve: resolve as (v: unknown) => void, reject });
    });
    this.#idle = done.then(
      () => undefined,
      () => undefined,
    );
    if (!this.#running) {
      this.#running = true;
      queueMicrotask(() => void this.#drain());
    }
    return done;
  }

  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0) {
        const ops = this.#pending;
        this.#pending = [];
        await this.#batch(ops);
      }
    } finally {
      this.#running = false;
    }
  }

  async #batch(ops: Op[]): Promise<void> {
    let client: PoolClient;
    try {
      await this.#beforeWrite();
      client = await this.#writer.connect();
    } catch (err) {
      const failure = pgError(this.#where, "cannot connect", err);
      for (const op of ops) op.reject(failure);
      return;
    }
    let broken: unknown;
    try {
      let values: unknown[] | undefined;
      try {
        values = ops.length === 1 ? undefined : await this.#together(client, ops);
      } catch (err) {
        // The connection broke mid-batch: whether COMMIT landed is unknown.
        broken = err;
        const failure = pgError(this.#where, "write failed (connection lost)", err);
        for (const op of ops) op.reject(failure);
        return;
      }
      if (values) {
        for (const [i, op] of ops.entries()) op.resolve(values[i]);
        return;
      }
      // One write alone, or a batch in which one failed: one transaction each.
      for (const op of ops) {
        if (broken) {
          op.reject(pgError(this.#where, "write failed (connection lost)", broken));
          continue;
        }
        try {
          op.resolve(await this.#alone(client, op));
        } catch (err) {
          if (isConnectionError(err)) broken = err;
          op.reject(pgError(this.#where, "write failed", err));
        }
      }
    } finally {
      client.release(broken instanceof Error ? broken : undefined);
    }
  }

  /**
   * Every op in one transaction; `undefined` (rolled back) if any of them failed. Mergeable
   * ops are gathered by kind and written together just before the next op that is not
   * mergeable (which may touch the same task), and at the end.
   */
  async #together(client: PoolClient, ops: Op[]): Promise<unknown[] | undefined> {
    const values: unknown[] = [];
    const groups = new Map<string, unknown[]>();
    const { kinds, all } = this.#mergers;
    const mergeable = (op: Op) => op.merge !== undefined && kinds[op.merge.kind] !== undefined;
    if (all && ops.every(mergeable)) {
      for (const op of ops) {
        const { kind, item, value } = op.merge!;
        const items = groups.get(kind);
        if (items) items.push(item);
        else groups.set(kind, [item]);
        values.push(value);
      }
      try {
        await all(client, groups);
        return values;
      } catch (err) {
        if (isConnectionError(err)) throw err;
        this.#logger.debug({ err: String(err) }, "batched write failed; writing one at a time");
        return undefined;
      }
    }
    const flush = async () => {
      for (const [kind, items] of groups) await kinds[kind]!(client, items);
      groups.clear();
    };
    try {
      await client.query("BEGIN");
      for (const op of ops) {
        const merge = op.merge;
        if (merge && mergeable(op)) {
          const items = groups.get(merge.kind);
          if (items) items.push(merge.item);
          else groups.set(merge.kind, [merge.item]);
          values.push(merge.value);
          continue;
        }
        await flush();
        values.push(await op.run(client));
      }
      await flush();
      await client.query("COMMIT");
      return values;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      if (isConnectionError(err)) throw err;
      this.#logger.debug?.({ err: String(err) }, "batched write failed; writing one at a time");
      return undefined;
    }
  }

  async #alone(client: PoolClient, op: Op): Promise<unknown> {
    if (op.single) return op.run(client);
    try {
      await client.query("BEGIN");
      const value = await op.run(client);
      await client.query("COMMIT");
      return value;
    } catch (err) {
      await client.query("ROLLBACK").catch(() => {});
      throw err;
    }
  }
}

/** Whether an error means the connection (or the server) is gone, not that the SQL failed. */
export function isConnectionError(err: unknown): boolean {
  const e = err as { code?: string; message?: string } | undefined;
  if (!e) return false;
  const code = String(e.code ?? "");
  // 08: connection exception; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now.
  if (code.startsWith("08") || /^57P0[123]$/.test(code)) return true;
  if (/^E(CONNREFUSED|CONNRESET|PIPE|TIMEDOUT|HOSTUNREACH|NOTFOUND)$/.test(code)) return true;
  return /Connection terminated|connection is closed|Client has encountered a connection error/i.test(
    String(e.message ?? ""),
  );
}
