import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_KEY, type FleetUnderTest, removeDir, startFleet } from "./fleet/harness.js";
import { type Harness, startHarness } from "./helpers.js";

let h: Harness;
let f: FleetUnderTest;
beforeAll(async () => {
  h = await startHarness();
  f = await startFleet();
});
afterAll(async () => {
  await h?.close();
  await f?.stop();
  if (f) await removeDir(f.dir);
});

describe("routes that create tasks refuse fields they do not know", () => {
  it("a safety field the server does not understand is a 400 naming it, not silently dropped", async () => {
    const res = await h.req("/tasks/submit", {
      method: "POST",
      json: { type: "tool_call", payload: {}, requires_approval: true },
    });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { detail: string };
    expect(body.detail).toMatch(
      /^body: unknown field "requires_approval": expected only type, payload, /,
    );
    const history = (await (await h.req("/tasks/history")).json()) as { count: number };
    expect(history.count).toBe(0); // nothing was submitted
  });

  it("a typo is named with the field it most likely meant", async () => {
    const res = await h.req("/tasks/execute", {
      method: "POST",
      json: { type: "tool_call", priorty: "high" },
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { detail: string }).detail).toContain(
      'unknown field "priorty" (did you mean "priority"?)',
    );
    const llm = await h.req("/llm/request", { method: "POST", json: { prompt: "hi", modle: "x" } });
    expect(((await llm.json()) as { detail: string }).detail).toContain('(did you mean "model"?)');
  });

  it("worker registrations too: a misspelt limit is named, never dropped", async () => {
    const llm = await h.req("/workers/llm-api/register", {
      method: "POST",
      json: { api_type: "openai", api_key: "k", rate_limit_per_min: 10 },
    });
    expect(llm.status).toBe(400);
    expect(((await llm.json()) as { detail: string }).detail).toContain(
      'unknown field "rate_limit_per_min" (did you mean "rate_limit_per_minute"?)',
    );
    const remote = await h.req("/workers/remote/register", {
      method: "POST",
      json: { remote_url: "http://127.0.0.1:9/api", task_type: ["x"] },
    });
    expect(remote.status).toBe(400);
    expect(((await remote.json()) as { detail: string }).detail).toContain(
      'unknown field "task_type" (did you mean "task_types"?)',
    );
  });

  it("fleet task creation too, in the fleet's {detail} shape", async () => {
    const res = await f.admin("POST", "/tasks", { promt: "hello", timeout_seconds: 60 });
    expect(res.status).toBe(400);
    expect(res.json.detail).toContain('unknown field "promt" (did you mean "prompt"?)');
    const ok = await f.admin("POST", "/tasks", { prompt: "hello" }, ADMIN_KEY);
    expect(ok.status).toBe(201);
  });

  it("fleet task creation takes approval: no node gets the task until it is approved", async () => {
    const res = await f.admin("POST", "/tasks", { prompt: "deploy", approval: "before_run" });
    expect(res.status).toBe(201);
    const id = String(res.json.id);
    expect((await f.orchestrator.get(id))?.status).toBe("awaiting_approval");
    await f.orchestrator.approve(id, { by: "ops" });
    expect((await f.orchestrator.get(id))?.status).toBe("queued");
  });
});
