import { describe, expect, it } from "vitest";
import { FakeClock } from "./fake-clock.js";

describe("FakeClock", () => {
  it("starts at the given time and moves only when advanced", async () => {
    const clock = new FakeClock({ now: new Date("2026-01-01T00:00:00Z") });
    const t0 = clock.now();
    expect(t0).toBe(Date.parse("2026-01-01T00:00:00Z"));
    await clock.advance(1500);
    expect(clock.now()).toBe(t0 + 1500);
  });

  it("fires timers in time order, ties in the order they were set, each at its due time", async () => {
    const clock = new FakeClock({ now: 0 });
    const fired: string[] = [];
    clock.setTimeout(() => fired.push(`c@${clock.now()}`), 30);
    clock.setTimeout(() => fired.push(`a@${clock.now()}`), 10);
    clock.setTimeout(() => fired.push(`b1@${clock.now()}`), 20);
    clock.setTimeout(() => fired.push(`b2@${clock.now()}`), 20);
    await clock.advance(25);
    expect(fired).toEqual(["a@10", "b1@20", "b2@20"]);
    expect(clock.now()).toBe(25);
    expect(clock.pendingTimers).toBe(1);
    expect(clock.nextTimerAt).toBe(30);
    await clock.advance(5);
    expect(fired.at(-1)).toBe("c@30");
    expect(clock.nextTimerAt).toBeUndefined();
  });

  it("lets async code driven by timers progress between timers", async () => {
    const clock = new FakeClock({ now: 0 });
    const sleep = (ms: number) => new Promise<void>((r) => clock.setTimeout(r, ms));
    const seen: number[] = [];
    const loop = (async () => {
      for (let i = 0; i < 3; i++) {
        await sleep(100);
        await Promise.resolve();
        seen.push(clock.now());
      }
    })();
    await clock.advance(300);
    await loop;
    expect(seen).toEqual([100, 200, 300]);
  });

  it("fires timers set by timers when they fall inside the advanced window", async () => {
    const clock = new FakeClock({ now: 0 });
    const fired: number[] = [];
    clock.setTimeout(() => {
      fired.push(clock.now());
      clock.setTimeout(() => fired.push(clock.now()), 5);
    }, 5);
    await clock.advance(9);
    expect(fired).toEqual([5]);
    await clock.advance(1);
    expect(fired).toEqual([5, 10]);
  });

  it("clears timers, ignores foreign and fired handles", async () => {
    const clock = new FakeClock({ now: 0 });
    let fired = 0;
    const t = clock.setTimeout(() => fired++, 10);
    clock.clearTimeout(t);
    clock.clearTimeout(t);
    clock.clearTimeout({});
    expect(clock.pendingTimers).toBe(0);
    await clock.advance(100);
    expect(fired).toBe(0);
    const u = clock.setTimeout(() => fired++, 1);
    await clock.advance(1);
    clock.clearTimeout(u);
    expect(fired).toBe(1);
    expect(clock.pendingTimers).toBe(0);
  });

  it("treats negative and NaN delays as 0, and overlong ones as 1 ms like Node", async () => {
    const clock = new FakeClock({ now: 0 });
    let fired = 0;
    clock.setTimeout(() => fired++, -5);
    clock.setTimeout(() => fired++, Number.NaN);
    await clock.advance(0);
    expect(fired).toBe(2);
    clock.setTimeout(() => fired++, Number.POSITIVE_INFINITY);
    clock.setTimeout(() => fired++, 2 ** 31);
    expect(clock.nextTimerAt).toBe(1);
    await clock.advance(1);
    expect(fired).toBe(4);
  });

  it("refuses a second advance while one is running (a missing await)", async () => {
    const clock = new FakeClock({ now: 0 });
    clock.setTimeout(() => {}, 10);
    const first = clock.advance(10);
    await expect(clock.advance(5)).rejects.toThrow(/already being advanced/);
    await expect(clock.runUntilIdle()).rejects.toThrow(/already being advanced/);
    await first;
    expect(clock.now()).toBe(10);
    await clock.advance(5);
    expect(clock.now()).toBe(15);
  });

  it("propagates a throwing timer from advance and stays usable", async () => {
    const clock = new FakeClock({ now: 0 });
    let later = 0;
    clock.setTimeout(() => {
      throw new Error("timer bug");
    }, 5);
    clock.setTimeout(() => later++, 10);
    await expect(clock.advance(20)).rejects.toThrow("timer bug");
    expect(clock.now()).toBe(5);
    await clock.advance(15);
    expect(later).toBe(1);
  });

  it("advanceTo moves to an absolute time; runUntilIdle drains and reports the count", async () => {
    const clock = new FakeClock({ now: 0 });
    clock.setTimeout(() => {}, 1000);
    clock.setTimeout(() => {}, 5000);
    await clock.advanceTo(2000);
    expect(clock.now()).toBe(2000);
    expect(await clock.runUntilIdle()).toBe(1);
    expect(clock.now()).toBe(5000);
    expect(await clock.runAll()).toBe(0);
  });

  it("runUntilIdle throws on a timer that re-arms forever", async () => {
    const clock = new FakeClock({ now: 0 });
    const tick = () => {
      clock.setTimeout(tick, 10);
    };
    tick();
    await expect(clock.runUntilIdle(50)).rejects.toThrow(/re-arming/);
  });

  it("rejects a negative advance", async () => {
    const clock = new FakeClock();
    await expect(clock.advance(-1)).rejects.toThrow(RangeError);
  });

  it("keeps order with many timers (heap)", async () => {
    const clock = new FakeClock({ now: 0 });
    const order: number[] = [];
    const delays = Array.from({ length: 2000 }, (_, i) => (i * 7919) % 1000);
    for (const d of delays) clock.setTimeout(() => order.push(d), d);
    await clock.runUntilIdle();
    expect(order).toEqual([...delays].sort((a, b) => a - b));
  });
});
