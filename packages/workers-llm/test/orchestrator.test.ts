import { Orchestrator } from "@flotilla/core";
import { type OpenAIServer, startOpenAIServer } from "@flotilla/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { type LlmResponse, OpenAIWorker, type RateLimitInfo } from "../src/index.js";

describe("LLM workers end to end through the Orchestrator", () => {
  let server: OpenAIServer;
  let orchestrator: Orchestrator;
  const rateLimits: RateLimitInfo[] = [];

  beforeEach(async () => {
    rateLimits.length = 0;
    server = await startOpenAIServer();
    orchestrator = new Orchestrator();
    await orchestrator.start();
    await orchestrator.register(
      new OpenAIWorker({
        id: "openai",
        apiKey: "sk-e2e-123456",
        baseURL: server.baseURL,
        onRateLimit: (i) => rateLimits.push(i),
      }),
    );
  });
  afterEach(async () => {
    await orchestrator.stop({ mode: "abort" });
    await server.close();
  });

  it("streams tokens through the task handle's progress iterator and reports usage", async () => {
    server.reply({
      text: "streamed through the handle",
      usage: { inputTokens: 10, outputTokens: 4 },
    });
    const handle = await orchestrator.submit({
      type: "llm_request",
      payload: { prompt: "go", stream: true },
    });
    const tokens: string[] = [];
    for await (const p of handle.progress()) {
      const data = p.data as { type: string; text: string };
      if (data.type === "token") tokens.push(data.text);
    }
    const result = await handle.result();
    expect(result.status).toBe("succeeded");
    expect(tokens.join("")).toBe("streamed through the handle");
    expect((result.output as LlmResponse).text).toBe("streamed through the handle");
    expect(result.usage).toMatchObject({ inputTokens: 10, outputTokens: 4, totalTokens: 14 });
    expect(result.usage?.costUsd).toBeCloseTo((10 * 0.15 + 4 * 0.6) / 1e6, 8);
  });

  it("retries after a 429 no sooner than the server asked", async () => {
    server.reply(
      { error: { status: 429, message: "Rate limit reached", retryAfterMs: 120 } },
      { text: "second time lucky" },
    );
    const handle = await orchestrator.submit({
      type: "llm_request",
      payload: { prompt: "hi" },
      retry: { maxAttempts: 3, initialDelayMs: 1, jitter: 0 },
    });
    const result = await handle.result();
    expect(result.status).toBe("succeeded");
    expect(result.attempts).toBe(2);
    expect((result.output as LlmResponse).text).toBe("second time lucky");
    const [first, second] = server.completionRequests();
    expect(second).toBeDefined();
    expect(second!.receivedAt - first!.receivedAt).toBeGreaterThanOrEqual(115);
    expect(rateLimits[0]).toMatchObject({ status: 429, retryAfterMs: 120 });
  });

  it("fails at once on a 400 with the provider's message, whatever attempts remain", async () => {
    server.reply({ error: { status: 400, message: "Invalid 'max_completion_tokens'" } });
    const handle = await orchestrator.submit({
      type: "llm_request",
      payload: { prompt: "hi" },
      retry: { maxAttempts: 5, initialDelayMs: 1 },
    });
    const result = await handle.result();
    expect(result.status).toBe("failed");
    expect(result.attempts).toBe(1);
    expect(result.error?.message).toContain("Invalid 'max_completion_tokens'");
    expect(server.completionRequests()).toHaveLength(1);
  });

  it("cancelling a task aborts its HTTP request", async () => {
    server.reply({ text: "too slow", delayMs: 5_000 });
    const handle = await orchestrator.submit({ type: "llm_request", payload: { prompt: "hi" } });
    while (server.completionRequests().length === 0) await new Promise((r) => setTimeout(r, 5));
    await handle.cancel("user pressed stop");
    const result = await handle.result();
    expect(result.status).toBe("cancelled");
    expect(await server.completionRequests()[0]!.done).toBe("aborted");
  });
});
