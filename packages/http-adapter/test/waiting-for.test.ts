import { FunctionWorker } from "@flotilla/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "./helpers.js";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({
    workers: [
      new FunctionWorker({ id: "w", taskTypes: ["custom"], fn: () => new Promise(() => {}) }),
    ],
    taskTypes: ["transcribe"],
  });
});
afterAll(async () => {
  await h?.close();
});

describe("GET /tasks/{id} says why a task waits", () => {
  it("names the missing worker, and the busy one", async () => {
    const nobody = await h.req("/tasks/submit", { method: "POST", json: { type: "transcribe" } });
    const { task_id: id } = (await nobody.json()) as { task_id: string };
    const view = (await (await h.req(`/tasks/${id}`)).json()) as {
      status: string;
      waiting_for: Array<{ kind: string; missing?: string; message: string }>;
    };
    expect(view.status).toBe("queued");
    expect(view.waiting_for).toEqual([
      {
        kind: "no_worker",
        missing: "type",
        value: "transcribe",
        message: 'no registered worker runs "transcribe" tasks; it runs as soon as one registers',
      },
    ]);
    await h.req("/tasks/submit", { method: "POST", json: { type: "custom" } }); // takes w
    const second = await h.req("/tasks/submit", { method: "POST", json: { type: "custom" } });
    const { task_id: id2 } = (await second.json()) as { task_id: string };
    await new Promise((r) => setImmediate(r));
    const v2 = (await (await h.req(`/tasks/${id2}`)).json()) as { waiting_for: unknown[] };
    expect(v2.waiting_for).toEqual([
      {
        kind: "workers_unavailable",
        message: "every worker that can run it is taken: w (busy)",
        workers: [{ id: "w", why: "busy" }],
      },
    ]);
  });
});
