import { describe, expect, it } from "vitest";
import { RetryAfterError, UnrecoverableError } from "../errors.js";
import { TERMINAL_STATUSES } from "../task/schema.js";
import { FakeClock } from "../testing/index.js";
import type { Worker } from "../worker/types.js";
import { Orchestrator } from "./orchestrator.js";
import { sleep } from "./testkit.test-helpers.js";

/** A deterministic pseudo-random generator (mulberry32). */
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("under load and failure", () => {
  it.each([
    ["without circuit breaking", 1_000_000, 100],
    ["with circuits opening and probing", 5, 1_000],
  ])(
    "every task ends exactly once, no slot leaks, no timers left, with random faults and cancels (%s)",
    async (_name, failureThreshold, step) => {
      const random = rng(42);
      const clock = new FakeClock();
      const o = new Orchestrator({
        clock,
        random,
        concurrency: 12,
        registry: { circuit: { failureThreshold, cooldownMs: 5_000 } },
      });
      await o.start();
      const behaviours = [
        "ok",
        "throw",
        "unrecoverable",
        "malformed",
        "hang",
        "slow",
        "retry-after",
      ];
      const make = (id: string, slots: number): Worker => ({
        id,
        kind: "chaos",
        taskTypes: ["job"],
        maxConcurrency: slots,
        execute: async (task, ctx) => {
          const b = (task.payload as { b: string }).b;
          switch (b) {
            case "ok":
              await sleep(clock, 1 + Math.floor(random() * 20));
              return { output: task.id };
            case "throw":
              throw new Error("flaky");
            case "unrecoverable":
              throw new UnrecoverableError("bad");
            case "malformed":
              return "just a string" as never;
            case "hang":
              return new Promise(() => {}); // ignores its signal entirely
            case "slow":
              await sleep(clock, 200, ctx.signal);
              return { output: "slow" };
            default:
              throw new RetryAfterError(50);
          }
        },
      });
      await o.register(make("a", 4));
      await o.register(make("b", 3));
      const terminalEvents = new Map<string, number>();
      o.on("task:transition", (e) => {
        if (TERMINAL_STATUSES.has(e.to))
          terminalEvents.set(e.taskId, (terminalEvents.get(e.taskId) ?? 0) + 1);
      });
      const handles = [];
      for (let round = 0; round < 10; round++) {
        const batch = Array.from({ length: 40 }, (_, i) => {
          const b = behaviours[Math.floor(random() * behaviours.length)]!;
          const spec: Parameters<typeof o.submit>[0] = {
            id: `r${round}-${i}`,
            type: "job",
            payload: { b },
            priority: Math.floor(random() * 5) * 10,
            timeoutMs: 100,
            retry: { maxAttempts: 1 + Math.floor(random() * 3), initialDelayMs: 5 },
          };
          if (i > 0 && random() < 0.3) spec.dependsOn = [`r${round}-${Math.floor(random() * i)}`];
          return spec;
        });
        handles.push(...(await o.submitBatch(batch)));
        await clock.advance(30);
        for (let k = 0; k < 5; k++) {
          const victim = handles[Math.floor(random() * handles.length)]!;
          void victim.cancel("chaos");
        }
      }
      for (let i = 0; i < 2_000 && handles.some((h) => !TERMINAL_STATUSES.has(h.status)); i++) {
        await clock.advance(step);
      }
      const results = await Promise.all(handles.map((h) => h.result()));
      for (const r of results) {
        expect(TERMINAL_STATUSES.has(r.status)).toBe(true);
        expect(terminalEvents.get(r.taskId)).toBe(1);
        const b = (await o.get(r.taskId))!.payload as { b: string };
        if (r.status === "succeeded") expect(["ok", "slow"]).toContain(b.b);
      }
      const s = o.status();
      expect(s.inFlight).toBe(0);
      expect(s.queued + s.delayed).toBe(0);
      for (const w of s.workers) expect(w.inFlight).toBe(0);
      const counted = Object.entries(s.counts)
        .filter(([k]) => TERMINAL_STATUSES.has(k as never))
        .reduce((n, [, v]) => n + v, 0);
      expect(counted).toBe(handles.length);
      // stored state agrees with what the handles saw
      for (const r of results) expect((await o.store.getTask(r.taskId))?.status).toBe(r.status);
      await o.stop({ mode: "abort" });
      expect(clock.pendingTimers).toBe(0);
    },
    60_000,
  );

  it("remote holders that complete, fail, release, renew or vanish: each task ends once, never two live holders", async () => {
    const random = rng(7);
    const clock = new FakeClock();
    const o = new Orchestrator({ clock, random, leaseMs: 1_000 });
    await o.start();
    const handles = await o.submitBatch(
      Array.from({ length: 300 }, (_, i) => ({
        id: `j${i}`,
        type: "remote_compute",
        priority: (i % 5) * 10,
        retry: { maxAttempts: 3, initialDelayMs: 10 },
      })),
    );
    const holding = new Map<string, { holder: string; leaseId: string }>();
    let doubleHold = 0;
    let reclaimed = 0;
    const ended = new Map<string, number>();
    o.on("task:transition", (e) => {
      if (TERMINAL_STATUSES.has(e.to)) ended.set(e.taskId, (ended.get(e.taskId) ?? 0) + 1);
    });
    for (
      let step = 0;
      step < 400 && handles.some((h) => !TERMINAL_STATUSES.has(h.status));
      step++
    ) {
      for (let n = 0; n < 5; n++) {
        const holder = `node-${n}`;
        const claim = await o.claim({ holderId: holder });
        if (!claim) continue;
        const current = holding.get(claim.task.id);
        if (current) {
          reclaimed++;
          // the previous holder's lease must be dead by now: renewing it must be refused
          const stillValid = await o.renewLease(claim.task.id, current.leaseId).then(
            () => true,
            () => false,
          );
          if (stillValid) doubleHold++;
        }
        holding.set(claim.task.id, { holder, leaseId: claim.lease.id });
      }
      for (const [taskId, h] of [...holding]) {
        const roll = random();
        const call =
          roll < 0.3
            ? o.completeLease(taskId, h.leaseId, { output: h.holder })
            : roll < 0.4
              ? o.failLease(taskId, h.leaseId, new Error("remote error"))
              : roll < 0.5
                ? o.releaseLease(taskId, h.leaseId)
                : roll < 0.7
                  ? o.reportProgress(taskId, h.leaseId, roll)
                  : undefined; // silence: the lease may expire
        if (call === undefined) continue;
        try {
          await call;
          if (roll < 0.5) holding.delete(taskId);
        } catch (err) {
          // the lease expired meanwhile: the holder lost it
          expect((err as { code: string }).code).toMatch(/FORBIDDEN|INVALID_STATE/);
          holding.delete(taskId);
        }
      }
      await clock.advance(200);
    }
    const results = await Promise.all(handles.map((h) => h.result()));
    expect(reclaimed).toBeGreaterThan(0); // expired leases were handed out again…
    expect(doubleHold).toBe(0); // …but never while the previous lease was alive
    for (const r of results) {
      expect(ended.get(r.taskId)).toBe(1);
      if (r.status === "succeeded") expect(r.output).toMatch(/^node-/);
      else expect(["WORKER_LOST", "WORKER_ERROR"]).toContain(r.error?.code);
    }
    expect(o.status().inFlight).toBe(0);
    await o.stop();
    expect(clock.pendingTimers).toBe(0);
  }, 60_000);
});
