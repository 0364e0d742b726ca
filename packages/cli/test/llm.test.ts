import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type OpenAIServer, startOpenAIServer } from "@flotilla/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const SECRET = "sk-test-never-echo-0123456789abcdef";
const KEY = "admin-key-for-llm-test";
let llm: OpenAIServer;
let running: RunningServer;
let dir: string;
const printed: string[] = [];

beforeAll(async () => {
  llm = await startOpenAIServer({ replies: [{ text: "Paris." }] });
  dir = mkdtempSync(join(tmpdir(), "flotilla-llm-"));
  const config = loadServeConfig(
    { port: 0, dataDir: dir, adminKey: KEY, logLevel: "silent", detectWorkers: false },
    {},
  );
  running = await runServe(config, {}, (l) => printed.push(l));
});
afterAll(async () => {
  await running?.stop();
  await llm?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("LLM API registration and /llm/request through flotilla serve", () => {
  it("registers an OpenAI-protocol worker at run time and answers an LLM request with it", async () => {
    const api = `${running.url}/api/v2/orchestrator`;
    const headers = { "x-api-key": KEY, "content-type": "application/json" };
    const before = (await (
      await fetch(`${api}/llm/request`, {
        method: "POST",
        headers,
        body: JSON.stringify({ prompt: "hi" }),
      })
    ).json()) as { detail: string };
    expect(before.detail).toContain('no registered worker runs "llm_request"');

    const reg = await fetch(`${api}/workers/llm-api/register`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        api_type: "openai",
        api_key: SECRET,
        base_url: llm.baseURL,
        model: "gpt-4o-mini",
        worker_id: "openai-test",
        rate_limit_per_minute: 60,
      }),
    });
    const regText = await reg.text();
    expect(reg.status).toBe(200);
    expect(regText).not.toContain(SECRET);

    const events: Array<{ type: string; task_id?: string; data: Record<string, unknown> }> = [];
    const ws = new WebSocket(
      `${running.url.replace(/^http/, "ws")}/api/v2/orchestrator/ws/events?types=resource`,
      ["flotilla.v1", `flotilla-key.${KEY}`],
    );
    ws.addEventListener("message", (e) => events.push(JSON.parse(String(e.data))));
    await new Promise((r) => ws.addEventListener("open", r, { once: true }));

    const res = await fetch(`${api}/llm/request`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        prompt: "Capital of France?",
        system: "Answer briefly.",
        temperature: 0.2,
        priority: "HIGH",
      }),
    });
    const body = (await res.json()) as {
      success: boolean;
      response: string;
      metrics: Record<string, unknown>;
    };
    expect(body).toMatchObject({ success: true, response: "Paris." });
    expect(body.metrics.worker_id).toBe("openai-test");

    const deadline = Date.now() + 5000;
    while (!events.some((e) => e.type === "resource:cost") && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    ws.close();
    const cost = events.find((e) => e.type === "resource:cost");
    expect(cost?.data).toMatchObject({ workerId: "openai-test", totalTokens: expect.any(Number) });
    expect(events.every((e) => e.type === "hello" || e.type.startsWith("resource:"))).toBe(true);

    const chat = llm.requests.find((r) => r.path.endsWith("/chat/completions"))!;
    expect(chat.headers.authorization).toBe(`Bearer ${SECRET}`);
    const users = (chat.body.messages as Array<{ role: string; content: string }>).filter(
      (m) => m.role === "user",
    );
    expect(users).toEqual([{ role: "user", content: "Capital of France?" }]);
    expect(JSON.stringify(chat.body.messages)).toContain("Answer briefly.");

    for (const path of ["/workers/list", "/status", "/resources/stats"]) {
      const text = await (await fetch(`${api}${path}`, { headers })).text();
      expect(text, path).not.toContain(SECRET);
    }
    const stats = (await (await fetch(`${api}/resources/stats`, { headers })).json()) as {
      llm_api_usage: { totals: { requests_today: number } };
    };
    expect(stats.llm_api_usage.totals.requests_today).toBeGreaterThanOrEqual(1);
    expect(printed.join("\n")).not.toContain(SECRET);
  });
});
