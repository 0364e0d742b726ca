import type { DatabaseSync } from "node:sqlite";

/**
 * `PRAGMA application_id` of a Flotilla database: the bytes "FLOT". A SQLite file with
 * another application id (or with tables but no id) is not ours and is never touched.
 *
 * @example
 * ```ts
 * import { APPLICATION_ID } from "@flotilla/core/sqlite";
 * const ours = db.prepare("PRAGMA application_id").get().application_id === APPLICATION_ID;
 * ```
 */
export const APPLICATION_ID = 0x464c4f54;

/**
 * Schema migrations, in order: `MIGRATIONS[i]` takes the schema from version `i` to
 * `i + 1`. The version lives in `PRAGMA user_version`. A migration runs inside the same
 * transaction as the version bump, so a crash mid-migration leaves the old version intact.
 * Append new migrations; never edit a released one.
 */
export const MIGRATIONS: ReadonlyArray<(db: DatabaseSync) => void> = [
  (db) => {
    db.exec(`
      CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) WITHOUT ROWID;

      CREATE TABLE tasks (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        status TEXT NOT NULL,
        type TEXT NOT NULL,
        tenant TEXT,
        worker_id TEXT,
        idempotency_key TEXT UNIQUE,
        priority REAL NOT NULL,
        attempt INTEGER NOT NULL,
        version INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        finished_at INTEGER,
        lease_holder TEXT,
        lease_expires_at INTEGER,
        body TEXT NOT NULL
      );
      CREATE INDEX tasks_seq ON tasks (seq, id);
      CREATE INDEX tasks_status ON tasks (status, seq);
      CREATE INDEX tasks_type ON tasks (type, seq);
      CREATE INDEX tasks_tenant ON tasks (tenant, seq) WHERE tenant IS NOT NULL;
      CREATE INDEX tasks_worker ON tasks (worker_id, seq) WHERE worker_id IS NOT NULL;
      CREATE INDEX tasks_unfinished ON tasks (seq, id) WHERE finished_at IS NULL;
      CREATE INDEX tasks_finished ON tasks (finished_at, seq) WHERE finished_at IS NOT NULL;
      CREATE INDEX tasks_lease ON tasks (lease_expires_at) WHERE lease_expires_at IS NOT NULL;

      CREATE TABLE dependencies (
        task_id TEXT NOT NULL,
        depends_on TEXT NOT NULL,
        PRIMARY KEY (task_id, depends_on)
      ) WITHOUT ROWID;
      CREATE INDEX dependencies_target ON dependencies (depends_on);

      CREATE TABLE attempts (
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        worker_id TEXT,
        lease_id TEXT,
        started_at INTEGER,
        finished_at INTEGER,
        error TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (task_id, attempt)
      ) WITHOUT ROWID;

      CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL,
        task_id TEXT,
        at INTEGER NOT NULL,
        data TEXT
      );
      CREATE INDEX events_task ON events (task_id, seq) WHERE task_id IS NOT NULL;
      CREATE INDEX events_untied_at ON events (at) WHERE task_id IS NULL;

      CREATE TABLE usage (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        task_id TEXT,
        worker_id TEXT,
        provider TEXT,
        model TEXT,
        tenant TEXT,
        usage TEXT NOT NULL
      );
      CREATE INDEX usage_at ON usage (at, id);

      CREATE TABLE kv (
        collection TEXT NOT NULL,
        key TEXT NOT NULL,
        value TEXT NOT NULL,
        PRIMARY KEY (collection, key)
      ) WITHOUT ROWID;
    `);
  },
  // v2: the API key that submitted a task, on its usage lines (for `apiKey` budgets).
  (db) => {
    db.exec("ALTER TABLE usage ADD COLUMN api_key TEXT");
  },
  // v3: older usage summed per 15 minutes (`rollUpUsage`), so restarts read sums, not lines.
  (db) => {
    db.exec(`
      CREATE TABLE usage_rollup (
        bucket INTEGER NOT NULL,
        worker_id TEXT NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        tenant TEXT NOT NULL,
        api_key TEXT NOT NULL,
        has_cost INTEGER NOT NULL,
        at INTEGER NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens REAL NOT NULL,
        output_tokens REAL NOT NULL,
        total_tokens REAL NOT NULL,
        cost_usd REAL,
        PRIMARY KEY (bucket, worker_id, provider, model, tenant, api_key, has_cost)
      ) WITHOUT ROWID;
      CREATE INDEX usage_rollup_at ON usage_rollup (at);
    `);
  },
  // v4: fewer index writes per task. A task's events are found by the task's `seq` (it
  // grows with submission, so new entries go to the end of the index; random task ids
  // scattered every insert over the whole index), and the indexes no query used are gone
  // (unfinished tasks are found by status).
  (db) => {
    db.exec(`
      ALTER TABLE events ADD COLUMN task_seq INTEGER;
      UPDATE events SET task_seq = (SELECT seq FROM tasks WHERE tasks.id = events.task_id)
        WHERE task_id IS NOT NULL;
      CREATE INDEX events_task_seq ON events (task_seq, seq) WHERE task_seq IS NOT NULL;
      DROP INDEX events_task;
      DROP INDEX tasks_lease;
      DROP INDEX tasks_unfinished;
    `);
  },
  // v5: a task's attempts keyed by the task's `seq` first, for the same reason as v4's events.
  (db) => {
    db.exec(`
      CREATE TABLE attempts_v5 (
        task_seq INTEGER NOT NULL,
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        worker_id TEXT,
        lease_id TEXT,
        started_at INTEGER,
        finished_at INTEGER,
        error TEXT,
        updated_at INTEGER NOT NULL,
        PRIMARY KEY (task_seq, task_id, attempt)
      ) WITHOUT ROWID;
      INSERT INTO attempts_v5 SELECT coalesce((SELECT seq FROM tasks WHERE tasks.id = a.task_id), -1),
        a.task_id, a.attempt, a.status, a.worker_id, a.lease_id, a.started_at, a.finished_at,
        a.error, a.updated_at FROM attempts a;
      DROP TABLE attempts;
      ALTER TABLE attempts_v5 RENAME TO attempts;
    `);
  },
];

/**
 * The schema version this code writes (`PRAGMA user_version`). A file with a higher one is
 * refused at `open()`.
 *
 * @example
 * ```ts
 * import { SCHEMA_VERSION } from "@flotilla/core/sqlite";
 * console.log(`flotilla database schema v${SCHEMA_VERSION}`);
 * ```
 */
export const SCHEMA_VERSION = MIGRATIONS.length;
