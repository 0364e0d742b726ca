/**
 * Runs the benchmarks: `npm run bench` (all scenarios, writes docs/benchmarks.md and
 * bench/results/latest.json) or `npm run bench -- --smoke` (small sizes, correctness
 * checks only). `--only=dispatch,dag` picks scenarios and leaves the published report as it
 * is; `--render` rewrites the report from bench/results/latest.json. Exits non-zero if a
 * check fails.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type PostgresServer, startPostgres } from "@flotilla/testing";
import { packageVersion } from "./peers.js";
import { type RedisHandle, startRedis } from "./redis.js";
import { type BenchContext, renderMarkdown } from "./report.js";
import { scenarios } from "./scenarios/index.js";
import { renderTargets } from "./targets.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "../..");
const args = process.argv.slice(2);
const smoke = args.includes("--smoke");
const only = args
  .find((a) => a.startsWith("--only="))
  ?.slice(7)
  .split(",");

export async function runBench(options: {
  smoke: boolean;
  only?: string[];
  quiet?: boolean;
}): Promise<BenchContext> {
  const ctx: BenchContext = {
    smoke: options.smoke,
    rows: [],
    checks: [],
    log: (m) => {
      if (!options.quiet) console.log(m);
    },
  };
  let redis: RedisHandle | undefined;
  let redisDurable: RedisHandle | undefined;
  try {
    redis = await startRedis();
    ctx.redis = redis;
    redisDurable = await startRedis({ durable: true });
    ctx.redisDurable = redisDurable;
  } catch (err) {
    if (process.env.CI) throw err;
    ctx.log(`Redis unavailable, BullMQ rows skipped: ${(err as Error).message}`);
  }
  let postgres: PostgresServer | undefined;
  try {
    if (!options.only || options.only.includes("durable")) {
      postgres = await startPostgres();
      ctx.postgres = postgres;
    }
  } catch (err) {
    if (process.env.CI) throw err;
    ctx.log(`PostgreSQL unavailable, its rows skipped: ${(err as Error).message}`);
  }
  try {
    for (const s of scenarios) {
      if (options.only && !options.only.includes(s.name)) continue;
      await s.run(ctx);
    }
  } finally {
    await redis?.stop();
    await redisDurable?.stop();
    await postgres?.destroy();
  }
  return ctx;
}

function environment(redisVersion?: string, postgresVersion?: string): string {
  const peers = ["p-queue", "fastq", "p-limit", "bottleneck", "bullmq", "ioredis", "pg-boss"]
    .map((p) => `${p} ${packageVersion(p)}`)
    .join(", ");
  return [
    `- Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `- Peers: ${peers}${redisVersion ? `, Redis ${redisVersion}` : ""}${postgresVersion ? `, ${postgresVersion}` : ""}`,
    `- Date: ${new Date().toISOString().slice(0, 10)}`,
  ].join("\n");
}

/** Why a target may be missed; kept next to the figures so a reader can judge the trade-off. */
const NOT_MET = [
  "- **Per-task overhead against p-queue and fastq.** p-queue runs a closure from an in-memory",
  "  array. A Flotilla task is a validated record with an id, a lifecycle of guarded",
  "  transitions (each one written to the store before it is acknowledged and emitted as a",
  "  typed event), a lease, a timeout, retries, routing across workers with health and",
  "  circuit state, gates for limits and budgets, and a result kept for `get`/`list`.",
  '  "Where the time goes" below lists what that costs and what has been cut so far.',
  "- **Durable throughput against BullMQ + Redis.** Both are measured: Redis without",
  "  persistence (it acknowledges from memory, and a restart loses every job) and Redis",
  "  with `appendfsync always` (a job is on disk before it is acknowledged, as with SQLite's",
  "  default `synchronous=full`). With the SQLite store a task's submission, its lease and",
  "  its result are each committed before they are acknowledged; writes from one event-loop",
  "  turn share a commit. The `synchronous=normal` rows show the cost of the fsync: that",
  "  setting keeps every guarantee across a process crash and gives up only the last commits",
  "  on a power loss (see `docs/persistence.md`).",
  "- **Durable throughput against pg-boss.** Both run on the bench's own PostgreSQL (fsync and",
  "  `synchronous_commit` on). pg-boss is run its documented fast way, each worker fetching 10",
  "  jobs per query back to back (with one job per fetch it waits its 2 s polling interval",
  "  between jobs). A Flotilla task writes its submission, its lease and its result, with the",
  "  attempt row and the events, each acknowledged after its commit; the writes issued while a",
  "  commit is in flight go out together as one statement and one commit, on one writer",
  "  connection. That connection waits for each commit before sending the next batch (about",
  "  40% of the run is spent waiting on the server; a CPU profile of the client shows it 65%",
  "  idle at c16), which caps c16. Writing batches for different tasks on several connections",
  "  at once is the next step, and needs the events' order kept another way first: their ids",
  "  are handed out under a transaction-scoped lock so that they grow in commit order (what an",
  "  SSE client resuming from an id relies on), and that lock would put the commits back in",
  "  one line.",
  "- **Backlog growth.** From a 1k to a 1M backlog the per-task cost grows about 3× (11.8 →",
  "  37.0 µs in this run). The queue itself stays flat (the enqueue target above); what grows",
  "  is garbage collection over a heap of about 2 GB at 1M (957 B per queued task, plus the",
  "  handles and results the caller holds). The small case varies from run to run (11.8 µs",
  "  here, 29.8 µs in the run before, which put the ratio at 1.22×), so read the ratio with it.",
  "- **PostgreSQL with three orchestrators sharing the schema** (the `flotilla serve --shared`",
  "  wiring, three in this one process, each with its own connections). Slower than one today:",
  "  in that mode every task write is versioned (it expects the version last stored, so a",
  "  server that lost a partition cannot overwrite its new holder), and the store writes",
  "  versioned saves one statement each instead of merging a batch into one; and a server",
  "  told of work stored for its partitions reads the schema's unfinished tasks whole.",
  "  Merging versioned saves and a partition column with its own index are the next steps.",
].join("\n");

/**
 * Where the time goes, from CPU profiles (`node --cpu-prof`) of the built packages on this
 * machine, before and after each change, with the change's measured gain. Kept by hand:
 * profiles are read, not generated.
 */
const WHERE_TIME_GOES = [
  "### In memory (20k no-op tasks, c1, priorities on, `new Orchestrator()` defaults)",
  "",
  "Before: 27.6 µs per task. Garbage collection 26% of the CPU; the store's writes",
  "(`MemoryStore.saveTask` with attempt rows) 11%; the dispatch pump 17% and the attempt's",
  "run 17% (inclusive); submission (normalising, inserting, ordering the batch) 9%.",
  "",
  "| change | gain |",
  "|---|---|",
  "| one context object per attempt (getters, functions made on first use), attempts built without a spread, no empty gate list, no copy of the worker list when every worker is free, attempt rows updated in place | 27.6 → 24.3 µs (c1), 21.7 → 18.8 µs (c16) |",
  "| `MemoryStore` keeps 10 000 finished tasks by default (was: all), and skips that bookkeeping while under the bound | a 1M-task process no longer grows by 1.8 KB per task |",
  "",
  "Now: garbage collection is still a quarter of the CPU (about 30 KB allocated per task:",
  "the record, its two store snapshots, four history lines, the attempt and lease, the",
  "handle's promise, the result); store writes 11%. What is left to cut is structural:",
  "writing a task's state to `MemoryStore` without a promise per write, folding the history",
  "lines into the task's own writes, and one allocation per transition instead of four.",
  "Measured another way: with a store that keeps nothing (each write resolving at once), the",
  "same 20k tasks take 16.9 µs (c1) and 15.8 µs (c16) instead of 25.5 and 23.5 — a third of",
  "the per-task cost is `MemoryStore` keeping the history that `get`, `list` and `history`",
  "answer from (records, attempt rows, events), most of it as garbage collection of what it",
  "retains.",
  "",
  "### Durable (SQLite, `synchronous=full`, 10k tasks, c16)",
  "",
  "Before: 5.8k tasks/s at c16, 7.4k at c100. SQLite took about 80% of the CPU: COMMIT",
  "(fsync and the WAL pages) about 45%, the task `UPDATE` that rewrote every column and so",
  "every index about 20%, event rows about 10%.",
  "",
  "| change | gain (c16 / c100) |",
  "|---|---|",
  "| the usual task write updates only the columns a task's life changes (indexes on the others are left alone); a one-statement write runs without a savepoint; events go in 32 rows per INSERT | 5.8k → 6.9k / 7.4k → 9.3k tasks/s |",
  "| schema v4: a task's events indexed by the task's `seq` instead of its random id (new entries go to the end of the index instead of dirtying pages all over it), two unused indexes dropped | 6.9k → 8.5k / 9.3k → 11.3k tasks/s |",
  "| schema v5: a task's attempts keyed by the task's `seq` first, for the same reason | 8.6k → 10.6k / 11.0k → 14.6k tasks/s |",
  "",
  "Now: COMMIT (one fsync per event-loop turn's batch, 16 tasks per commit at c16) is the",
  "largest part.",
  "",
  "Tried and not kept: SQLite at `synchronous=normal` with the WAL file synced by",
  "`fdatasync` on libuv's thread pool before the batch is acknowledged (the same durability",
  "as `full`, without the event loop waiting for the disk). Each commit then takes the",
  "thread pool's round trip on top of the sync (+40 µs per commit measured alone), and the",
  "engine's three acknowledged writes per task are in sequence, so c16 fell from 9.3k to",
  "8.0k tasks/s and c100 from 12.6k to 11.8k.",
  "",
  "### HTTP (`flotilla serve`, SQLite, 64 connections from autocannon in another process)",
  "",
  "Before: submit 3.8k requests/s (p99 38–54 ms), GET of a task 6.4k/s. Under submit load",
  "the server was about a quarter idle; of the rest, the SQLite batch (its commit included)",
  "about 20%, turning the body into a web stream and a `Request` for it about 10%, Hono's",
  "routing and middleware about 10%.",
  "",
  "| change | gain |",
  "|---|---|",
  "| a JSON body on Node is read straight from the socket's stream, with the same size limit | submit 4.2k → 6.1k req/s, p99 ~32 ms |",
  "| the slow-body guard stops when its response ends (it left a close listener per request on a keep-alive connection: a leak, and a warning after 10 requests) | submit 3.8k → 4.2k req/s |",
  "| a submission of one task without edges is one statement, without a savepoint | (in the figures above) |",
  "| GET of a finished task reads it once (it waits for nothing, so no explanation is looked up) | GET 6.4k → ~8.5k req/s |",
  "| a request without a body skips the body limit (Hono's built a web `Request` to look for one); GET answers from the engine's record without copying it (`EngineApi.view`); the view copies only values JSON cannot carry | GET 7.8k → 15.0k req/s |",
  "| headers read from those Node parsed (reading one through Hono built a web `Headers` of all of them, ~8 µs); one idle timer per connection, restarted, instead of one per request; one-shot key hashing; the request counter's series looked up once | GET 15.0k → 16.6k req/s (server CPU 69 → 60 µs per GET) |",
  "| the cost ledger's day key from the day's bounds, not a time-zone formatting per settled attempt | submit 4.4k → 5.1k req/s |",
  "",
  "Figures of the last three rows: `autocannon -c 64` for 5 s from another process, the",
  "server's CPU time per request read from `/proc`. On this machine a Hono hello-world costs",
  "19 µs of server CPU per GET and 36 µs per POST; the same app with two async middlewares,",
  "an async handler, one header read and a 700-byte JSON answer costs 36 µs per GET (27.7k",
  "req/s), which is about where the stack itself leaves a real route.",
  "",
  "Now, GET: 60 µs of server CPU per request (47 user, 13 kernel); writing the answer to the",
  "socket (which on loopback also does the receiver's TCP work) is the largest single part;",
  "the rest is spread over Hono's dispatch, three async layers (log, body limit, auth), the",
  "view and its JSON. Submit: about 210 µs per task all told (the task also runs): the",
  "SQLite batch 35% of the serving thread (its COMMIT, waiting on fsync, 17%), the engine",
  "20%, the HTTP stack 15%. What remains: commits off the serving thread (node:sqlite is",
  "synchronous, so a worker thread that owns the connection), and fewer layers per request.",
  "",
  "### Scale",
  "",
  "| change | gain |",
  "|---|---|",
  "| a finishing task no longer asks again every lane a rate limit or budget holds (held lanes wait for their retry time, a keyed wake-up from their gate, or a busy worker's freed slot) | 10k held keys: 3 597 → 35 µs per unrelated task |",
  "| a dispatch offers the routing strategy at most 64 free workers, the next dispatch the next 64 (it scanned, copied and compared every free worker of the type); a task waiting on more than 64 eligible workers is woken by any matching one instead of being indexed under each | 10k registered workers: 474 → 19 µs per task |",
  "| task and lease ids written into one buffer and decoded once: `crypto.randomUUID()` answers with a string built by concatenation, which V8 keeps as a rope of 14 pieces (~480 B held per id for the task's life) | a queued task 1 382 → 957 B of heap; a 1M backlog 36.7 → 29.9 µs per task |",
  "",
  "Figures of the last two rows: probes of the same shapes as the scenario, each run in",
  "its own process. What is left in the 1M-backlog case is garbage collection over a heap of",
  "about 2 GB (the records, their handles and their results, which the caller holds).",
].join("\n");

/** The published report (docs/benchmarks.md) for a run's rows and checks. */
function report(ctx: BenchContext, env: string): string {
  return [
    "# Benchmarks",
    "",
    "Flotilla side by side with the libraries a user would otherwise pick, in one run on one machine.",
    "Absolute times on a shared 2-core machine are noise; read the ratios (`vs Flotilla`: a peer's",
    "value divided by Flotilla's, so above 1× means the peer takes longer for lower-is-better metrics).",
    "Every scenario also checks correctness, so a fast wrong answer fails.",
    "",
    "Produced by `npm run bench`, which builds the packages first and measures them as they are",
    "installed (median of 3 runs after a warm-up unless a row says otherwise).",
    "",
    env,
    "",
    "## Targets",
    "",
    renderTargets(ctx),
    "",
    "## Where a target is not met",
    "",
    NOT_MET,
    "",
    "## Where the time goes",
    "",
    WHERE_TIME_GOES,
    "",
    "## Results",
    "",
    renderMarkdown(ctx.rows, ctx.checks),
  ].join("\n");
}

const latestPath = join(root, "bench/results/latest.json");

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (args.includes("--render")) {
    // Re-renders docs/benchmarks.md from the last full run's results (after editing the text).
    const saved = JSON.parse(readFileSync(latestPath, "utf8")) as {
      rows: BenchContext["rows"];
      checks: BenchContext["checks"];
      environment?: string;
    };
    const ctx: BenchContext = {
      smoke: false,
      rows: saved.rows,
      checks: saved.checks,
      log: () => {},
    };
    writeFileSync(
      join(root, "docs/benchmarks.md"),
      report(ctx, saved.environment ?? environment()),
    );
    process.exit(0);
  }
  const ctx = await runBench({ smoke, ...(only ? { only } : {}) });
  const failed = ctx.checks.filter((c) => !c.ok);
  const md = renderMarkdown(ctx.rows, ctx.checks);
  // Only a full run replaces the published report (a run of some scenarios just prints).
  if (!smoke && !only) {
    const env = environment(ctx.redis?.version, ctx.postgres?.version);
    mkdirSync(join(root, "bench/results"), { recursive: true });
    writeFileSync(
      latestPath,
      JSON.stringify({ environment: env, rows: ctx.rows, checks: ctx.checks }, null, 2),
    );
    writeFileSync(join(root, "docs/benchmarks.md"), report(ctx, env));
  }
  console.log(`\n${md}`);
  console.log(`${ctx.checks.length - failed.length} passed, ${failed.length} failed`);
  process.exit(failed.length ? 1 : 0);
}
