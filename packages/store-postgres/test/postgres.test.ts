import {
  type FlotillaError,
  FunctionWorker,
  Orchestrator,
  TASK_STATUSES,
  type TaskRecord,
  TERMINAL_STATUSES,
} from "@flotilla/core";
import { startPostgres, storeTestRecord } from "@flotilla/testing";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { POSTGRES_SCHEMA_VERSION, PostgresStore } from "../src/index.js";
import { PARTITION_EXPR, UNFINISHED_SQL } from "../src/schema.js";
import { dropSchema, freshSchema, pgUrl, sql } from "./pg-env.js";

const url = pgUrl();

/** Resolves once a session of this database waits on an advisory lock (a standby's open()). */
async function someoneWaitsOnALock(on = url!): Promise<void> {
  for (let i = 0; i < 250; i++) {
    const waiting = await sql(
      on,
      "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND wait_event = 'advisory' AND datname = current_database()",
    );
    if (waiting.length > 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("no session waits on an advisory lock");
}

async function rejection(promise: Promise<unknown>): Promise<FlotillaError> {
  try {
    await promise;
  } catch (err) {
    return err as FlotillaError;
  }
  throw new Error("expected the call to reject, it resolved");
}

if (url) {
  describe("PostgresStore on a real PostgreSQL server", () => {
    const stores: PostgresStore[] = [];
    const schemas = new Set<string>();

    function store(
      schema: string,
      extra: Partial<ConstructorParameters<typeof PostgresStore>[0]> = {},
    ): PostgresStore {
      schemas.add(schema);
      const s = new PostgresStore({ connectionString: url, schema, ...extra });
      stores.push(s);
      return s;
    }

    afterEach(async () => {
      for (const s of stores.splice(0)) await s.close().catch(() => {});
      for (const schema of schemas) await dropSchema(url!, schema);
      schemas.clear();
    });

    it("creates its schema once when several stores open a new one together", async () => {
      const schema = freshSchema();
      const many = Array.from({ length: 5 }, () => store(schema, { exclusive: false }));
      await Promise.all(many.map((s) => s.open()));
      const meta = await sql<{ key: string; value: string }>(
        url!,
        `SELECT key, value FROM "${schema}".meta ORDER BY key`,
      );
      expect(meta).toEqual([
        { key: "application", value: "flotilla" },
        { key: "schema_version", value: String(POSTGRES_SCHEMA_VERSION) },
      ]);
      await many[0]!.insertTasks([storeTestRecord({ id: "a" })]);
      expect((await many[4]!.getTask("a"))?.id).toBe("a");
    });

    it("lets one exclusive store hold a schema at a time", async () => {
      const schema = freshSchema();
      const first = store(schema);
      await first.open();
      const err = await rejection(store(schema).open());
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain("in use by another Flotilla instance");
      await first.close();
      const next = store(schema);
      await next.open();
      await next.insertTasks([storeTestRecord({ id: "after" })]);
    });

    it("a standby waits for the schema and takes over when the holder closes", async () => {
      const schema = freshSchema();
      const first = store(schema);
      await first.open();
      const standby = store(schema, { standby: true });
      let opened = false;
      const opening = standby.open().then(() => {
        opened = true;
      });
      // The standby is blocked on the lock, in the database, while the first store writes.
      await someoneWaitsOnALock();
      await first.insertTasks([storeTestRecord({ id: "by-first" })]);
      expect(opened).toBe(false);
      await first.close();
      await opening;
      expect((await standby.getTask("by-first"))?.id).toBe("by-first");
      await standby.insertTasks([storeTestRecord({ id: "by-standby", seq: 2 })]);
    });

    it("a standby takes over from a holder whose connection is lost, and the old holder can no longer write", async () => {
      const schema = freshSchema();
      const app = `flotilla-lost-${schema}`;
      const first = store(schema, { applicationName: app });
      await first.open();
      const standby = store(schema, { standby: true });
      const opening = standby.open();
      // The holder's host goes away: the server drops its connections (and its lock).
      await sql(
        url!,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        [app],
      );
      await opening;
      await standby.insertTasks([storeTestRecord({ id: "by-standby" })]);
      // The old holder reconnects but finds the schema taken: its writes are refused.
      let err: FlotillaError | undefined;
      for (let i = 0; i < 20 && !err; i++) {
        err = await first.insertTasks([storeTestRecord({ id: `late-${i}`, seq: 2 + i })]).then(
          () => undefined,
          (e: FlotillaError) =>
            /in use by another Flotilla instance/.test(e.message) ? e : undefined,
        );
      }
      expect(err?.code).toBe("STORE_ERROR");
      expect(await standby.countTasks()).toBe(1);
    });

    it("keeps its schema through a database restart, while a waiting standby waits on", async () => {
      const server = await startPostgres();
      const a = new PostgresStore({ connectionString: server.url, schema: "s" });
      const b = new PostgresStore({ connectionString: server.url, schema: "s", standby: true });
      try {
        await a.open();
        let failed: unknown;
        let opened = false;
        const opening = b.open().then(
          () => {
            opened = true;
          },
          (err: unknown) => {
            failed = err;
          },
        );
        await someoneWaitsOnALock(server.url);
        await server.stop();
        await server.start();
        // The holder takes its lock again and writes (calls made meanwhile may fail).
        let written = false;
        for (let i = 0; i < 100 && !written; i++) {
          written = await a.insertTasks([storeTestRecord({ id: `t${i}`, seq: i })]).then(
            () => true,
            () => false,
          );
          if (!written) await new Promise((r) => setTimeout(r, 100));
        }
        expect(written).toBe(true);
        // The standby connected again and waits; it takes over when the holder goes.
        await someoneWaitsOnALock(server.url);
        expect({ opened, failed }).toEqual({ opened: false, failed: undefined });
        await a.close();
        await opening;
        expect(opened).toBe(true);
        expect(await b.countTasks()).toBe(1);
      } finally {
        await a.close();
        await b.close();
        await server.destroy();
      }
    }, 60_000);

    it("a standby closed while it waits rejects its open()", async () => {
      const schema = freshSchema();
      await store(schema).open();
      const standby = store(schema, { standby: true });
      const opening = standby.open();
      await someoneWaitsOnALock();
      await standby.close();
      const err = await rejection(opening);
      expect(err.message).toContain("closed while waiting for the schema");
    });

    it("refuses a schema that is not Flotilla's and leaves it as it was", async () => {
      const schema = freshSchema("foreign");
      schemas.add(schema);
      await sql(url!, `CREATE SCHEMA "${schema}"`);
      await sql(url!, `CREATE TABLE "${schema}".users (id int PRIMARY KEY)`);
      const err = await rejection(store(schema).open());
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain("is not a Flotilla schema");
      expect(err.message).toContain("users");
      const tables = await sql<{ name: string }>(
        url!,
        "SELECT table_name AS name FROM information_schema.tables WHERE table_schema = $1",
        [schema],
      );
      expect(tables.map((t) => t.name)).toEqual(["users"]);
    });

    it("says it is fenced when another holder took the schema after its lock was lost, and refuses writes", async () => {
      const schema = freshSchema();
      const a = store(schema);
      await a.open();
      const fenced = new Promise<FlotillaError>((resolve) => a.onFenced(resolve));
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const key = [0x464c4f54, `${schema}:instance`];
        const holder = await client.query<{ pid: number }>(
          `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
             AND classid = $1::bigint::oid AND objid = (hashtext($2)::bigint & 4294967295)::oid`,
          key,
        );
        expect(holder.rows).toHaveLength(1);
        await client.query("SELECT pg_terminate_backend($1)", [holder.rows[0]!.pid]);
        let got = false;
        for (let i = 0; i < 400 && !got; i++) {
          got = (
            await client.query<{ ok: boolean }>(
              "SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok",
              key,
            )
          ).rows[0]!.ok;
        }
        expect(got).toBe(true);
        const err = await fenced;
        expect(err.message).toContain("in use by another Flotilla instance");
        expect(a.fenced).toBe(true);
        const refused = await rejection(a.insertTasks([storeTestRecord({ id: "late" })]));
        expect(refused.code).toBe("STORE_ERROR");
      } finally {
        await client.end();
      }
    });

    it("migrates a schema of the first version and keeps its tasks", async () => {
      const schema = freshSchema();
      const first = store(schema);
      await first.open();
      await first.insertTasks([storeTestRecord({ id: "kept" })]);
      await first.appendEvents([{ type: "task:queued", taskId: "kept", at: 1, data: {} }]);
      await first.close();
      // As the first release left it: no instance or partition tables, events without the
      // appending store's mark, version 1.
      await sql(
        url!,
        `DROP TABLE "${schema}".instances, "${schema}".partitions;
         DROP INDEX "${schema}".tasks_unfinished_partition;
         ALTER TABLE "${schema}".events DROP COLUMN origin;
         ALTER TABLE "${schema}".usage DROP COLUMN origin;
         UPDATE "${schema}".meta SET value = '1' WHERE key = 'schema_version'`,
      );
      const next = store(schema, { exclusive: false });
      await next.open();
      expect((await next.getTask("kept"))?.id).toBe("kept");
      expect((await next.listEvents({ taskId: "kept" })).map((e) => e.type)).toEqual([
        "task:queued",
      ]);
      const version = await sql<{ value: string }>(
        url!,
        `SELECT value FROM "${schema}".meta WHERE key = 'schema_version'`,
      );
      expect(version[0]?.value).toBe(String(POSTGRES_SCHEMA_VERSION));
      const leases = next.partitionLeases({ instanceId: "after-migration" });
      await leases.start();
      expect(leases.owned().size).toBe(64);
      await leases.stop();
    });

    it("reads the unfinished tasks of some partitions through their own index", async () => {
      const schema = freshSchema();
      const s = store(schema, { exclusive: false });
      await s.open();
      await s.insertTasks(
        Array.from({ length: 40 }, (_, i) =>
          storeTestRecord({ id: `t${i}`, seq: i + 1, partition: i % 8 }),
        ),
      );
      await s.insertTasks([storeTestRecord({ id: "no-partition", seq: 100 })]);
      const got = (await s.loadUnfinished({ partitions: [2, 5] })).map((r) => r.id);
      expect(got).toEqual([
        ...Array.from({ length: 40 }, (_, i) => i)
          .filter((i) => i % 8 === 2 || i % 8 === 5)
          .map((i) => `t${i}`),
        "no-partition",
      ]);
      // The statuses listed for the index are the unfinished ones, and the planner can use it.
      expect(
        UNFINISHED_SQL.split(", ")
          .map((x) => x.slice(1, -1))
          .sort(),
      ).toEqual(TASK_STATUSES.filter((st) => !TERMINAL_STATUSES.has(st)).sort());
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        await client.query("SET enable_seqscan = off");
        const plan = await client.query<{ "QUERY PLAN": string }>(
          `EXPLAIN SELECT body FROM "${schema}".tasks WHERE status IN (${UNFINISHED_SQL})
           AND (${PARTITION_EXPR} = ANY($1::integer[]) OR ${PARTITION_EXPR} IS NULL)
           ORDER BY seq, id`,
          [[2, 5]],
        );
        expect(plan.rows.map((r) => r["QUERY PLAN"]).join("\n")).toContain(
          "tasks_unfinished_partition",
        );
      } finally {
        await client.end();
      }
    });

    it("refuses a schema written by a newer version", async () => {
      const schema = freshSchema();
      const first = store(schema);
      await first.open();
      await first.close();
      await sql(url!, `UPDATE "${schema}".meta SET value = '999' WHERE key = 'schema_version'`);
      const err = await rejection(store(schema).open());
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(
        `version 999, newer than this Flotilla (${POSTGRES_SCHEMA_VERSION})`,
      );
    });

    it("says which database refused a wrong password, without the password", async () => {
      const bad = new URL(url!);
      bad.password = "not-the-password";
      const s = new PostgresStore({ connectionString: bad.toString(), schema: freshSchema() });
      const err = await rejection(s.open());
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(`${bad.hostname}:${bad.port}`);
      expect(err.message).toContain("password authentication failed");
      expect(err.message).not.toContain("not-the-password");
    });

    it("refuses bad options with VALIDATION", () => {
      expect(() => new PostgresStore({ schema: "Robert'); DROP TABLE tasks;--" })).toThrow(
        /schema: expected a lower-case PostgreSQL identifier/,
      );
      expect(() => new PostgresStore({ poolSize: 0 })).toThrow(/poolSize/);
    });

    it("never hands one task to two stores claiming at once", async () => {
      const schema = freshSchema();
      const a = store(schema, { exclusive: false });
      const b = store(schema, { exclusive: false });
      await Promise.all([a.open(), b.open()]);
      await a.insertTasks(
        Array.from({ length: 40 }, (_, i) => storeTestRecord({ id: `t${i}`, seq: i })),
      );
      const claims = await Promise.all(
        Array.from({ length: 50 }, (_, i) =>
          (i % 2 ? a : b).claimTask({ holder: `h${i}`, leaseId: `l${i}`, leaseMs: 60_000 }),
        ),
      );
      const got = claims.filter((c): c is TaskRecord => c !== undefined);
      expect(got).toHaveLength(40);
      expect(new Set(got.map((t) => t.id)).size).toBe(40);
      expect(await a.countTasks({ status: "leased" })).toBe(40);
    });

    it("numbers events in commit order across stores appending at once", async () => {
      const schema = freshSchema();
      const a = store(schema, { exclusive: false });
      const b = store(schema, { exclusive: false });
      await Promise.all([a.open(), b.open()]);
      await Promise.all(
        Array.from({ length: 60 }, (_, i) =>
          (i % 2 ? a : b).appendEvents([
            { type: i % 2 ? "a" : "b", at: i, data: i },
            { type: i % 2 ? "a" : "b", at: i, data: i + 0.5 },
          ]),
        ),
      );
      const events = await a.listEvents();
      expect(events).toHaveLength(120);
      // Each store's events in the order it issued them, each append's two events adjacent.
      for (const who of ["a", "b"]) {
        const mine = events.filter((e) => e.type === who).map((e) => e.data as number);
        expect(mine).toEqual([...mine].sort((x, y) => x - y));
      }
      for (let i = 0; i < events.length; i += 2) {
        expect(events[i + 1]!.data).toBe((events[i]!.data as number) + 0.5);
      }
      // A reader resuming after any seq gets exactly the rest.
      const mid = events[57]!.seq!;
      expect((await b.listEvents({ afterSeq: mid })).map((e) => e.seq)).toEqual(
        events.slice(58).map((e) => e.seq),
      );
    });

    it("writes saves issued together as one statement, as if they had been written one by one", async () => {
      const schema = freshSchema();
      const s = store(schema);
      await s.open();
      await s.insertTasks([
        storeTestRecord({ id: "a", seq: 1 }),
        storeTestRecord({ id: "b", seq: 2, idempotencyKey: "kb" }),
        storeTestRecord({ id: "c", seq: 3 }),
      ]);
      const a = storeTestRecord({ id: "a", seq: 1 });
      const lease = { id: "l1", holder: "w1", acquiredAt: 1000, expiresAt: 2000 };
      // One tick: a leased, running, failed (attempt 1) and queued again; events between.
      const writes = [
        s.saveTask({ ...a, status: "leased", attempt: 1, lease, version: 2 }),
        s.appendEvents([{ type: "t", taskId: "a", at: 1, data: 1 }]),
        s.saveTask({ ...a, status: "running", attempt: 1, lease, version: 3 }),
        s.saveTask({ ...a, status: "queued", attempt: 1, version: 4 }),
        s.appendEvents([{ type: "t", taskId: "a", at: 2, data: 2 }]),
        s.saveTask({ ...storeTestRecord({ id: "c", seq: 3 }), status: "running", version: 2 }),
        s.saveTask({ ...storeTestRecord({ id: "new", seq: 9, dependsOn: ["a"] }), version: 1 }),
      ];
      expect(await Promise.all(writes)).toEqual([
        true,
        undefined,
        true,
        true,
        undefined,
        true,
        true,
      ]);
      expect(await s.getTask("a")).toMatchObject({ status: "queued", version: 4 });
      expect((await s.getTask("c"))?.status).toBe("running");
      expect((await s.getTask("new"))?.dependsOn).toEqual(["a"]);
      // The attempt row keeps what the earlier saves of the tick knew (worker, lease, start).
      expect(await s.listAttempts("a")).toEqual([
        {
          taskId: "a",
          attempt: 1,
          status: "queued",
          workerId: "w1",
          leaseId: "l1",
          startedAt: 1000,
          updatedAt: a.updatedAt,
        },
      ]);
      expect((await s.listEvents({ taskId: "a" })).map((e) => e.data)).toEqual([1, 2]);
      // Retention sees the edge a newly saved task brought: "a" stays while "new" waits on it.
      expect(await sql(url!, `SELECT task_id, depends_on FROM "${schema}".dependencies`)).toEqual([
        { task_id: "new", depends_on: "a" },
      ]);

      // One refused save in a batch (another task's idempotency key) fails alone.
      const b = storeTestRecord({ id: "b", seq: 2, idempotencyKey: "kb" });
      const c = storeTestRecord({ id: "c", seq: 3 });
      const results = await Promise.allSettled([
        s.saveTask({ ...b, status: "running", version: 2 }),
        s.saveTask({ ...c, idempotencyKey: "kb", version: 3 }),
        s.saveTask({ ...c, status: "succeeded", version: 4 }),
      ]);
      expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect(((results[1] as PromiseRejectedResult).reason as FlotillaError).code).toBe("CONFLICT");
      expect((await s.getTask("b"))?.status).toBe("running");
      expect(await s.getTask("c")).toMatchObject({ status: "succeeded", version: 4 });
    });

    it("carries on after the server closes its connections", async () => {
      const schema = freshSchema();
      const app = `flotilla-test-${schema}`;
      const s = store(schema, { applicationName: app });
      await s.open();
      await s.insertTasks([storeTestRecord({ id: "before" })]);
      const killed = await sql<{ ok: boolean }>(
        url!,
        "SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1",
        [app],
      );
      expect(killed.length).toBeGreaterThanOrEqual(2); // the writer and the schema lock, at least
      // Calls made while the connections are being replaced fail with STORE_ERROR, never
      // crash the process; within a few tries the store writes and reads again, and it
      // holds the schema lock again.
      let written = false;
      for (let i = 0; i < 50 && !written; i++) {
        try {
          await s.insertTasks([storeTestRecord({ id: `after-${i}`, seq: 2 + i })]);
          written = true;
        } catch (err) {
          expect((err as FlotillaError).code).toBe("STORE_ERROR");
          await new Promise((r) => setTimeout(r, 50));
        }
      }
      expect(written).toBe(true);
      expect((await s.getTask("before"))?.id).toBe("before");
      // It takes the schema lock again by itself (not only at its next write).
      for (let i = 0; i < 250; i++) {
        const held = await sql(
          url!,
          `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = $1`,
          [app],
        );
        if (held.length > 0) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      const err = await rejection(store(schema).open());
      expect(err.message).toContain("in use by another Flotilla instance");
    });

    it("runs an orchestrator's tasks durably: a new orchestrator finds results and queued work", async () => {
      const schema = freshSchema();
      const first = store(schema);
      const o1 = new Orchestrator({ store: first });
      await o1.register(
        new FunctionWorker({
          id: "w",
          taskTypes: ["double"],
          maxConcurrency: 4,
          fn: async (payload) => (payload as { n: number }).n * 2,
        }),
      );
      await o1.start();
      const handles = await Promise.all(
        Array.from({ length: 30 }, (_, i) => o1.submit({ type: "double", payload: { n: i } })),
      );
      const results = await Promise.all(handles.map((h) => h.result()));
      expect(results.map((r) => r.output)).toEqual(Array.from({ length: 30 }, (_, i) => i * 2));
      // Work for a type no worker of this orchestrator runs stays queued.
      const waiting = await o1.submit({ type: "later", payload: { x: 1 } });
      await o1.stop();
      await first.close();

      const second = store(schema);
      const o2 = new Orchestrator({ store: second });
      await o2.register(
        new FunctionWorker({ id: "w2", taskTypes: ["later"], fn: async () => "ran" }),
      );
      await o2.start();
      expect((await o2.get(handles[7]!.id))?.result?.output).toBe(14);
      const later = await (await o2.handle(waiting.id))!.result();
      expect(later.status).toBe("succeeded");
      expect(later.output).toBe("ran");
      expect(await second.countTasks({ status: "succeeded" })).toBe(31);
      await o2.stop();
    });
  });
}
