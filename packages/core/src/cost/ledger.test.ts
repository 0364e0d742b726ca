import { describe, expect, it } from "vitest";
import type { Logger } from "../logger.js";
import { silentLogger } from "../logger.js";
import { makeEntry, makeTask } from "../resources/__tests__/fixtures.js";
import { FakeClock } from "../testing/index.js";
import { CostModel } from "./costModel.js";
import { type CostEntry, CostLedger } from "./ledger.js";
import { DEFAULT_PRICES, formatUsd, PriceBook } from "./prices.js";

function recordingLogger() {
  const warnings: unknown[] = [];
  const logger: Logger = {
    ...silentLogger,
    warn: (obj: unknown) => warnings.push(obj),
    child: () => logger,
  };
  return { logger, warnings };
}

describe("PriceBook", () => {
  it("matches models by exact name, then longest prefix, then the provider's '*'", async () => {
    const p = new PriceBook({
      openai: { "gpt-4o": { input: 3, output: 12 } },
      local: { "*": { input: 0, output: 0 } },
    });
    expect(p.price("openai", "gpt-4o")).toEqual({ input: 3, output: 12 }); // overridden
    expect(p.price("openai", "gpt-4o-mini-2024-07-18")).toEqual(
      DEFAULT_PRICES.openai!["gpt-4o-mini"],
    );
    expect(p.price("anthropic", "claude-sonnet-4-20250514")).toEqual({ input: 3, output: 15 });
    expect(p.price("local", "llama3")).toEqual({ input: 0, output: 0 });
    expect(p.price("nobody", "x")).toBeUndefined();
    // 1000 in × $2.50/M + 500 out × $10/M = $0.0075
    expect(new PriceBook().costMicros({ provider: "openai", model: "gpt-4o" }, 1000, 500)).toBe(
      7500,
    );
    expect(formatUsd(7500)).toBe("$0.0075");
    expect(formatUsd(1_234_567)).toBe("$1.23");
  });

  it("rejects a malformed table", async () => {
    expect(() => new PriceBook({ openai: { x: { input: -1, output: 1 } } })).toThrow(
      /prices.openai.x.input/,
    );
  });
});

describe("CostLedger", () => {
  it("aggregates per task, worker, provider, model, tenant and day, and emits events", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1, 22, 30) }); // 23:30 in Berlin
    const ledger = new CostLedger({ clock, timeZone: "Europe/Berlin" });
    const events: CostEntry[] = [];
    ledger.on("cost", (e) => events.push(e));
    const w1 = makeEntry({ id: "w1", kind: "openai" });
    const w2 = makeEntry({ id: "w2", kind: "anthropic" });
    const t1 = makeTask({ tenant: "acme", payload: { model: "gpt-4o-mini" } });
    const t2 = makeTask({ tenant: "beta", payload: { model: "claude-sonnet-4-5" } });
    ledger.onSettle(
      t1,
      w1,
      { status: "succeeded", usage: { inputTokens: 10_000, outputTokens: 1000 } },
      clock.now(),
    );
    await clock.advance(3_600_000); // past midnight in Berlin
    ledger.onSettle(
      t2,
      w2,
      { status: "succeeded", usage: { inputTokens: 1000, outputTokens: 1000 } },
      clock.now(),
    );
    ledger.onSettle(t1, w1, { status: "failed", usage: { costUsd: 0.5 } }, clock.now());

    const s = ledger.snapshot();
    // gpt-4o-mini: 10k × 0.15 + 1k × 0.6 = 2100 µ$; sonnet: 1k × 3 + 1k × 15 = 18000 µ$
    expect(ledger.taskCost(t1.id)).toMatchObject({ requests: 2, costMicros: 2100 + 500_000 });
    expect(s.byWorker.w2).toMatchObject({ costMicros: 18_000, totalTokens: 2000 });
    expect(s.byProvider.openai?.costUsd).toBe(0.5021);
    expect(s.byModel["anthropic/claude-sonnet-4-5"]?.costMicros).toBe(18_000);
    expect(s.byTenant.beta?.requests).toBe(1);
    expect(Object.keys(s.byDay)).toEqual(["2026-01-01", "2026-01-02"]);
    expect(s.today).toBe("2026-01-02");
    expect(s.byDay["2026-01-02"]?.byProvider.anthropic?.costMicros).toBe(18_000);
    expect(s.total.costMicros).toBe(2100 + 500_000 + 18_000);
    expect(events.map((e) => [e.taskId, e.day, e.provider, e.costMicros])).toEqual([
      [t1.id, "2026-01-01", "openai", 2100],
      [t2.id, "2026-01-02", "anthropic", 18_000],
      [t1.id, "2026-01-02", "openai", 500_000],
    ]);
  });

  it("falls back to the estimate on a missing or malformed usage report and logs a warning", async () => {
    const { logger, warnings } = recordingLogger();
    const ledger = new CostLedger({
      logger,
      costModel: new CostModel({ prices: new PriceBook({ p: { "*": { input: 1, output: 1 } } }) }),
    });
    const w = makeEntry({ kind: "p" });
    const t = makeTask({ estimate: { tokens: 700 } });
    const bad = [
      undefined,
      null,
      "lots",
      { inputTokens: -5 },
      { outputTokens: Number.NaN },
      {},
      42,
    ];
    for (const usage of bad) {
      const e = ledger.record(t, w, { status: "succeeded", usage: usage as never });
      expect(e).toMatchObject({ source: "estimate", totalTokens: 700, costMicros: 700 });
    }
    expect(warnings).toHaveLength(bad.length);
    expect(warnings[3]).toMatchObject({
      problem: expect.stringMatching(/malformed usage report \(inputTokens/),
    });
  });

  it("counts a failed attempt that reported nothing as one request at no cost, without a warning", async () => {
    const { logger, warnings } = recordingLogger();
    const ledger = new CostLedger({ logger });
    const t = makeTask({ estimate: { tokens: 700, costUsd: 0.5 } });
    const e = ledger.record(t, makeEntry(), { status: "failed", retryAfterMs: 1000 });
    expect(e).toMatchObject({ source: "none", requests: 1, totalTokens: 0, costMicros: 0 });
    expect(warnings).toHaveLength(0);
    // A malformed report is still a warning, whatever the status.
    ledger.record(t, makeEntry(), { status: "failed", usage: { inputTokens: -1 } as never });
    expect(warnings).toHaveLength(1);
  });

  it("rejects an unknown time zone", async () => {
    expect(() => new CostLedger({ timeZone: "Nowhere/Town" })).toThrow(
      /unknown time zone "Nowhere\/Town"/,
    );
  });
});

describe("PriceBook layers", () => {
  it("keeps prices set one at a time across a new override table", () => {
    const prices = new PriceBook({ openai: { "gpt-4o": { input: 2, output: 8 } } });
    prices.set("vllm", "*", { input: 0.2, output: 0.2 });
    prices.setOverrides({});
    expect(prices.price("openai", "gpt-4o")).toEqual(DEFAULT_PRICES.openai?.["gpt-4o"]);
    expect(prices.price("vllm", "llama3")).toEqual({ input: 0.2, output: 0.2 });
    expect(() => prices.set("vllm", "*", { input: -1, output: 0 })).toThrow(/price\.vllm/);
    expect(prices.price("vllm", "llama3")).toEqual({ input: 0.2, output: 0.2 });
  });
});

describe("CostLedger per-task figures", () => {
  it("keeps the newest maxTasks tasks, evicting the oldest first, also when restored", () => {
    const now = Date.UTC(2026, 5, 1, 12);
    const ledger = new CostLedger({ maxTasks: 3, clock: new FakeClock({ now: now + 1 }) });
    const lines = Array.from({ length: 5 }, (_, i) => ({
      at: now - 1000 + i,
      taskId: `t${i}`,
      usage: { inputTokens: 10 * (i + 1) },
    }));
    ledger.restore(lines, now);
    expect(ledger.taskCost("t0")).toBeUndefined();
    expect(ledger.taskCost("t1")).toBeUndefined();
    expect(ledger.taskCost("t4")?.inputTokens).toBe(50);
    expect(ledger.day().total.inputTokens).toBe(150); // the day keeps every line
  });
});
