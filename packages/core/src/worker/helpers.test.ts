import { describe, expect, it } from "vitest";
import { FakeClock } from "../testing/index.js";
import { callSignal, redact } from "./base.js";

describe("callSignal", () => {
  it("aborts with Error('timeout') after ms on the clock and says so", async () => {
    const clock = new FakeClock();
    const call = callSignal(new AbortController().signal, { clock, ms: 100 });
    await clock.advance(99);
    expect(call.signal.aborted).toBe(false);
    await clock.advance(1);
    expect(call.signal.aborted).toBe(true);
    expect((call.signal.reason as Error).message).toBe("timeout");
    expect(call.timedOut).toBe(true);
    call.dispose();
  });

  it("follows the parent with its reason, also when it is already aborted", () => {
    const clock = new FakeClock();
    const parent = new AbortController();
    const call = callSignal(parent.signal, { clock, ms: 100 });
    parent.abort("cancelled");
    expect(call.signal.reason).toBe("cancelled");
    expect(call.timedOut).toBe(false);
    call.dispose();
    const early = callSignal(parent.signal);
    expect(early.signal.aborted).toBe(true);
    expect(early.signal.reason).toBe("cancelled");
    early.dispose();
  });

  it("dispose clears the timer and stops following the parent", async () => {
    const clock = new FakeClock();
    const parent = new AbortController();
    const call = callSignal(parent.signal, { clock, ms: 100 });
    expect(clock.pendingTimers).toBe(1);
    call.dispose();
    expect(clock.pendingTimers).toBe(0);
    parent.abort();
    await clock.advance(200);
    expect(call.signal.aborted).toBe(false);
  });

  it("without a timeout sets no timer and without a parent only times out", async () => {
    const clock = new FakeClock();
    expect(callSignal(undefined).signal.aborted).toBe(false);
    const call = callSignal(undefined, { clock, ms: 10 });
    await clock.advance(10);
    expect(call.timedOut).toBe(true);
  });
});

describe("redact", () => {
  it("replaces every occurrence of each secret of 4 characters or more", () => {
    expect(redact("key sk-1234 and sk-1234 again; abc stays", ["sk-1234", "abc", ""])).toBe(
      "key [redacted] and [redacted] again; abc stays",
    );
  });
});
