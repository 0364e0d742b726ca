/**
 * Runs the benchmarks: `npm run bench` (all scenarios, writes docs/benchmarks.md and
 * bench/results/latest.json) or `npm run bench -- --smoke` (small sizes, correctness
 * checks only). `--only=dispatch,dag` picks scenarios and leaves the published report as it
 * is. Exits non-zero if a check fails.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
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
  try {
    for (const s of scenarios) {
      if (options.only && !options.only.includes(s.name)) continue;
      await s.run(ctx);
    }
  } finally {
    await redis?.stop();
    await redisDurable?.stop();
  }
  return ctx;
}

function environment(redisVersion?: string): string {
  const peers = ["p-queue", "fastq", "p-limit", "bottleneck", "bullmq", "ioredis"]
    .map((p) => `${p} ${packageVersion(p)}`)
    .join(", ");
  return [
    `- Node ${process.version}, ${cpus().length} × ${cpus()[0]?.model ?? "unknown CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
    `- Peers: ${peers}${redisVersion ? `, Redis ${redisVersion}` : ""}`,
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
  "- **Registered workers.** Picking a worker still looks at every worker registered for",
  "  the task's type (health, circuit, free slot, then the routing strategy), so the",
  "  per-task cost grows with thousands of workers of one type.",
].join("\n");

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const ctx = await runBench({ smoke, ...(only ? { only } : {}) });
  const failed = ctx.checks.filter((c) => !c.ok);
  const md = renderMarkdown(ctx.rows, ctx.checks);
  // Only a full run replaces the published report (a run of some scenarios just prints).
  if (!smoke && !only) {
    mkdirSync(join(root, "bench/results"), { recursive: true });
    writeFileSync(
      join(root, "bench/results/latest.json"),
      JSON.stringify({ rows: ctx.rows, checks: ctx.checks }, null, 2),
    );
    const doc = [
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
      environment(ctx.redis?.version),
      "",
      "## Targets",
      "",
      renderTargets(ctx),
      "",
      "## Where a target is not met",
      "",
      NOT_MET,
      "",
      "## Results",
      "",
      md,
    ].join("\n");
    writeFileSync(join(root, "docs/benchmarks.md"), doc);
  }
  console.log(`\n${md}`);
  console.log(`${ctx.checks.length - failed.length} passed, ${failed.length} failed`);
  process.exit(failed.length ? 1 : 0);
}
