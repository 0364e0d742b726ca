import { describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import { assertTransition, canTransition, isTerminalStatus, TRANSITIONS } from "./lifecycle.js";
import { normalizeTaskSpec } from "./normalize.js";
import { TASK_STATUSES } from "./schema.js";

describe("lifecycle", () => {
  it("allows the documented path and nothing out of a terminal status", () => {
    const path = ["pending", "queued", "leased", "running", "succeeded"] as const;
    for (let i = 1; i < path.length; i++) expect(canTransition(path[i - 1]!, path[i]!)).toBe(true);
    for (const s of TASK_STATUSES) {
      if (isTerminalStatus(s)) expect(TRANSITIONS[s]).toEqual([]);
    }
    expect(canTransition("queued", "succeeded")).toBe(false);
    expect(canTransition("pending", "running")).toBe(false);
    expect(canTransition("running", "skipped")).toBe(false);
  });

  it("throws INVALID_STATE naming both states", () => {
    try {
      assertTransition("succeeded", "running", "t1");
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(FlotillaError);
      expect((err as FlotillaError).code).toBe("INVALID_STATE");
      expect((err as FlotillaError).message).toBe(
        'task t1 cannot go from "succeeded" to "running"',
      );
    }
  });
});

describe("normalizeTaskSpec", () => {
  it("fills documented defaults and maps priorities", () => {
    const r = normalizeTaskSpec({ type: "t" }, { now: 5, seq: 1 });
    expect(r).toMatchObject({
      type: "t",
      priority: 20,
      status: "pending",
      dependsOn: [],
      onDependencyFailure: "skip",
      approval: "none",
      attempt: 0,
      rateLimitKeys: [],
      metadata: {},
      createdAt: 5,
      retry: { maxAttempts: 1, initialDelayMs: 1000, maxDelayMs: 60000, factor: 2, jitter: 0.2 },
    });
    expect(r.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(
      normalizeTaskSpec({ type: "t", priority: "background" }, { now: 0, seq: 1 }).priority,
    ).toBe(0);
    expect(normalizeTaskSpec({ type: "t", priority: 12.5 }, { now: 0, seq: 1 }).priority).toBe(
      12.5,
    );
    const d = normalizeTaskSpec(
      { type: "t", retry: { initialDelayMs: 5 }, rateLimitKey: ["a", "a", "b"] },
      {
        now: 0,
        seq: 1,
        defaults: { priority: "low", timeoutMs: 9, retry: { maxAttempts: 4 }, tenant: "x" },
      },
    );
    expect(d).toMatchObject({ priority: 10, timeoutMs: 9, tenant: "x", rateLimitKeys: ["a", "b"] });
    expect(d.retry).toMatchObject({ maxAttempts: 4, initialDelayMs: 5 });
  });

  it("names the field path and expectation on bad input", () => {
    const bad = (spec: unknown) => {
      try {
        normalizeTaskSpec(spec as never, { now: 0, seq: 1 });
        return "no error";
      } catch (err) {
        expect((err as FlotillaError).code).toBe("VALIDATION");
        return (err as FlotillaError).message;
      }
    };
    expect(bad({})).toMatch(/^task\.type: .*expected string/);
    const expected = "expected one of critical, high, normal, low, background, or a finite number";
    expect(bad({ type: "t", priority: "urgent" })).toBe(
      `task.priority: ${expected} (got "urgent")`,
    );
    expect(bad({ type: "t", priority: Number.NaN })).toBe(`task.priority: ${expected} (got NaN)`);
    expect(bad({ type: "t", priority: "10" })).toBe(`task.priority: ${expected} (got "10")`);
    expect(bad({ type: "t", timeoutMs: -1 })).toMatch(/task\.timeoutMs/);
    expect(bad({ type: "t", dependsOn: [""] })).toMatch(/task\.dependsOn\[0\]/);
    expect(bad({ type: "t", retry: { initialDelayMs: 10, maxDelayMs: 5 } })).toMatch(
      /task\.retry\.maxDelayMs/,
    );
    expect(bad(null)).toBe("task: expected a task object, got null");
  });

  it("refuses fields it does not know, naming the one most likely meant", () => {
    const bad = (spec: unknown) => {
      try {
        normalizeTaskSpec(spec as never, { now: 0, seq: 1 });
        return "no error";
      } catch (err) {
        return (err as FlotillaError).message;
      }
    };
    expect(bad({ type: "t", priorty: "high", timeout: 5 })).toMatch(
      /^task: unknown fields "priorty" \(did you mean "priority"\?\), "timeout" \(did you mean "timeoutMs"\?\): expected only id, type, /,
    );
    expect(bad({ type: "t", aproval: "before_run" })).toMatch(
      /"aproval" \(did you mean "approval"\?\)/,
    );
    expect(bad({ type: "t", retry: { maxAttempt: 3 } })).toMatch(
      /^task\.retry: unknown field "maxAttempt" \(did you mean "maxAttempts"\?\)/,
    );
    expect(bad({ type: "t", target: { workerID: "w" } })).toMatch(/did you mean "workerId"/);
    expect(bad({ type: "t", colour: "red" })).toMatch(
      /^task: unknown field "colour": expected only /,
    );
  });
});

describe("normalizeTaskSpec fast path", () => {
  const opts = { now: 1_000, seq: 1 };
  const valid: Array<Record<string, unknown>> = [
    { id: "a", type: "t" },
    { id: "b", type: "t", priority: "high", payload: { x: [1, 2] } },
    { id: "c", type: "t", priority: -3.5, dependsOn: ["x", "y", "x"], timeoutMs: 5 },
    { id: "d", type: "t", rateLimitKey: ["k", "k", "j"], tenant: "acme", runAt: 0 },
    { id: "e", type: "t", rateLimitKey: "k", idempotencyKey: "i" },
    { id: "f", type: "t", priority: undefined, metadata: undefined },
  ];
  it("gives the record the schema path gives", () => {
    for (const spec of valid) {
      // `approval: "none"` is the default, and sends the spec through the schema.
      const viaSchema = normalizeTaskSpec({ ...spec, approval: "none" } as never, opts);
      expect(normalizeTaskSpec(spec as never, opts)).toEqual(viaSchema);
    }
  });

  it("leaves every refusal, and its message, to the schema", () => {
    const invalid: Array<Record<string, unknown>> = [
      { type: "" },
      { type: "t", id: "x".repeat(257) },
      { type: "t", priority: Number.NaN },
      { type: "t", priority: "urgent" },
      { type: "t", priority: Number.POSITIVE_INFINITY },
      { type: "t", timeoutMs: 1.5 },
      { type: "t", timeoutMs: 0 },
      { type: "t", runAt: -1 },
      { type: "t", dependsOn: ["ok", ""] },
      { type: "t", dependsOn: "a" },
      { type: "t", rateLimitKey: [1] },
      { type: "t", tenant: "" },
      { type: "t", priorty: "high" },
      { type: "t", idempotencyKey: 5 },
      { type: 5 },
    ];
    for (const spec of invalid) {
      const slow = (() => {
        try {
          normalizeTaskSpec({ ...spec, approval: "none" } as never, opts);
        } catch (err) {
          return (err as FlotillaError).message;
        }
        return "accepted";
      })();
      expect(slow).not.toBe("accepted");
      expect(() => normalizeTaskSpec(spec as never, opts)).toThrow(slow);
    }
  });
});
