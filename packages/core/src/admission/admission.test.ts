import { describe, expect, it } from "vitest";
import { makeEntry, makeTask } from "../resources/__tests__/fixtures.js";
import { FakeClock } from "../testing/index.js";
import { AdmissionControl, type PressureLevel } from "./admission.js";
import { HostPressureSensor, type PressureSample } from "./sensor.js";

describe("AdmissionControl", () => {
  it("moves between levels with hysteresis", async () => {
    const a = new AdmissionControl({
      cpu: { yellow: { enter: 0.7, exit: 0.6 }, red: { enter: 0.9, exit: 0.8 } },
    });
    const seen: PressureLevel[] = [];
    a.on("level", (l) => seen.push(l));
    const cpu = (v: number) => a.update({ cpu: v, memory: 0.1 });
    expect(cpu(0.65)).toBe("green");
    expect(cpu(0.75)).toBe("yellow");
    expect(cpu(0.65)).toBe("yellow"); // above yellow's exit
    expect(cpu(0.95)).toBe("red");
    expect(cpu(0.85)).toBe("red"); // above red's exit
    expect(cpu(0.79)).toBe("yellow");
    expect(cpu(0.59)).toBe("green");
    expect(seen).toEqual(["yellow", "red", "yellow", "green"]);
    // The worst metric wins.
    expect(a.update({ cpu: 0.1, memory: 0.99 })).toBe("red");
  });

  it("holds local workers only while red and wakes the scheduler when pressure falls", async () => {
    const a = new AdmissionControl();
    let wakes = 0;
    a.subscribe(() => wakes++);
    const local = makeEntry({ id: "local" });
    const remote = makeEntry({ id: "remote", local: false });
    const t = makeTask();
    a.update({ cpu: 0.99, memory: 0.5 });
    const d = a.check(t, local);
    expect(d.ok).toBe(false);
    expect(!d.ok && d.reason).toBe(
      "host pressure is red: cpu 99%, memory 50%; local dispatch held",
    );
    expect(a.check(t, remote).ok).toBe(true);
    expect(a.retryAfterSeconds()).toBe(2);
    a.update({ cpu: 0.8, memory: 0.5 }); // yellow: released
    expect(wakes).toBe(1);
    expect(a.check(t, local).ok).toBe(true);
  });

  it("samples on the clock interval without overlapping slow samples", async () => {
    const clock = new FakeClock({ now: 0 });
    const samples: PressureSample[] = [
      { cpu: 0.99, memory: 0 },
      { cpu: 0.99, memory: 0 },
      { cpu: 0.1, memory: 0 },
    ];
    let calls = 0;
    let release: (() => void) | undefined;
    const a = new AdmissionControl({
      clock,
      intervalMs: 100,
      sensor: {
        sample: async () => {
          calls++;
          if (calls === 2) await new Promise<void>((r) => (release = r));
          return samples[Math.min(calls - 1, 2)]!;
        },
      },
    });
    a.start();
    await clock.flush();
    expect(a.level).toBe("red");
    await clock.advance(100); // the second sample hangs
    await clock.advance(100); // skipped: the previous one is still running
    expect(calls).toBe(2);
    release!();
    await clock.advance(100);
    expect(calls).toBe(3);
    expect(a.level).toBe("green");
    a.stop();
    expect(clock.pendingTimers).toBe(0);
  });

  it("rejects nonsensical thresholds", async () => {
    expect(
      () =>
        new AdmissionControl({
          cpu: { yellow: { enter: 0.5, exit: 0.6 }, red: { enter: 0.9, exit: 0.8 } },
        }),
    ).toThrow(/admission.cpu.yellow: exit must be below enter/);
    expect(() => new AdmissionControl({ intervalMs: 0 })).toThrow(
      /admission.intervalMs: must be at least 10 ms/,
    );
    expect(
      () =>
        new AdmissionControl({
          memory: { yellow: { enter: 1.5, exit: 0.6 }, red: { enter: 0.9, exit: 0.8 } },
        }),
    ).toThrow(/admission.memory.yellow.enter: must be at most 1/);
  });

  it("the host sensor returns fractions", async () => {
    const s = new HostPressureSensor();
    for (let i = 0; i < 2; i++) {
      const v = await s.sample();
      expect(v.cpu).toBeGreaterThanOrEqual(0);
      expect(v.cpu).toBeLessThanOrEqual(1);
      expect(v.memory).toBeGreaterThan(0);
      expect(v.memory).toBeLessThanOrEqual(1);
    }
  });
});
