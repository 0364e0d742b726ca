import { describe, expect, it } from "vitest";
import { FakeClock } from "../testing/index.js";
import { makeEntry, makeTask } from "./__tests__/fixtures.js";
import { ResourceManager } from "./manager.js";

describe("ResourceManager", () => {
  it("builds the gates from one config and reports stats", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 5, 1, 12) });
    const r = new ResourceManager({
      timeZone: "Europe/Berlin",
      limits: { openai: ["3/min", "10k tokens/min"] },
      budgets: [{ scope: "provider", key: "openai", costUsd: 1 }],
      prices: { openai: { "gpt-4o-mini": { input: 0.15, output: 0.6 } } },
      tenantConcurrency: { acme: 2, "*": 1 },
      admission: { intervalMs: 1000 },
      clock,
      sensor: { sample: () => ({ cpu: 0.1, memory: 0.1 }) },
    });
    expect(r.gates.map((g) => g.name)).toEqual([
      "admission",
      "concurrency",
      "rate-limit",
      "budget",
      "cost-ledger",
    ]);
    const w = makeEntry({ id: "w1", kind: "openai" });
    const t = makeTask({
      tenant: "acme",
      rateLimitKeys: ["openai"],
      payload: { model: "gpt-4o-mini" },
      estimate: { tokens: 1000 },
    });
    for (const g of r.gates) expect(g.check(t, w, clock.now()).ok).toBe(true);
    for (const g of r.gates) g.onDispatch?.(t, w, clock.now());
    const outcome = {
      status: "succeeded" as const,
      usage: { inputTokens: 1000, outputTokens: 1000 },
    };
    for (const g of r.gates) g.onSettle?.(t, w, outcome, clock.now());
    const s = r.stats();
    expect(s.today).toBe("2026-06-01");
    expect(s.totals).toEqual({ requests_today: 1, tokens_today: 2000, cost_today: 0.00075 });
    expect(s.providers.openai).toMatchObject({
      requests_today: 1,
      tokens_today: 2000,
      cost_today: 0.00075,
      remaining: { requests: 2, tokens: 8000, cost: 0.99925 },
    });
    expect(s.workers.w1?.requests_today).toBe(1);
    expect(s.tenants.acme).toMatchObject({ requests_today: 1, inFlight: 0, concurrencyLimit: 2 });
    expect(s.admission).toMatchObject({ level: "green", holding: false });
    expect(JSON.parse(JSON.stringify(s))).toEqual(s);
    r.stop();
  });

  it("forwards cost and pressure events", async () => {
    const r = new ResourceManager({
      admission: true,
      sensor: { sample: () => ({ cpu: 0, memory: 0 }) },
    });
    const seen: string[] = [];
    r.on("cost", (e) => seen.push(`cost:${e.taskId}`));
    r.on("pressure", (level) => seen.push(`pressure:${level}`));
    r.ledger.record(makeTask({ id: "x" }), makeEntry(), {
      status: "succeeded",
      usage: { inputTokens: 1 },
    });
    r.admission!.update({ cpu: 1, memory: 0 });
    expect(seen).toEqual(["cost:x", "pressure:red"]);
  });

  it.each([
    [{ limits: { openai: "5/fortnight" } }, 'limits.openai: unknown time unit "fortnight"'],
    [{ budgets: [{ costUsd: 0 }] }, "budgets[0].costUsd: costUsd must be greater than zero"],
    [{ prices: { openai: { x: { input: "1", output: 1 } } } }, "prices.openai.x.input"],
    [{ tenantConcurrency: { acme: -1 } }, "tenantConcurrency.acme: must be at least 1"],
    [{ admission: { holdAt: "purple" } }, "admission.holdAt"],
    [{ timeZone: "Moon/Base" }, 'resources.timeZone: unknown time zone "Moon/Base"'],
    [{ limit: {} }, 'resources: Unrecognized key: "limit"'],
  ])("rejects %j with a clear message", async (config, message) => {
    expect(() => new ResourceManager(config as never)).toThrow(
      expect.objectContaining({ code: "VALIDATION", message: expect.stringContaining(message) }),
    );
  });
});
