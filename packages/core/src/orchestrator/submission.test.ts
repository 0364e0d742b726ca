import { describe, expect, it } from "vitest";
import { testEngine } from "./engine.test-helpers.js";

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
});
