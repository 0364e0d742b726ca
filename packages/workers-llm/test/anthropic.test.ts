import { inspect } from "node:util";
import { FlotillaError, RetryAfterError, UnrecoverableError } from "@flotilla/core";
import { type AnthropicServer, startAnthropicServer } from "@flotilla/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AnthropicWorker, type RateLimitInfo } from "../src/index.js";
import { makeCtx, rejection, task } from "./helpers.js";

const SECRET = "sk-ant-test-SECRET-77aa11";

describe("AnthropicWorker against an Anthropic-shaped server (real @anthropic-ai/sdk)", () => {
  let server: AnthropicServer;
  let worker: AnthropicWorker;
  const rateLimits: RateLimitInfo[] = [];
  const reset = new Date(Date.now() + 30_000).toISOString();

  beforeAll(async () => {
    server = await startAnthropicServer({
      apiKey: SECRET,
      headers: {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "49",
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": "39000",
        "anthropic-ratelimit-input-tokens-remaining": "30000",
        "anthropic-ratelimit-output-tokens-remaining": "9000",
      },
    });
    worker = new AnthropicWorker({
      id: "an",
      apiKey: SECRET,
      baseURL: server.baseURL,
      defaultModel: "claude-haiku-4-5",
      models: ["claude-haiku-4-5", "claude-sonnet-4-5"],
      onRateLimit: (i) => rateLimits.push(i),
    });
  });
  afterAll(() => server.close());

  it("maps system, messages and the default max_tokens; returns text, usage and cost", async () => {
    server.reply({ text: "Bonjour.", usage: { inputTokens: 2000, outputTokens: 1000 } });
    const res = await worker.execute(
      task({
        system: "Answer in French.",
        messages: [
          { role: "system", content: "Be brief." },
          { role: "user", content: "Say hello" },
        ],
        temperature: 0.5,
        stop: "END",
      }),
      makeCtx(),
    );
    expect(res.output).toMatchObject({
      text: "Bonjour.",
      finishReason: "stop",
      model: "claude-haiku-4-5",
    });
    expect(res.usage).toMatchObject({ inputTokens: 2000, outputTokens: 1000, totalTokens: 3000 });
    // claude-haiku-4-5: $1 / $5 per million tokens
    expect(res.usage?.costUsd).toBeCloseTo(0.002 + 0.005, 10);
    const body = server.completionRequests().at(-1)!.body;
    expect(body).toEqual({
      model: "claude-haiku-4-5",
      max_tokens: 4096,
      system: "Answer in French.\n\nBe brief.",
      messages: [{ role: "user", content: [{ type: "text", text: "Say hello" }] }],
      temperature: 0.5,
      stop_sequences: ["END"],
    });
    expect(rateLimits.at(-1)).toMatchObject({
      provider: "anthropic",
      limitRequests: 50,
      remainingRequests: 49,
      limitTokens: 40000,
      remainingTokens: 39000,
      remainingInputTokens: 30000,
      remainingOutputTokens: 9000,
    });
    expect(rateLimits.at(-1)!.resetRequestsMs).toBeGreaterThan(25_000);
  });

  it("streams text deltas as progress and takes usage from message_start/message_delta", async () => {
    server.reply({ text: "alpha beta", usage: { inputTokens: 11, outputTokens: 5 } });
    const ctx = makeCtx();
    const res = await worker.execute(task({ prompt: "go", stream: true, maxTokens: 64 }), ctx);
    expect(ctx.events).toEqual([
      { type: "token", text: "alpha " },
      { type: "token", text: "beta" },
    ]);
    expect(res.output.text).toBe("alpha beta");
    expect(res.usage).toMatchObject({ inputTokens: 11, outputTokens: 5 });
    expect(ctx.reported.at(-1)).toMatchObject({
      inputTokens: 11,
      outputTokens: 5,
      totalTokens: 16,
    });
    expect(server.completionRequests().at(-1)!.body.max_tokens).toBe(64);
    expect(res.raw).toMatchObject({
      type: "message",
      stop_reason: "end_turn",
      content: [{ type: "text", text: "alpha beta" }],
    });
  });

  it("tool use, JSON and streamed, and tool results sent back as tool_result blocks", async () => {
    const tools = [
      { name: "lookup", parameters: { type: "object", properties: { q: { type: "string" } } } },
    ];
    for (const stream of [false, true]) {
      server.reply({
        text: "Let me check.",
        toolCalls: [{ id: "toolu_1", name: "lookup", arguments: { q: "x" } }],
      });
      const res = await worker.execute(
        task({ prompt: "find x", tools, toolChoice: "required", stream }),
        makeCtx(),
      );
      expect(res.output.finishReason).toBe("tool_calls");
      expect(res.output.text).toBe("Let me check.");
      expect(res.output.toolCalls).toEqual([
        { id: "toolu_1", name: "lookup", arguments: { q: "x" } },
      ]);
      const body = server.completionRequests().at(-1)!.body;
      expect(body.tools).toEqual([{ name: "lookup", input_schema: tools[0]!.parameters }]);
      expect(body.tool_choice).toEqual({ type: "any" });
    }
    await worker.execute(
      task({
        messages: [
          { role: "user", content: "find x and y" },
          {
            role: "assistant",
            content: "",
            toolCalls: [
              { id: "a", name: "lookup", arguments: { q: "x" } },
              { id: "b", name: "lookup", arguments: { q: "y" } },
            ],
          },
          { role: "tool", toolCallId: "a", content: "1" },
          { role: "tool", toolCallId: "b", content: "2" },
        ],
        tools,
      }),
      makeCtx(),
    );
    const messages = server.completionRequests().at(-1)!.body.messages;
    expect(messages).toHaveLength(3);
    expect(messages[2]).toEqual({
      role: "user",
      content: [
        { type: "tool_result", tool_use_id: "a", content: "1" },
        { type: "tool_result", tool_use_id: "b", content: "2" },
      ],
    });
  });

  it("json_schema response format is served by a forced tool; images become image blocks", async () => {
    server.reply({ toolCalls: [{ name: "verdict", arguments: { ok: true } }] });
    const res = await worker.execute(
      task({
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "ok?" },
              { type: "image", url: "data:image/png;base64,iVBOR" },
              { type: "image", url: "https://example.com/cat.png" },
            ],
          },
        ],
        responseFormat: { type: "json_schema", name: "verdict", schema: { type: "object" } },
      }),
      makeCtx(),
    );
    expect(JSON.parse(res.output.text)).toEqual({ ok: true });
    expect(res.output.toolCalls).toEqual([]);
    expect(res.output.finishReason).toBe("stop");
    const body = server.completionRequests().at(-1)!.body;
    expect(body.tool_choice).toEqual({ type: "tool", name: "verdict" });
    expect(body.messages[0].content.slice(1)).toEqual([
      { type: "image", source: { type: "base64", media_type: "image/png", data: "iVBOR" } },
      { type: "image", source: { type: "url", url: "https://example.com/cat.png" } },
    ]);
  });

  it("429 → RetryAfterError with the server's delay; 529 overloaded and 500 retryable", async () => {
    server.reply({
      error: {
        status: 429,
        message: "Number of request tokens has exceeded your rate limit",
        retryAfterSeconds: 3,
      },
    });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err).toBeInstanceOf(RetryAfterError);
    expect(err.retryAfterMs).toBe(3000);
    expect(err.message).toContain("Number of request tokens has exceeded your rate limit");

    server.reply({ error: { status: 529, message: "Overloaded" } });
    const err2 = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err2).toBeInstanceOf(FlotillaError);
    expect(err2.retryable).toBe(true);
    expect(err2.message).toBe("anthropic 529: Overloaded");
  });

  it("400 is unrecoverable with the provider's message; unknown model in its words", async () => {
    server.reply({
      error: { status: 400, message: "messages.0.content: Input should be a valid list" },
    });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect(err.message).toBe("anthropic 400: messages.0.content: Input should be a valid list");

    const err2 = await rejection(
      worker.execute(task({ prompt: "hi", model: "claude-imaginary" }), makeCtx()),
    );
    expect(err2).toBeInstanceOf(UnrecoverableError);
    expect(err2.message).toBe("anthropic 404: model: claude-imaginary");
  });

  it("malformed responses and dropped streams fail with WORKER_ERROR", async () => {
    server.reply({ body: { id: "m", type: "message" } });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err.code).toBe("WORKER_ERROR");
    expect(err.message).toMatch(/malformed response from anthropic/);

    server.reply({ text: "a b c d e", dropAfterChunks: 4 });
    const ctx = makeCtx();
    const err2 = await rejection(worker.execute(task({ prompt: "hi", stream: true }), ctx));
    expect(err2.code).toBe("WORKER_ERROR");
    expect(err2.retryable).toBe(true);
    expect(ctx.events).toEqual([{ type: "token", text: "a " }]);
    // the input tokens were spent even though the stream was cut: reported before the failure
    expect(ctx.reported.at(-1)).toMatchObject({ inputTokens: expect.any(Number), outputTokens: 0 });
    expect(ctx.reported.at(-1)!.inputTokens).toBeGreaterThan(0);
  });

  it("cancellation aborts the request mid-stream: the server sees the socket close", async () => {
    server.reply({ text: "one two three four five six", chunkDelayMs: 300 });
    const ctx = makeCtx();
    const p = worker.execute(task({ prompt: "hi", stream: true }), ctx);
    while (ctx.events.length === 0) await new Promise((r) => setTimeout(r, 5));
    const req = server.completionRequests().at(-1)!;
    ctx.controller.abort();
    const err = await rejection(p);
    expect(err.code).toBe("CANCELLED");
    expect(await req.done).toBe("aborted");
  });

  it("validates Anthropic-specific ranges before the call", async () => {
    const before = server.requests.length;
    const err = await rejection(
      worker.execute(task({ prompt: "hi", temperature: 1.5 }), makeCtx()),
    );
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toContain("payload.temperature");
    expect(server.requests.length).toBe(before);
  });

  it("health check lists models only; secrets never leak", async () => {
    const before = server.completionRequests().length;
    expect(await worker.healthCheck(new AbortController().signal)).toMatchObject({
      status: "healthy",
    });
    expect(server.requests.at(-1)!.path).toBe("/v1/models");
    expect(server.completionRequests().length).toBe(before);
    expect(JSON.stringify(worker)).not.toContain(SECRET);
    expect(inspect(worker, { depth: 10, showHidden: true })).not.toContain(SECRET);
    const wrong = new AnthropicWorker({ apiKey: "sk-ant-wrong-0000", baseURL: server.baseURL });
    const report = await wrong.healthCheck(new AbortController().signal);
    expect(report).toMatchObject({
      status: "unhealthy",
      message: "anthropic 401: invalid x-api-key",
    });
  });
});
