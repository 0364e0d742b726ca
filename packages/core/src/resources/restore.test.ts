import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Orchestrator } from "../orchestrator/orchestrator.js";
import { SqliteStore } from "../store/sqlite.js";
import type { UsageEntry } from "../store/types.js";
import type { Usage } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import { FakeClock } from "../testing/index.js";
import { FunctionWorker } from "../worker/base.js";
import { makeEntry, makeTask } from "./__tests__/fixtures.js";
import { ResourceManager } from "./manager.js";

const CONFIG = {
  timeZone: "Europe/Berlin",
  limits: { openai: ["5/min", "3k tokens/min"] },
  budgets: [
    { name: "acme-daily", scope: "tenant" as const, key: "acme", costUsd: 1 },
    {
      name: "openai-hour",
      scope: "provider" as const,
      key: "openai",
      requests: 8,
      reset: "sliding" as const,
      period: "1h",
    },
  ],
  prices: { openai: { "gpt-4o-mini": { input: 0.15, output: 0.6 } } },
};

const worker = makeEntry({ id: "w1", kind: "openai" });

/**
 * Runs `task` through every gate as an orchestrator would (check → dispatch → settle) and
 * returns the usage ledger line the orchestrator records for it.
 */
function run(
  r: ResourceManager,
  clock: FakeClock,
  task: TaskRecord,
  usage: Usage,
  ms = 200,
): UsageEntry {
  for (const g of r.gates)
    expect(g.check(task, worker, clock.now()), g.name).toMatchObject({ ok: true });
  for (const g of r.gates) g.onDispatch?.(task, worker, clock.now());
  const at = clock.now() + ms;
  for (const g of r.gates) g.onSettle?.(task, worker, { status: "succeeded", usage }, at);
  const line: UsageEntry = { at, taskId: task.id, workerId: worker.id, usage };
  if (task.rateLimitKeys[0] !== undefined) line.provider = task.rateLimitKeys[0];
  const model = (task.payload as { model?: string }).model;
  if (model !== undefined) line.model = model;
  if (task.tenant !== undefined) line.tenant = task.tenant;
  return line;
}

function gatesSay(r: ResourceManager, task: TaskRecord, now: number) {
  for (const g of r.gates) {
    const d = g.check(task, worker, now);
    if (!d.ok) return { gate: g.name, retryAt: d.retryAt, reason: d.reason };
  }
  return { gate: undefined };
}

const task = (costUsd: number, over: Partial<TaskRecord> = {}) =>
  makeTask({
    tenant: "acme",
    rateLimitKeys: ["openai"],
    payload: { model: "gpt-4o-mini" },
    estimate: { tokens: 100, costUsd },
    ...over,
  });

describe("restore after a restart", () => {
  it("rate-limit windows continue: the first minute after a restart cannot spend the limit again", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 5, 1, 10) });
    const before = new ResourceManager({ ...CONFIG, clock });
    const lines: UsageEntry[] = [];
    for (let i = 0; i < 5; i++) {
      lines.push(run(before, clock, task(0.01), { inputTokens: 50, outputTokens: 50 }));
      await clock.advance(1000);
    }
    // The limit (5/min) is spent; the process dies 10 s later and comes back.
    await clock.advance(10_000);
    const after = new ResourceManager({ ...CONFIG, clock });
    const fresh = new ResourceManager({ ...CONFIG, clock }); // what happened before restore existed
    expect(gatesSay(fresh, task(0.01), clock.now()).gate).toBeUndefined();
    after.restore(lines, clock.now());
    const say = gatesSay(after, task(0.01), clock.now());
    expect(say.gate).toBe("rate-limit");
    // Each restored call counts from when it was recorded (its settle time, 200 ms after
    // dispatch), for the window, its margin (50 ms for a minute) and a clock tick.
    expect(say.retryAt).toBe(lines[0]!.at + 60_000 + 50 + 1);
    expect(after.limiter.stats().openai?.limits.map((l) => l.used)).toEqual([5, 500]);
    // No window across the restart holds more than 5 calls.
    await clock.advanceTo(say.retryAt!);
    const next = run(after, clock, task(0.01), { inputTokens: 50, outputTokens: 50 });
    const times = [...lines, next].map((l) => l.at);
    for (const s of times)
      expect(times.filter((t) => t >= s && t < s + 60_000).length).toBeLessThanOrEqual(5);
    before.stop();
    after.stop();
    fresh.stop();
  });

  it("a daily budget holds to the cent across a restart, in its time zone", async () => {
    // 23:00 in Berlin on 1 June (21:00 UTC); yesterday's spend must not count.
    const clock = new FakeClock({ now: Date.UTC(2026, 4, 31, 21, 30) });
    const before = new ResourceManager({ ...CONFIG, clock });
    const lines: UsageEntry[] = [];
    lines.push(run(before, clock, task(0.5), { inputTokens: 10, outputTokens: 10, costUsd: 0.5 })); // 31 May, Berlin
    await clock.advanceTo(Date.UTC(2026, 4, 31, 22, 30)); // 00:30 on 1 June in Berlin
    for (const cost of [0.3, 0.3, 0.3]) {
      lines.push(
        run(before, clock, task(cost), { inputTokens: 10, outputTokens: 10, costUsd: cost }),
      );
      await clock.advance(60_000);
    }
    // Priced from the table: 1000 in × $0.15/M + 1000 out × $0.60/M = $0.00075.
    lines.push(run(before, clock, task(0.00075), { inputTokens: 1000, outputTokens: 1000 }));
    await clock.advance(60_000);
    expect(before.budgets.stats().find((b) => b.name === "acme-daily")?.used.costUsd).toBeCloseTo(
      0.90075,
      9,
    );

    await clock.advance(30 * 60_000);
    const after = new ResourceManager({ ...CONFIG, clock });
    after.restore(lines, clock.now());
    const acme = after.budgets.stats().find((b) => b.name === "acme-daily");
    expect(acme?.used).toEqual({ requests: 4, tokens: 2060, costUsd: 0.90075 });
    expect(acme?.remaining.costUsd).toBe(0.09925);
    // $0.09925 still fits; one micro-dollar more does not.
    expect(gatesSay(after, task(0.09926), clock.now())).toMatchObject({
      gate: "budget",
      retryAt: Date.UTC(2026, 5, 1, 22), // next midnight in Berlin
    });
    expect(gatesSay(after, task(0.09925), clock.now()).gate).toBeUndefined();
    // The sliding hour holds the 4 calls after midnight; the one at 23:30 is more than 1 h old.
    const hour = after.budgets.stats().find((b) => b.name === "openai-hour");
    expect(hour?.used.requests).toBe(4);
    // Today's cost totals are back, by tenant, provider, model and worker; yesterday's are not.
    const today = after.ledger.day();
    expect(today.total.costUsd).toBe(0.90075);
    expect(today.total.requests).toBe(4);
    expect(today.byTenant.acme?.costUsd).toBe(0.90075);
    expect(today.byKey.openai?.costUsd).toBe(0.90075);
    expect(after.stats().totals).toEqual({
      requests_today: 4,
      tokens_today: 2060,
      cost_today: 0.90075,
    });
    before.stop();
    after.stop();
  });

  it("a sliding budget counts the last period across the restart and frees as lines age out", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 5, 1, 10) });
    const before = new ResourceManager({ ...CONFIG, clock });
    const lines: UsageEntry[] = [];
    for (let i = 0; i < 8; i++) {
      lines.push(
        run(before, clock, task(0.01), { inputTokens: 1, outputTokens: 1, costUsd: 0.01 }),
      );
      await clock.advance(5 * 60_000);
    }
    const after = new ResourceManager({ ...CONFIG, clock });
    after.restore(lines, clock.now());
    const say = gatesSay(after, task(0.01), clock.now());
    expect(say).toMatchObject({ gate: "budget", retryAt: lines[0]!.at + 3_600_000 });
    await clock.advanceTo(say.retryAt!);
    expect(gatesSay(after, task(0.01), clock.now()).gate).toBeUndefined();
    before.stop();
    after.stop();
  });

  it("restores once, ignores lines counted live and malformed lines", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 5, 1, 10) });
    const before = new ResourceManager({ ...CONFIG, clock });
    const old = run(before, clock, task(0.2), { inputTokens: 1, outputTokens: 1, costUsd: 0.2 });
    await clock.advance(1000);
    const r = new ResourceManager({ ...CONFIG, clock });
    await clock.advance(1000);
    const live = run(r, clock, task(0.3), { inputTokens: 1, outputTokens: 1, costUsd: 0.3 });
    const bad = { at: Number.NaN, usage: { costUsd: 5 } } as UsageEntry;
    const junk = { at: clock.now() - 10, tenant: "acme", usage: { costUsd: -1 } } as UsageEntry;
    r.restore([old, live, bad, junk], clock.now());
    r.restore([old, live], clock.now()); // a second start: nothing counted twice
    expect(r.ledger.day().total.costUsd).toBe(0.5);
    expect(r.budgets.stats().find((b) => b.name === "acme-daily")?.used.costUsd).toBe(0.5);
    expect(r.limiter.stats().openai?.limits[0]?.used).toBe(2);
    before.stop();
    r.stop();
  });

  it("each gate exposes restore, as the orchestrator calls it at start", () => {
    const r = new ResourceManager(CONFIG);
    const names = r.gates.filter((g) => typeof g.restore === "function").map((g) => g.name);
    expect(names).toEqual(["rate-limit", "budget", "cost-ledger"]);
    r.stop();
  });

  it("end to end: an orchestrator restarted on the same SQLite store keeps the day's budget to the cent", async () => {
    const dir = mkdtempSync(join(tmpdir(), "flotilla-restore-"));
    const path = join(dir, "flotilla.db");
    const clock = new FakeClock({ now: Date.UTC(2026, 5, 1, 10) });
    const config = {
      timeZone: "Europe/Berlin",
      limits: { openai: "100/min" },
      budgets: [{ name: "acme-daily", scope: "tenant" as const, key: "acme", costUsd: 1 }],
    };
    const boot = async () => {
      const resources = new ResourceManager({ ...config, clock });
      const store = new SqliteStore({ path, clock });
      const o = new Orchestrator({ clock, store, gates: resources.gates });
      await o.register(
        new FunctionWorker({
          id: "w",
          taskTypes: ["llm"],
          fn: async (_p, ctx) => {
            ctx.reportUsage({ inputTokens: 10, outputTokens: 10, costUsd: 0.3 });
            return "ok";
          },
        }),
      );
      await o.start();
      return { o, resources, store };
    };
    const spec = {
      type: "llm",
      tenant: "acme",
      rateLimitKey: "openai",
      estimate: { costUsd: 0.3 },
    };
    try {
      const first = await boot();
      for (let i = 0; i < 3; i++) {
        const h = await first.o.submit(spec);
        await clock.advance(10);
        expect((await h.result()).status).toBe("succeeded");
      }
      await first.o.stop();
      await first.store.close();
      first.resources.stop();
      await clock.advance(60_000);

      const second = await boot();
      expect(second.resources.ledger.day().total.costUsd).toBe(0.9);
      expect(second.resources.budgets.stats()[0]?.used.costUsd).toBe(0.9);
      // $0.10 are left: a $0.10 task goes; then the next one waits for the next day in Berlin.
      const small = await second.o.submit({ ...spec, estimate: { costUsd: 0.1 } });
      await clock.advance(10);
      expect((await small.result()).status).toBe("succeeded");
      const big = await second.o.submit(spec);
      await clock.advance(60_000);
      expect((await second.o.get(big.id))?.status).toBe("queued");
      await second.o.stop({ mode: "abort" });
      await second.store.close();
      second.resources.stop();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
