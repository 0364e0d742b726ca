import { describe, expect, it } from "vitest";
import type { WorkerEntry } from "../registry/types.js";
import type { UsageEntry } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import { FakeClock } from "../testing/index.js";
import { makeEntry, makeTask } from "./__tests__/fixtures.js";
import { ResourceManager } from "./manager.js";

/** Runs one task through every gate (it must be admitted) and settles it with `usage`. */
function run(r: ResourceManager, task: TaskRecord, worker: WorkerEntry, now: number) {
  for (const g of r.gates) {
    const d = g.check(task, worker, now);
    if (!d.ok) throw new Error(`gate ${g.name} refused: ${d.reason}`);
  }
  for (const g of r.gates) g.onDispatch?.(task, worker, now);
  for (const g of r.gates) g.onStart?.(task, worker, now);
  const outcome = { status: "succeeded" as const, usage: { inputTokens: 100, outputTokens: 100 } };
  for (const g of r.gates) g.onSettle?.(task, worker, outcome, now);
}

/** The first gate that refuses the task now, or undefined. */
function refusal(r: ResourceManager, task: TaskRecord, worker: WorkerEntry, now: number) {
  for (const g of r.gates) {
    const d = g.check(task, worker, now);
    if (!d.ok) return d.reason;
  }
  return undefined;
}

describe("ResourceManager.configure", () => {
  const clock = () => new FakeClock({ now: Date.UTC(2026, 5, 1, 12) });
  const worker = makeEntry({ id: "w1", kind: "openai" });
  const call = (id: string, tenant = "acme") =>
    makeTask({ id, tenant, rateLimitKeys: ["openai"], payload: { model: "gpt-4o-mini" } });

  it("raises a limit without opening a new burst: calls already counted stay counted", () => {
    const c = clock();
    const r = new ResourceManager({ clock: c, limits: { openai: ["3/min"] }, limitMarginMs: 0 });
    for (let i = 0; i < 3; i++) run(r, call(`t${i}`), worker, c.now());
    expect(refusal(r, call("t3"), worker, c.now())).toMatch(/openai/);

    r.configure({ limits: { openai: ["5/min"] }, limitMarginMs: 0 });
    run(r, call("t3"), worker, c.now());
    run(r, call("t4"), worker, c.now());
    // 3 before the change + 2 after = the new limit of 5 in this minute.
    expect(refusal(r, call("t5"), worker, c.now())).toMatch(/openai/);
    expect(r.stats().providers.openai?.limits[0]).toMatchObject({ limit: 5, used: 5 });
    expect(r.config().limits).toEqual({ openai: ["5/min"] });
    r.stop();
  });

  it("removes the limits the config made and keeps those added at run time", () => {
    const c = clock();
    const r = new ResourceManager({ clock: c, limits: { openai: ["1/min"] } });
    r.limiter.setLimits("worker:w1", "1/min");
    r.configure({ limits: {} });
    expect(r.limiter.getLimits("openai")).toEqual([]);
    expect(r.limiter.getLimits("worker:w1")).toHaveLength(1);
    r.stop();
  });

  it("keeps a budget's spend when only its cap changes, and starts a new budget from the ledger", () => {
    const c = clock();
    const r = new ResourceManager({
      clock: c,
      budgets: [{ scope: "global", requests: 2 }],
    });
    run(r, call("a"), worker, c.now());
    run(r, call("b"), worker, c.now());
    expect(refusal(r, call("c"), worker, c.now())).toMatch(/budget/);

    const history: UsageEntry[] = [
      {
        at: c.now(),
        taskId: "a",
        workerId: "w1",
        provider: "openai",
        tenant: "acme",
        usage: { requests: 1, inputTokens: 100, outputTokens: 100 },
      },
    ];
    const { restartRequired } = r.configure(
      {
        budgets: [
          { scope: "global", requests: 3 },
          { scope: "tenant", key: "acme", requests: 1 },
        ],
      },
      history,
    );
    expect(restartRequired).toEqual([]);
    const byName = Object.fromEntries(r.budgets.stats(c.now()).map((b) => [b.name, b]));
    expect(byName["global/day"]?.used.requests).toBe(2); // kept, not reset
    expect(byName["tenant:acme/day"]?.used.requests).toBe(1); // from the ledger line
    // The tenant budget (1, already used by the ledger line) now holds acme's next call.
    expect(refusal(r, call("c"), worker, c.now())).toMatch(/tenant:acme/);
    run(r, call("d", "beta"), worker, c.now()); // the global budget has room for one more
    expect(refusal(r, call("e", "beta"), worker, c.now())).toMatch(/global/);
    r.stop();
  });

  it("changes prices and tenant caps at once", () => {
    const c = clock();
    const r = new ResourceManager({ clock: c, tenantConcurrency: { acme: 1 } });
    const t = call("a");
    for (const g of r.gates) g.onDispatch?.(t, worker, c.now());
    expect(refusal(r, call("b"), worker, c.now())).toMatch(/concurrency cap \(1\)/);
    r.configure({
      tenantConcurrency: { acme: 2, "*": 1 },
      prices: { openai: { "gpt-4o-mini": { input: 1, output: 1 } } },
    });
    expect(refusal(r, call("b"), worker, c.now())).toBeUndefined();
    expect(r.concurrency.limitOf("someone-else")).toBe(1);
    expect(r.costModel.prices.price("openai", "gpt-4o-mini")).toEqual({ input: 1, output: 1 });
    r.configure({});
    expect(r.concurrency.limitOf("acme")).toBeUndefined();
    expect(r.costModel.prices.price("openai", "gpt-4o-mini")).toEqual({
      input: 0.15,
      output: 0.6,
    });
    r.stop();
  });

  it("lists settings that need a restart and keeps their old values", () => {
    const r = new ResourceManager({ clock: clock(), timeZone: "UTC" });
    const out = r.configure({ timeZone: "Europe/Berlin", limits: { openai: "10/s" } });
    expect(out.restartRequired).toEqual(["timeZone"]);
    expect(r.config()).toEqual({ timeZone: "UTC", limits: { openai: "10/s" } });
    expect(r.stats().timeZone).toBe("UTC");
    r.stop();
  });

  it("changes nothing when any part of the new config is bad", () => {
    const r = new ResourceManager({
      clock: clock(),
      limits: { openai: ["3/min"] },
      budgets: [{ scope: "global", requests: 2 }],
    });
    expect(() =>
      r.configure({
        limits: { openai: ["9/min"] },
        budgets: [{ scope: "global", requests: 0 }],
      }),
    ).toThrow(/budgets\[0\]\.requests/);
    expect(r.limiter.getLimits("openai")[0]?.limit).toBe(3);
    expect(() => r.configure({ limits: { openai: "5/fortnight" } })).toThrow(
      /limits\.openai: unknown time unit "fortnight"/,
    );
    expect(() => r.configure({ tenantConcurrency: { acme: 0 } })).toThrow(
      /tenantConcurrency\.acme/,
    );
    expect(r.config().limits).toEqual({ openai: ["3/min"] });
    r.stop();
  });
});
