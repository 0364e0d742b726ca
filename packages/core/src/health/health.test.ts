import { describe, expect, it } from "vitest";
import type { WorkerHealthState } from "../registry/types.js";
import { FakeClock, makeStubWorker } from "../testing/index.js";
import type { HealthReport, HealthStatus } from "../worker/types.js";
import { checkWorkerHealth, startHealthCheck } from "./check.js";
import { initialHealthCounters, nextHealthState } from "./state.js";

const t = { degradedAfter: 2, unhealthyAfter: 4, recoverAfter: 3 };

/** Feeds a sequence of outcomes through the state machine and returns the states visited. */
function run(outcomes: HealthStatus[], start: WorkerHealthState = "healthy") {
  let state = start;
  let counters = initialHealthCounters();
  return outcomes.map((status) => {
    ({ state, counters } = nextHealthState(state, counters, { status }, t));
    return state;
  });
}

describe("nextHealthState", () => {
  it("degrades after degradedAfter failures and fails after unhealthyAfter", () => {
    expect(run(["unhealthy", "unhealthy", "unhealthy", "unhealthy"])).toEqual([
      "healthy",
      "degraded",
      "degraded",
      "unhealthy",
    ]);
  });

  it("a good answer resets the failure streak", () => {
    expect(run(["unhealthy", "healthy", "unhealthy", "healthy"])).toEqual([
      "healthy",
      "healthy",
      "healthy",
      "healthy",
    ]);
  });

  it("recovers from unhealthy only after recoverAfter good checks in a row", () => {
    expect(
      run(["healthy", "healthy", "unhealthy", "healthy", "healthy", "healthy"], "unhealthy"),
    ).toEqual(["unhealthy", "unhealthy", "unhealthy", "unhealthy", "unhealthy", "healthy"]);
    expect(run(["degraded", "healthy", "healthy"], "unhealthy")).toEqual([
      "unhealthy",
      "unhealthy",
      "degraded",
    ]);
  });

  it("a degraded report degrades at once; healthy needs recoverAfter healthy reports", () => {
    expect(
      run(["degraded", "healthy", "healthy", "degraded", "healthy", "healthy", "healthy"]),
    ).toEqual(["degraded", "degraded", "degraded", "degraded", "degraded", "degraded", "healthy"]);
  });

  it("never gets stuck: from any state, enough healthy checks lead to healthy", () => {
    for (const start of ["healthy", "degraded", "unhealthy"] as const) {
      expect(run(["healthy", "healthy", "healthy"], start).at(-1)).toBe("healthy");
    }
  });
});

describe("startHealthCheck / checkWorkerHealth", () => {
  it("returns the worker's report", async () => {
    const worker = makeStubWorker({
      id: "w",
      healthCheck: async () => ({ status: "degraded", message: "slow disk" }),
    });
    expect(await checkWorkerHealth(worker, { clock: new FakeClock() })).toEqual({
      status: "degraded",
      message: "slow disk",
    });
    expect(await checkWorkerHealth(makeStubWorker({ id: "plain" }))).toEqual({ status: "healthy" });
  });

  it("turns throws, malformed answers and timeouts into unhealthy reports", async () => {
    const clock = new FakeClock({ now: 0 });
    const throws = makeStubWorker({
      id: "a",
      healthCheck: () => {
        throw new Error("ECONNREFUSED");
      },
    });
    expect(await checkWorkerHealth(throws, { clock })).toEqual({
      status: "unhealthy",
      message: "health check failed: ECONNREFUSED",
    });
    const malformed = makeStubWorker({
      id: "b",
      healthCheck: async () => "ok" as unknown as HealthReport,
    });
    expect((await checkWorkerHealth(malformed, { clock })).message).toMatch(
      /malformed health report/,
    );

    let signal: AbortSignal | undefined;
    const hangs = makeStubWorker({
      id: "c",
      healthCheck: (s) => {
        signal = s;
        return new Promise(() => {});
      },
    });
    const pending = checkWorkerHealth(hangs, { clock, timeoutMs: 250 });
    await clock.advance(249);
    expect(signal!.aborted).toBe(false);
    await clock.advance(1);
    expect(await pending).toEqual({
      status: "unhealthy",
      message: "health check timed out after 250 ms",
    });
    expect(signal!.aborted).toBe(true);
    expect((signal!.reason as { code: string }).code).toBe("TIMEOUT");
    expect(clock.pendingTimers).toBe(0);
  });

  it("cancels through cancel() or an outer signal, clearing its timer", async () => {
    const clock = new FakeClock({ now: 0 });
    const seen: AbortSignal[] = [];
    const hangs = makeStubWorker({
      id: "c",
      healthCheck: (s) => {
        seen.push(s);
        return new Promise(() => {});
      },
    });
    const running = startHealthCheck(hangs, { clock, timeoutMs: 1000 });
    running.cancel();
    expect(await running.result).toBeUndefined();
    expect(seen[0]!.aborted).toBe(true);
    expect(clock.pendingTimers).toBe(0);

    const outer = new AbortController();
    const p = checkWorkerHealth(hangs, { clock, signal: outer.signal });
    outer.abort();
    expect(await p).toEqual({ status: "unhealthy", message: "health check cancelled" });
    expect(clock.pendingTimers).toBe(0);
    const late = await checkWorkerHealth(hangs, { clock, signal: outer.signal });
    expect(late.message).toBe("health check cancelled");
  });
});

describe("nextHealthState invariants over random sequences", () => {
  it("holds for 2 000 random runs", () => {
    let seed = 7;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const statuses: HealthStatus[] = ["healthy", "degraded", "unhealthy"];
    for (let run = 0; run < 2000; run++) {
      const th = {
        degradedAfter: 1 + Math.floor(random() * 3),
        unhealthyAfter: 3 + Math.floor(random() * 3),
        recoverAfter: 1 + Math.floor(random() * 3),
      };
      let state: WorkerHealthState = "healthy";
      let counters = initialHealthCounters();
      let failStreak = 0;
      let healthyStreak = 0;
      for (let i = 0; i < 30; i++) {
        const status = statuses[Math.floor(random() * 3)]!;
        const before: WorkerHealthState = state;
        ({ state, counters } = nextHealthState(state, counters, { status }, th));
        failStreak = status === "unhealthy" ? failStreak + 1 : 0;
        healthyStreak = status === "healthy" ? healthyStreak + 1 : 0;
        if (failStreak >= th.unhealthyAfter) expect(state).toBe("unhealthy");
        if (healthyStreak >= th.recoverAfter) expect(state).toBe("healthy");
        if (status === "unhealthy")
          expect(state === "healthy" && failStreak >= th.degradedAfter).toBe(false);
        if (before === "unhealthy" && state !== "unhealthy") expect(status).not.toBe("unhealthy");
        if (before !== "unhealthy" && state === "unhealthy")
          expect(failStreak).toBeGreaterThanOrEqual(th.unhealthyAfter);
      }
    }
  });
});
