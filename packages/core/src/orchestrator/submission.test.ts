import { describe, expect, it } from "vitest";
import { testEngine } from "./engine.test-helpers.js";
import { Orchestrator } from "./orchestrator.js";

describe("Submission", () => {
  it("stores a batch all or nothing, in dependency order, with each task's first status", async () => {
    const e = testEngine("idle"); // no dispatch: only what submission decides
    const [child, parent, gated] = await e.parts.submission.submit(
      [
        { id: "child", type: "t", dependsOn: ["parent"] },
        { id: "parent", type: "t" },
        { id: "gated", type: "t", approval: "before_run" },
      ],
      "tasks",
    );
    expect([child!.status, parent!.status, gated!.status]).toEqual([
      "pending",
      "queued",
      "awaiting_approval",
    ]);
    expect((await e.store.getTask("child"))?.status).toBe("pending");
    // A duplicate id anywhere in a batch stores none of it.
    await expect(
      e.parts.submission.submit(
        [
          { id: "fresh", type: "t" },
          { id: "parent", type: "t" },
        ],
        "tasks",
      ),
    ).rejects.toMatchObject({ code: "CONFLICT" });
    expect(await e.store.getTask("fresh")).toBeUndefined();
  });

  it("an idempotency key gives concurrent submits the same task", async () => {
    const e = testEngine("idle");
    const spec = { type: "t", idempotencyKey: "order-42" };
    const [[a], [b]] = await Promise.all([
      e.parts.submission.submit([spec], "task"),
      e.parts.submission.submit([spec], "task"),
    ]);
    expect(a!.id).toBe(b!.id);
    expect(await e.store.countTasks()).toBe(1);
  });

  it("refuses to take work while stopping", async () => {
    const e = testEngine("stopping");
    await expect(e.parts.submission.submit([{ type: "t" }], "task")).rejects.toMatchObject({
      code: "SHUTTING_DOWN",
    });
  });

  it("refuses a payload over the size limit, naming the size and the limit", async () => {
    const o = new Orchestrator({ maxPayloadBytes: 1_000 });
    const err = await o
      .submit({ id: "big", type: "t", payload: { text: "x".repeat(2_000) } })
      .catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: "VALIDATION",
      message:
        "task big: payload is 2011 bytes, over the limit of 1000 bytes (maxPayloadBytes); pass large inputs by reference",
      details: { field: "payload", bytes: 2011, limit: 1000 },
    });
    expect(await o.get("big")).toBeUndefined();
    await expect(o.submit({ type: "t", payload: "é".repeat(600) })).rejects.toMatchObject({
      details: { bytes: 1200 },
    });
    expect((await o.submit({ type: "t", payload: { text: "x".repeat(900) } })).id).toBeTruthy();
    // The default is 8 MiB.
    const dflt = new Orchestrator();
    await expect(
      dflt.submit({ type: "t", payload: "x".repeat(8 * 1024 * 1024 + 1) }),
    ).rejects.toMatchObject({ details: { limit: 8 * 1024 * 1024 } });
  });
});
