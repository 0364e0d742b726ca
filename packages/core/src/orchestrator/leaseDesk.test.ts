import { describe, expect, it } from "vitest";
import { testEngine } from "./engine.test-helpers.js";

describe("LeaseDesk", () => {
  it("claims the best task for a remote slot and runs the lease through to completion", async () => {
    const e = testEngine();
    await e.queued({ id: "low", priority: "low" });
    const high = await e.queued({ id: "high", priority: "high" });
    e.parts.dispatcher.enqueue(e.parts.table.live("low")!);
    e.parts.dispatcher.enqueue(high);
    const claim = await e.parts.leases.claim(
      { holderId: "node-1", taskTypes: ["t"] },
      { leaseMs: 5_000 },
    );
    expect(claim?.record).toMatchObject({ id: "high", status: "leased", workerId: "node-1" });
    const leaseId = claim!.lease.id;
    await e.parts.leases.progress("high", leaseId, { percent: 50 });
    expect(high.rec.status).toBe("running");
    const done = await e.parts.leases.complete("high", leaseId, { output: 42 });
    expect(done).toMatchObject({ status: "succeeded", result: { output: 42 } });
  });

  it("refuses a lease that does not hold the task, naming why", async () => {
    const e = testEngine();
    const a = await e.queued({ id: "a" });
    e.parts.dispatcher.enqueue(a);
    const claim = await e.parts.leases.claim({ holderId: "node-1" }, { leaseMs: 5_000 });
    await expect(e.parts.leases.renew("a", "not-the-lease")).rejects.toMatchObject({
      code: "FORBIDDEN",
    });
    await expect(e.parts.leases.renew("nope", claim!.lease.id)).rejects.toMatchObject({
      code: "NOT_FOUND",
    });
    await e.parts.leases.complete("a", claim!.lease.id, { output: 1 });
    await expect(e.parts.leases.renew("a", claim!.lease.id)).rejects.toMatchObject({
      code: "INVALID_STATE",
      message: "task a is succeeded; its lease has ended",
    });
  });

  it("an expired lease loses the attempt: the task is queued again for another holder", async () => {
    const e = testEngine();
    const a = await e.queued({ id: "a", retry: { maxAttempts: 2 } });
    e.parts.dispatcher.enqueue(a);
    await e.parts.leases.claim({ holderId: "node-1" }, { leaseMs: 1_000 });
    await e.clock.advance(1_000);
    expect(a.rec.status).toBe("queued");
    const again = await e.parts.leases.claim({ holderId: "node-2" }, { leaseMs: 1_000 });
    expect(again?.record).toMatchObject({ id: "a", attempt: 2, workerId: "node-2" });
  });
});
