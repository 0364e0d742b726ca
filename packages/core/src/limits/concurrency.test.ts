import { describe, expect, it } from "vitest";
import { makeEntry, makeTask } from "../resources/__tests__/fixtures.js";
import { ConcurrencyLimiter } from "./concurrency.js";

describe("ConcurrencyLimiter", () => {
  it("caps running tasks per tenant, releases on settle and wakes the scheduler", () => {
    const c = new ConcurrencyLimiter({ limits: { acme: 2 }, default: 1 });
    let wakes = 0;
    c.subscribe(() => wakes++);
    const w = makeEntry();
    const a = [
      makeTask({ tenant: "acme" }),
      makeTask({ tenant: "acme" }),
      makeTask({ tenant: "acme" }),
    ];
    for (const t of a.slice(0, 2)) {
      expect(c.check(t, w).ok).toBe(true);
      c.onDispatch(t, w);
    }
    const d = c.check(a[2]!, w);
    expect(!d.ok && d.reason).toBe('tenant "acme" is at its concurrency cap (2)');
    expect(c.check(makeTask({ tenant: "beta" }), w).ok).toBe(true);
    c.onSettle(a[0]!);
    c.onSettle(a[0]!); // settling twice releases once
    expect(wakes).toBe(1);
    expect(c.stats().acme).toEqual({ inFlight: 1, limit: 2 });
    expect(c.check(a[2]!, w).ok).toBe(true);
    c.setLimit("acme", 1);
    expect(c.check(a[2]!, w).ok).toBe(false);
  });

  it("accepts any key and validates caps", () => {
    const c = new ConcurrencyLimiter({ key: (_t, w) => w.id, label: "worker", limits: { w1: 1 } });
    const w = makeEntry();
    c.onDispatch(makeTask(), w);
    expect(c.check(makeTask(), w)).toMatchObject({
      ok: false,
      reason: 'worker "w1" is at its concurrency cap (1)',
    });
    expect(() => new ConcurrencyLimiter({ limits: { a: 0 } })).toThrow(
      /tenantConcurrency.limits.a: must be at least 1/,
    );
    expect(() => new ConcurrencyLimiter({ default: 1.5 })).toThrow(
      /tenantConcurrency.default: must be a whole number/,
    );
  });
});
