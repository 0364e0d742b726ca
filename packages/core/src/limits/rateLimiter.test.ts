import { describe, expect, it } from "vitest";
import { makeEntry, makeTask, maxInWindow } from "../resources/__tests__/fixtures.js";
import { FakeClock } from "../testing/index.js";
import { marginFor, RateLimiter } from "./rateLimiter.js";

/** Offers calls as fast as the limiter admits them; jumps straight to each retryAt. */
async function saturate(
  clock: FakeClock,
  limiter: RateLimiter,
  keys: string[],
  durationMs: number,
  tokens: () => number = () => 0,
) {
  const events: { t: number; w: number; tokens: number }[] = [];
  const end = clock.now() + durationMs;
  let next = tokens();
  while (clock.now() < end) {
    const r = limiter.peek(keys, next);
    if (r.ok) {
      limiter.acquire(keys, next);
      events.push({ t: clock.now(), w: 1, tokens: next });
      next = tokens();
    } else {
      expect(r.retryAt).toBeGreaterThan(clock.now());
      await clock.advanceTo(r.retryAt);
    }
  }
  return events;
}

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/**
 * The most events in any window of `windowMs` starting at any event, counted both half-open
 * `[s, s + windowMs)` and closed `[s, s + windowMs]` — the closed form is what a clock with
 * millisecond resolution may turn a half-open real-time window into. Checks EVERY boundary
 * by brute force (no sliding-sum shortcut to get wrong).
 */
function worstWindow(times: readonly number[], windowMs: number, closed: boolean): number {
  const sorted = [...times].sort((a, b) => a - b);
  let worst = 0;
  for (let i = 0; i < sorted.length; i++) {
    const s = sorted[i]!;
    let n = 0;
    for (let j = i; j < sorted.length; j++) {
      const t = sorted[j]!;
      if (closed ? t > s + windowMs : t >= s + windowMs) break;
      n++;
    }
    worst = Math.max(worst, n);
  }
  return worst;
}

describe("RateLimiter exact sliding windows", () => {
  it("200/s: a t=0 burst, then refills just after t=windowMs; no window (half-open or closed) holds more than 200", async () => {
    const clock = new FakeClock({ now: 0 });
    const limiter = new RateLimiter({ clock, limits: { provider: ["200/s"] } });
    const events = await saturate(clock, limiter, ["provider"], 10_000);
    const times = events.map((e) => e.t);
    // The whole limit goes at once...
    expect(times.filter((t) => t === 0)).toHaveLength(200);
    // ...and comes back after the window, its margin (auto: 2 % = 20 ms) and one clock tick.
    expect(times[200]).toBe(1000 + 20 + 1);
    expect(times.filter((t) => t === 1021)).toHaveLength(200);
    expect(worstWindow(times, 1000, false)).toBe(200);
    expect(worstWindow(times, 1000, true)).toBe(200);
    // Under saturation: 1000 / 1021 of the limit.
    const used = times.length / ((200 * 10_000) / 1000);
    expect(used).toBeGreaterThanOrEqual(0.97);
  });

  it("keeps the limit for starts that lag their dispatch by less than the margin", async () => {
    const clock = new FakeClock({ now: 0 });
    const limiter = new RateLimiter({ clock, limits: { provider: ["200/s"] } });
    const events = await saturate(clock, limiter, ["provider"], 20_000);
    const margin = marginFor(1000, "auto");
    const r = rng(3);
    // Worst case for a sliding window: the first burst starts as late as possible, the refill
    // as early as possible; in between, random lags. Fractional times model real time.
    const starts = events.map((e) => {
      const cycle = Math.floor(e.t / 1021);
      const lag = cycle === 0 ? margin - 1e-6 : cycle === 1 ? 0 : r() * margin;
      return e.t + lag + r() * 0.999; // + where inside the millisecond the clock read fell
    });
    expect(worstWindow(starts, 1000, false)).toBeLessThanOrEqual(200);
  });

  it.each([
    ["200/s", 1000, 200, 5000],
    ["5/100ms", 100, 5, 2000],
    ["600/min", 60_000, 600, 5 * 60_000],
    [{ requests: 50, per: "second", burst: 10 }, 1000, 50, 5000],
    [{ requests: 7, per: 250 }, 250, 7, 5000],
  ] as const)(
    "%j: every window boundary holds under saturation from an idle start (default margin)",
    async (limit, windowMs, max, duration) => {
      const clock = new FakeClock({ now: Date.UTC(2026, 2, 29, 0, 59, 59, 990) });
      const limiter = new RateLimiter({ clock, limits: { k: limit } });
      const times = (await saturate(clock, limiter, ["k"], duration)).map((e) => e.t);
      expect(worstWindow(times, windowMs, true)).toBeLessThanOrEqual(max);
      expect(times.length / ((max * duration) / windowMs)).toBeGreaterThanOrEqual(0.97);
    },
  );

  it.each([true, false])(
    "a start lag of up to 300 ms: with onStart (%s) no 1 s window of starts exceeds the limit",
    async (reportStarts) => {
      const clock = new FakeClock({ now: 0 });
      const limiter = new RateLimiter({ clock, limits: { k: "200/s" }, marginMs: 0 });
      const worker = makeEntry();
      const starts: number[] = [];
      const pending: Array<{ at: number; task: ReturnType<typeof makeTask> }> = [];
      let n = 0;
      while (clock.now() < 5000) {
        const task = makeTask({ rateLimitKeys: ["k"] });
        const d = limiter.check(task, worker, clock.now());
        if (d.ok) {
          limiter.onDispatch(task, worker, clock.now());
          // The first burst starts late (a cold process: up to 300 ms), later calls at once.
          pending.push({ at: clock.now() + (n < 200 ? n * 1.5 : 0), task });
          n++;
          continue;
        }
        pending.sort((a, b) => a.at - b.at);
        const first = pending[0];
        if (first && first.at <= (d.retryAt ?? Number.POSITIVE_INFINITY)) {
          pending.shift();
          await clock.advanceTo(Math.max(clock.now(), Math.ceil(first.at)));
          if (reportStarts) limiter.onStart(first.task, worker, clock.now());
          starts.push(clock.now());
        } else {
          await clock.advanceTo(d.retryAt!);
        }
      }
      for (const p of pending) starts.push(Math.ceil(p.at));
      if (reportStarts) expect(worstWindow(starts, 1000, false)).toBe(200);
      // Counted from dispatch only, the late first burst and its refill overlap.
      else expect(worstWindow(starts, 1000, false)).toBeGreaterThan(200);
      // Under saturation: ≥ 97 % of the limit still used.
      expect(n / (200 * 5)).toBeGreaterThanOrEqual(0.97);
    },
  );

  it("marginMs: 0 counts from dispatch only (plus the clock tick)", async () => {
    const clock = new FakeClock({ now: 0 });
    const limiter = new RateLimiter({ clock, limits: { k: "10/s" }, marginMs: 0 });
    const times = (await saturate(clock, limiter, ["k"], 3000)).map((e) => e.t);
    expect(times.slice(9, 12)).toEqual([0, 1001, 1001]);
    expect(worstWindow(times, 1000, true)).toBe(10);
    expect(marginFor(100, "auto")).toBe(2);
    expect(marginFor(3_600_000, "auto")).toBe(50);
  });
});

describe("RateLimiter windows", () => {
  it.each([
    ["10/s", 1000, 10, 20_000],
    ["5/100ms", 100, 5, 5_000],
    ["600/min", 60_000, 600, 10 * 60_000],
    [{ requests: 600, per: "minute", burst: 20 }, 60_000, 600, 10 * 60_000],
    [{ requests: 10, per: "second", burst: 1 }, 1000, 10, 20_000],
  ] as const)(
    "%j never exceeds its limit in any sliding window and uses ≥97%% of it",
    async (limit, windowMs, max, duration) => {
      const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
      const limiter = new RateLimiter({ clock, limits: { k: limit } });
      const events = await saturate(clock, limiter, ["k"], duration);
      expect(maxInWindow(events, windowMs)).toBeLessThanOrEqual(max);
      expect(events.length / ((max * duration) / windowMs)).toBeGreaterThanOrEqual(0.97);
    },
  );

  it("composite limits: requests/s, requests/min and tokens/min all hold at once", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const limiter = new RateLimiter({
      clock,
      limits: { openai: ["5/s", "200/min", "20k tokens/min"] },
    });
    const r = rng(7);
    const events = await saturate(clock, limiter, ["openai"], 5 * 60_000, () =>
      Math.floor(r() * 300),
    );
    expect(maxInWindow(events, 1000)).toBeLessThanOrEqual(5);
    expect(maxInWindow(events, 60_000)).toBeLessThanOrEqual(200);
    const tokenEvents = events.map((e) => ({ t: e.t, w: e.tokens }));
    expect(maxInWindow(tokenEvents, 60_000)).toBeLessThanOrEqual(20_000);
    // Mean 150 tokens/call: the binding limit is tokens (≈133 calls/min) — it must be saturated.
    const tokens = tokenEvents.reduce((a, e) => a + e.w, 0);
    expect(tokens / (20_000 * 5)).toBeGreaterThanOrEqual(0.97);
  });

  it("with refunds (actual ≤ estimate) actual tokens never exceed the limit in any window", async () => {
    const clock = new FakeClock({ now: 0 });
    const limiter = new RateLimiter({ clock, limits: { k: "10k tokens/min" } });
    const r = rng(11);
    const events: { t: number; w: number }[] = [];
    const pending: { at: number; settle: () => void }[] = [];
    let next = 200 + Math.floor(r() * 800);
    while (clock.now() < 10 * 60_000) {
      const p = limiter.peek(["k"], next);
      if (p.ok) {
        const res = limiter.acquire(["k"], next);
        const actual = Math.floor(next * r());
        events.push({ t: clock.now(), w: actual });
        pending.push({
          at: clock.now() + Math.floor(r() * 5000),
          settle: () => res.reconcile(actual),
        });
        next = 200 + Math.floor(r() * 800);
        continue;
      }
      // Jump to whichever comes first: the retry time or the next settle (which refunds).
      pending.sort((a, b) => a.at - b.at);
      const first = pending[0];
      if (first && first.at <= p.retryAt) {
        pending.shift();
        await clock.advanceTo(Math.max(clock.now(), first.at));
        first.settle();
      } else {
        await clock.advanceTo(p.retryAt);
      }
    }
    expect(maxInWindow(events, 60_000)).toBeLessThanOrEqual(10_000);
    // Refunds let more calls through than estimates alone would (≈ 16.7 calls/min at 600 avg).
    expect(events.length / 10).toBeGreaterThan(25);
  });

  it("a margin keeps calls counted longer than the window", async () => {
    const clock = new FakeClock({ now: 0 });
    const limiter = new RateLimiter({ clock, limits: { k: "10/s" }, marginMs: 50 });
    const events = await saturate(clock, limiter, ["k"], 10_000);
    expect(maxInWindow(events, 1050)).toBeLessThanOrEqual(10);
    expect(events.length).toBeGreaterThanOrEqual(Math.floor(0.97 * 100 * (1000 / 1050)));
    expect(() => new RateLimiter({ marginMs: -1 })).toThrow(
      /marginMs: expected "auto" or a number of milliseconds >= 0/,
    );
  });

  it("a smooth limit has no fixed-window double burst at window edges", async () => {
    const clock = new FakeClock({ now: 59_000 });
    const limiter = new RateLimiter({ clock, limits: { k: "100/min" } });
    const events = await saturate(clock, limiter, ["k"], 2000);
    // A fixed window would allow 100 at 59 s and 100 more at 60 s.
    expect(events.length).toBe(100);
  });

  it("a task larger than the limit goes when the key is idle and leaves it in debt", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const limiter = new RateLimiter({ clock, limits: { k: "1000 tokens/min" } });
    expect(limiter.peek(["k"], 5000).ok).toBe(true);
    limiter.acquire(["k"], 5000);
    const r = limiter.peek(["k"], 10);
    expect(r.ok).toBe(false);
  });
});

describe("RateLimiter reconciliation", () => {
  it("refunds unused tokens at once and wakes the scheduler", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const limiter = new RateLimiter({ clock, limits: { k: "1000 tokens/min" } });
    let wakes = 0;
    limiter.subscribe(() => wakes++);
    const a = limiter.acquire(["k"], 600);
    const blocked = limiter.peek(["k"], 600);
    expect(blocked.ok).toBe(false);
    a.reconcile(200);
    expect(wakes).toBe(1);
    expect(limiter.peek(["k"], 600).ok).toBe(true);
    expect(limiter.stats().k?.limits[0]?.used).toBe(200);
  });

  it("charges the difference when the call used more than estimated (debt)", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const limiter = new RateLimiter({ clock, limits: { k: "1000 tokens/min" }, marginMs: 0 });
    const a = limiter.acquire(["k"], 100);
    expect(limiter.peek(["k"], 100).ok).toBe(true);
    await clock.advance(1000);
    a.reconcile(1500);
    const r = limiter.peek(["k"], 100);
    expect(r.ok).toBe(false);
    // The 1500-token call (admitted at t0) leaves the sliding minute at t0 + 60 s.
    if (!r.ok) expect(r.retryAt).toBe(clock.now() - 1000 + 60_000 + 1);
    a.reconcile(10); // idempotent
    expect(limiter.peek(["k"], 100).ok).toBe(false);
  });

  it("onSettle reconciles with reported usage and keeps the estimate when usage is malformed", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const limiter = new RateLimiter({ clock, limits: { k: "1000 tokens/min" } });
    const w = makeEntry();
    const t1 = makeTask({ rateLimitKeys: ["k"], estimate: { tokens: 400 } });
    const t2 = makeTask({ rateLimitKeys: ["k"], estimate: { tokens: 400 } });
    expect(limiter.check(t1, w, clock.now()).ok).toBe(true);
    limiter.onDispatch(t1, w, clock.now());
    limiter.onDispatch(t2, w, clock.now());
    limiter.onSettle(
      t1,
      w,
      { status: "succeeded", usage: { inputTokens: 50, outputTokens: 50 } },
      clock.now(),
    );
    limiter.onSettle(
      t2,
      w,
      { status: "succeeded", usage: { inputTokens: -3 } as never },
      clock.now(),
    );
    expect(limiter.stats().k?.limits[0]?.used).toBe(500);
  });
});

describe("RateLimiter pauses", () => {
  it("a Retry-After pauses the task's keys; check resumes 1 ms after it (never early)", async () => {
    const clock = new FakeClock({ now: 0 });
    const limiter = new RateLimiter({ clock, limits: { openai: "100/s" } });
    let wakes = 0;
    limiter.subscribe(() => wakes++);
    const w = makeEntry();
    const t = makeTask({ rateLimitKeys: ["openai", "acct-1"] });
    limiter.onDispatch(t, w, clock.now());
    await clock.advance(10);
    limiter.onSettle(t, w, { status: "failed", retryAfterMs: 5000 }, clock.now());
    const other = makeTask({ rateLimitKeys: ["acct-1"] });
    const d = limiter.check(other, w, clock.now());
    expect(d).toMatchObject({ ok: false, retryAt: 5011, blockKey: "acct-1" });
    expect(d.ok === false && d.reason).toMatch(/paused/);
    expect(limiter.check(makeTask({ rateLimitKeys: ["anthropic"] }), w, clock.now()).ok).toBe(true);
    await clock.advance(5000);
    expect(limiter.check(other, w, clock.now()).ok).toBe(false);
    expect(wakes).toBe(0);
    await clock.advance(1);
    expect(limiter.check(other, w, clock.now()).ok).toBe(true);
    expect(wakes).toBe(1);
  });

  it("a RATE_LIMITED error with retryAfterMs details pauses too", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const limiter = new RateLimiter({ clock });
    const w = makeEntry();
    const t = makeTask({ rateLimitKeys: ["x"] });
    limiter.onDispatch(t, w, 0);
    limiter.onSettle(
      t,
      w,
      {
        status: "failed",
        error: { code: "RATE_LIMITED", message: "429", details: { retryAfterMs: 2000 } },
      },
      clock.now(),
    );
    expect(limiter.check(t, w, clock.now())).toMatchObject({
      ok: false,
      retryAt: clock.now() + 2001,
    });
    limiter.resume("x");
    expect(limiter.check(t, w, clock.now()).ok).toBe(true);
  });
});

describe("RateLimiter configuration", () => {
  it("setLimits changes limits at run time, keeps usage and wakes the scheduler", async () => {
    const clock = new FakeClock({ now: Date.UTC(2026, 0, 1) });
    const limiter = new RateLimiter({ clock, limits: { k: "2/min" } });
    let wakes = 0;
    limiter.subscribe(() => wakes++);
    limiter.acquire(["k"], 0);
    limiter.acquire(["k"], 0);
    expect(limiter.peek(["k"]).ok).toBe(false);
    limiter.setLimits("k", ["3/min"]);
    expect(wakes).toBe(1);
    expect(limiter.peek(["k"]).ok).toBe(true);
    limiter.acquire(["k"], 0);
    expect(limiter.peek(["k"]).ok).toBe(false);
    limiter.setLimits("k", []);
    expect(limiter.peek(["k"]).ok).toBe(true);
  });

  it.each([
    [{ k: "-5/min" }, "limits.k: requests must be a positive number, got -5"],
    [{ k: "5/0s" }, 'limits.k: window "0s" must be longer than zero'],
    [{ k: "5/fortnight" }, 'limits.k: unknown time unit "fortnight"'],
    [
      { k: ["5/min", { requests: 0, per: "minute" }] },
      "limits.k[1]: requests must be a positive number, got 0",
    ],
    [{ k: { tokens: 10, per: 0 } }, "limits.k: window must be a positive number of ms, got 0"],
    [
      { k: { requests: 5, tokens: 5, per: "s" } },
      "limits.k: give exactly one of `requests` or `tokens`",
    ],
    [
      { k: { requests: 5, per: "s", burst: 10 } },
      "limits.k: burst must be a positive number no larger than the limit (5)",
    ],
    [{ k: { requests: 5, per: "s", every: 2 } }, 'limits.k: Unrecognized key: "every"'],
    [{ k: 5 }, 'limits.k: expected a limit such as "500/min"'],
    [{ k: "lots" }, 'limits.k: cannot read limit "lots"'],
  ])("rejects %j with a clear message", async (limits, message) => {
    expect(() => new RateLimiter({ limits: limits as never })).toThrow(
      expect.objectContaining({ code: "VALIDATION", message: expect.stringContaining(message) }),
    );
  });

  it("accepts the documented forms", async () => {
    const limiter = new RateLimiter({
      limits: {
        a: [
          "500/min",
          "90k tokens/minute",
          "10000 requests/day",
          "5 per 100ms",
          "1.5M tokens/hour",
        ],
        b: { requests: 500, per: "minute", burst: 50 },
        c: { tokens: 1000, per: 30_000 },
      },
    });
    expect(limiter.getLimits("a").map((l) => [l.unit, l.limit, l.windowMs])).toEqual([
      ["requests", 500, 60_000],
      ["tokens", 90_000, 60_000],
      ["requests", 10_000, 86_400_000],
      ["requests", 5, 100],
      ["tokens", 1_500_000, 3_600_000],
    ]);
    expect(limiter.getLimits("b")[0]).toMatchObject({ burst: 50, name: "requests/min" });
    expect(limiter.getLimits("c")[0]).toMatchObject({ unit: "tokens", windowMs: 30_000 });
  });
});

describe("RateLimiter shares (several servers splitting one limit)", () => {
  it("each of three servers admits a third; together they stay under the limit in every window", async () => {
    const clock = new FakeClock({ now: 0 });
    const servers = [0, 1, 2].map(
      () => new RateLimiter({ limits: { openai: "90/min" }, clock, marginMs: 0 }),
    );
    for (const s of servers) s.setShare(1 / 3);
    // All three saturate at once for five minutes, in turn.
    const events: Array<{ t: number; w: number }> = [];
    const end = 5 * 60_000;
    while (clock.now() < end) {
      let next = Number.POSITIVE_INFINITY;
      for (const s of servers) {
        const r = s.peek(["openai"]);
        if (r.ok) {
          s.acquire(["openai"]);
          events.push({ t: clock.now(), w: 1 });
          next = clock.now();
        } else next = Math.min(next, r.retryAt);
      }
      if (next > clock.now()) await clock.advanceTo(next);
    }
    expect(maxInWindow(events, 60_000)).toBeLessThanOrEqual(90);
    expect(events.length).toBeGreaterThanOrEqual(5 * 90 - 3);
    for (const s of servers) s.close();
  });

  it("a new share keeps what was counted; limits read back as configured", async () => {
    const clock = new FakeClock({ now: 0 });
    const limiter = new RateLimiter({ limits: { k: "6/min" }, clock, marginMs: 0 });
    limiter.setShare(0.5);
    expect(limiter.share).toBe(0.5);
    let admitted = 0;
    while (limiter.peek(["k"]).ok) {
      limiter.acquire(["k"]);
      admitted++;
    }
    expect(admitted).toBe(3);
    expect(limiter.getLimits("k")[0]).toMatchObject({ limit: 6 });
    expect(limiter.stats().k?.limits[0]).toMatchObject({ limit: 3, used: 3, remaining: 0 });
    // The whole limit again, within the same minute: three more, not six.
    limiter.setShare(1);
    while (limiter.peek(["k"]).ok) {
      limiter.acquire(["k"]);
      admitted++;
    }
    expect(admitted).toBe(6);
    expect(() => limiter.setShare(0)).toThrow(/share: expected a number in \(0, 1\]/);
    expect(() => limiter.setShare(1.5)).toThrow(/share/);
    limiter.close();
  });
});
