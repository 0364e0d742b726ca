// Per-worker daily quotas of `POST /workers/llm-api/register`, through `flotilla serve`.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type OpenAIServer, startOpenAIServer } from "@flotilla/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const KEY = "admin-key-for-quota-test";
let llm: OpenAIServer;
let running: RunningServer;
let dir: string;
let api: string;
const headers = { "x-api-key": KEY, "content-type": "application/json" };

beforeAll(async () => {
  llm = await startOpenAIServer({
    // Every answer reports 150 tokens.
    replies: Array.from({ length: 20 }, () => ({
      text: "ok",
      usage: { inputTokens: 100, outputTokens: 50 },
    })),
  });
  dir = mkdtempSync(join(tmpdir(), "flotilla-quota-"));
  const config = loadServeConfig(
    { port: 0, dataDir: dir, adminKey: KEY, logLevel: "silent", detectWorkers: false },
    {},
  );
  running = await runServe(config, {}, () => undefined);
  api = `${running.url}/api/v2/orchestrator`;
});
afterAll(async () => {
  await running?.stop();
  await llm?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

// biome-ignore lint/suspicious/noExplicitAny: answers are inspected freely
type Json = any;
async function post(path: string, body: unknown): Promise<{ status: number; json: Json }> {
  const res = await fetch(`${api}${path}`, {
    method: "POST",
    headers,
    body: JSON.stringify(body),
  });
  return { status: res.status, json: await res.json() };
}
const register = (worker_id: string, quota: Record<string, number>) =>
  post("/workers/llm-api/register", {
    api_type: "openai",
    api_key: "sk-quota-test-0123456789",
    base_url: llm.baseURL,
    model: "gpt-4o-mini",
    worker_id,
    ...quota,
  });
const ask = () =>
  post("/tasks/execute", {
    type: "llm_request",
    payload: { prompt: "hello", model: "gpt-4o-mini" },
  });

describe("per-worker daily quotas through flotilla serve", () => {
  it("requests, tokens and cost per day are enforced with QUOTA_EXCEEDED", async () => {
    expect((await register("by-requests", { quota_requests_per_day: 2 })).status).toBe(200);
    for (let i = 0; i < 2; i++) {
      const r = await ask();
      expect(r.json).toMatchObject({ status: "succeeded", worker_id: "by-requests" });
    }
    const third = await ask();
    expect(third.json.status).toBe("failed");
    expect(third.json.error_code).toBe("QUOTA_EXCEEDED");
    expect(third.json.error).toContain(
      'budget "worker:by-requests/day" exceeded: requests limit 2, used 2, this task needs 1 (per day in UTC, worker "by-requests")',
    );

    // A second worker within its quota takes the work the first may no longer do.
    expect((await register("by-tokens", { quota_tokens_per_day: 200 })).status).toBe(200);
    const a = await ask();
    expect(a.json).toMatchObject({ status: "succeeded", worker_id: "by-tokens" });
    const b = await ask(); // 150 tokens used: still under 200, so this one runs
    expect(b.json).toMatchObject({ status: "succeeded", worker_id: "by-tokens" });
    const c = await ask(); // 300 of 200 tokens, and the other worker is out of requests
    expect(c.json.error_code).toBe("QUOTA_EXCEEDED");

    expect((await register("by-cost", { quota_cost_limit_per_day: 0.00001 })).status).toBe(200);
    expect((await ask()).json).toMatchObject({ status: "succeeded", worker_id: "by-cost" });
    const d = await ask();
    expect(d.json.error_code).toBe("QUOTA_EXCEEDED");

    const stats = (await (await fetch(`${api}/resources/stats`, { headers })).json()) as {
      worker_quotas: Record<string, Record<string, unknown>>;
    };
    expect(stats.worker_quotas["by-requests"]).toMatchObject({
      quota_requests_per_day: 2,
      requests_today: 2,
      exceeded: true,
    });
    expect(stats.worker_quotas["by-tokens"]).toMatchObject({ tokens_today: 300, exceeded: true });
    expect(stats.worker_quotas["by-cost"]?.exceeded).toBe(true);
    expect(stats.worker_quotas["by-cost"]?.cost_today as number).toBeGreaterThan(0.00001);
    // Only the attempts that ran reached the provider.
    expect(llm.requests.filter((r) => r.path.endsWith("/chat/completions"))).toHaveLength(5);
  });

  it("bad quota values are 400s naming the field", async () => {
    const r = await register("bad", { quota_requests_per_day: -1 });
    expect(r.status).toBe(400);
    expect(r.json.detail).toContain("quota_requests_per_day");
  });
});
