/**
 * Scenario 7: durable throughput. Submit → complete with the SQLite store at concurrency 1,
 * 16 and 100 (its default `synchronous=full`, and `normal`, which survives a process crash but
 * not a power loss), against BullMQ on a real Redis without persistence and on one that
 * fsyncs its append-only file on every write; and with the PostgreSQL store against pg-boss on
 * the same PostgreSQL server (one orchestrator, and three sharing the schema). Median of 3
 * runs after a warm-up.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SHARED_PARTITIONS, type Sharing, shareSchema } from "@flotilla/cli";
import { FunctionWorker, Orchestrator, silentLogger } from "@flotilla/core";
import { SqliteStore } from "@flotilla/core/sqlite";
import { PostgresStore } from "@flotilla/store-postgres";
import pg from "pg";
import { bullmqRun } from "../bullmq.js";
import { pgBossRun } from "../pgboss.js";
import { type BenchContext, check, type Scenario } from "../report.js";
import { median, nowMs } from "../stats.js";

const NAME = "7. Durable throughput";

let schemas = 0;

/** Submit `n` tasks in batches of 1000 and await every result, on `store`. */
async function runOn(store: SqliteStore | PostgresStore, n: number, concurrency: number) {
  const orchestrator = new Orchestrator({ concurrency, store });
  let ran = 0;
  await orchestrator.register(
    new FunctionWorker({
      id: "w",
      taskTypes: ["noop"],
      maxConcurrency: concurrency,
      fn: async () => {
        ran++;
        return null;
      },
    }),
  );
  await orchestrator.start();
  const t0 = nowMs();
  const handles = [];
  for (let i = 0; i < n; i += 1000) {
    const batch = Array.from({ length: Math.min(1000, n - i) }, () => ({ type: "noop" }));
    handles.push(...(await orchestrator.submitBatch(batch)));
  }
  const results = await Promise.all(handles.map((h) => h.result()));
  const ms = nowMs() - t0;
  await orchestrator.stop();
  await store.close();
  const succeeded = results.filter((r) => r.status === "succeeded").length;
  return { tasksPerSec: (n / ms) * 1000, ran, succeeded };
}

/** The same on PostgreSQL (a schema per run, dropped afterwards); re-opened to count what is stored. */
async function flotillaPostgres(url: string, n: number, concurrency: number) {
  const schema = `bench_${process.pid}_${++schemas}`;
  const r = await runOn(new PostgresStore({ connectionString: url, schema }), n, concurrency);
  const reopened = new PostgresStore({ connectionString: url, schema });
  await reopened.open();
  const persisted = await reopened.countTasks({ status: "succeeded" });
  await reopened.close();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`DROP SCHEMA "${schema}" CASCADE`);
  await client.end();
  return { ...r, persisted };
}

/**
 * The same on PostgreSQL with `instances` orchestrators sharing one schema, wired as
 * `flotilla serve --shared` wires them (partition leases, wake-ups), in this process: the
 * concurrency split between them, batches of 100 submitted through each in turn (a batch
 * lands in one partition), the run timed until the database counts every task succeeded.
 */
async function flotillaPostgresShared(
  url: string,
  n: number,
  concurrency: number,
  instances: number,
) {
  const schema = `bench_${process.pid}_${++schemas}`;
  let ran = 0;
  const servers: Array<{ store: PostgresStore; orchestrator: Orchestrator; sharing: Sharing }> = [];
  for (let i = 0; i < instances; i++) {
    const store = new PostgresStore({ connectionString: url, schema, exclusive: false });
    await store.open();
    const slots = Math.floor(concurrency / instances) + (i < concurrency % instances ? 1 : 0);
    const orchestrator = new Orchestrator({
      store,
      partitions: { count: SHARED_PARTITIONS },
      concurrency: Math.max(1, slots),
    });
    await orchestrator.register(
      new FunctionWorker({
        id: "w",
        taskTypes: ["noop"],
        maxConcurrency: Math.max(1, slots),
        fn: async () => {
          ran++;
          return null;
        },
      }),
    );
    await orchestrator.start();
    const sharing = await shareSchema(store, orchestrator, {
      instanceId: `bench-${i}`,
      leaseMs: 15_000,
      logger: silentLogger,
    });
    servers.push({ store, orchestrator, sharing });
  }
  // Every partition held, the share split evenly.
  const deadline = Date.now() + 30_000;
  while (
    servers.some(
      (s) => s.sharing.leases.owned().size < Math.floor(SHARED_PARTITIONS / instances),
    ) &&
    Date.now() < deadline
  ) {
    await new Promise((r) => setTimeout(r, 20));
  }
  const counter = servers[0]!.store;
  const t0 = nowMs();
  for (let i = 0, k = 0; i < n; i += 100, k++) {
    const batch = Array.from({ length: Math.min(100, n - i) }, () => ({ type: "noop" }));
    await servers[k % instances]!.orchestrator.submitBatch(batch);
  }
  let succeeded = 0;
  while (succeeded < n && nowMs() - t0 < 120_000) {
    await new Promise((r) => setTimeout(r, 10));
    succeeded = await counter.countTasks({ status: "succeeded" });
  }
  const ms = nowMs() - t0;
  for (const s of servers) await s.sharing.stop();
  for (const s of servers) await s.orchestrator.stop();
  for (const s of servers) await s.store.close();
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  await client.query(`DROP SCHEMA "${schema}" CASCADE`);
  await client.end();
  return { tasksPerSec: (n / ms) * 1000, ran, succeeded };
}

async function flotillaDurable(n: number, concurrency: number, synchronous: "full" | "normal") {
  const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-sqlite-"));
  const store = new SqliteStore({ path: join(dir, "flotilla.db"), synchronous });
  const r = await runOn(store, n, concurrency);
  // Re-open: every completion must be on disk.
  const reopened = new SqliteStore({ path: join(dir, "flotilla.db") });
  await reopened.open();
  const persisted = await reopened.countTasks({ status: "succeeded" });
  await reopened.close();
  rmSync(dir, { recursive: true, force: true });
  return { ...r, persisted };
}

/** The BullMQ subjects: Redis as BullMQ benchmarks usually run it, and durable as SQLite is. */
export const BULLMQ_VOLATILE = "BullMQ + Redis (no persistence)";
export const BULLMQ_DURABLE = "BullMQ + Redis (appendfsync always)";
/** The PostgreSQL subjects: one server, fsync and synchronous_commit on (its defaults). */
export const FLOTILLA_POSTGRES = "Flotilla + PostgreSQL";
export const PGBOSS = "pg-boss + PostgreSQL";
/** How many orchestrators share the schema in the scale-out subject. */
const SHARED_INSTANCES = 3;
export const FLOTILLA_POSTGRES_SHARED = `Flotilla + PostgreSQL, ${SHARED_INSTANCES} orchestrators sharing the schema (one process)`;

export const durableScenario: Scenario = {
  name: "durable",
  title: NAME,
  async run(ctx: BenchContext) {
    const n = ctx.smoke ? 500 : 10_000;
    const runs = ctx.smoke ? 1 : 3;
    const warmup = ctx.smoke ? 0 : 1;
    const warmN = Math.min(n, 2_000);
    for (const concurrency of [1, 16, 100]) {
      const caseName = `concurrency ${concurrency}`;
      ctx.log(`${NAME}: ${caseName}`);
      for (const [subject, synchronous] of [
        ["Flotilla + SQLite", "full"],
        ["Flotilla + SQLite (synchronous=normal)", "normal"],
      ] as const) {
        for (let i = 0; i < warmup; i++) await flotillaDurable(warmN, concurrency, synchronous);
        const all: Array<Awaited<ReturnType<typeof flotillaDurable>>> = [];
        for (let i = 0; i < runs; i++) all.push(await flotillaDurable(n, concurrency, synchronous));
        ctx.rows.push({
          scenario: NAME,
          case: caseName,
          subject,
          metric: "tasks/s",
          value: median(all.map((f) => f.tasksPerSec)),
          unit: "/s",
          better: "higher",
        });
        const bad = all.find((f) => f.ran !== n || f.succeeded !== n || f.persisted !== n);
        const f = bad ?? all[0]!;
        check(
          ctx,
          NAME,
          `${caseName}, synchronous=${synchronous}: every task ran once and is persisted as succeeded`,
          bad === undefined,
          `ran ${f.ran}, succeeded ${f.succeeded}, persisted ${f.persisted} of ${n} (each of ${runs} runs)`,
        );
      }
      for (const [subject, conn] of [
        [BULLMQ_VOLATILE, ctx.redis],
        [BULLMQ_DURABLE, ctx.redisDurable],
      ] as const) {
        if (!conn) continue;
        const once = async (count: number) => {
          const t0 = nowMs();
          const b = await bullmqRun(conn, new Array<number>(count).fill(0), concurrency, false);
          return { perSec: (count / (nowMs() - t0)) * 1000, completed: b.completed };
        };
        for (let i = 0; i < warmup; i++) await once(warmN);
        const all: Array<{ perSec: number; completed: number }> = [];
        for (let i = 0; i < runs; i++) all.push(await once(n));
        ctx.rows.push({
          scenario: NAME,
          case: caseName,
          subject,
          metric: "tasks/s",
          value: median(all.map((b) => b.perSec)),
          unit: "/s",
          better: "higher",
        });
        check(
          ctx,
          NAME,
          `${caseName}: ${subject} completed every job`,
          all.every((b) => b.completed === n),
          all.map((b) => `${b.completed}/${n}`).join(", "),
        );
      }
      const pgUrl = ctx.postgres?.url;
      if (!pgUrl) continue;
      for (let i = 0; i < warmup; i++) await flotillaPostgres(pgUrl, warmN, concurrency);
      const fp: Array<Awaited<ReturnType<typeof flotillaPostgres>>> = [];
      for (let i = 0; i < runs; i++) fp.push(await flotillaPostgres(pgUrl, n, concurrency));
      ctx.rows.push({
        scenario: NAME,
        case: caseName,
        subject: FLOTILLA_POSTGRES,
        metric: "tasks/s",
        value: median(fp.map((f) => f.tasksPerSec)),
        unit: "/s",
        better: "higher",
      });
      const badPg = fp.find((f) => f.ran !== n || f.succeeded !== n || f.persisted !== n);
      check(
        ctx,
        NAME,
        `${caseName}, PostgreSQL: every task ran once and is persisted as succeeded`,
        badPg === undefined,
        `ran ${(badPg ?? fp[0]!).ran}, succeeded ${(badPg ?? fp[0]!).succeeded}, persisted ${(badPg ?? fp[0]!).persisted} of ${n} (each of ${runs} runs)`,
      );
      if (concurrency >= SHARED_INSTANCES) {
        for (let i = 0; i < warmup; i++) {
          await flotillaPostgresShared(pgUrl, warmN, concurrency, SHARED_INSTANCES);
        }
        const fs: Array<Awaited<ReturnType<typeof flotillaPostgresShared>>> = [];
        for (let i = 0; i < runs; i++) {
          fs.push(await flotillaPostgresShared(pgUrl, n, concurrency, SHARED_INSTANCES));
        }
        ctx.rows.push({
          scenario: NAME,
          case: caseName,
          subject: FLOTILLA_POSTGRES_SHARED,
          metric: "tasks/s",
          value: median(fs.map((f) => f.tasksPerSec)),
          unit: "/s",
          better: "higher",
        });
        const badShared = fs.find((f) => f.ran !== n || f.succeeded !== n);
        check(
          ctx,
          NAME,
          `${caseName}, PostgreSQL with ${SHARED_INSTANCES} servers: every task ran once and is stored as succeeded`,
          badShared === undefined,
          `ran ${(badShared ?? fs[0]!).ran}, succeeded ${(badShared ?? fs[0]!).succeeded} of ${n} (each of ${runs} runs)`,
        );
      }
      for (let i = 0; i < warmup; i++) await pgBossRun(pgUrl, warmN, concurrency);
      const pb: Array<Awaited<ReturnType<typeof pgBossRun>>> = [];
      for (let i = 0; i < runs; i++) pb.push(await pgBossRun(pgUrl, n, concurrency));
      ctx.rows.push({
        scenario: NAME,
        case: caseName,
        subject: PGBOSS,
        metric: "tasks/s",
        value: median(pb.map((b) => b.perSec)),
        unit: "/s",
        better: "higher",
      });
      check(
        ctx,
        NAME,
        `${caseName}: ${PGBOSS} completed every job`,
        pb.every((b) => b.completed === n),
        pb.map((b) => `${b.completed}/${n}`).join(", "),
      );
    }
  },
};
