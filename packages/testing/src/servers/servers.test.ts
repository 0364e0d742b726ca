import { describe, expect, it } from "vitest";
import { startAnthropicServer, startOllamaServer, startOpenAIServer } from "./index.js";

const post = (url: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });

describe("protocol servers", () => {
  it("OpenAI: SSE ends with a usage chunk and [DONE] only when asked; errors in OpenAI's shape", async () => {
    await using server = await startOpenAIServer({
      headers: { "x-ratelimit-remaining-requests": "9" },
    });
    server.reply({ text: "a b", usage: { inputTokens: 3, outputTokens: 2 } }, { text: "c" });
    const res = await post(`${server.baseURL}/chat/completions`, {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "x" }],
      stream: true,
      stream_options: { include_usage: true },
    });
    expect(res.headers.get("content-type")).toBe("text/event-stream");
    expect(res.headers.get("x-ratelimit-remaining-requests")).toBe("9");
    const events = (await res.text()).split("\n\n").filter(Boolean);
    expect(events.at(-1)).toBe("data: [DONE]");
    const usage = JSON.parse(events.at(-2)!.slice(6));
    expect(usage.choices).toEqual([]);
    expect(usage.usage).toEqual({ prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 });
    const plain = await post(`${server.baseURL}/chat/completions`, {
      model: "gpt-4o-mini",
      messages: [{ role: "user", content: "x" }],
      stream: true,
    });
    const plainEvents = (await plain.text()).split("\n\n").filter(Boolean);
    expect(plainEvents.some((e) => e.includes('"usage"'))).toBe(false);

    const bad = await post(`${server.baseURL}/chat/completions`, {
      model: "gpt-4o-mini",
      messages: [],
    });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({
      error: { type: "invalid_request_error", param: "messages" },
    });
    expect(server.requests.map((r) => r.path)).toEqual([
      "/v1/chat/completions",
      "/v1/chat/completions",
      "/v1/chat/completions",
    ]);
  });

  it("Anthropic: event types in order, max_tokens required, 429 with retry-after", async () => {
    await using server = await startAnthropicServer();
    server.reply(
      { text: "hi" },
      { error: { status: 429, message: "slow down", retryAfterSeconds: 2 } },
    );
    const res = await post(`${server.baseURL}/v1/messages`, {
      model: "claude-haiku-4-5",
      max_tokens: 10,
      messages: [{ role: "user", content: "x" }],
      stream: true,
    });
    const types = [...(await res.text()).matchAll(/^event: (\w+)$/gm)].map((m) => m[1]);
    expect(types).toEqual([
      "message_start",
      "ping",
      "content_block_start",
      "content_block_delta",
      "content_block_stop",
      "message_delta",
      "message_stop",
    ]);
    const limited = await post(`${server.baseURL}/v1/messages`, {
      model: "claude-haiku-4-5",
      max_tokens: 10,
      messages: [{ role: "user", content: "x" }],
    });
    expect(limited.status).toBe(429);
    expect(limited.headers.get("retry-after")).toBe("2");
    expect(await limited.json()).toMatchObject({
      type: "error",
      error: { type: "rate_limit_error", message: "slow down" },
    });
    const noMax = await post(`${server.baseURL}/v1/messages`, {
      model: "claude-haiku-4-5",
      messages: [],
    });
    expect(await noMax.json()).toMatchObject({ error: { message: "max_tokens: Field required" } });
  });

  it("Ollama: NDJSON by default, JSON with stream false, tags, pull progress", async () => {
    await using server = await startOllamaServer({ models: ["llama3.2"], pullable: ["phi4"] });
    const streamed = await post(`${server.host}/api/generate`, { model: "llama3.2", prompt: "x" });
    const lines = (await streamed.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.at(-1)).toMatchObject({ done: true, done_reason: "stop" });
    expect(lines.at(-1).eval_count).toBeGreaterThan(0);
    const whole = await post(`${server.host}/api/chat`, {
      model: "llama3.2",
      messages: [{ role: "user", content: "x" }],
      stream: false,
    });
    expect(await whole.json()).toMatchObject({ done: true, message: { role: "assistant" } });
    const pull = await post(`${server.host}/api/pull`, { model: "phi4" });
    const statuses = (await pull.text())
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l).status);
    expect(statuses[0]).toBe("pulling manifest");
    expect(statuses.at(-1)).toBe("success");
    const tags = await (await fetch(`${server.host}/api/tags`)).json();
    expect(tags.models.map((m: { name: string }) => m.name)).toEqual([
      "llama3.2:latest",
      "phi4:latest",
    ]);
  });

  it("records aborted requests, serves function replies, and closes idempotently", async () => {
    const server = await startOpenAIServer();
    server.reply((req) => ({ text: `echo ${req.body.messages[0].content}` }));
    server.setDefaultReply({ text: "slow", delayMs: 2000 });
    const res = await post(`${server.baseURL}/chat/completions`, {
      model: "gpt-4o",
      messages: [{ role: "user", content: "ping" }],
    });
    expect((await res.json()).choices[0].message.content).toBe("echo ping");
    const controller = new AbortController();
    const pending = post(
      `${server.baseURL}/chat/completions`,
      { model: "gpt-4o", messages: [{ role: "user", content: "x" }] },
      {},
    );
    void pending.catch(() => {});
    const aborted = fetch(`${server.baseURL}/chat/completions`, {
      method: "POST",
      body: JSON.stringify({ model: "gpt-4o", messages: [{ role: "user", content: "y" }] }),
      signal: controller.signal,
    }).catch(() => "aborted");
    while (server.requests.length < 3) await new Promise((r) => setTimeout(r, 5));
    controller.abort();
    expect(await aborted).toBe("aborted");
    expect(await server.requests[2]!.done).toBe("aborted");
    await server.close();
    await server.close();
    await expect(fetch(`${server.baseURL}/models`)).rejects.toThrow();
  });
});
