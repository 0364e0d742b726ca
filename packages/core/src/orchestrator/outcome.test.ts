import { describe, expect, it } from "vitest";
import { FlotillaError, UnrecoverableError } from "../errors.js";
import {
  type AttemptEnd,
  judgeAttempt,
  type NextStep,
  nextStep,
  type RetryFacts,
} from "./outcome.js";

const retry = { maxAttempts: 3, initialDelayMs: 1_000, maxDelayMs: 60_000, factor: 2, jitter: 0 };
const facts = (over: Partial<RetryFacts> = {}): RetryFacts => ({
  attempt: 1,
  freeAttempts: 0,
  retry,
  approval: "none",
  now: 10_000,
  random: () => 0,
  ...over,
});
const error = (code: ConstructorParameters<typeof FlotillaError>[0], retryable: boolean) =>
  new FlotillaError(code, "boom", { retryable });

describe("outcome policy (nextStep)", () => {
  const rows: Array<[string, AttemptEnd, Partial<RetryFacts>, NextStep]> = [
    [
      "success",
      { kind: "success", result: { output: 1 } },
      {},
      { kind: "finish", status: "succeeded" },
    ],
    [
      "success held for approval",
      { kind: "success", result: { output: 1 } },
      { approval: "after_run" },
      { kind: "hold" },
    ],
    [
      "hand-back is free",
      { kind: "requeue", reason: "worker w unregistered" },
      {},
      { kind: "requeue", reason: "worker w unregistered", free: true },
    ],
    [
      "cancel ends it",
      { kind: "cancelled", reason: "stop" },
      {},
      { kind: "finish", status: "cancelled" },
    ],
    [
      "retryable error backs off",
      { kind: "error", error: error("WORKER_ERROR", true) },
      {},
      { kind: "requeue", reason: "retry after WORKER_ERROR", free: false, notBefore: 11_000 },
    ],
    [
      "Retry-After longer than backoff wins",
      { kind: "error", error: error("RATE_LIMITED", true), retryAfterMs: 5_000 },
      {},
      { kind: "requeue", reason: "retry after RATE_LIMITED", free: false, notBefore: 15_001 },
    ],
    [
      "non-retryable error fails",
      { kind: "error", error: error("WORKER_ERROR", false) },
      {},
      { kind: "finish", status: "failed" },
    ],
    [
      "VALIDATION never retried",
      { kind: "error", error: error("VALIDATION", true) },
      {},
      { kind: "finish", status: "failed" },
    ],
    [
      "CANCELLED error never retried",
      { kind: "error", error: error("CANCELLED", true) },
      {},
      { kind: "finish", status: "failed" },
    ],
    [
      "timeout retried",
      { kind: "timeout" },
      {},
      { kind: "requeue", reason: "retry after timeout", free: false, notBefore: 11_000 },
    ],
    [
      "timeout on the last attempt",
      { kind: "timeout" },
      { attempt: 3 },
      { kind: "finish", status: "timed_out" },
    ],
    [
      "lost lease retried at once",
      { kind: "lost", reason: "lease expired" },
      {},
      { kind: "requeue", reason: "retry after lost", free: false },
    ],
    [
      "lost on the last attempt fails",
      { kind: "lost", reason: "lease expired" },
      { attempt: 3 },
      { kind: "finish", status: "failed" },
    ],
    [
      "hand-backs do not count",
      { kind: "error", error: error("WORKER_ERROR", true) },
      { attempt: 3, freeAttempts: 1 },
      { kind: "requeue", reason: "retry after WORKER_ERROR", free: false, notBefore: 14_000 },
    ],
  ];
  it.each(rows)("%s", (_name, end, over, expected) => {
    expect(nextStep(end, facts(over))).toEqual(expected);
  });

  it("exponential backoff grows with the attempt number", () => {
    const at = (attempt: number) =>
      nextStep({ kind: "timeout" }, facts({ retry: { ...retry, maxAttempts: 9 }, attempt }));
    expect(at(1)).toMatchObject({ notBefore: 11_000 });
    expect(at(3)).toMatchObject({ notBefore: 14_000 });
  });
});

describe("attempt verdict (judgeAttempt)", () => {
  const f = { taskId: "t", attempt: 2, holder: "w1", timeoutMs: 500 };
  it("a success is healthy and has no error", () => {
    expect(judgeAttempt({ kind: "success", result: { output: 1 } }, f)).toEqual({
      status: "succeeded",
      healthy: true,
    });
  });
  it("a worker error counts against the worker; the task's own fault does not", () => {
    expect(judgeAttempt({ kind: "error", error: error("WORKER_ERROR", true) }, f)).toMatchObject({
      status: "failed",
      healthy: false,
      error: { code: "WORKER_ERROR" },
    });
    expect(judgeAttempt({ kind: "error", error: error("VALIDATION", false) }, f).healthy).toBe(
      true,
    );
    const unrecoverable = FlotillaError.from(new UnrecoverableError("bad input"), "WORKER_ERROR");
    expect(judgeAttempt({ kind: "error", error: unrecoverable }, f).healthy).toBe(true);
  });
  it("a rate-limit signal (429, Retry-After) does not count for the worker's health", () => {
    const slowDown = {
      kind: "error",
      error: error("RATE_LIMITED", true),
      retryAfterMs: 30_000,
    } as const;
    expect(judgeAttempt(slowDown, f)).toEqual({
      status: "failed",
      error: { code: "RATE_LIMITED", message: "boom", retryable: true },
    });
    const withRetryAfter = {
      kind: "error",
      error: error("WORKER_ERROR", true),
      retryAfterMs: 5,
    } as const;
    expect(judgeAttempt(withRetryAfter, f).healthy).toBeUndefined();
  });

  it("a timeout names the task, the limit and the attempt, and aborts the worker", () => {
    const v = judgeAttempt({ kind: "timeout" }, f);
    expect(v.status).toBe("timed_out");
    expect(v.error?.message).toBe("task t timed out after 500 ms (attempt 2)");
    expect(v.abort?.code).toBe("TIMEOUT");
  });
  it("a lost lease names its holder; a hand-back has no error and is not counted", () => {
    expect(judgeAttempt({ kind: "lost", reason: "lease L expired" }, f).error?.message).toBe(
      "lease L expired (holder w1)",
    );
    expect(judgeAttempt({ kind: "requeue", reason: "stop" }, f)).toMatchObject({
      status: "cancelled",
      abort: { code: "WORKER_LOST" },
    });
    expect(judgeAttempt({ kind: "requeue", reason: "stop" }, f).healthy).toBeUndefined();
    expect(judgeAttempt({ kind: "cancelled", reason: "x" }, f).healthy).toBeUndefined();
  });
});
