import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import { Orchestrator } from "../orchestrator/orchestrator.js";
import type { TaskRecord } from "../task/types.js";
import { SqliteStore } from "./sqlite.js";
import { APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION } from "./sqlite-schema.js";

function record(id: string, seq: number): TaskRecord {
  return {
    id,
    type: "custom",
    payload: { seq },
    priority: 20,
    seq,
    status: "queued",
    dependsOn: [],
    onDependencyFailure: "skip",
    retry: { maxAttempts: 1, initialDelayMs: 0, maxDelayMs: 0, factor: 2, jitter: 0 },
    rateLimitKeys: [],
    approval: "none",
    metadata: {},
    attempt: 0,
    createdAt: seq,
    updatedAt: seq,
    version: 1,
  };
}

async function openError(store: SqliteStore): Promise<FlotillaError> {
  try {
    await store.open();
  } catch (err) {
    expect(err).toBeInstanceOf(FlotillaError);
    return err as FlotillaError;
  }
  await store.close();
  throw new Error("open() resolved; expected STORE_ERROR");
}

/** A Flotilla database file at schema `version` (its first migrations run), left open. */
function databaseAt(path: string, version: number): DatabaseSync {
  const raw = new DatabaseSync(path);
  raw.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
  for (const m of MIGRATIONS.slice(0, version)) m(raw);
  raw.exec(`PRAGMA user_version = ${version}`);
  return raw;
}

describe("SqliteStore", () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "flotilla-sqlite-"));
  });
  afterEach(() => {
    chmodSync(dir, 0o700);
    rmSync(dir, { recursive: true, force: true });
  });

  it("migrates a v1 file to the current schema, keeping its data; usage lines keep their API key", async () => {
    const path = join(dir, "v1.db");
    const raw = databaseAt(path, 1);
    raw.exec(
      `INSERT INTO usage (at, task_id, tenant, usage) VALUES (5, 'old', 'acme', '{"inputTokens":3}')`,
    );
    raw.close();
    const store = new SqliteStore({ path });
    await store.open();
    await store.recordUsage({
      at: 6,
      taskId: "new",
      apiKey: "key:0123456789ab",
      usage: { inputTokens: 4 },
    });
    expect(await store.listUsage()).toEqual([
      { at: 5, taskId: "old", tenant: "acme", usage: { inputTokens: 3 } },
      { at: 6, taskId: "new", apiKey: "key:0123456789ab", usage: { inputTokens: 4 } },
    ]);
    await store.close();
    const check = new DatabaseSync(path);
    expect(check.prepare("PRAGMA user_version").get()).toEqual({ user_version: SCHEMA_VERSION });
    check.close();
  });

  it("migrates a v3 file: a task's events stay findable, now through the task's seq", async () => {
    const path = join(dir, "v3.db");
    const raw = databaseAt(path, 3);
    raw.exec(`INSERT INTO tasks (id, seq, status, type, priority, attempt, version, created_at,
      updated_at, body) VALUES ('t1', 7, 'queued', 'x', 0, 0, 1, 1, 1, '{}')`);
    raw.exec(`INSERT INTO events (type, task_id, at, data) VALUES ('task:queued', 't1', 1, NULL),
      ('task:queued', 'gone', 2, NULL), ('note', NULL, 3, NULL)`);
    raw.close();
    const store = new SqliteStore({ path });
    await store.open();
    await store.appendEvents([{ type: "task:leased", taskId: "t1", at: 4, data: { n: 1 } }]);
    expect((await store.listEvents({ taskId: "t1" })).map((e) => [e.seq, e.type])).toEqual([
      [1, "task:queued"],
      [4, "task:leased"],
    ]);
    expect((await store.listEvents({ taskId: "t1", afterSeq: 1 })).map((e) => e.seq)).toEqual([4]);
    // A task the store does not hold: its events are still listed.
    expect((await store.listEvents({ taskId: "gone" })).map((e) => e.seq)).toEqual([2]);
    await store.close();
    const check = new DatabaseSync(path);
    const plan = check
      .prepare(
        "EXPLAIN QUERY PLAN SELECT seq FROM events WHERE task_seq = 7 AND task_id = 't1' AND seq > 0 ORDER BY seq",
      )
      .all()
      .map((r) => String((r as { detail: string }).detail))
      .join("; ");
    expect(plan).toContain("events_task_seq");
    const indexes = check
      .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'tasks'")
      .all()
      .map((r) => (r as { name: string }).name);
    expect(indexes).not.toContain("tasks_lease");
    expect(indexes).not.toContain("tasks_unfinished");
    check.close();
  });

  it("migrates a v4 file: attempts keep their rows, found through the task's seq", async () => {
    const path = join(dir, "v4.db");
    const raw = databaseAt(path, 4);
    raw.exec(`INSERT INTO tasks (id, seq, status, type, priority, attempt, version, created_at,
      updated_at, body) VALUES ('t1', 7, 'running', 'x', 0, 2, 3, 1, 1, '{}')`);
    raw.exec(`INSERT INTO attempts (task_id, attempt, status, worker_id, updated_at) VALUES
      ('t1', 1, 'failed', 'w', 5), ('t1', 2, 'running', 'w', 6)`);
    raw.close();
    const store = new SqliteStore({ path });
    await store.open();
    expect((await store.listAttempts("t1")).map((a) => [a.attempt, a.status])).toEqual([
      [1, "failed"],
      [2, "running"],
    ]);
    await store.close();
  });

  it("a task whose seq a caller changes keeps its attempts and events", async () => {
    const store = new SqliteStore({ path: join(dir, "reseq.db") });
    await store.open();
    const t = { ...record("a", 3), status: "running" as const, attempt: 1 };
    await store.insertTasks([t]);
    await store.appendEvents([{ type: "task:running", taskId: "a", at: 1, data: {} }]);
    await store.saveTask({ ...t, seq: 9, version: 2 });
    expect((await store.listAttempts("a")).map((a) => a.attempt)).toEqual([1]);
    expect((await store.listEvents({ taskId: "a" })).map((e) => e.type)).toEqual(["task:running"]);
    await store.close();
  });

  it("sums usage per 15 minutes and per provider, model, tenant, key and worker for restarts", async () => {
    const store = new SqliteStore({ path: join(dir, "rollup.db") });
    await store.open();
    const base = Date.UTC(2026, 5, 1, 12); // on a 15-minute boundary
    const line = (at: number, usage: Record<string, number>, tenant = "acme") =>
      store.recordUsage({ at, taskId: `t${at}`, provider: "openai", model: "m", tenant, usage });
    await line(base + 1_000, { inputTokens: 10, outputTokens: 5 });
    await line(base + 2_000, { inputTokens: 20, outputTokens: 5 });
    await line(base + 3_000, { inputTokens: 1, costUsd: 0.5 });
    await line(base + 4_000, { inputTokens: 7 }, "beta");
    await line(base + 900_000, { inputTokens: 100 }); // the next bucket
    const rolled = await store.listUsageRollup({ since: base });
    expect(rolled).toEqual([
      {
        at: base + 2_000,
        provider: "openai",
        model: "m",
        tenant: "acme",
        usage: { requests: 2, inputTokens: 30, outputTokens: 10, totalTokens: 40 },
      },
      {
        at: base + 3_000,
        provider: "openai",
        model: "m",
        tenant: "acme",
        usage: { requests: 1, inputTokens: 1, outputTokens: 0, totalTokens: 1, costUsd: 0.5 },
      },
      {
        at: base + 4_000,
        provider: "openai",
        model: "m",
        tenant: "beta",
        usage: { requests: 1, inputTokens: 7, outputTokens: 0, totalTokens: 7 },
      },
      {
        at: base + 900_000,
        provider: "openai",
        model: "m",
        tenant: "acme",
        usage: { requests: 1, inputTokens: 100, outputTokens: 0, totalTokens: 100 },
      },
    ]);
    await store.close();
  });

  it("rolls old usage lines up into sums, which every reader still counts", async () => {
    const store = new SqliteStore({ path: join(dir, "rolled.db") });
    await store.open();
    const base = Date.UTC(2026, 5, 1, 12);
    for (let i = 0; i < 5; i++) {
      await store.recordUsage({
        at: base + i * 1_000,
        taskId: `t${i}`,
        provider: "openai",
        tenant: "acme",
        usage: { inputTokens: 10, outputTokens: 1 },
      });
    }
    await store.recordUsage({
      at: base + 3 * 3_600_000,
      taskId: "late",
      usage: { inputTokens: 7 },
    });
    expect(await store.rollUpUsage(base + 3_600_000)).toBe(5);
    // Twice is harmless: nothing is left to roll before that time.
    expect(await store.rollUpUsage(base + 3_600_000)).toBe(0);
    const lines = await store.listUsage();
    expect(lines).toEqual([
      {
        at: base + 4_000,
        provider: "openai",
        tenant: "acme",
        usage: { requests: 5, inputTokens: 50, outputTokens: 5, totalTokens: 55 },
      },
      { at: base + 3 * 3_600_000, taskId: "late", usage: { inputTokens: 7 } },
    ]);
    expect(await store.listUsageRollup({ since: base })).toEqual([
      lines[0],
      {
        at: base + 3 * 3_600_000,
        usage: { requests: 1, inputTokens: 7, outputTokens: 0, totalTokens: 7 },
      },
    ]);
    // Retention's usage cut-off removes sums too.
    await store.deleteFinished({ usageBefore: base + 3_600_000 });
    expect((await store.listUsage()).map((l) => l.taskId)).toEqual(["late"]);
    await store.close();
  });

  it("retention removes every row of a removed task and gives the space back to the file system", async () => {
    const path = join(dir, "retained.db");
    const store = new SqliteStore({ path });
    await store.open();
    const big = "x".repeat(4000);
    const done = (id: string, seq: number): TaskRecord => ({
      ...record(id, seq),
      payload: { big },
      status: "succeeded",
      attempt: 1,
      result: {
        taskId: id,
        status: "succeeded",
        attempts: 1,
        timings: { createdAt: 0, finishedAt: 1 },
      },
    });
    await store.insertTasks(Array.from({ length: 2000 }, (_, i) => done(`t${i}`, i + 1)));
    await store.appendEvents(
      Array.from({ length: 2000 }, (_, i) => ({
        type: "task:succeeded",
        taskId: `t${i}`,
        at: 1,
        data: {},
      })),
    );
    await store.close();
    const full = statSync(path).size;
    const again = new SqliteStore({ path });
    await again.open();
    expect(await again.deleteFinished({ keep: 0, limit: 5000 })).toBe(2000);
    expect(await again.listEvents()).toEqual([]);
    let released = 0;
    for (let n = await again.compact(); n > 0; n = await again.compact()) released += n;
    expect(released).toBeGreaterThan(1000);
    await again.close();
    expect(statSync(path).size).toBeLessThan(full / 4);
  });

  it("creates a new file with its application id, schema version and WAL", async () => {
    const path = join(dir, "new.db");
    const store = new SqliteStore({ path });
    await store.open();
    await store.insertTasks([record("a", 1)]);
    await store.close();
    const db = new DatabaseSync(path);
    expect(db.prepare("PRAGMA application_id").get()).toEqual({ application_id: APPLICATION_ID });
    expect(db.prepare("PRAGMA user_version").get()).toEqual({ user_version: SCHEMA_VERSION });
    expect(db.prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "wal" });
    expect(db.prepare("SELECT id, status FROM tasks").all()).toEqual([
      { id: "a", status: "queued" },
    ]);
    db.close();
  });

  describe("refuses bad files at open, and leaves them untouched", () => {
    it("a file of garbage bytes", async () => {
      const path = join(dir, "garbage.db");
      const bytes = Buffer.from(Array.from({ length: 8192 }, (_, i) => (i * 7919) % 251));
      writeFileSync(path, bytes);
      const err = await openError(new SqliteStore({ path }));
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(path);
      expect(err.message).toMatch(/not a SQLite database|corrupt/);
      expect(readFileSync(path).equals(bytes)).toBe(true);
    });

    it("a Flotilla database damaged in the middle", async () => {
      const path = join(dir, "damaged.db");
      const store = new SqliteStore({ path });
      await store.open();
      const big = Array.from({ length: 400 }, (_, i) => {
        const r = record(`t${i}`, i);
        r.payload = { text: "x".repeat(500), i };
        return r;
      });
      await store.insertTasks(big);
      await store.close();
      const bytes = readFileSync(path);
      const pageSize = bytes.readUInt16BE(16);
      expect(bytes.length / pageSize).toBeGreaterThan(20);
      for (let p = 5; p < 15; p++) bytes.fill(0x5a, p * pageSize + 8, (p + 1) * pageSize - 8);
      writeFileSync(path, bytes);

      const err = await openError(new SqliteStore({ path }));
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(path);
      expect(err.message).toContain("corrupt");
      expect(readFileSync(path).equals(bytes)).toBe(true);
    });

    it("a SQLite database of another application", async () => {
      const path = join(dir, "foreign.db");
      const foreign = new DatabaseSync(path);
      foreign.exec("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)");
      foreign.exec("INSERT INTO customers (name) VALUES ('ada'), ('grace')");
      foreign.close();
      const before = readFileSync(path);
      const err = await openError(new SqliteStore({ path }));
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(path);
      expect(err.message).toContain("not a Flotilla database");
      expect(err.message).toContain("customers");
      expect(readFileSync(path).equals(before)).toBe(true);
      const check = new DatabaseSync(path);
      expect(check.prepare("SELECT count(*) AS n FROM customers").get()).toEqual({ n: 2 });
      expect(check.prepare("PRAGMA journal_mode").get()).toEqual({ journal_mode: "delete" });
      check.close();
    });

    it("a schema version newer than this code knows", async () => {
      const path = join(dir, "future.db");
      const store = new SqliteStore({ path });
      await store.open();
      await store.insertTasks([record("keep-me", 1)]);
      await store.close();
      const raw = new DatabaseSync(path);
      raw.exec(`PRAGMA user_version = ${SCHEMA_VERSION + 1}`);
      raw.close();

      const err = await openError(new SqliteStore({ path }));
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(path);
      expect(err.message).toContain(`schema version ${SCHEMA_VERSION + 1} is newer`);
      const check = new DatabaseSync(path);
      expect(check.prepare("SELECT id FROM tasks").all()).toEqual([{ id: "keep-me" }]);
      expect(check.prepare("PRAGMA user_version").get()).toEqual({
        user_version: SCHEMA_VERSION + 1,
      });
      check.close();
    });

    it("a directory where the file should be", async () => {
      const path = join(dir, "is-a-dir.db");
      mkdirSync(path);
      const err = await openError(new SqliteStore({ path }));
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toBe(`${path}: is a directory, not a database file`);
    });

    it("a directory that does not exist, or a file in place of the directory", async () => {
      const missing = join(dir, "nope", "x.db");
      const e1 = await openError(new SqliteStore({ path: missing }));
      expect(e1.message).toBe(`${missing}: the directory ${join(dir, "nope")} does not exist`);
      writeFileSync(join(dir, "plain"), "x");
      const underFile = join(dir, "plain", "x.db");
      const e2 = await openError(new SqliteStore({ path: underFile }));
      expect(e2.code).toBe("STORE_ERROR");
      expect(e2.message).toContain(underFile);
    });

    it("a place that cannot be written", async () => {
      const root = process.getuid?.() === 0;
      let path: string;
      if (root) {
        // root ignores file modes; procfs refuses new files for everyone.
        path = "/proc/flotilla-store-test.db";
      } else {
        const ro = join(dir, "ro");
        mkdirSync(ro);
        const store = new SqliteStore({ path: join(ro, "x.db") });
        await store.open();
        await store.insertTasks([record("a", 1)]);
        await store.close();
        chmodSync(join(ro, "x.db"), 0o444);
        chmodSync(ro, 0o555);
        path = join(ro, "x.db");
      }
      const err = await openError(new SqliteStore({ path }));
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(path);
      expect(err.message).toMatch(/read-only|writable/);
    });

    it("a file another process (or store) holds", async () => {
      const path = join(dir, "held.db");
      const first = new SqliteStore({ path });
      await first.open();
      await first.insertTasks([record("a", 1)]);
      const err = await openError(new SqliteStore({ path, busyTimeoutMs: 50 }));
      expect(err.code).toBe("STORE_ERROR");
      expect(err.message).toContain(path);
      expect(err.message).toContain("locked");
      expect((await first.getTask("a"))?.id).toBe("a");
      await first.close();
      const again = new SqliteStore({ path });
      await again.open();
      expect((await again.getTask("a"))?.id).toBe("a");
      await again.close();
    });
  });

  it("an orchestrator's stop leaves the store open; close checkpoints and releases the file", async () => {
    const path = join(dir, "owned.db");
    const store = new SqliteStore({ path });
    const orchestrator = new Orchestrator({ store });
    await orchestrator.start();
    await orchestrator.submit({ id: "kept", type: "nobody-runs-this" });
    await orchestrator.stop();
    expect((await store.getTask("kept"))?.status).toBe("queued"); // still readable
    await expect(new SqliteStore({ path, busyTimeoutMs: 50 }).open()).rejects.toMatchObject({
      code: "STORE_ERROR",
    });
    await store.close();
    expect(statSync(`${path}-wal`, { throwIfNoEntry: false })?.size ?? 0).toBe(0);
    const again = new SqliteStore({ path });
    await again.open();
    expect((await again.getTask("kept"))?.status).toBe("queued");
    await again.close();
  });

  it("rejects calls before open and after close with STORE_ERROR", async () => {
    const store = new SqliteStore({ path: join(dir, "x.db") });
    await expect(store.getTask("a")).rejects.toMatchObject({ code: "STORE_ERROR" });
    await store.open();
    await store.close();
    await expect(store.insertTasks([record("a", 1)])).rejects.toMatchObject({
      code: "STORE_ERROR",
    });
  });

  it("commits writes still queued when close() is called", async () => {
    const path = join(dir, "x.db");
    const store = new SqliteStore({ path });
    await store.open();
    const pending = store.insertTasks([record("a", 1), record("b", 2)]);
    await store.close();
    await pending;
    const again = new SqliteStore({ path });
    await again.open();
    expect((await again.loadUnfinished()).map((t) => t.id)).toEqual(["a", "b"]);
    await again.close();
  });

  it("rejects values JSON cannot hold with VALIDATION, naming the task", async () => {
    const store = new SqliteStore({ path: join(dir, "x.db") });
    await store.open();
    const bad = record("bad", 1);
    bad.payload = { n: 1n };
    await expect(store.insertTasks([bad])).rejects.toMatchObject({
      code: "VALIDATION",
      message: expect.stringContaining("task bad"),
    });
    expect(await store.countTasks()).toBe(0);
    await store.close();
  });

  it("validates its options", () => {
    expect(() => new SqliteStore({ path: "" })).toThrow(
      "SqliteStore options.path: expected a file path",
    );
    expect(
      () => new SqliteStore({ path: "x.db", synchronous: "off" as unknown as "full" }),
    ).toThrow(/SqliteStore options.synchronous/);
    expect(() => new SqliteStore({ path: "x.db", busyTimeoutMs: -1 })).toThrow(
      /options.busyTimeoutMs/,
    );
    expect(() => new SqliteStore(undefined as never)).toThrow(FlotillaError);
  });

  it("works the same without write batching", async () => {
    const store = new SqliteStore({ path: join(dir, "x.db"), batchWrites: false });
    await store.open();
    const results = await Promise.allSettled([
      store.insertTasks([record("a", 1)]),
      store.insertTasks([record("a", 2)]),
      store.insertTasks([record("b", 3)]),
    ]);
    expect(results.map((r) => r.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(await store.countTasks()).toBe(2);
    await store.close();
  });
});
