import type { BenchContext } from "./report.js";

const fmt = (v: number) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2));

function value(
  ctx: BenchContext,
  scenario: string,
  caseName: string,
  subject: string,
  metric: string,
) {
  return ctx.rows.find(
    (r) =>
      r.scenario.startsWith(scenario) &&
      r.case === caseName &&
      r.subject === subject &&
      r.metric === metric,
  )?.value;
}

function checksLike(ctx: BenchContext, scenario: string, text: string) {
  return ctx.checks.filter((c) => c.scenario.startsWith(scenario) && c.name.includes(text));
}

/**
 * The targets the benchmarks are held to, each with what this run measured and whether it
 * is met, as Markdown lines.
 */
export function renderTargets(ctx: BenchContext): string {
  const lines = ["| target | measured | met |", "|---|---|---|"];
  const row = (target: string, measured: string, met: boolean | undefined) =>
    lines.push(`| ${target} | ${measured} | ${met === undefined ? "—" : met ? "yes" : "no"} |`);

  const overhead: string[] = [];
  let overheadMet = true;
  for (const c of [1, 16]) {
    const caseName = `concurrency ${c}, priorities on`;
    const f = value(ctx, "1.", caseName, "Flotilla", "µs per task");
    const p = value(ctx, "1.", caseName, "p-queue", "µs per task");
    if (f === undefined || p === undefined) continue;
    overhead.push(`c${c}: ${fmt(f)} vs ${fmt(p)} µs (${fmt(f / p)}×)`);
    if (f > p) overheadMet = false;
  }
  if (overhead.length)
    row(
      "Per-task overhead with priorities ≤ p-queue's (c1, c16; 20k tasks)",
      overhead.join("; "),
      overheadMet,
    );
  const fq = value(ctx, "1.", "concurrency 1, priorities off", "fastq", "µs per task");
  const fl = value(ctx, "1.", "concurrency 1, priorities off", "Flotilla", "µs per task");
  if (fq !== undefined && fl !== undefined)
    row(
      "Per-task overhead without priorities within 3× of fastq (c1)",
      `${fmt(fl)} vs ${fmt(fq)} µs (${fmt(fl / fq)}×)`,
      fl <= 3 * fq,
    );

  const ratio = ctx.rows.find(
    (r) => r.scenario.startsWith("2.") && r.metric === "enqueue cost ratio",
  );
  if (ratio)
    row(`Enqueue cost flat (±20%): ${ratio.case}`, `${fmt(ratio.value)}×`, ratio.value <= 1.2);

  const windows = checksLike(ctx, "3.", "no sliding");
  if (windows.length)
    row(
      "No sliding window above a limit",
      windows.map((c) => c.detail).join("; "),
      windows.every((c) => c.ok),
    );

  const fair = checksLike(ctx, "5.", "share within");
  if (fair.length)
    row(
      "Fairness within ±10% of weight",
      fair.map((c) => c.detail).join("; "),
      fair.every((c) => c.ok),
    );

  const dag = checksLike(ctx, "6.", "10k-node DAG planned");
  if (dag[0]) row("10k-node DAG planned in under 500 ms", dag[0].detail, dag[0].ok);

  const durable: string[] = [];
  let durableMet = true;
  for (const c of [16, 100]) {
    const f = value(ctx, "7.", `concurrency ${c}`, "Flotilla + SQLite", "tasks/s");
    const b = value(
      ctx,
      "7.",
      `concurrency ${c}`,
      "BullMQ + Redis (appendfsync always)",
      "tasks/s",
    );
    const v = value(ctx, "7.", `concurrency ${c}`, "BullMQ + Redis (no persistence)", "tasks/s");
    if (f === undefined || b === undefined) continue;
    durable.push(
      `c${c}: ${fmt(f)} vs ${fmt(b)} /s (${fmt(f / b)}×)` +
        (v === undefined ? "" : `; vs no persistence ${fmt(v)} /s (${fmt(f / v)}×)`),
    );
    if (f < b) durableMet = false;
  }
  if (durable.length)
    row(
      "Durable throughput (synchronous=full) ≥ BullMQ + Redis with appendfsync always, c16 and c100",
      durable.join("; "),
      durableMet,
    );

  const onPg: string[] = [];
  let onPgMet = true;
  for (const c of [16, 100]) {
    const f = value(ctx, "7.", `concurrency ${c}`, "Flotilla + PostgreSQL", "tasks/s");
    const p = value(ctx, "7.", `concurrency ${c}`, "pg-boss + PostgreSQL", "tasks/s");
    if (f === undefined || p === undefined) continue;
    onPg.push(`c${c}: ${fmt(f)} vs ${fmt(p)} /s (${fmt(f / p)}×)`);
    if (f < p) onPgMet = false;
  }
  if (onPg.length)
    row(
      "Durable throughput on PostgreSQL (one instance) ≥ pg-boss on the same server, c16 and c100",
      onPg.join("; "),
      onPgMet,
    );

  const hono = "Hono hello-world on @hono/node-server, own process (same stack)";
  for (const [what, label, bound] of [
    [
      "POST submit",
      "HTTP submit through flotilla serve (SQLite) ≥ 0.5× the same-stack hello-world, p99 ≤ 25 ms",
      0.5,
    ],
    ["GET task", "HTTP GET task through flotilla serve ≥ 0.7× the same-stack hello-world", 0.7],
  ] as const) {
    const caseName = `flotilla serve (SQLite): ${what}, 64 connections`;
    const f = value(ctx, "8.", caseName, "Flotilla", "throughput");
    const h = value(ctx, "8.", caseName, hono, "throughput");
    const p99 = value(ctx, "8.", caseName, "Flotilla", "p99 latency");
    if (f === undefined || h === undefined) continue;
    const latencyOk = what === "GET task" || (p99 !== undefined && p99 <= 25);
    row(
      label,
      `${fmt(f)} vs ${fmt(h)} req/s (${fmt(f / h)}×)${p99 === undefined ? "" : `, p99 ${fmt(p99)} ms`}`,
      f / h >= bound && latencyOk,
    );
  }
  for (const [what, label, bound] of [
    [
      "rate-limit keys holding a task",
      "Per-task cost flat (≤ 2×) from 1 to 10k held rate-limit keys",
      2,
    ],
    ["registered workers", "Per-task cost flat (≤ 2×) from 1 to 10k registered workers", 2],
    ["queued backlog", "Per-task cost at most logarithmic (≤ 2×) from a 1k to a 1M backlog", 2],
  ] as const) {
    const g = ctx.rows.find(
      (r) =>
        r.scenario.startsWith("12.") &&
        r.case.startsWith(`${what}:`) &&
        r.metric === "growth of the per-task cost",
    );
    if (g) row(label, `${g.case.slice(what.length + 2)}: ${fmt(g.value)}×`, g.value <= bound);
  }
  return lines.join("\n");
}
