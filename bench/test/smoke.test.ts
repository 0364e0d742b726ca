import { describe, expect, it } from "vitest";
import { runBench } from "../src/run.js";

// The benchmarks' correctness checks at small sizes (times are not asserted here).
describe("benchmark smoke run", () => {
  it("passes every correctness check of every scenario", async () => {
    const ctx = await runBench({ smoke: true, quiet: true });
    const failed = ctx.checks
      .filter((c) => !c.ok)
      .map((c) => `${c.scenario} / ${c.name}: ${c.detail}`);
    expect(failed).toEqual([]);
    expect(ctx.checks.length).toBeGreaterThan(10);
    expect(ctx.rows.some((r) => r.subject.startsWith("BullMQ"))).toBe(true);
  }, 240_000);
});
