import { hashApiKey } from "@flotilla/http-adapter";
import { afterEach, describe, expect, it } from "vitest";
import { type Harness, KEY, startHarness } from "./helpers.js";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

interface TaskView {
  task_id: string;
  status: string;
  result: unknown;
  approval: {
    mode: string;
    decision: string | null;
    by: string | null;
    comment: string | null;
    decided_at: string | null;
  } | null;
}

const echo = (approval?: string, id?: string) => ({
  type: "tool_call",
  payload: { tool_name: "echo", tool_input: "shipped" },
  ...(approval ? { approval } : {}),
  ...(id ? { task_id: id } : {}),
});

describe("approvals over HTTP", () => {
  it("a before_run task waits until approved, then runs; the decision names the key and the comment", async () => {
    h = await startHarness();
    const submitted = await h.req("/tasks/submit", { json: echo("before_run", "deploy") });
    expect(submitted.status).toBe(200);
    const waiting = (await (await h.req("/tasks/deploy")).json()) as TaskView;
    expect(waiting.status).toBe("awaiting_approval");
    expect(waiting.approval).toEqual({
      mode: "before_run",
      decision: null,
      by: null,
      comment: null,
      decided_at: null,
    });
    const listed = (await (await h.req("/tasks/history?status=awaiting_approval")).json()) as {
      tasks: TaskView[];
    };
    expect(listed.tasks.map((t) => t.task_id)).toEqual(["deploy"]);

    const approved = await h.req("/tasks/deploy/approve", { json: { comment: "looks good" } });
    expect(approved.status).toBe(200);
    const handle = await h.orchestrator.handle("deploy");
    expect((await handle!.result()).status).toBe("succeeded");
    const done = (await (await h.req("/tasks/deploy")).json()) as TaskView;
    expect(done.status).toBe("succeeded");
    expect(done.result).toBe("shipped");
    const fingerprint = hashApiKey(KEY).slice("sha256:".length, "sha256:".length + 12);
    expect(done.approval).toMatchObject({
      mode: "before_run",
      decision: "approved",
      by: `key:${fingerprint}`,
      comment: "looks good",
    });
    expect(Date.parse(done.approval!.decided_at!)).toBeGreaterThan(0);
  });

  it("rejecting ends the task rejected; deciding a task not awaiting approval is 409 naming its state", async () => {
    h = await startHarness();
    await h.req("/tasks/submit", { json: echo("before_run", "risky") });
    // An empty body is a decision without a comment.
    const rejected = await h.req("/tasks/risky/reject", { method: "POST" });
    expect(rejected.status).toBe(200);
    expect(((await rejected.json()) as TaskView).status).toBe("rejected");
    const again = await h.req("/tasks/risky/approve", { json: {} });
    expect(again.status).toBe(409);
    expect(((await again.json()) as { detail: string }).detail).toBe(
      "task risky is rejected, not awaiting approval",
    );
    await h.req("/tasks/submit", { json: echo(undefined, "plain") });
    await (await h.orchestrator.handle("plain"))!.result();
    const plain = await h.req("/tasks/plain/approve", { json: {} });
    expect(plain.status).toBe(409);
    expect((await h.req("/tasks/ghost/approve", { json: {} })).status).toBe(404);
  });

  it("a typo in the decision is a 400 naming the field, and the task still waits", async () => {
    h = await startHarness();
    // after_run: it runs, and its result waits for a decision.
    const awaiting = new Promise<void>((resolve) =>
      h!.orchestrator.once("task:awaiting_approval", () => resolve()),
    );
    await h.req("/tasks/submit", { json: echo("after_run", "report") });
    const handle = await h.orchestrator.handle("report");
    await awaiting;
    const bad = await h.req("/tasks/report/approve", { json: { coment: "ok" } });
    expect(bad.status).toBe(400);
    expect(((await bad.json()) as { detail: string }).detail).toContain(
      'unknown field "coment" (did you mean "comment"?)',
    );
    expect((await h.orchestrator.get("report"))?.status).toBe("awaiting_approval");
    const unauth = await fetch(`${h.api}/tasks/report/approve`, { method: "POST" });
    expect(unauth.status).toBe(401);
    expect((await h.req("/tasks/report/approve", { json: {} })).status).toBe(200);
    expect((await handle!.result()).status).toBe("succeeded");
  });
});
