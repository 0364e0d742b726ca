import { FunctionWorker, Orchestrator, ResourceManager } from "@flotilla/core";
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFlotillaApp } from "../src/index.js";
import { type Harness, KEY, startHarness } from "./helpers.js";

let h: Harness;
let doc: {
  openapi: string;
  paths: Record<string, Record<string, { security?: unknown[]; requestBody?: unknown }>>;
};
beforeAll(async () => {
  // With a resource manager, so every route (resource policy included) is really served.
  const resources = new ResourceManager();
  // These tests send a wrong key to every route on purpose: the throttle (tested in
  // throttle.test.ts) would slow them down, so it starts late here.
  h = await startHarness({
    resources,
    gates: resources.gates,
    authThrottle: { freeFailures: 10_000, lockAfter: 0 },
  });
  doc = (await (await fetch(`${h.url}/openapi.json`)).json()) as typeof doc;
});
afterAll(async () => {
  await h?.close();
});

/** Every documented operation, with a concrete URL. */
function operations(): Array<{ method: string; path: string; secured: boolean; hasBody: boolean }> {
  const out = [];
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      out.push({
        method: method.toUpperCase(),
        path: path.replace(/\{[^}]+\}/g, "some-id"),
        secured: Array.isArray(op.security) && op.security.length > 0,
        hasBody: op.requestBody !== undefined,
      });
    }
  }
  return out;
}

describe("OpenAPI", () => {
  it("is a valid OpenAPI 3.1 document covering every Vera route", async () => {
    expect(doc.openapi).toBe("3.1.0");
    const v = new Validator();
    const res = await v.validate(doc as never);
    expect(res.errors ?? []).toEqual([]);
    expect(res.valid).toBe(true);
    const p = "/api/v2/orchestrator";
    for (const route of [
      "/health",
      "/status",
      "/tasks/submit",
      "/tasks/execute",
      "/llm/request",
      "/tools/execute",
      "/tasks/history",
      "/workers/llm-api/register",
      "/workers/remote/register",
      "/workers/list",
      "/resources/stats",
      "/resources/config",
      "/tasks/{task_id}/approve",
      "/tasks/{task_id}/reject",
      "/tasks/{task_id}/events",
      "/tasks/{task_id}/telemetry",
      "/workers/{worker_id}",
    ]) {
      expect(Object.keys(doc.paths)).toContain(`${p}${route}`);
    }
    expect(Object.keys(doc.paths[`${p}/resources/config`]!)).toEqual(["get", "put"]);
    expect(Object.keys(doc.paths[`${p}/workers/{worker_id}`]!)).toEqual(["delete"]);
    const events = doc.paths[`${p}/tasks/{task_id}/events`]!.get as unknown as {
      responses: { 200: { content: Record<string, unknown> } };
    };
    expect(Object.keys(events.responses[200].content)).toEqual(["text/event-stream"]);
    const submit = (
      doc as unknown as { components: { schemas: Record<string, { properties: object }> } }
    ).components.schemas.TaskSubmit!;
    expect(Object.keys(submit.properties)).toEqual(
      expect.arrayContaining([
        "type",
        "payload",
        "priority",
        "max_retries",
        "metadata",
        "depends_on",
      ]),
    );
  });
});

describe("auth on every protected route", () => {
  it("401 without a key or with a wrong one; accepted with X-API-Key and with Bearer", async () => {
    const ops = operations().filter((o) => o.secured);
    expect(ops.length).toBeGreaterThanOrEqual(12);
    for (const op of ops) {
      const url = `${h.url}${op.path}`;
      const init = (headers: Record<string, string>): RequestInit => ({
        method: op.method,
        headers: { "content-type": "application/json", ...headers },
        ...(op.hasBody ? { body: "{}" } : {}),
      });
      const none = await fetch(url, init({}));
      expect(none.status, `${op.method} ${op.path} without key`).toBe(401);
      expect(((await none.json()) as { error: { code: string } }).error.code).toBe("UNAUTHORIZED");
      const wrong = await fetch(url, init({ "x-api-key": "wrong-key" }));
      expect(wrong.status, `${op.method} ${op.path} wrong key`).toBe(401);
      const bearerWrong = await fetch(url, init({ authorization: "Bearer nope" }));
      expect(bearerWrong.status).toBe(401);
      for (const good of [{ "x-api-key": KEY }, { authorization: `Bearer ${KEY}` }] as Record<
        string,
        string
      >[]) {
        const res = await fetch(url, init(good));
        expect(res.status, `${op.method} ${op.path} with key`).not.toBe(401);
        expect(res.status).toBeLessThan(500);
        await res.body?.cancel();
      }
    }
  });

  it("health, openapi, docs and dashboard are public", async () => {
    for (const p of [
      "/health",
      "/api/v2/orchestrator/health",
      "/openapi.json",
      "/docs",
      "/dashboard",
    ]) {
      expect((await fetch(`${h.url}${p}`)).status, p).toBe(200);
    }
  });

  it("open mode only when asked for, and logged loudly", () => {
    const warnings: string[] = [];
    const logger = {
      trace() {},
      debug() {},
      info() {},
      warn: (_o: unknown, m?: string) => warnings.push(String(m)),
      error() {},
      child() {
        return logger;
      },
    };
    const app = createFlotillaApp({
      orchestrator: h.orchestrator,
      auth: { mode: "open" },
      logger: logger as never,
    });
    expect(warnings.join(" ")).toMatch(/AUTHENTICATION IS DISABLED/);
    app.flotilla.close();
  });

  it("answers 503 with Retry-After while host pressure is red", async () => {
    const resources = {
      admission: { level: "red", retryAfterSeconds: () => 7 },
      stats: () => ({ totals: { requests_today: 3 } }),
    };
    const app = createFlotillaApp({
      orchestrator: h.orchestrator,
      auth: { keys: [KEY] },
      resources,
    });
    const res = await app.fetch(
      new Request("http://x/api/v2/orchestrator/tasks/submit", {
        method: "POST",
        headers: { "x-api-key": KEY, "content-type": "application/json" },
        body: JSON.stringify({ type: "tool_call" }),
      }),
    );
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("7");
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("OVERLOADED");
    const stats = await app.fetch(
      new Request("http://x/api/v2/orchestrator/resources/stats", {
        headers: { "x-api-key": KEY },
      }),
    );
    expect(await stats.json()).toMatchObject({
      totals: { requests_today: 3 },
      llm_api_usage: { totals: { requests_today: 3 } },
    });
    resources.admission.level = "green";
    const ok = await app.fetch(
      new Request("http://x/api/v2/orchestrator/tasks/submit", {
        method: "POST",
        headers: { "x-api-key": KEY, "content-type": "application/json" },
        body: JSON.stringify({ type: "tool_call", payload: { tool_name: "echo" } }),
      }),
    );
    expect(ok.status).toBe(200);
    app.flotilla.close();
  });

  it("under red pressure still takes tasks a remote worker can run (only local dispatch is held)", async () => {
    const orchestrator = new Orchestrator();
    await orchestrator.register(
      new FunctionWorker({ id: "far", taskTypes: ["render"], local: false, fn: () => "done" }),
    );
    await orchestrator.register(
      new FunctionWorker({ id: "near", taskTypes: ["crunch"], fn: () => 1 }),
    );
    const app = createFlotillaApp({
      orchestrator,
      auth: { keys: [KEY] },
      resources: { admission: { level: "red", retryAfterSeconds: () => 3 } },
    });
    const submit = (type: string) =>
      app.fetch(
        new Request("http://x/api/v2/orchestrator/tasks/submit", {
          method: "POST",
          headers: { "x-api-key": KEY, "content-type": "application/json" },
          body: JSON.stringify({ type }),
        }),
      );
    expect((await submit("render")).status).toBe(200);
    const local = await submit("crunch");
    expect(local.status).toBe(503);
    expect(local.headers.get("retry-after")).toBe("3");
    app.flotilla.close();
  });

  it("CORS only when configured", async () => {
    const plain = await fetch(`${h.url}/api/v2/orchestrator/health`, {
      headers: { origin: "https://ui.example" },
    });
    expect(plain.headers.get("access-control-allow-origin")).toBeNull();
    const app = createFlotillaApp({
      orchestrator: h.orchestrator,
      auth: { keys: [KEY] },
      cors: { origin: ["https://ui.example"] },
    });
    const pre = await app.fetch(
      new Request("http://x/api/v2/orchestrator/status", {
        method: "OPTIONS",
        headers: {
          origin: "https://ui.example",
          "access-control-request-method": "GET",
          "access-control-request-headers": "x-api-key",
        },
      }),
    );
    expect(pre.status).toBeLessThan(300);
    expect(pre.headers.get("access-control-allow-origin")).toBe("https://ui.example");
    expect(pre.headers.get("access-control-allow-headers")?.toLowerCase()).toContain("x-api-key");
    const other = await app.fetch(
      new Request("http://x/health", { headers: { origin: "https://evil.example" } }),
    );
    expect(other.headers.get("access-control-allow-origin")).not.toBe("https://evil.example");
    app.flotilla.close();
  });

  it("app.fetch works without a socket (mountable in any framework)", async () => {
    const app = createFlotillaApp({
      orchestrator: h.orchestrator,
      auth: { keys: [KEY] },
      prefix: "/vera",
    });
    const res = await app.fetch(
      new Request("http://x/vera/workers/list", { headers: { "x-api-key": KEY } }),
    );
    expect(res.status).toBe(200);
    expect(((await res.json()) as { workers: unknown[] }).workers.length).toBeGreaterThan(0);
    app.flotilla.close();
  });
});

describe("fuzz-ish: malformed requests never produce a 5xx", () => {
  it("sends many malformed requests to every route and keeps serving", async () => {
    const bodies: Array<string | undefined> = [
      undefined,
      "",
      "null",
      "[]",
      "42",
      '"str"',
      "{",
      "{}",
      '{"type":null}',
      '{"type":""}',
      '{"type":"tool_call","priority":{}}',
      '{"type":"tool_call","priority":"HIGHEST"}',
      '{"type":"tool_call","priority":1e999}',
      '{"type":"tool_call","max_retries":-1}',
      '{"type":"tool_call","depends_on":"x"}',
      '{"type":"tool_call","depends_on":[1,2]}',
      '{"type":"tool_call","payload":[1]}',
      '{"type":"tool_call","timeout_seconds":"soon"}',
      '{"prompt":123}',
      '{"prompt":"","temperature":9}',
      '{"tool_name":["x"]}',
      '{"api_type":"openai"}',
      '{"api_type":"openai","api_key":"k","base_url":"ftp://x"}',
      '{"remote_url":"not a url"}',
      '{"__proto__":{"polluted":true},"type":"tool_call"}',
      `{"type":"${"x".repeat(5000)}"}`,
      "\u0000\u0001\u0002",
      '{"a":'.repeat(2000),
    ];
    const queries = [
      "",
      "?limit=-5",
      "?limit=abc",
      "?limit=99999",
      "?status=bogus",
      "?status=",
      "?limit=1e3&status=completed",
    ];
    let count = 0;
    for (const op of operations()) {
      for (const path of [
        op.path,
        `${op.path}/extra`,
        `${op.path}%00`,
        op.path.replace("some-id", "..%2F..%2Fetc"),
      ]) {
        for (const body of op.method === "GET" ? [undefined] : bodies) {
          for (const q of op.method === "GET" ? queries : [""]) {
            for (const ct of body === undefined
              ? [undefined]
              : ["application/json", "text/plain"]) {
              const res = await fetch(`${h.url}${path}${q}`, {
                method: op.method,
                headers: { "x-api-key": KEY, ...(ct ? { "content-type": ct } : {}) },
                ...(body !== undefined ? { body } : {}),
              });
              count++;
              expect(
                res.status,
                `${op.method} ${path}${q} ${String(body).slice(0, 40)}`,
              ).toBeLessThan(500);
              if (res.status >= 400) {
                const j = (await res.json()) as { error?: { code: string }; detail?: string };
                expect(typeof j.detail === "string" || typeof j.error?.code === "string").toBe(
                  true,
                );
              } else await res.body?.cancel();
            }
          }
        }
      }
    }
    for (const m of ["PUT", "DELETE", "PATCH"]) {
      const res = await fetch(`${h.url}/api/v2/orchestrator/tasks/submit`, {
        method: m,
        headers: { "x-api-key": KEY },
      });
      expect(res.status).toBeLessThan(500);
    }
    expect(count).toBeGreaterThan(300);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    const health = await fetch(`${h.url}/health`);
    expect(health.status).toBe(200);
    // Thousands of requests, one after another: a deadline that holds on a loaded machine.
  }, 60_000);
});
