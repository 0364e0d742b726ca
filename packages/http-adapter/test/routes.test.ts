import { FunctionWorker } from "@flotilla/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, KEY, startHarness } from "./helpers.js";

const SECRET = "sk-this-must-never-be-echoed-123456";

let h: Harness;
beforeAll(async () => {
  h = await startHarness({
    workerFactories: {
      llmApi: (input) =>
        new FunctionWorker({
          id: input.worker_id ?? `${input.api_type}-1`,
          taskTypes: ["llm_request"],
          fn: async () => ({ text: "from registered api" }),
        }),
    },
  });
});
afterAll(async () => {
  await h?.close();
});

describe("Vera routes", () => {
  it("GET /health (root and prefixed) needs no key", async () => {
    for (const u of [`${h.url}/health`, `${h.api}/health`]) {
      const res = await fetch(u);
      expect(res.status).toBe(200);
      expect(await res.json()).toEqual({ status: "healthy", version: "0.1.0" });
    }
  });

  it("POST /tasks/submit then /tasks/{id}, /tasks/history", async () => {
    const res = await h.req("/tasks/submit", {
      json: {
        type: "TOOL_CALL",
        payload: { tool_name: "echo", tool_input: { n: 1 } },
        priority: "HIGH",
      },
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { task_id: string; status: string; message: string };
    expect(body.status).toBe("submitted");
    expect(body.task_id).toMatch(/.+/);
    const result = await (await h.orchestrator.get(body.task_id))!;
    expect(result.priority).toBe(30);
    // wait for it through the engine's own promise
    await waitFor(async () => (await h.orchestrator.get(body.task_id))?.status === "succeeded");
    const one = (await (await h.req(`/tasks/${body.task_id}`)).json()) as Record<string, unknown>;
    expect(one).toMatchObject({
      task_id: body.task_id,
      type: "tool_call",
      status: "succeeded",
      success: true,
      result: { n: 1 },
    });
    const hist = (await (await h.req("/tasks/history?limit=5&status=completed")).json()) as {
      tasks: Array<{ task_id: string; status: string }>;
      count: number;
    };
    expect(hist.count).toBe(hist.tasks.length);
    expect(hist.tasks.every((t) => t.status === "succeeded")).toBe(true);
    expect(hist.tasks.some((t) => t.task_id === body.task_id)).toBe(true);
    const missing = await h.req("/tasks/does-not-exist");
    expect(missing.status).toBe(404);
  });

  it("POST /tasks/execute waits for the result; failures are failures", async () => {
    const ok = await h.req("/tasks/execute", {
      json: {
        type: "tool_call",
        payload: { tool_name: "math", tool_input: { expression: "6*7" } },
      },
    });
    expect(ok.status).toBe(200);
    const okBody = (await ok.json()) as Record<string, unknown>;
    expect(okBody).toMatchObject({
      success: true,
      data: { result: 42 },
      error: null,
      worker_id: "tool-call",
    });
    expect(typeof okBody.execution_time_ms).toBe("number");
    const bad = (await (
      await h.req("/tasks/execute", { json: { type: "custom", payload: { fail: true } } })
    ).json()) as Record<string, unknown>;
    expect(bad).toMatchObject({ success: false, status: "failed", data: null });
    expect(String(bad.error)).toContain("failed on purpose");
    const hist = (await (await h.req("/tasks/history?status=completed&limit=1000")).json()) as {
      tasks: Array<{ task_id: string }>;
    };
    expect(hist.tasks.some((t) => t.task_id === bad.task_id)).toBe(false);
  });

  it("execute is bounded by the task timeout", async () => {
    const res = await h.req("/tasks/execute", {
      json: { type: "custom", payload: { ms: 5000 }, timeout_seconds: 0.2 },
    });
    const body = (await res.json()) as Record<string, unknown>;
    expect(body).toMatchObject({ success: false, status: "timed_out", error_code: "TIMEOUT" });
  });

  it("rejects invalid type and priority naming the allowed values", async () => {
    const t = await h.req("/tasks/submit", { json: { type: "nonsense" } });
    expect(t.status).toBe(400);
    const tb = (await t.json()) as { error: { code: string; message: string }; detail: string };
    expect(tb.error.code).toBe("VALIDATION");
    expect(tb.detail).toContain("tool_call");
    expect(tb.detail).toContain("llm_request");
    const p = await h.req("/tasks/submit", { json: { type: "tool_call", priority: "urgent" } });
    expect(p.status).toBe(400);
    expect(((await p.json()) as { detail: string }).detail).toMatch(
      /priority.*critical, high, normal, low, background/,
    );
    const n = await h.req("/tasks/submit", {
      json: { type: "tool_call", priority: 7, payload: { tool_name: "echo" } },
    });
    expect(n.status).toBe(200);
  });

  it("accepts the task types of workers registered later", async () => {
    const before = await h.req("/tasks/submit", { json: { type: "late_type" } });
    expect(before.status).toBe(400);
    await h.orchestrator.register(
      new FunctionWorker({ id: "late", taskTypes: ["late_type"], fn: async () => "late ok" }),
    );
    const after = await h.req("/tasks/execute", { json: { type: "late_type" } });
    expect(after.status).toBe(200);
    expect(await after.json()).toMatchObject({ success: true, data: "late ok" });
    await h.orchestrator.unregister("late");
    const gone = await h.req("/tasks/execute", { json: { type: "late_type" } });
    expect(gone.status).toBe(400);
  });

  it("422 for a known type no worker runs names the types that have a worker", async () => {
    const res = await h.req("/tasks/execute", { json: { type: "api_request" } });
    expect(res.status).toBe(422);
    const detail = ((await res.json()) as { detail: string }).detail;
    expect(detail).toMatch(
      /^no registered worker runs "api_request" tasks \(types with a worker: /,
    );
    const served = detail.slice(detail.indexOf(": ") + 2, -1).split(", ");
    expect(served).toContain("tool_call");
    expect(served).not.toContain("api_request");
  });

  it("dependencies: unknown ids rejected; dependents of a failure are skipped", async () => {
    const unknown = await h.req("/tasks/submit", {
      json: { type: "tool_call", depends_on: ["nope-123"] },
    });
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { detail: string }).detail).toContain("nope-123");
    const a = (await (
      await h.req("/tasks/submit", { json: { type: "custom", payload: { fail: true } } })
    ).json()) as { task_id: string };
    const b = (await (
      await h.req("/tasks/submit", {
        json: { type: "tool_call", payload: { tool_name: "echo" }, depends_on: [a.task_id] },
      })
    ).json()) as { task_id: string };
    await waitFor(async () => (await h.orchestrator.get(b.task_id))?.status === "skipped");
  });

  it("POST /llm/request and /tools/execute", async () => {
    const llm = (await (
      await h.req("/llm/request", { json: { prompt: "hi", priority: "normal" } })
    ).json()) as Record<string, unknown>;
    expect(llm).toMatchObject({ success: true, error: null });
    expect(["echo: hi", "from registered api"]).toContain(llm.response);
    const tool = (await (
      await h.req("/tools/execute", {
        json: { tool_name: "json_transform", tool_input: { data: { a: [1, 2] }, pick: "a[1]" } },
      })
    ).json()) as Record<string, unknown>;
    expect(tool).toMatchObject({ success: true, result: 2, error: null });
    const unknownTool = (await (
      await h.req("/tools/execute", { json: { tool_name: "nope" } })
    ).json()) as Record<string, unknown>;
    expect(unknownTool.success).toBe(false);
    expect(String(unknownTool.error)).toContain('unknown tool "nope"');
  });

  it("workers: list, register through a factory without echoing the key, 501 without one", async () => {
    const reg = await h.req("/workers/llm-api/register", {
      json: {
        api_type: "openai",
        api_key: SECRET,
        worker_id: "openai-x",
        rate_limit_per_minute: 60,
      },
    });
    expect(reg.status).toBe(200);
    const regText = await reg.text();
    expect(regText).not.toContain(SECRET);
    expect(JSON.parse(regText)).toMatchObject({ worker_id: "openai-x", status: "registered" });
    const dup = await h.req("/workers/llm-api/register", {
      json: { api_type: "openai", api_key: SECRET, worker_id: "openai-x" },
    });
    expect(dup.status).toBe(409);
    const remote = await h.req("/workers/remote/register", {
      json: { remote_url: "http://127.0.0.1:1", auth_token: SECRET },
    });
    expect(remote.status).toBe(501);
    expect(await remote.text()).not.toContain(SECRET);
    const list = await h.req("/workers/list");
    const listText = await list.text();
    expect(listText).not.toContain(SECRET);
    expect(listText).not.toMatch(/Infinity|NaN/);
    const body = JSON.parse(listText) as {
      workers: Array<Record<string, unknown>>;
      statistics: Record<string, unknown>;
    };
    expect(body.workers.map((w) => w.id)).toEqual(
      expect.arrayContaining(["tool-call", "fake-llm", "openai-x"]),
    );
    expect(body.workers[0]).toMatchObject({
      status: expect.any(String),
      capabilities: expect.any(Array),
      current_tasks: expect.any(Number),
      max_concurrent_tasks: expect.any(Number),
      load: expect.any(Number),
      metrics: { tasks_completed: expect.any(Number) },
    });
    expect(body.statistics).toMatchObject({
      total_workers: body.workers.length,
      workers_by_status: expect.any(Object),
      workers_by_capability: expect.any(Object),
    });
    const status = await (await h.req("/status")).text();
    expect(status).not.toContain(SECRET);
  });

  it("GET /status and /resources/stats", async () => {
    type Totals = { llm_api_usage: { totals: Record<string, number> } };
    const s = (await (await h.req("/status")).json()) as {
      is_running: boolean;
      uptime_seconds: number;
      metrics: Record<string, number>;
      workers: Record<string, unknown>;
      resources: Totals;
    };
    expect(s.is_running).toBe(true);
    expect(typeof s.uptime_seconds).toBe("number");
    expect(s.metrics).toMatchObject({
      tasks_submitted: expect.any(Number),
      tasks_completed: expect.any(Number),
      tasks_failed: expect.any(Number),
      active_tasks: expect.any(Number),
      queued_tasks: expect.any(Number),
      avg_execution_time_ms: expect.any(Number),
    });
    expect(s.metrics.tasks_completed).toBeGreaterThan(0);
    expect(s.workers).toMatchObject({
      total_workers: expect.any(Number),
      workers_by_status: expect.any(Object),
      workers_by_capability: expect.any(Object),
    });
    expect(s.resources.llm_api_usage.totals).toMatchObject({
      requests_today: expect.any(Number),
      tokens_today: expect.any(Number),
      cost_today: expect.any(Number),
    });
    const r = (await (await h.req("/resources/stats")).json()) as Totals;
    expect(r.llm_api_usage.totals.requests_today).toBeGreaterThan(0);
  });

  it("POST /tasks/{id}/cancel", async () => {
    const { task_id } = (await (
      await h.req("/tasks/submit", { json: { type: "custom", payload: { ms: 10_000 } } })
    ).json()) as { task_id: string };
    const res = await h.req(`/tasks/${task_id}/cancel`, { method: "POST" });
    expect(res.status).toBe(200);
    expect(((await res.json()) as { status: string }).status).toBe("cancelled");
    const again = await h.req(`/tasks/${task_id}/cancel`, { method: "POST" });
    expect(again.status).toBe(409);
  });

  it("bad input: malformed JSON, wrong types, oversized, unknown route — JSON 4xx", async () => {
    const malformed = await h.req("/tasks/submit", {
      method: "POST",
      body: "{not json",
      headers: { "content-type": "application/json" },
    });
    expect(malformed.status).toBe(400);
    expect(((await malformed.json()) as { error: { code: string } }).error.code).toBe("VALIDATION");
    const wrong = await h.req("/tasks/submit", { json: { type: 5, max_retries: "x" } });
    expect(wrong.status).toBe(400);
    const wd = ((await wrong.json()) as { detail: string }).detail;
    expect(wd).toContain("body.type");
    expect(wd).toContain("body.max_retries");
    const big = await h.req("/tasks/submit", {
      json: { type: "tool_call", payload: { x: "y".repeat(1_100_000) } },
    });
    expect(big.status).toBe(413);
    const plainWs = await h.req("/ws/events");
    expect(plainWs.status).toBe(426);
    expect(((await plainWs.json()) as { detail: string }).detail).toContain("WebSocket endpoint");
    const nf = await h.req("/nope");
    expect(nf.status).toBe(404);
    expect(((await nf.json()) as { error: { code: string } }).error.code).toBe("NOT_FOUND");
  });

  it("GET /metrics exposes Prometheus text", async () => {
    const res = await h.req(`${h.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/plain");
    const text = await res.text();
    for (const family of [
      'flotilla_queue_depth{priority="high"}',
      'flotilla_tasks{state="succeeded"}',
      "flotilla_task_duration_seconds_bucket",
      "flotilla_tasks_finished_total",
      'flotilla_worker_up{worker="tool-call"',
      "flotilla_tokens_total",
      "flotilla_cost_usd_total",
    ]) {
      expect(text).toContain(family);
    }
  });

  it("serves /docs with its own assets and /dashboard", async () => {
    const docs = await fetch(`${h.url}/docs`);
    expect(docs.status).toBe(200);
    const html = await docs.text();
    expect(html).toContain("/docs/assets/swagger-ui-bundle.js");
    expect(html).not.toMatch(/https?:\/\/(?!127)/);
    const js = await fetch(`${h.url}/docs/assets/swagger-ui-bundle.js`);
    expect(js.status).toBe(200);
    expect((await js.arrayBuffer()).byteLength).toBeGreaterThan(100_000);
    expect((await fetch(`${h.url}/docs/assets/..%2fpackage.json`)).status).toBe(404);
    const dash = await fetch(`${h.url}/dashboard`);
    expect(dash.status).toBe(200);
    expect(await dash.text()).toContain("/ws/events");
  });

  it("never sends X-API-Key-less requests through", async () => {
    const res = await fetch(`${h.api}/status`, { headers: { "x-api-key": `${KEY}x` } });
    expect(res.status).toBe(401);
  });
});

async function waitFor(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  throw new Error("condition not met in time");
}
