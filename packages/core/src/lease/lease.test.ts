import { afterEach, describe, expect, it } from "vitest";
import type { Orchestrator } from "../orchestrator/orchestrator.js";
import { fnWorker, started } from "../orchestrator/testkit.test-helpers.js";
import type { Worker } from "../worker/types.js";

const running: Orchestrator[] = [];
afterEach(async () => {
  for (const o of running.splice(0)) await o.stop({ mode: "abort" });
});

async function setup(options: Parameters<typeof started>[0] = {}) {
  const s = await started({ leaseMs: 10_000, ...options });
  running.push(s.orchestrator);
  return s;
}

const node = (id: string, labels: Record<string, string> = {}): Worker => ({
  id,
  kind: "remote-node",
  name: id,
  taskTypes: ["remote_compute"],
  labels,
  maxConcurrency: 1,
  local: false,
  execute: async () => {
    throw new Error("never pushed");
  },
});

describe("pull dispatch and leases", () => {
  it("claims the best ready task the slot can run, honouring targets, with a lease", async () => {
    const { orchestrator } = await setup();
    await orchestrator.submitBatch([
      { id: "low", type: "remote_compute", priority: "low" },
      {
        id: "for-beta",
        type: "remote_compute",
        priority: "critical",
        target: { name: "client-beta-*" },
      },
      { id: "high", type: "remote_compute", priority: "high" },
      { id: "other-type", type: "llm_request", priority: "critical" },
    ]);
    const claim = await orchestrator.claim({
      holderId: "client-acme-prod-1",
      taskTypes: ["remote_compute"],
    });
    expect(claim?.task.id).toBe("high");
    expect(claim?.lease.holder).toBe("client-acme-prod-1");
    expect(claim?.lease.expiresAt).toBe(orchestrator.clock.now() + 10_000);
    expect(claim?.record.status).toBe("leased");
    const beta = await orchestrator.claim(
      { holderId: "n2", name: "client-beta-prod-1", taskTypes: ["*"] },
      { leaseMs: 500 },
    );
    expect(beta?.task.id).toBe("for-beta");
    expect(beta?.lease.expiresAt).toBe(orchestrator.clock.now() + 500);
  });

  it("does not push to remote-node workers: their slots are filled only by claim", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(node("node-1"));
    const h = await orchestrator.submit({ type: "remote_compute" });
    await clock.advance(5_000);
    expect(h.status).toBe("queued");
    const claim = await orchestrator.claim({ holderId: "node-1" });
    expect(claim?.task.id).toBe(h.id);
    expect(orchestrator.registry.get("node-1")?.inFlight).toBe(1);
    // its one slot is taken: no second claim
    await orchestrator.submit({ type: "remote_compute" });
    expect(await orchestrator.claim({ holderId: "node-1" })).toBeNull();
    await orchestrator.completeLease(h.id, claim!.lease.id, { output: "done" });
    expect((await h.result()).output).toBe("done");
    expect(orchestrator.registry.get("node-1")?.inFlight).toBe(0);
  });

  it("checks renew/complete/fail against the holder", async () => {
    const { orchestrator } = await setup();
    const h = await orchestrator.submit({ type: "remote_compute" });
    const c = (await orchestrator.claim({ holderId: "n1" }))!;
    await expect(orchestrator.renewLease(h.id, "not-the-lease")).rejects.toMatchObject({
      code: "FORBIDDEN",
    });
    await expect(
      orchestrator.completeLease("nope", c.lease.id, { output: 1 }),
    ).rejects.toMatchObject({ code: "NOT_FOUND" });
    await orchestrator.completeLease(h.id, c.lease.id, { output: 1 });
    await expect(orchestrator.completeLease(h.id, c.lease.id, { output: 2 })).rejects.toMatchObject(
      {
        code: "INVALID_STATE",
        message: expect.stringContaining("succeeded"),
      },
    );
    expect((await h.result()).output).toBe(1);
  });

  it("renewal keeps a live holder's task; expiry requeues it as a new attempt, then WORKER_LOST", async () => {
    const { orchestrator, clock } = await setup();
    const h = await orchestrator.submit({ type: "remote_compute", retry: { maxAttempts: 2 } });
    const c1 = (await orchestrator.claim({ holderId: "n1" }))!;
    await clock.advance(9_000);
    await orchestrator.renewLease(h.id, c1.lease.id);
    await clock.advance(9_000);
    await orchestrator.reportProgress(h.id, c1.lease.id, { pct: 50 });
    expect(h.status).toBe("running");
    // a live holder's task is never handed to another
    expect(await orchestrator.claim({ holderId: "n2" })).toBeNull();
    await clock.advance(10_000);
    expect(h.status).toBe("queued");
    await expect(
      orchestrator.completeLease(h.id, c1.lease.id, { output: "late" }),
    ).rejects.toMatchObject({ code: "FORBIDDEN" });
    const c2 = (await orchestrator.claim({ holderId: "n2" }))!;
    expect(c2.task.attempt).toBe(2);
    expect(c2.record.attempt).toBe(2);
    await clock.advance(10_000);
    const r = await h.result();
    expect(r.status).toBe("failed");
    expect(r.error?.code).toBe("WORKER_LOST");
    expect(r.attempts).toBe(2);
  });

  it("failLease retries per policy; releaseLease requeues; progress is streamed", async () => {
    const { orchestrator } = await setup();
    const h = await orchestrator.submit({
      type: "remote_compute",
      retry: { maxAttempts: 2, initialDelayMs: 0 },
    });
    const seen: unknown[] = [];
    const it = h.progress();
    const reading = (async () => {
      for await (const p of it) seen.push(p.data);
    })();
    const c1 = (await orchestrator.claim({ holderId: "n1" }))!;
    await orchestrator.reportProgress(h.id, c1.lease.id, "token-1");
    await orchestrator.reportProgress(h.id, c1.lease.id, "token-2");
    await orchestrator.releaseLease(h.id, c1.lease.id);
    expect(h.status).toBe("queued");
    const c2 = (await orchestrator.claim({ holderId: "n1" }))!;
    await orchestrator.failLease(h.id, c2.lease.id, {
      code: "WORKER_ERROR",
      message: "exit 1",
      retryable: true,
    });
    await new Promise((r) => setImmediate(r));
    const c3 = (await orchestrator.claim({ holderId: "n1" }))!;
    expect(c3).not.toBeNull();
    await orchestrator.failLease(h.id, c3.lease.id, new Error("exit 2"));
    const r = await h.result();
    expect(r.status).toBe("failed");
    expect(r.error?.message).toContain("exit 2");
    await reading;
    expect(seen).toEqual(["token-1", "token-2"]);
  });

  it("validates the slot", async () => {
    const { orchestrator } = await setup();
    await expect(orchestrator.claim({ holderId: "" })).rejects.toMatchObject({
      code: "VALIDATION",
      message: expect.stringContaining("slot.holderId"),
    });
  });

  it("gives local dispatch a lease too", async () => {
    const { orchestrator } = await setup();
    let leaseHolder: string | undefined;
    orchestrator.on("task:running", (e) => {
      leaseHolder = e.task.lease?.holder;
    });
    await orchestrator.register(fnWorker("w", ["t"], async () => 1));
    await (await orchestrator.submit({ type: "t" })).result();
    expect(leaseHolder).toBe("w");
  });
});
