import { inspect } from "node:util";
import { FlotillaError, RetryAfterError, UnrecoverableError } from "@flotilla/core";
import { type OpenAIServer, startOpenAIServer } from "@flotilla/testing";
import { afterAll, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { OpenAIWorker, ProviderRequestError, type RateLimitInfo } from "../src/index.js";
import { makeCtx, rejection, task } from "./helpers.js";

const SECRET = "sk-test-SECRET-4f9a2b7c";

describe("OpenAIWorker against an OpenAI-shaped server (real openai client)", () => {
  let server: OpenAIServer;
  let worker: OpenAIWorker;
  const rateLimits: RateLimitInfo[] = [];

  beforeAll(async () => {
    server = await startOpenAIServer({
      apiKey: SECRET,
      headers: {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
        "x-ratelimit-limit-tokens": "30000",
        "x-ratelimit-remaining-tokens": "29000",
        "x-ratelimit-reset-tokens": "6m0s",
      },
    });
    worker = new OpenAIWorker({
      id: "oa",
      apiKey: SECRET,
      baseURL: server.baseURL,
      defaultModel: "gpt-4o-mini",
      models: ["gpt-4o-mini", "gpt-4o"],
      onRateLimit: (i) => rateLimits.push(i),
    });
  });
  afterAll(() => server.close());
  beforeEach(() => {
    rateLimits.length = 0;
  });

  it("maps a request and returns text, usage and cost", async () => {
    server.reply({ text: "Paris.", usage: { inputTokens: 1000, outputTokens: 2000 } });
    const ctx = makeCtx();
    const res = await worker.execute(
      task({
        system: "Be brief.",
        messages: [{ role: "user", content: "Capital of France?" }],
        temperature: 0.2,
        maxTokens: 50,
        stop: ["\n\n"],
      }),
      ctx,
    );
    expect(res.output.text).toBe("Paris.");
    expect(res.output.finishReason).toBe("stop");
    expect(res.output.model).toBe("gpt-4o-mini");
    expect(res.usage).toMatchObject({ inputTokens: 1000, outputTokens: 2000, totalTokens: 3000 });
    // gpt-4o-mini: $0.15 / $0.60 per million tokens
    expect(res.usage?.costUsd).toBeCloseTo(0.00015 + 0.0012, 10);
    const body = server.completionRequests().at(-1)!.body;
    expect(body).toMatchObject({
      model: "gpt-4o-mini",
      messages: [
        { role: "system", content: "Be brief." },
        { role: "user", content: "Capital of France?" },
      ],
      temperature: 0.2,
      max_completion_tokens: 50,
      stop: ["\n\n"],
    });
    expect(res.raw).toMatchObject({ object: "chat.completion" });
  });

  it("streams tokens as progress events and reads usage from the usage chunk", async () => {
    server.reply({ text: "one two three", usage: { inputTokens: 7, outputTokens: 3 } });
    const ctx = makeCtx();
    const res = await worker.execute(task({ prompt: "count", stream: true }), ctx);
    expect(ctx.events).toEqual([
      { type: "token", text: "one " },
      { type: "token", text: "two " },
      { type: "token", text: "three" },
    ]);
    expect(res.output.text).toBe("one two three");
    expect(res.usage).toMatchObject({ inputTokens: 7, outputTokens: 3, totalTokens: 10 });
    expect(ctx.reported).toEqual([res.usage]);
    expect(server.completionRequests().at(-1)!.body.stream_options).toEqual({
      include_usage: true,
    });
  });

  it("returns tool calls, JSON and streamed", async () => {
    const tools = [
      {
        name: "get_weather",
        description: "Weather for a city",
        parameters: {
          type: "object",
          properties: { city: { type: "string" } },
          required: ["city"],
        },
      },
    ];
    for (const stream of [false, true]) {
      server.reply({
        toolCalls: [{ id: "call_1", name: "get_weather", arguments: { city: "Oslo" } }],
      });
      const res = await worker.execute(
        task({ prompt: "weather in Oslo?", tools, toolChoice: { name: "get_weather" }, stream }),
        makeCtx(),
      );
      expect(res.output.finishReason).toBe("tool_calls");
      expect(res.output.toolCalls).toEqual([
        { id: "call_1", name: "get_weather", arguments: { city: "Oslo" } },
      ]);
      const body = server.completionRequests().at(-1)!.body;
      expect(body.tools[0]).toEqual({ type: "function", function: tools[0] });
      expect(body.tool_choice).toEqual({ type: "function", function: { name: "get_weather" } });
    }
  });

  it("sends response formats, images and tool results in OpenAI's shape", async () => {
    server.reply({ text: '{"ok":true}' });
    await worker.execute(
      task({
        model: "gpt-4o",
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "what is this?" },
              { type: "image", data: "AAAA", mediaType: "image/jpeg" },
            ],
          },
          {
            role: "assistant",
            content: "",
            toolCalls: [{ id: "c1", name: "f", arguments: { a: 1 } }],
          },
          { role: "tool", toolCallId: "c1", content: "42" },
        ],
        responseFormat: {
          type: "json_schema",
          name: "answer",
          schema: { type: "object" },
          strict: true,
        },
      }),
      makeCtx(),
    );
    const body = server.completionRequests().at(-1)!.body;
    expect(body.response_format).toEqual({
      type: "json_schema",
      json_schema: { name: "answer", schema: { type: "object" }, strict: true },
    });
    expect(body.messages[0].content[1]).toEqual({
      type: "image_url",
      image_url: { url: "data:image/jpeg;base64,AAAA" },
    });
    expect(body.messages[1]).toEqual({
      role: "assistant",
      content: null,
      tool_calls: [{ id: "c1", type: "function", function: { name: "f", arguments: '{"a":1}' } }],
    });
    expect(body.messages[2]).toEqual({ role: "tool", tool_call_id: "c1", content: "42" });

    server.reply({ text: "{}" });
    await worker.execute(
      task({ prompt: "json please", responseFormat: { type: "json" } }),
      makeCtx(),
    );
    expect(server.completionRequests().at(-1)!.body.response_format).toEqual({
      type: "json_object",
    });
  });

  it("reports rate-limit headers to onRateLimit", async () => {
    await worker.execute(task({ prompt: "hi" }), makeCtx());
    expect(rateLimits).toHaveLength(1);
    expect(rateLimits[0]).toMatchObject({
      provider: "openai",
      workerId: "oa",
      model: "gpt-4o-mini",
      status: 200,
      limitRequests: 500,
      remainingRequests: 499,
      resetRequestsMs: 120,
      limitTokens: 30000,
      remainingTokens: 29000,
      resetTokensMs: 360_000,
    });
  });

  it("429 with retry-after becomes RetryAfterError with the server's delay (no SDK retry)", async () => {
    const before = server.completionRequests().length;
    server.reply({
      error: { status: 429, message: "Rate limit reached for requests", retryAfterSeconds: 7 },
    });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err).toBeInstanceOf(RetryAfterError);
    expect(err.retryAfterMs).toBe(7000);
    expect(err.message).toContain("Rate limit reached for requests");
    expect(server.completionRequests().length - before).toBe(1);
    expect(rateLimits.at(-1)).toMatchObject({ status: 429, retryAfterMs: 7000 });

    server.reply({ error: { status: 429, message: "slow down", retryAfterMs: 250 } });
    const err2 = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err2.retryAfterMs).toBe(250);
  });

  it("5xx is retryable, with the server's delay when it gives one", async () => {
    server.reply({ error: { status: 500, message: "The server had an error" } });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err).toBeInstanceOf(FlotillaError);
    expect(err.code).toBe("WORKER_ERROR");
    expect(err.retryable).toBe(true);
    expect(err.message).toContain("The server had an error");

    server.reply({ error: { status: 503, message: "overloaded", retryAfterSeconds: 2 } });
    const err2 = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err2).toBeInstanceOf(RetryAfterError);
    expect(err2.retryAfterMs).toBe(2000);
  });

  it("400 is unrecoverable and carries the provider's message", async () => {
    server.reply({
      error: {
        status: 400,
        message: "Invalid value for 'logit_bias'.",
        param: "logit_bias",
        code: "invalid_value",
      },
    });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect(err).toBeInstanceOf(ProviderRequestError);
    expect(err.message).toBe("openai 400: Invalid value for 'logit_bias'.");
    expect(err.status).toBe(400);
  });

  it("an unknown model fails with the provider's words", async () => {
    const err = await rejection(
      worker.execute(task({ prompt: "hi", model: "gpt-9-imaginary" }), makeCtx()),
    );
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect(err.message).toContain(
      "The model `gpt-9-imaginary` does not exist or you do not have access to it.",
    );
  });

  it("a malformed response fails with WORKER_ERROR, never a crash", async () => {
    server.reply({ rawBody: "{not json" });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err).toBeInstanceOf(FlotillaError);
    expect(err.code).toBe("WORKER_ERROR");

    server.reply({ body: { id: "x", object: "chat.completion", choices: [] } });
    const err2 = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err2.code).toBe("WORKER_ERROR");
    expect(err2.message).toMatch(/malformed response from openai/);

    server.reply({ text: "a b c", rawBody: "data: {broken\n\n" });
    const err3 = await rejection(worker.execute(task({ prompt: "hi", stream: true }), makeCtx()));
    expect(err3.code).toBe("WORKER_ERROR");
  });

  it("a connection dropped mid-stream is a retryable WORKER_ERROR", async () => {
    server.reply({ text: "one two three four", dropAfterChunks: 2 });
    const ctx = makeCtx();
    const err = await rejection(worker.execute(task({ prompt: "hi", stream: true }), ctx));
    expect(err).toBeInstanceOf(FlotillaError);
    expect(err.code).toBe("WORKER_ERROR");
    expect(err.retryable).toBe(true);
    expect(ctx.events).toEqual([{ type: "token", text: "one " }]);

    server.reply({ dropAfterChunks: 0 });
    const err2 = await rejection(worker.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err2.code).toBe("WORKER_ERROR");
    expect(err2.retryable).toBe(true);
  });

  it("cancellation aborts the HTTP request: the server sees the socket close", async () => {
    server.reply({ text: "slow", delayMs: 5_000 });
    const ctx = makeCtx();
    const before = server.completionRequests().length;
    const p = worker.execute(task({ prompt: "hi" }), ctx);
    await waitFor(() => server.completionRequests().length > before);
    const started = Date.now();
    const req = server.completionRequests().at(-1)!;
    ctx.controller.abort();
    const err = await rejection(p);
    expect(err.code).toBe("CANCELLED");
    expect(await req.done).toBe("aborted");
    expect(Date.now() - started).toBeLessThan(4000); // the server would answer after 5 000 ms
  });

  it("times out a slow response with a retryable TIMEOUT", async () => {
    const slow = new OpenAIWorker({ apiKey: SECRET, baseURL: server.baseURL, timeoutMs: 150 });
    server.reply({ text: "late", delayMs: 2_000 });
    const err = await rejection(slow.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err.code).toBe("TIMEOUT");
    expect(err.retryable).toBe(true);

    // a stream that stalls after its headers times out too, and the request is aborted
    server.reply({ text: "one two three", chunkDelayMs: 1_000 });
    const ctx = makeCtx();
    const err2 = await rejection(slow.execute(task({ prompt: "hi", stream: true }), ctx));
    expect(err2.code).toBe("TIMEOUT");
    expect(await server.completionRequests().at(-1)!.done).toBe("aborted");
  });

  it("health check lists models and never asks for a completion", async () => {
    const before = server.completionRequests().length;
    const reqs = server.requests.length;
    expect(await worker.healthCheck(new AbortController().signal)).toMatchObject({
      status: "healthy",
    });
    const missing = new OpenAIWorker({
      apiKey: SECRET,
      baseURL: server.baseURL,
      defaultModel: "gpt-nope",
    });
    expect(await missing.healthCheck(new AbortController().signal)).toMatchObject({
      status: "degraded",
    });
    expect(server.completionRequests().length).toBe(before);
    expect(server.requests.slice(reqs).map((r) => `${r.method} ${r.path}`)).toEqual([
      "GET /v1/models",
      "GET /v1/models",
    ]);
    const badKey = new OpenAIWorker({ apiKey: "sk-wrong-key-123456", baseURL: server.baseURL });
    const report = await badKey.healthCheck(new AbortController().signal);
    expect(report.status).toBe("unhealthy");
    expect(report.message).toContain("Incorrect API key provided");
    expect(report.message).not.toContain("sk-wrong-key-123456");
  });

  it("validates payloads before any call, naming the field", async () => {
    const before = server.requests.length;
    const cases: [unknown, RegExp][] = [
      [{ messages: [] }, /payload\.messages: at least one message is required/],
      [{ messages: [{ role: "robot", content: "x" }] }, /payload\.messages\[0\]\.role/],
      [{ prompt: "x", temperature: 3 }, /payload\.temperature/],
      [{ prompt: "x", maxTokens: 0 }, /payload\.maxTokens/],
      [{ prompt: "x", maxTokens: 1.5 }, /payload\.maxTokens/],
      [{ prompt: "x", toolChoice: { name: "nope" } }, /payload\.toolChoice\.name/],
      [{ messages: [{ role: "tool", content: "x" }] }, /payload\.messages\[0\]\.toolCallId/],
      ["just a string", /payload: /],
    ];
    for (const [payload, re] of cases) {
      const err = await rejection(worker.execute(task(payload), makeCtx()));
      expect(err).toBeInstanceOf(FlotillaError);
      expect(err.code).toBe("VALIDATION");
      expect(err.message).toMatch(re);
    }
    expect(server.requests.length).toBe(before);
  });

  it("never exposes the API key (JSON, inspect, errors, logs)", async () => {
    expect(JSON.stringify(worker)).not.toContain(SECRET);
    expect(JSON.parse(JSON.stringify(worker))).toMatchObject({
      id: "oa",
      kind: "openai",
      apiKey: "[redacted]",
    });
    expect(inspect(worker, { depth: 10, showHidden: true })).not.toContain(SECRET);
    const ctx = makeCtx();
    server.reply({ error: { status: 400, message: `bad key ${SECRET} echoed back` } });
    const err = await rejection(worker.execute(task({ prompt: "hi" }), ctx));
    expect(err.message).toContain("[redacted]");
    expect(err.message).not.toContain(SECRET);
    expect(JSON.stringify(err)).not.toContain(SECRET);
    expect(inspect(ctx.logs, { depth: 10 })).not.toContain(SECRET);
    expect(ctx.logs.length).toBeGreaterThan(0);
  });

  it("advertises capabilities and estimates cost", () => {
    expect(worker.kind).toBe("openai");
    expect(worker.local).toBe(false);
    expect(worker.capabilities).toEqual(
      expect.arrayContaining(["llm", "openai", "gpt-4o", "vision", "tools", "json"]),
    );
    const cost = worker.estimateCost(
      task({ model: "gpt-4o", prompt: "x".repeat(4000), maxTokens: 1000 }),
    );
    // 1000 input tokens at $2.50/M + 1000 output at $10/M
    expect(cost).toBeCloseTo(0.0025 + 0.01, 6);
    expect(worker.estimateCost(task({ model: "unpriced", prompt: "x" }))).toBeUndefined();
  });
});

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met");
    await new Promise((r) => setTimeout(r, 5));
  }
}
