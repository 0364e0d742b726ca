import { FlotillaError, type Logger } from "@flotilla/core";
import type { PoolClient } from "pg";

/** What `meta.application` holds in a Flotilla schema. */
const APPLICATION = "flotilla";

/**
 * Schema migrations, in order: `MIGRATIONS[i]` takes a schema from version `i` to `i + 1`.
 * `s` is the quoted schema name. Each runs in the transaction that records the new version,
 * under an advisory lock, so instances starting together migrate once and a failed
 * migration leaves the old version intact. Append new migrations; never edit a released one.
 */
const MIGRATIONS: ReadonlyArray<(s: string) => string> = [
  (s) => `
    CREATE TABLE ${s}.meta (
      key text PRIMARY KEY,
      value text NOT NULL
    );

    CREATE TABLE ${s}.tasks (
      id text PRIMARY KEY,
      seq double precision NOT NULL,
      status text NOT NULL,
      type text NOT NULL,
      tenant text,
      worker_id text,
      idempotency_key text CONSTRAINT tasks_idempotency_key UNIQUE,
      priority double precision NOT NULL,
      attempt integer NOT NULL,
      version bigint NOT NULL,
      created_at bigint NOT NULL,
      updated_at bigint NOT NULL,
      finished_at bigint,
      not_before bigint,
      lease_holder text,
      lease_expires_at bigint,
      body text NOT NULL
    );
    -- Console and API listings (newest first, by status, type, tenant, worker).
    CREATE INDEX tasks_seq ON ${s}.tasks (seq, id);
    CREATE INDEX tasks_status ON ${s}.tasks (status, seq);
    CREATE INDEX tasks_type ON ${s}.tasks (type, seq);
    CREATE INDEX tasks_tenant ON ${s}.tasks (tenant, seq) WHERE tenant IS NOT NULL;
    CREATE INDEX tasks_worker ON ${s}.tasks (worker_id, seq) WHERE worker_id IS NOT NULL;
    -- Retention, oldest finished first.
    CREATE INDEX tasks_finished ON ${s}.tasks (finished_at, seq) WHERE finished_at IS NOT NULL;
    -- The claim: the best queued task first.
    CREATE INDEX tasks_ready ON ${s}.tasks (priority DESC, seq) WHERE status = 'queued';

    CREATE TABLE ${s}.dependencies (
      task_id text NOT NULL,
      depends_on text NOT NULL,
      PRIMARY KEY (task_id, depends_on)
    );
    CREATE INDEX dependencies_target ON ${s}.dependencies (depends_on);

    CREATE TABLE ${s}.attempts (
      task_id text NOT NULL,
      attempt integer NOT NULL,
      status text NOT NULL,
      worker_id text,
      lease_id text,
      started_at bigint,
      finished_at bigint,
      error text,
      updated_at bigint NOT NULL,
      PRIMARY KEY (task_id, attempt)
    );

    CREATE TABLE ${s}.events (
      seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      type text NOT NULL,
      task_id text,
      at bigint NOT NULL,
      data text
    );
    -- A task's events (SSE resume, the console), and events of no task by age (retention).
    CREATE INDEX events_task ON ${s}.events (task_id, seq) WHERE task_id IS NOT NULL;
    CREATE INDEX events_untied_at ON ${s}.events (at) WHERE task_id IS NULL;

    CREATE TABLE ${s}.usage (
      id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
      at bigint NOT NULL,
      task_id text,
      worker_id text,
      provider text,
      model text,
      tenant text,
      api_key text,
      usage text NOT NULL
    );
    CREATE INDEX usage_at ON ${s}.usage (at, id);

    CREATE TABLE ${s}.kv (
      collection text NOT NULL,
      key text NOT NULL,
      value text NOT NULL,
      PRIMARY KEY (collection, key)
    );
  `,
  (s) => `
    -- Instances sharing the schema, alive while expires_at (database time) is ahead.
    CREATE TABLE ${s}.instances (
      id text PRIMARY KEY,
      started_at bigint NOT NULL,
      expires_at bigint NOT NULL
    );
    -- Virtual partitions of the work, each leased to at most one live instance.
    CREATE TABLE ${s}.partitions (
      n integer PRIMARY KEY,
      owner text,
      expires_at bigint NOT NULL DEFAULT 0,
      epoch bigint NOT NULL DEFAULT 0
    );
  `,
  (s) => `
    -- Which store appended an event or recorded a usage line (a random mark per open
    -- store), so a store following them passes over its own.
    ALTER TABLE ${s}.events ADD COLUMN origin text;
    ALTER TABLE ${s}.usage ADD COLUMN origin text;
  `,
  (s) => `
    -- The unfinished tasks of some partitions (what a server sharing the schema reads when
    -- it takes partitions in), without reading every unfinished task.
    CREATE INDEX tasks_unfinished_partition ON ${s}.tasks (${PARTITION_EXPR}, seq)
      WHERE status IN (${UNFINISHED_SQL});
  `,
];

/**
 * The statuses of unfinished tasks, as an SQL list: the predicate of the partial index on
 * their partitions (a query must spell it the same way to use the index). @internal
 */
export const UNFINISHED_SQL = "'pending', 'queued', 'leased', 'running', 'awaiting_approval'";

/** A task row's partition, read from its body (`NULL` for a record written without one). @internal */
export const PARTITION_EXPR = "((body::jsonb ->> 'partition')::integer)";

/**
 * The schema version this code writes. A schema with a higher one is refused at `open()`.
 *
 * @example
 * ```ts
 * import { POSTGRES_SCHEMA_VERSION } from "@flotilla/store-postgres";
 * console.log(`flotilla postgres schema v${POSTGRES_SCHEMA_VERSION}`);
 * ```
 */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

/** The advisory lock key (first half) under which Flotilla migrates and guards a schema. */
export const LOCK_NAMESPACE = 0x464c4f54; // "FLOT"

/** `"name"`, for SQL. @internal */
export function quoteIdent(name: string): string {
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * Creates or migrates `schema` to {@link POSTGRES_SCHEMA_VERSION} inside one transaction
 * under an advisory lock. A schema that holds tables but is not Flotilla's, or one written by
 * a newer version, stops with a `STORE_ERROR` and is left as it was. @internal
 */
export async function migrate(
  client: PoolClient,
  schema: string,
  where: string,
  logger: Logger,
): Promise<void> {
  const s = quoteIdent(schema);
  await client.query("BEGIN");
  try {
    await client.query("SELECT pg_advisory_xact_lock($1, hashtext($2))", [LOCK_NAMESPACE, schema]);
    const tables = (
      await client.query<{ name: string }>(
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1",
        [schema],
      )
    ).rows.map((r) => r.name);
    let version = 0;
    if (tables.length > 0) {
      const meta = tables.includes("meta")
        ? (
            await client.query<{ key: string; value: string }>(
              `SELECT key, value FROM ${s}.meta WHERE key IN ('application', 'schema_version')`,
            )
          ).rows
        : [];
      const app = meta.find((r) => r.key === "application")?.value;
      if (app !== APPLICATION) {
        throw new FlotillaError(
          "STORE_ERROR",
          `${where}: schema "${schema}" holds tables (${tables.slice(0, 5).join(", ")}${tables.length > 5 ? ", …" : ""}) but is not a Flotilla schema; choose another schema (the \`schema\` option) or an empty database`,
          { details: { database: where, tables } },
        );
      }
      version = Number(meta.find((r) => r.key === "schema_version")?.value ?? Number.NaN);
      if (!Number.isInteger(version) || version < 1) {
        throw new FlotillaError(
          "STORE_ERROR",
          `${where}: schema "${schema}" has no readable schema version; it was not written by Flotilla or is damaged`,
          { details: { database: where } },
        );
      }
      if (version > POSTGRES_SCHEMA_VERSION) {
        throw new FlotillaError(
          "STORE_ERROR",
          `${where}: schema "${schema}" is at version ${version}, newer than this Flotilla (${POSTGRES_SCHEMA_VERSION}); upgrade Flotilla to open it`,
          { details: { database: where, version, supported: POSTGRES_SCHEMA_VERSION } },
        );
      }
    } else {
      await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`);
    }
    for (let v = version; v < POSTGRES_SCHEMA_VERSION; v++) {
      await client.query(MIGRATIONS[v]!(s));
      logger.info({ database: where, schema, version: v + 1 }, "postgres schema migrated");
    }
    if (version < POSTGRES_SCHEMA_VERSION) {
      await client.query(
        `INSERT INTO ${s}.meta (key, value) VALUES ('application', $1), ('schema_version', $2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value`,
        [APPLICATION, String(POSTGRES_SCHEMA_VERSION)],
      );
    }
    await client.query("COMMIT");
  } catch (err) {
    await client.query("ROLLBACK").catch(() => {});
    throw err;
  }
}
