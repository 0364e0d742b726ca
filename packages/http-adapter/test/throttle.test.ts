import { FakeClock } from "@flotilla/testing";
import { afterEach, describe, expect, it } from "vitest";
import { AuthThrottle } from "../src/index.js";
import { type FleetUnderTest, REG_TOKEN, removeDir, startFleet } from "./fleet/harness.js";
import { httpRequest } from "./fleet/victoria-runner.js";
import { type Harness, KEY, startHarness } from "./helpers.js";

describe("AuthThrottle", () => {
  it("lets a few failures through, then delays each one longer, then locks the source", async () => {
    const clock = new FakeClock({ now: 0 });
    const t = new AuthThrottle(
      { freeFailures: 2, baseDelayMs: 100, maxDelayMs: 350, lockAfter: 6, windowMs: 60_000 },
      { clock },
    );
    const delays = Array.from({ length: 6 }, () => t.fail("10.0.0.7", "GET /x", "guess").delayMs);
    expect(delays).toEqual([0, 0, 100, 200, 350, 350]);
    expect(t.fail("10.0.0.7", "GET /x", "guess")).toEqual({ delayMs: 0, retryAfterMs: 60_000 });
    // Another source is not affected; a registration token is never locked, only delayed.
    expect(t.fail("10.0.0.8", "GET /x", "guess")).toEqual({ delayMs: 0 });
    expect(t.fail("10.0.0.7", "POST /register", "bad", { lock: false })).toEqual({ delayMs: 350 });
    // Failures leave the window: the source starts afresh.
    await clock.advance(60_001);
    expect(t.failures("10.0.0.7")).toBe(0);
    expect(t.fail("10.0.0.7", "GET /x", "guess")).toEqual({ delayMs: 0 });
  });

  it("counts failures other servers saw, and tells of its own (servers sharing a store)", async () => {
    const clock = new FakeClock({ now: 100_000 });
    const t = new AuthThrottle({ freeFailures: 2, lockAfter: 4, windowMs: 60_000 }, { clock });
    const told: Array<[string, number]> = [];
    const off = t.onFailure((source, at) => told.push([source, at]));
    t.countElsewhere("10.0.0.7", 99_000);
    t.countElsewhere("10.0.0.7", 99_500);
    t.countElsewhere("10.0.0.7", 30_000); // outside the window: not counted
    expect(t.failures("10.0.0.7")).toBe(2);
    expect(told).toEqual([]); // what others saw is not told again
    expect(t.fail("10.0.0.7", "GET /x", "guess").delayMs).toBeGreaterThan(0); // the third
    t.countElsewhere("10.0.0.7", 100_000);
    expect(t.fail("10.0.0.7", "GET /x", "guess")).toEqual({ delayMs: 0, retryAfterMs: 59_000 });
    expect(told).toEqual([
      ["10.0.0.7", 100_000],
      ["10.0.0.7", 100_000],
    ]);
    off();
    t.fail("10.0.0.8", "GET /x", "guess");
    expect(told).toHaveLength(2);
  });

  it("forgets the least recent sources beyond maxSources", () => {
    const t = new AuthThrottle({ maxSources: 2 }, { clock: new FakeClock({ now: 0 }) });
    for (const s of ["a", "b", "c"]) t.fail(s, "x", undefined);
    expect([t.failures("a"), t.failures("b"), t.failures("c")]).toEqual([0, 1, 1]);
  });
});

describe("wrong keys over HTTP", () => {
  let h: Harness | undefined;
  let f: FleetUnderTest | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
    if (f) {
      await f.stop();
      await removeDir(f.dir);
      f = undefined;
    }
  });

  it("the Vera routes answer 401, then 429 with Retry-After; the right key still works from the same address", async () => {
    h = await startHarness({
      authThrottle: { freeFailures: 2, baseDelayMs: 1, maxDelayMs: 4, lockAfter: 5 },
    });
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 7; i++) {
      const res = await fetch(`${h.api}/status`, { headers: { "x-api-key": `wrong-${i}` } });
      statuses.push(res.status);
      if (res.status === 429) {
        retryAfter = res.headers.get("retry-after");
        expect(((await res.json()) as { error: { code: string } }).error.code).toBe(
          "TOO_MANY_FAILURES",
        );
      } else await res.body?.cancel();
    }
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429, 429]);
    expect(Number(retryAfter)).toBeGreaterThan(0);
    const ok = await fetch(`${h.api}/status`, { headers: { "x-api-key": KEY } });
    expect(ok.status).toBe(200);
  });

  it("fleet: a wrong registration token is always 401, never 429, and never locks out the right one; node and admin keys lock", async () => {
    f = await startFleet({
      fleet: { authThrottle: { freeFailures: 1, baseDelayMs: 0, lockAfter: 3 } },
    });
    const body = JSON.stringify({ hostname: "h", name: "n", os_type: "linux" });
    const reg = (token: string) =>
      httpRequest(
        "POST",
        `${f!.url}/register`,
        { "Content-Type": "application/json", "X-Registration-Token": token },
        body,
      );
    const wrong: number[] = [];
    for (let i = 0; i < 10; i++) wrong.push((await reg(`bad-${i}`)).status);
    expect(wrong).toEqual(Array(10).fill(401));
    // Twelve runners on one host starting together all register with the right token.
    const many = await Promise.all(
      Array.from({ length: 12 }, (_, i) =>
        httpRequest(
          "POST",
          `${f!.url}/register`,
          { "Content-Type": "application/json", "X-Registration-Token": REG_TOKEN },
          JSON.stringify({ hostname: "h", name: `runner-${i}`, os_type: "linux" }),
        ),
      ),
    );
    expect(many.map((r) => r.status)).toEqual(Array(12).fill(200));
    const nodeKey = many[0]!.json.api_key as string;

    const polls: number[] = [];
    for (let i = 0; i < 5; i++) {
      polls.push(
        (await httpRequest("GET", `${f.url}/tasks/pending`, { "X-API-Key": `nk-${i}` })).status,
      );
    }
    // The source already failed 10 registrations: node keys are locked at once.
    expect(polls).toEqual(Array(5).fill(429));
    const good = await httpRequest("GET", `${f.url}/tasks/pending`, { "X-API-Key": nodeKey });
    expect([200, 204]).toContain(good.status);
    const admin = await httpRequest("GET", `${f.url}/nodes`, { "X-API-Key": "not-admin" });
    expect(admin.status).toBe(429);
    expect(admin.headers["retry-after"]).toBeDefined();
    expect((await f.admin("GET", "/nodes")).status).toBe(200);
  });
});
