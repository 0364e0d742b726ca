import { FlotillaError, PriceBook, RateLimiter } from "@flotilla/core";
import { FakeClock, startOpenAIServer } from "@flotilla/testing";
import { describe, expect, it } from "vitest";
import {
  AnthropicWorker,
  createPriceBook,
  inferCapabilities,
  OpenAICompatibleWorker,
  OpenAIWorker,
  parseDurationMs,
  parseLlmRequest,
  parseRateLimitHeaders,
  pauseLimiterOnExhaustion,
  retryAfterMs,
} from "../src/index.js";
import { makeCtx, rejection, task } from "./helpers.js";

describe("rate-limit headers", () => {
  it("parses OpenAI durations", () => {
    expect(parseDurationMs("1s")).toBe(1000);
    expect(parseDurationMs("6m0s")).toBe(360_000);
    expect(parseDurationMs("20ms")).toBe(20);
    expect(parseDurationMs("1h2m3.5s")).toBe(3_723_500);
    expect(parseDurationMs("2")).toBe(2000);
    expect(parseDurationMs("soon")).toBeUndefined();
  });

  it("reads retry-after-ms first, then retry-after seconds or date", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(retryAfterMs(new Headers({ "retry-after-ms": "150", "retry-after": "9" }), now)).toBe(
      150,
    );
    expect(retryAfterMs(new Headers({ "retry-after": "1.5" }), now)).toBe(1500);
    expect(retryAfterMs(new Headers({ "retry-after": "Thu, 01 Jan 2026 00:00:05 GMT" }), now)).toBe(
      5000,
    );
    expect(retryAfterMs(new Headers({ "retry-after": "garbage" }), now)).toBeUndefined();
    expect(retryAfterMs(new Headers(), now)).toBeUndefined();
  });

  it("returns undefined without rate-limit headers, and keeps only those headers", () => {
    const base = { provider: "openai", workerId: "w" };
    expect(parseRateLimitHeaders(new Headers({ "content-type": "x" }), 0, base)).toBeUndefined();
    const info = parseRateLimitHeaders(
      new Headers({ "x-ratelimit-remaining-tokens": "5", authorization: "Bearer secret" }),
      0,
      base,
    );
    expect(info).toEqual({
      ...base,
      remainingTokens: 5,
      headers: { "x-ratelimit-remaining-tokens": "5" },
    });
  });
});

describe("prices (core PriceBook)", () => {
  it("prices newer models and takes per-worker overrides", async () => {
    const book = createPriceBook();
    expect(book.costMicros({ provider: "openai", model: "gpt-5-mini" }, 1_000_000, 0)).toBe(
      250_000,
    );
    expect(book.costMicros({ provider: "openai", model: "gpt-4o-2024-08-06" }, 0, 1_000_000)).toBe(
      10_000_000,
    );
    await using server = await startOpenAIServer({ models: ["my-finetune"] });
    const worker = new OpenAIWorker({
      apiKey: "k-123456",
      baseURL: server.baseURL,
      defaultModel: "my-finetune",
      prices: { "my-finetune": { input: 10, output: 20 } },
    });
    server.reply({ usage: { inputTokens: 100, outputTokens: 50 } });
    const res = await worker.execute(task({ prompt: "hi" }), makeCtx());
    expect(res.usage?.costUsd).toBeCloseTo((100 * 10 + 50 * 20) / 1e6, 10);
    const whole = new OpenAIWorker({
      apiKey: "k-123456",
      prices: new PriceBook({}, { defaults: false }),
    });
    expect(whole.estimateCost(task({ prompt: "hi" }))).toBeUndefined();
  });
});

describe("OpenAI-compatible endpoints", () => {
  it("a preset sets kind, locality and max_tokens; no key needed for local servers", async () => {
    await using server = await startOpenAIServer({ models: ["Qwen/Qwen2.5-7B-Instruct"] });
    const vllm = new OpenAICompatibleWorker({
      preset: "vllm",
      baseURL: server.baseURL,
      defaultModel: "Qwen/Qwen2.5-7B-Instruct",
    });
    expect(vllm.kind).toBe("vllm");
    expect(vllm.local).toBe(true);
    expect(vllm.labels.provider).toBe("vllm");
    server.reply({ text: "ok" });
    const res = await vllm.execute(
      task({ prompt: "hi", maxTokens: 5, providerOptions: { vllm: { top_k: 20 } } }),
      makeCtx(),
    );
    expect(res.output.text).toBe("ok");
    const body = server.completionRequests().at(-1)!.body;
    expect(body.max_tokens).toBe(5);
    expect(body.max_completion_tokens).toBeUndefined();
    expect(body.top_k).toBe(20);
    expect(await vllm.healthCheck(new AbortController().signal)).toMatchObject({
      status: "healthy",
    });
    // local endpoints are free by default, so `cheapest` routing prefers them
    expect(res.usage?.costUsd).toBe(0);
    expect(vllm.estimateCost(task({ prompt: "hi" }))).toBe(0);
  });

  it("health checks understand Gemini's and Ollama's model ids", async () => {
    await using server = await startOpenAIServer({
      models: ["models/gemini-2.5-flash", "llama3.2:latest"],
    });
    for (const defaultModel of ["gemini-2.5-flash", "llama3.2"]) {
      const w = new OpenAICompatibleWorker({
        baseURL: server.baseURL,
        apiKey: "k-123456",
        defaultModel,
      });
      expect(await w.healthCheck(new AbortController().signal)).toMatchObject({
        status: "healthy",
      });
    }
  });

  it("gemini needs a key and is priced; a bare baseURL is required without preset", () => {
    expect(
      () => new OpenAICompatibleWorker({ preset: "gemini", defaultModel: "gemini-2.5-flash" }),
    ).toThrow(/apiKey: required/);
    const gemini = new OpenAICompatibleWorker({
      preset: "gemini",
      apiKey: "g-123456",
      defaultModel: "gemini-2.5-flash",
    });
    expect(gemini.kind).toBe("gemini");
    expect(gemini.local).toBe(false);
    expect(gemini.baseURL).toBe("https://generativelanguage.googleapis.com/v1beta/openai/");
    expect(gemini.estimateCost(task({ prompt: "x".repeat(4000), maxTokens: 1000 }))).toBeCloseTo(
      (1000 * 0.3 + 1000 * 2.5) / 1e6,
      8,
    );
    expect(() => new OpenAICompatibleWorker({ defaultModel: "m" })).toThrow(/baseURL/);
  });

  it("workers without a key fail at construction with the field named", () => {
    const saved = [process.env.OPENAI_API_KEY, process.env.ANTHROPIC_API_KEY];
    delete process.env.OPENAI_API_KEY;
    delete process.env.ANTHROPIC_API_KEY;
    try {
      expect(() => new OpenAIWorker()).toThrow(FlotillaError);
      expect(() => new OpenAIWorker()).toThrow(/apiKey/);
      expect(() => new AnthropicWorker()).toThrow(/apiKey/);
    } finally {
      if (saved[0] !== undefined) process.env.OPENAI_API_KEY = saved[0];
      if (saved[1] !== undefined) process.env.ANTHROPIC_API_KEY = saved[1];
    }
  });
});

describe("request schema and capabilities", () => {
  it("folds prompt into messages and knows model capabilities", () => {
    expect(parseLlmRequest({ prompt: "hi" }).messages).toEqual([{ role: "user", content: "hi" }]);
    expect(inferCapabilities("gpt-4o-mini")).toEqual(
      expect.arrayContaining(["vision", "tools", "json"]),
    );
    expect(inferCapabilities("gpt-3.5-turbo")).not.toContain("vision");
  });

  it("rejects images for a model without vision, before the call", async () => {
    await using server = await startOpenAIServer({ models: ["gpt-3.5-turbo"] });
    const w = new OpenAIWorker({
      apiKey: "k-123456",
      baseURL: server.baseURL,
      defaultModel: "gpt-3.5-turbo",
    });
    const err = await rejection(
      w.execute(
        task({
          messages: [{ role: "user", content: [{ type: "image", url: "https://x/y.png" }] }],
        }),
        makeCtx(),
      ),
    );
    expect(err.code).toBe("VALIDATION");
    expect(err.message).toMatch(/payload\.messages: model gpt-3.5-turbo does not accept images/);
    expect(server.requests).toHaveLength(0);
  });

  it("Anthropic's default max_tokens is documented and overridable", () => {
    expect(new AnthropicWorker({ apiKey: "a-123456" }).defaultMaxTokens).toBe(4096);
    expect(
      new AnthropicWorker({ apiKey: "a-123456", defaultMaxTokens: 256 }).defaultMaxTokens,
    ).toBe(256);
  });
});

describe("feeding core's RateLimiter from provider headers", () => {
  it("pauses the provider key until the announced reset when nothing remains", async () => {
    const clock = new FakeClock();
    const limiter = new RateLimiter({ clock });
    await using server = await startOpenAIServer({
      headers: {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "2s",
        "x-ratelimit-remaining-tokens": "100",
        "x-ratelimit-reset-tokens": "30s",
      },
    });
    const worker = new OpenAIWorker({
      apiKey: "k-123456",
      baseURL: server.baseURL,
      onRateLimit: pauseLimiterOnExhaustion(limiter, { now: () => clock.now() }),
    });
    await worker.execute(task({ prompt: "hi" }), makeCtx());
    expect(limiter.stats(clock.now()).openai?.pausedUntil).toBe(clock.now() + 2000);
    expect(limiter.peek(["openai"]).ok).toBe(false);
    await clock.advance(2000);
    expect(limiter.peek(["openai"]).ok).toBe(true);
    limiter.close();
  });

  it("leaves the limiter alone while allowance remains, and honours retry-after", () => {
    const paused: [string, number][] = [];
    const hook = pauseLimiterOnExhaustion(
      { pause: (k, until) => paused.push([k, until]) },
      { now: () => 1000, key: (i) => `${i.provider}:${i.model}` },
    );
    hook({
      provider: "openai",
      workerId: "w",
      model: "m",
      remainingRequests: 3,
      resetRequestsMs: 50,
      headers: {},
    });
    expect(paused).toEqual([]);
    hook({ provider: "openai", workerId: "w", model: "m", retryAfterMs: 700, headers: {} });
    expect(paused).toEqual([["openai:m", 1700]]);
  });
});

describe("unreachable endpoints", () => {
  it("a refused connection is a retryable WORKER_ERROR naming the cause", async () => {
    const server = await startOpenAIServer();
    const baseURL = server.baseURL;
    await server.close();
    const w = new OpenAIWorker({ apiKey: "k-123456", baseURL });
    const err = await rejection(w.execute(task({ prompt: "hi" }), makeCtx()));
    expect(err).toBeInstanceOf(FlotillaError);
    expect(err.code).toBe("WORKER_ERROR");
    expect(err.retryable).toBe(true);
    expect(err.message).toMatch(/connection to openai failed.*ECONNREFUSED/);
    expect((await w.healthCheck(new AbortController().signal)).status).toBe("unhealthy");
  });
});
