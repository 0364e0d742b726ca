import type { DatabaseSync, StatementSync } from "node:sqlite";
import { FlotillaError } from "../errors.js";
import type { Logger } from "../logger.js";
import { sqliteError } from "./sqlite-file.js";

interface Op {
  run: (db: DatabaseSync) => unknown;
  resolve: (value: unknown) => void;
  reject: (err: unknown) => void;
  write: boolean;
  /** Runs in its own savepoint (a write of several statements that must not half-apply). */
  savepoint: boolean;
}

/**
 * The store's access to its connection: reads run at once (after pending writes), writes
 * of one event-loop turn share one transaction (each in a savepoint) and resolve after its
 * COMMIT; prepared statements are cached. @internal
 */
export class SqliteQueue {
  /** The open connection (set by the store's open, cleared by its close). */
  db: DatabaseSync | undefined;
  readonly #path: string;
  readonly #logger: Logger;
  readonly #batch: boolean;
  readonly #statements = new Map<string, StatementSync>();
  #queue: Op[] = [];
  #scheduled = false;

  constructor(path: string, logger: Logger, batch: boolean) {
    this.#path = path;
    this.#logger = logger;
    this.#batch = batch;
  }

  /** A prepared statement for `sql` (prepared once per connection). */
  stmt(db: DatabaseSync, sql: string): StatementSync {
    let stmt = this.#statements.get(sql);
    if (!stmt) {
      stmt = db.prepare(sql);
      this.#statements.set(sql, stmt);
    }
    return stmt;
  }

  /** Forgets the connection's prepared statements (at close). */
  clearStatements(): void {
    this.#statements.clear();
  }

  #dbOrThrow(): DatabaseSync {
    if (!this.db) {
      throw new FlotillaError("STORE_ERROR", `${this.#path}: the store is not open (call open())`, {
        details: { path: this.#path },
      });
    }
    return this.db;
  }

  /** Reads run at once unless writes are pending, in which case they run after them. */
  read<T>(run: (db: DatabaseSync) => T): Promise<T> {
    let db: DatabaseSync;
    try {
      db = this.#dbOrThrow();
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.#queue.length === 0) {
      try {
        return Promise.resolve(run(db));
      } catch (err) {
        return Promise.reject(sqliteError(this.#path, "read failed", err));
      }
    }
    return this.#enqueue(run, false);
  }

  /**
   * A write, committed with the others of this turn. `savepoint: false` for a write whose
   * statements cannot half-apply (one statement, or one that makes its own savepoint when
   * it needs more): two statements fewer per write.
   */
  write<T>(run: (db: DatabaseSync) => T, options: { savepoint?: boolean } = {}): Promise<T> {
    try {
      this.#dbOrThrow();
    } catch (err) {
      return Promise.reject(err);
    }
    return this.#enqueue(run, true, options.savepoint ?? true);
  }

  #enqueue<T>(run: (db: DatabaseSync) => T, write: boolean, savepoint = false): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({
        run,
        resolve: resolve as (v: unknown) => void,
        reject,
        write,
        savepoint,
      });
      if (!this.#batch) {
        this.flush();
      } else if (!this.#scheduled) {
        this.#scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  /**
   * Runs every queued operation in one transaction. Each write runs in its own savepoint,
   * so one failing write (a duplicate id) is undone alone; all of them are settled only
   * after COMMIT returns. If COMMIT fails, every write of the batch rejects.
   */
  flush(): void {
    this.#scheduled = false;
    const ops = this.#queue;
    if (ops.length === 0) return;
    this.#queue = [];
    const db = this.db;
    if (!db) {
      const err = new FlotillaError("STORE_ERROR", `${this.#path}: the store was closed`);
      for (const op of ops) op.reject(err);
      return;
    }
    const outcomes: Array<{ ok: true; value: unknown } | { ok: false; error: unknown }> = [];
    const single = ops.length === 1;
    let inTransaction = false;
    try {
      db.exec("BEGIN IMMEDIATE");
      inTransaction = true;
      for (const op of ops) {
        if (!op.savepoint || single) {
          try {
            outcomes.push({ ok: true, value: op.run(db) });
          } catch (error) {
            if (single && op.write) throw error;
            outcomes.push({ ok: false, error });
          }
          continue;
        }
        // Prepared once: parsing two SQL strings per write showed in profiles.
        this.stmt(db, "SAVEPOINT op").run();
        try {
          const value = op.run(db);
          this.stmt(db, "RELEASE op").run();
          outcomes.push({ ok: true, value });
        } catch (error) {
          db.exec("ROLLBACK TO op");
          db.exec("RELEASE op");
          outcomes.push({ ok: false, error });
        }
      }
      db.exec("COMMIT");
      inTransaction = false;
    } catch (error) {
      if (inTransaction) {
        try {
          db.exec("ROLLBACK");
        } catch {
          // nothing more to undo
        }
      }
      if (single && error instanceof FlotillaError) {
        ops[0]!.reject(error);
        return;
      }
      const failure = sqliteError(this.#path, "write failed", error);
      this.#logger.error({ path: this.#path, err: error }, "store transaction failed");
      for (const op of ops) op.reject(failure);
      return;
    }
    ops.forEach((op, i) => {
      const outcome = outcomes[i]!;
      if (outcome.ok) op.resolve(outcome.value);
      else
        op.reject(
          sqliteError(this.#path, op.write ? "write failed" : "read failed", outcome.error),
        );
    });
  }
}
