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
  try {
    redis = await startRedis();
    ctx.redis = redis;
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
  "- **Per-task overhead against p-queue.** p-queue runs a closure from an in-memory array. A",
  "  Flotilla task is a validated record with an id, a lifecycle of guarded transitions (each one",
  "  written to the store before it is acknowledged and emitted as a typed event), a lease, a",
  "  timeout, retries, routing across workers with health and circuit state, gates for limits",
  "  and budgets, and a result kept for `get`/`list`. That bookkeeping is what the",
  "  microseconds buy; the DAG, priority, rate-limit and fairness rows show what p-queue does",
  "  not do. Against the queues that keep comparable state (bottleneck, BullMQ) Flotilla is",
  "  faster.",
  "- **Durable throughput against BullMQ + Redis.** The Redis here runs without persistence, as",
  "  BullMQ benchmarks usually do: it acknowledges from memory and a restart loses every job.",
  "  With the SQLite store a task's submission, its lease and its result are each committed",
  "  before they are acknowledged (WAL; the default `synchronous=full` also fsyncs every",
  "  commit), so a crash never loses an accepted task nor runs one twice while its holder",
  "  lives. Writes from one event-loop turn share a commit. The `synchronous=normal` rows show",
  "  the cost of the fsync: that setting keeps every guarantee across a process crash and gives",
  "  up only the last commits on a power loss (see `docs/persistence.md`).",
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
      "Produced by `npm run bench` (median of 3 runs after a warm-up).",
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
