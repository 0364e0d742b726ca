/** What a scenario measures and checks. */
export interface Row {
  scenario: string;
  /** The case within the scenario, e.g. "concurrency 16, priorities on". */
  case: string;
  subject: string;
  metric: string;
  value: number;
  unit: string;
  /** Which direction is better, for the ratio column. */
  better: "lower" | "higher";
  note?: string;
}

export interface Check {
  scenario: string;
  name: string;
  ok: boolean;
  detail: string;
}

export interface BenchContext {
  /** Small sizes, correctness only (CI). */
  smoke: boolean;
  rows: Row[];
  checks: Check[];
  /** Redis without persistence. */
  redis?: { host: string; port: number; version: string };
  /** Redis with `appendonly yes`, `appendfsync always`. */
  redisDurable?: { host: string; port: number; version: string };
  /** A PostgreSQL server of the bench's own (fsync and synchronous_commit on). */
  postgres?: { url: string; version: string };
  log(msg: string): void;
}

export interface Scenario {
  name: string;
  title: string;
  run(ctx: BenchContext): Promise<void>;
}

export function check(
  ctx: BenchContext,
  scenario: string,
  name: string,
  ok: boolean,
  detail: string,
): void {
  ctx.checks.push({ scenario, name, ok, detail });
  ctx.log(`  [${ok ? "ok" : "FAIL"}] ${name}: ${detail}`);
}

function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/**
 * Renders rows as Markdown tables, one per scenario case and metric, with each subject's
 * ratio to Flotilla ("× Flotilla": >1 means the peer is slower/worse for lower-is-better).
 */
export function renderMarkdown(rows: readonly Row[], checks: readonly Check[]): string {
  const out: string[] = [];
  const byScenario = new Map<string, Row[]>();
  for (const r of rows) byScenario.set(r.scenario, [...(byScenario.get(r.scenario) ?? []), r]);
  for (const [scenario, srows] of byScenario) {
    out.push(`### ${scenario}`, "");
    out.push("| case | metric | subject | value | vs Flotilla |", "|---|---|---|---:|---:|");
    const groups = new Map<string, Row[]>();
    for (const r of srows) {
      const k = `${r.case}\u0000${r.metric}`;
      groups.set(k, [...(groups.get(k) ?? []), r]);
    }
    for (const group of groups.values()) {
      const base = group.find((r) => r.subject.startsWith("Flotilla"));
      for (const r of group) {
        let ratio = "";
        if (base && r !== base && base.value !== 0) {
          ratio = `${fmt(r.value / base.value)}×`;
        } else if (r === base) ratio = "1×";
        const value = `${fmt(r.value)} ${r.unit}${r.note ? ` (${r.note})` : ""}`;
        out.push(`| ${r.case} | ${r.metric} | ${r.subject} | ${value} | ${ratio} |`);
      }
    }
    const sc = checks.filter((c) => c.scenario === scenario);
    if (sc.length) {
      out.push("", "Checks:", "");
      for (const c of sc) out.push(`- ${c.ok ? "✅" : "❌"} ${c.name}: ${c.detail}`);
    }
    out.push("");
  }
  return out.join("\n");
}
