import { describe, expect, it } from "vitest";
import { CostModel } from "../cost/costModel.js";
import { PriceBook } from "../cost/prices.js";
import { makeEntry, makeTask } from "../resources/__tests__/fixtures.js";
import type { GateDecision } from "../resources/gate.js";
import { FakeClock } from "../testing/index.js";
import { Budgets } from "./budgets.js";
import { dayBounds, dayKey } from "./calendar.js";

const worker = makeEntry();

function run(b: Budgets, task = makeTask(), now = 0): GateDecision {
  const d = b.check(task, worker, now);
  if (d.ok) b.onDispatch(task, worker, now);
  return d;
}

describe("Budgets", () => {
  it("holds a cost budget to the cent with the fail policy, reconciling actual cost", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const b = new Budgets({
      clock,
      budgets: [{ name: "daily-spend", costUsd: 1, policy: "fail" }],
    });
    const now = clock.now();
    const tasks = [0, 1, 2].map(() => makeTask({ estimate: { costUsd: 0.3 } }));
    for (const t of tasks) expect(run(b, t, now).ok).toBe(true);
    const fourth = makeTask({ estimate: { costUsd: 0.3 } });
    const d = b.check(fourth, worker, now);
    expect(d.ok).toBe(false);
    if (d.ok) return;
    expect(d.fail?.code).toBe("QUOTA_EXCEEDED");
    expect(d.fail?.message).toBe(
      'budget "daily-spend" exceeded: cost limit $1.00, used $0.90, this task needs $0.30 (per day in UTC)',
    );
    expect(d.fail?.details).toMatchObject({
      budget: "daily-spend",
      limit: 1,
      used: 0.9,
      metric: "cost",
    });
    // The first call really cost 9 cents: 21 cents come back.
    b.onSettle(tasks[0]!, worker, { status: "succeeded", usage: { costUsd: 0.09 } }, now);
    expect(run(b, fourth, now).ok).toBe(true); // 0.69 + 0.30 = 0.99
    expect(b.check(makeTask({ estimate: { costUsd: 0.02 } }), worker, now).ok).toBe(false); // 1.01
    expect(run(b, makeTask({ estimate: { costUsd: 0.01 } }), now).ok).toBe(true); // exactly 1.00
    expect(b.check(makeTask({ estimate: { costUsd: 0.000001 } }), worker, now).ok).toBe(false);
    expect(b.check(makeTask(), worker, now).ok).toBe(false); // no estimate, nothing left
    expect(b.stats(now)[0]).toMatchObject({ used: { costUsd: 1 }, remaining: { costUsd: 0 } });
  });

  it("holds a cost budget to the cent with the wait policy, until the next calendar day", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 6, 1, 20) }); // 22:00 in Berlin
    const b = new Budgets({ clock, timeZone: "Europe/Berlin", budgets: [{ costUsd: 0.1 }] });
    const cents = (n: number) => makeTask({ estimate: { costUsd: n / 100 } });
    for (let i = 0; i < 3; i++) expect(run(b, cents(3), clock.now()).ok).toBe(true); // $0.09
    const d = b.check(cents(2), worker, clock.now());
    const midnight = Date.UTC(2026, 6, 1, 22); // 00:00 CEST
    expect(d).toMatchObject({ ok: false, retryAt: midnight });
    expect(!d.ok && d.fail).toBeUndefined();
    expect(run(b, cents(1), clock.now()).ok).toBe(true); // exactly $0.10
    expect(b.check(cents(0.0001), worker, clock.now()).ok).toBe(false);
    await clock.advanceTo(midnight);
    expect(run(b, cents(10), clock.now()).ok).toBe(true);
    expect(b.check(cents(1), worker, clock.now()).ok).toBe(false);
  });

  it("waits until local midnight in the configured zone, then resets", async () => {
    // 2026-03-07 22:00 in New York (UTC-5) is 03:00 UTC on the 8th.
    const clock = new FakeClock({ now: Date.UTC(2026, 2, 8, 3, 0) });
    const b = new Budgets({
      clock,
      timeZone: "America/New_York",
      budgets: [{ scope: "global", requests: 2 }],
    });
    expect(run(b, makeTask(), clock.now()).ok).toBe(true);
    expect(run(b, makeTask(), clock.now()).ok).toBe(true);
    const d = b.check(makeTask(), worker, clock.now());
    const midnight = Date.UTC(2026, 2, 8, 5, 0); // 00:00 EST
    expect(d).toMatchObject({ ok: false, retryAt: midnight });
    expect(!d.ok && d.reason).toMatch(/requests limit 2, used 2.*per day in America\/New_York/);
    await clock.advanceTo(midnight - 1);
    expect(b.check(makeTask(), worker, clock.now()).ok).toBe(false);
    await clock.advanceTo(midnight);
    expect(run(b, makeTask(), clock.now()).ok).toBe(true);
    expect(b.stats()[0]).toMatchObject({ used: { requests: 1 }, windowStart: midnight });
    // That day is 23 hours long (clocks spring forward on 2026-03-08).
    expect(b.stats()[0]!.windowEnd! - midnight).toBe(23 * 3_600_000);
  });

  it("a sliding budget frees up as old usage leaves the window", async () => {
    const clock = new FakeClock({ now: 0 });
    const b = new Budgets({
      clock,
      budgets: [{ scope: "global", tokens: 1000, reset: "sliding", period: "1h" }],
    });
    expect(run(b, makeTask({ estimate: { tokens: 600 } }), 0).ok).toBe(true);
    expect(run(b, makeTask({ estimate: { tokens: 300 } }), 60_000).ok).toBe(true);
    const d = b.check(makeTask({ estimate: { tokens: 500 } }), worker, 120_000);
    expect(d).toMatchObject({ ok: false, retryAt: 3_600_000 });
    expect(b.check(makeTask({ estimate: { tokens: 500 } }), worker, 3_600_000).ok).toBe(true);
  });

  it("tenant budgets are separate per tenant; provider budgets follow rate-limit keys", async () => {
    const b = new Budgets({
      budgets: [
        { scope: "tenant", requests: 1 },
        { scope: "provider", key: "openai", tokens: 100, policy: "fail" },
      ],
    });
    expect(run(b, makeTask({ tenant: "a" })).ok).toBe(true);
    expect(b.check(makeTask({ tenant: "a" }), worker, 0).ok).toBe(false);
    expect(
      run(b, makeTask({ tenant: "b", rateLimitKeys: ["openai"], estimate: { tokens: 80 } })).ok,
    ).toBe(true);
    const d = b.check(
      makeTask({ tenant: "c", rateLimitKeys: ["openai"], estimate: { tokens: 30 } }),
      worker,
      0,
    );
    expect(!d.ok && d.fail?.message).toMatch(
      /budget "provider:openai\/day".*tokens limit 100, used 80.*provider "openai"/,
    );
    expect(
      run(b, makeTask({ tenant: "c", rateLimitKeys: ["anthropic"], estimate: { tokens: 30 } })).ok,
    ).toBe(true);
  });

  it("reconciles tokens with the reported usage and falls back to the estimate when it is malformed", async () => {
    const b = new Budgets({ budgets: [{ tokens: 1000 }] });
    const t1 = makeTask({ estimate: { tokens: 500 } });
    const t2 = makeTask({ estimate: { tokens: 300 } });
    run(b, t1);
    run(b, t2);
    b.onSettle(
      t1,
      worker,
      { status: "succeeded", usage: { inputTokens: 600, outputTokens: 100 } },
      0,
    );
    b.onSettle(t2, worker, { status: "succeeded", usage: { inputTokens: "many" } as never }, 0);
    expect(b.stats(0)[0]!.used.tokens).toBe(1000);
  });

  it("gives back the reservation of a failed attempt that reported no usage", async () => {
    const b = new Budgets({ budgets: [{ costUsd: 1, policy: "fail" }] });
    const t = makeTask({ estimate: { costUsd: 0.75 } });
    run(b, t);
    expect(b.check(makeTask({ estimate: { costUsd: 0.5 } }), worker, 0).ok).toBe(false);
    b.onSettle(t, worker, { status: "failed", retryAfterMs: 2000 }, 0);
    expect(b.stats(0)[0]!.used).toEqual({ requests: 1, tokens: 0, costUsd: 0 });
    expect(b.check(makeTask({ estimate: { costUsd: 0.5 } }), worker, 0).ok).toBe(true);
  });

  it("prices estimated tokens with the price table when no cost estimate is given", async () => {
    const costModel = new CostModel({
      prices: new PriceBook({ acme: { "big-1": { input: 10, output: 30 } } }, { defaults: false }),
    });
    const b = new Budgets({ costModel, budgets: [{ costUsd: 0.05, policy: "fail" }] });
    const w = makeEntry({ kind: "acme", labels: { model: "big-1" } });
    const task = () => makeTask({ estimate: { inputTokens: 1000, outputTokens: 1000 } }); // $0.04
    expect(b.check(task(), w, 0).ok).toBe(true);
    b.onDispatch(task(), w, 0);
    const d = b.check(task(), w, 0);
    expect(!d.ok && d.reason).toMatch(/cost limit \$0.05, used \$0.04, this task needs \$0.04/);
  });

  it.each([
    [[{ costUsd: -1 }], "budgets[0].costUsd: costUsd must be greater than zero"],
    [[{ scope: "team", requests: 1 }], "budgets[0].scope"],
    [[{}], "budgets[0]: give at least one of requests, tokens or costUsd"],
    [
      [{ requests: 1, timeZone: "Mars/Olympus" }],
      'budgets[0].timeZone: unknown time zone "Mars/Olympus"',
    ],
    [[{ requests: 1, period: "week" }], 'budgets[0].period: a calendar budget resets per "day"'],
    [
      [{ requests: 1, reset: "sliding", period: "0h" }],
      'budgets[0].period: window "0h" must be longer than zero',
    ],
    [
      [{ requests: 1, reset: "sliding", period: "3 fortnights" }],
      "budgets[0].period: unknown time unit",
    ],
  ])("rejects %j with a clear message", async (budgets, message) => {
    expect(() => new Budgets({ budgets: budgets as never })).toThrow(
      expect.objectContaining({ code: "VALIDATION", message: expect.stringContaining(message) }),
    );
  });
});

describe("Budgets per worker, added and removed at run time", () => {
  it("counts each worker on its own, restores from the ledger by worker, and can be changed live", () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1, 12) });
    const b = new Budgets({
      clock,
      budgets: [{ scope: "worker", key: "w1", requests: 2, policy: "fail" }],
    });
    const w1 = makeEntry({ id: "w1" });
    const w2 = makeEntry({ id: "w2" });
    const now = clock.now();
    b.restore(
      [
        {
          at: now - 1_000,
          workerId: "w1",
          usage: { requests: 1, inputTokens: 10, outputTokens: 5 },
        },
      ],
      now,
    );
    const t1 = makeTask();
    expect(b.check(t1, w1, now).ok).toBe(true);
    b.onDispatch(t1, w1, now);
    const d = b.check(makeTask(), w1, now);
    expect(!d.ok && d.fail?.message).toBe(
      'budget "worker:w1/day" exceeded: requests limit 2, used 2, this task needs 1 (per day in UTC, worker "w1")',
    );
    expect(b.check(makeTask(), w2, now).ok).toBe(true); // another worker: not this budget
    // Added live with today's ledger: w2's earlier call today counts, yesterday's does not.
    const history = [
      { at: now - 86_400_000, workerId: "w2", usage: { requests: 1, inputTokens: 1 } },
      { at: now - 60_000, workerId: "w2", usage: { requests: 1, inputTokens: 1 } },
    ];
    const name = b.add({ scope: "worker", key: "w2", requests: 2, policy: "fail" }, history);
    expect(name).toBe("worker:w2/day");
    const t2 = makeTask();
    expect(b.check(t2, w2, now).ok).toBe(true);
    b.onDispatch(t2, w2, now);
    expect(b.check(makeTask(), w2, now).ok).toBe(false);
    expect(b.stats(now).map((s) => [s.scope, s.subject, s.used.requests])).toEqual([
      ["worker", "w1", 2],
      ["worker", "w2", 2],
    ]);
    expect(b.remove("worker:w1/day")).toBe(true);
    expect(b.check(makeTask(), w1, now).ok).toBe(true);
    expect(b.remove("worker:w1/day")).toBe(false);
    expect(() => b.add({ scope: "worker", requests: -1 })).toThrow(
      /requests must be greater than zero/,
    );
  });
});

describe("calendar", () => {
  it("computes DST-safe local days", async () => {
    const berlinSpring = dayBounds(Date.UTC(2026, 2, 29, 12), "Europe/Berlin");
    expect(berlinSpring.end - berlinSpring.start).toBe(23 * 3_600_000);
    const berlinFall = dayBounds(Date.UTC(2026, 9, 25, 12), "Europe/Berlin");
    expect(berlinFall.end - berlinFall.start).toBe(25 * 3_600_000);
    expect(new Date(berlinFall.start).toISOString()).toBe("2026-10-24T22:00:00.000Z");
    const kolkata = dayBounds(Date.UTC(2026, 0, 1, 3), "Asia/Kolkata");
    expect(new Date(kolkata.start).toISOString()).toBe("2025-12-31T18:30:00.000Z");
    expect(dayKey(kolkata.start - 1, "Asia/Kolkata")).toBe("2025-12-31");
    expect(dayKey(kolkata.start, "Asia/Kolkata")).toBe("2026-01-01");
  });
});

describe("dayKey", () => {
  it("answers every instant's local date, forwards, backwards and across DST changes", () => {
    // en-CA writes dates as YYYY-MM-DD.
    const wall = (ms: number, timeZone: string) =>
      new Intl.DateTimeFormat("en-CA", {
        timeZone,
        year: "numeric",
        month: "2-digit",
        day: "2-digit",
      }).format(ms);
    const zones = ["Europe/Berlin", "America/Santiago", "Asia/Kolkata", "UTC"];
    // Every 37 minutes across the spring and autumn changes, then the same instants shuffled.
    const instants: number[] = [];
    for (const from of [Date.UTC(2026, 2, 27), Date.UTC(2026, 9, 23), Date.UTC(2026, 3, 3)]) {
      for (let t = from; t < from + 4 * 86_400_000; t += 37 * 60_000) instants.push(t);
    }
    const shuffled = instants.map((_, i) => instants[(i * 7919) % instants.length]!);
    for (const timeZone of zones) {
      for (const t of [...instants, ...shuffled]) {
        expect(dayKey(t, timeZone), `${new Date(t).toISOString()} in ${timeZone}`).toBe(
          wall(t, timeZone),
        );
      }
    }
  });
});

describe("monthly budgets", () => {
  it("a calendar month resets at local midnight of the 1st in its time zone", () => {
    // 23:30 on 31 March in Berlin (CEST, UTC+2) is 21:30 UTC.
    const clock = new FakeClock({ now: Date.UTC(2026, 2, 31, 21, 30) });
    const b = new Budgets({
      clock,
      budgets: [{ name: "monthly", requests: 2, period: "month", timeZone: "Europe/Berlin" }],
    });
    expect(run(b, makeTask(), clock.now()).ok).toBe(true);
    expect(run(b, makeTask(), clock.now()).ok).toBe(true);
    const held = b.check(makeTask(), worker, clock.now());
    expect(held).toMatchObject({ ok: false, retryAt: Date.UTC(2026, 2, 31, 22) });
    const [s] = b.stats(clock.now());
    expect(s).toMatchObject({
      name: "monthly",
      period: "month in Europe/Berlin",
      windowStart: Date.UTC(2026, 1, 28, 23), // 1 March 00:00 CET
      windowEnd: Date.UTC(2026, 2, 31, 22), // 1 April 00:00 CEST
      used: { requests: 2 },
    });
    expect(b.check(makeTask(), worker, Date.UTC(2026, 2, 31, 22)).ok).toBe(true);
  });

  it("asks the orchestrator for the month's usage at a restart, and refuses a sliding month", () => {
    const b = new Budgets({ budgets: [{ requests: 5, period: "month" }] });
    expect(b.restoreSpanMs).toBe(32 * 86_400_000);
    expect(new Budgets({ budgets: [{ requests: 5 }] }).restoreSpanMs).toBe(48 * 3_600_000);
    expect(
      new Budgets({ budgets: [{ requests: 5, reset: "sliding", period: "7d" }] }).restoreSpanMs,
    ).toBe(7 * 86_400_000);
    expect(
      () => new Budgets({ budgets: [{ requests: 5, reset: "sliding", period: "month" }] }),
    ).toThrow(/budgets\[0\]\.period: a month is a calendar period/);
    expect(() => new Budgets({ budgets: [{ requests: 5, period: "week" }] })).toThrow(
      /resets per "day" or "month"/,
    );
  });
});

describe("API key budgets", () => {
  it("count what each API key submitted; tasks without a key are not counted", () => {
    const b = new Budgets({
      budgets: [{ name: "per-key", scope: "apiKey", requests: 1, policy: "fail" }],
    });
    const alice = () => makeTask({ apiKey: "key:aaaaaaaaaaaa" });
    expect(run(b, alice()).ok).toBe(true);
    const refused = b.check(alice(), worker, 0);
    expect(refused).toMatchObject({ ok: false });
    if (!refused.ok) {
      expect(refused.fail?.message).toContain('apiKey "key:aaaaaaaaaaaa"');
    }
    expect(run(b, makeTask({ apiKey: "key:bbbbbbbbbbbb" })).ok).toBe(true);
    expect(run(b, makeTask()).ok).toBe(true);
    expect(run(b, makeTask()).ok).toBe(true);
    // A restart: the ledger's line of key c counts against key c only.
    b.restore([{ at: 0, apiKey: "key:cccccccccccc", usage: { inputTokens: 1 } }], 0);
    expect(b.check(makeTask({ apiKey: "key:cccccccccccc" }), worker, 0).ok).toBe(false);
    expect(b.check(makeTask({ apiKey: "key:dddddddddddd" }), worker, 0).ok).toBe(true);
  });

  it("counts the spend other servers record as they record it, so one budget holds across them", () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 3, 1, 12) });
    const b = new Budgets({
      clock,
      budgets: [{ name: "shared", requests: 3, costUsd: 1, policy: "fail" }],
    });
    const now = clock.now();
    expect(run(b, makeTask(), now).ok).toBe(true); // here: 1 request
    // Another server's calls, recorded after this one started (restore would ignore them),
    // one of them stamped by a clock a little ahead of this one.
    b.countElsewhere([
      { at: now - 10, taskId: "b1", usage: { requests: 1, inputTokens: 1, costUsd: 0.25 } },
      { at: now + 5, taskId: "b2", usage: { requests: 1, inputTokens: 1, costUsd: 0.25 } },
    ]);
    const d = b.check(makeTask(), worker, now);
    expect(!d.ok && d.fail?.message).toBe(
      'budget "shared" exceeded: requests limit 3, used 3, this task needs 1 (per day in UTC)',
    );
    expect(b.stats(now)[0]).toMatchObject({ used: { requests: 3, costUsd: 0.5 } });
    // Yesterday's line elsewhere is outside today's window.
    b.countElsewhere([
      { at: now - 86_400_000, usage: { requests: 1, inputTokens: 1, costUsd: 0.25 } },
    ]);
    expect(b.stats(now)[0]).toMatchObject({ used: { requests: 3, costUsd: 0.5 } });
  });
});
