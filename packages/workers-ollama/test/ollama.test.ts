import { inspect } from "node:util";
import {
  type ExecutionContext,
  FlotillaError,
  RetryAfterError,
  systemClock,
  UnrecoverableError,
  type WorkerTask,
} from "@flotilla/core";
import { type OllamaServer, startOllamaServer } from "@flotilla/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { OllamaWorker, type PullProgress } from "../src/index.js";

function makeCtx() {
  const controller = new AbortController();
  const events: unknown[] = [];
  const logs: unknown[] = [];
  const log = (...a: unknown[]) => {
    logs.push(a);
  };
  const logger = { trace: log, debug: log, info: log, warn: log, error: log, child: () => logger };
  const ctx: ExecutionContext = {
    signal: controller.signal,
    progress: (d) => events.push(d),
    reportUsage: () => {},
    logger,
    clock: systemClock,
  };
  return { ctx, controller, events, logs };
}

let n = 0;
const task = (payload: unknown, type = "ollama_request"): WorkerTask => ({
  id: `t${++n}`,
  type,
  payload,
  priority: 20,
  attempt: 1,
  metadata: {},
  dependencies: {},
  inputs: {},
});

async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}

const TOKEN = "ollama-proxy-token-9x8y7z";

describe("OllamaWorker against an Ollama-shaped server (real ollama client)", () => {
  let server: OllamaServer;
  let worker: OllamaWorker;

  beforeAll(async () => {
    server = await startOllamaServer({
      models: ["llama3.2", "nomic-embed-text", "llava"],
      pullable: ["qwen3"],
    });
    worker = new OllamaWorker({
      id: "ol",
      host: server.host,
      defaultModel: "llama3.2",
      models: ["llama3.2", "llava"],
      headers: { authorization: `Bearer ${TOKEN}` },
    });
  });
  afterAll(() => server.close());

  it("runs an llm_request as chat: text, usage from the counts, zero cost", async () => {
    server.reply({ text: "Hi there.", usage: { inputTokens: 12, outputTokens: 4 } });
    const { ctx } = makeCtx();
    const res = await worker.execute(
      task(
        { system: "Be kind.", prompt: "hello", temperature: 0.3, maxTokens: 20, stop: "\n" },
        "llm_request",
      ),
      ctx,
    );
    expect(res.output).toMatchObject({
      text: "Hi there.",
      finishReason: "stop",
      model: "llama3.2",
    });
    expect(res.usage).toEqual({
      inputTokens: 12,
      outputTokens: 4,
      totalTokens: 16,
      requests: 1,
      costUsd: 0,
    });
    const req = server.completionRequests().at(-1)!;
    expect(req.path).toBe("/api/chat");
    expect(req.body).toMatchObject({
      model: "llama3.2",
      stream: false,
      messages: [
        { role: "system", content: "Be kind." },
        { role: "user", content: "hello" },
      ],
      options: { temperature: 0.3, num_predict: 20, stop: ["\n"] },
    });
    expect(req.headers.authorization).toBe(`Bearer ${TOKEN}`);
  });

  it("streams NDJSON tokens as progress; usage from the final chunk", async () => {
    server.reply({ text: "red green blue", usage: { inputTokens: 9, outputTokens: 3 } });
    const { ctx, events } = makeCtx();
    const res = await worker.execute(task({ prompt: "colours", stream: true }), ctx);
    expect(events).toEqual([
      { type: "token", text: "red " },
      { type: "token", text: "green " },
      { type: "token", text: "blue" },
    ]);
    expect(res.output).toMatchObject({ text: "red green blue" });
    expect(res.usage).toMatchObject({ inputTokens: 9, outputTokens: 3 });
  });

  it("generate (streamed and not) and embed", async () => {
    server.reply({ text: "once upon" }, { text: "a time" });
    const { ctx, events } = makeCtx();
    const g1 = await worker.execute(
      task({ operation: "generate", prompt: "story", stream: true }),
      ctx,
    );
    expect(g1.output).toMatchObject({ text: "once upon" });
    expect(events).toEqual([
      { type: "token", text: "once " },
      { type: "token", text: "upon" },
    ]);
    const g2 = await worker.execute(
      task({ operation: "generate", prompt: "story", format: "json" }),
      makeCtx().ctx,
    );
    expect(g2.output).toMatchObject({ text: "a time" });
    expect(server.completionRequests().at(-1)!.body).toMatchObject({
      format: "json",
      stream: false,
    });

    const e = await worker.execute(task({ operation: "embed", input: ["a", "b"] }), makeCtx().ctx);
    const out = e.output as { embeddings: number[][]; model: string };
    expect(out.model).toBe("nomic-embed-text");
    expect(out.embeddings).toHaveLength(2);
    expect(out.embeddings[0]).toHaveLength(8);
    expect(server.completionRequests().at(-1)!.path).toBe("/api/embed");
  });

  it("tool calls, JSON schema format and images", async () => {
    server.reply({ toolCalls: [{ name: "get_time", arguments: { tz: "UTC" } }] });
    const res = await worker.execute(
      task({
        model: "llava",
        messages: [
          {
            role: "user",
            content: [
              { type: "text", text: "what time?" },
              { type: "image", data: "iVBOR" },
            ],
          },
        ],
        tools: [{ name: "get_time", parameters: { type: "object" } }],
        responseFormat: { type: "json_schema", schema: { type: "object" } },
      }),
      makeCtx().ctx,
    );
    expect(res.output).toMatchObject({
      finishReason: "tool_calls",
      toolCalls: [{ id: "call_0", name: "get_time", arguments: { tz: "UTC" } }],
    });
    const body = server.completionRequests().at(-1)!.body;
    expect(body.messages[0]).toEqual({ role: "user", content: "what time?", images: ["iVBOR"] });
    expect(body.format).toEqual({ type: "object" });
    expect(body.tools[0].function.name).toBe("get_time");
  });

  it("an unknown model fails with Ollama's words, unrecoverable", async () => {
    const err = await rejection(
      worker.execute(task({ prompt: "x", model: "mystery" }), makeCtx().ctx),
    );
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect(err.message).toBe('ollama 404: model "mystery" not found, try pulling it first');
  });

  it("pulls a missing model with progress events when autoPull is on", async () => {
    const pulling = new OllamaWorker({ host: server.host, defaultModel: "qwen3", autoPull: true });
    expect((await pulling.healthCheck(new AbortController().signal)).status).toBe("degraded");
    const { ctx, events } = makeCtx();
    const res = await pulling.execute(task({ prompt: "hi" }, "llm_request"), ctx);
    expect(res.output).toMatchObject({ text: "Hello from the test server." });
    const pulls = events.filter((e) => (e as PullProgress).type === "pull") as PullProgress[];
    expect(pulls[0]).toMatchObject({ model: "qwen3", status: "pulling manifest" });
    expect(pulls.filter((p) => p.total === 1000).map((p) => p.completed)).toEqual([
      250, 500, 750, 1000,
    ]);
    expect(pulls.at(-1)!.status).toBe("success");
    expect((await pulling.healthCheck(new AbortController().signal)).status).toBe("healthy");
    const err = await rejection(pulling.pull("not-on-registry"));
    expect(err).toBeInstanceOf(UnrecoverableError);
    expect(err.message).toContain("pull model manifest: file does not exist");
  });

  it("429 → RetryAfterError with the delay; 5xx retryable; 400 unrecoverable", async () => {
    server.reply({ error: { status: 429, message: "too many requests", retryAfterSeconds: 4 } });
    const err = await rejection(worker.execute(task({ prompt: "x" }), makeCtx().ctx));
    expect(err).toBeInstanceOf(RetryAfterError);
    expect(err.retryAfterMs).toBe(4000);

    server.reply({
      error: {
        status: 503,
        message: "server busy, please try again. maximum pending requests exceeded",
      },
    });
    const err2 = await rejection(worker.execute(task({ prompt: "x" }), makeCtx().ctx));
    expect(err2).toBeInstanceOf(FlotillaError);
    expect(err2.retryable).toBe(true);
    expect(err2.message).toContain("server busy");

    server.reply({ error: { status: 400, message: "invalid options: num_ctx" } });
    const err3 = await rejection(worker.execute(task({ prompt: "x" }), makeCtx().ctx));
    expect(err3).toBeInstanceOf(UnrecoverableError);
    expect(err3.message).toBe("ollama 400: invalid options: num_ctx");
  });

  it("malformed bodies and dropped streams: WORKER_ERROR, never a crash", async () => {
    server.reply({ rawBody: "{oops" });
    const err = await rejection(worker.execute(task({ prompt: "x" }), makeCtx().ctx));
    expect(err).toBeInstanceOf(FlotillaError);
    expect(err.code).toBe("WORKER_ERROR");

    server.reply({ body: { model: "llama3.2", done: true } });
    const err2 = await rejection(worker.execute(task({ prompt: "x" }), makeCtx().ctx));
    expect(err2.code).toBe("WORKER_ERROR");
    expect(err2.message).toMatch(/malformed response from ollama/);

    server.reply({ text: "a b c d", dropAfterChunks: 2 });
    const { ctx, events } = makeCtx();
    const err3 = await rejection(worker.execute(task({ prompt: "x", stream: true }), ctx));
    expect(err3.code).toBe("WORKER_ERROR");
    expect(err3.retryable).toBe(true);
    expect(events).toEqual([
      { type: "token", text: "a " },
      { type: "token", text: "b " },
    ]);
  });

  it("cancellation and timeouts abort the HTTP request", async () => {
    server.reply({ text: "never", delayMs: 5000 });
    const { ctx, controller } = makeCtx();
    const before = server.completionRequests().length;
    const p = worker.execute(task({ prompt: "x" }), ctx);
    while (server.completionRequests().length === before)
      await new Promise((r) => setTimeout(r, 5));
    const req = server.completionRequests().at(-1)!;
    controller.abort();
    expect((await rejection(p)).code).toBe("CANCELLED");
    expect(await req.done).toBe("aborted");

    server.reply({ text: "one two three four", chunkDelayMs: 300 });
    const streaming = makeCtx();
    const sp = worker.execute(task({ prompt: "s", stream: true }), streaming.ctx);
    while (streaming.events.length === 0) await new Promise((r) => setTimeout(r, 5));
    const sreq = server.completionRequests().at(-1)!;
    streaming.controller.abort();
    expect((await rejection(sp)).code).toBe("CANCELLED");
    expect(await sreq.done).toBe("aborted");
    expect(streaming.events).toEqual([{ type: "token", text: "one " }]);

    const quick = new OllamaWorker({ host: server.host, timeoutMs: 100 });
    server.reply({ text: "late", delayMs: 3000 });
    const err = await rejection(quick.execute(task({ prompt: "y" }), makeCtx().ctx));
    expect(err.code).toBe("TIMEOUT");
    expect(err.retryable).toBe(true);
  });

  it("validates payloads before any call, naming the field", async () => {
    const before = server.requests.length;
    const cases: [unknown, string, RegExp][] = [
      [{ messages: [] }, "ollama_request", /payload\.messages/],
      [{ operation: "generate" }, "ollama_request", /payload\.prompt/],
      [{ operation: "embed", input: [] }, "ollama_request", /payload\.input/],
      [{ operation: "dance" }, "ollama_request", /payload\.operation/],
      [{ prompt: "x", maxTokens: -1 }, "llm_request", /payload\.maxTokens/],
      [
        { messages: [{ role: "user", content: [{ type: "image", url: "https://x/y.png" }] }] },
        "llm_request",
        /payload\.messages\[0\]\.content\[0\]/,
      ],
    ];
    for (const [payload, type, re] of cases) {
      const err = await rejection(worker.execute(task(payload, type), makeCtx().ctx));
      expect(err.code).toBe("VALIDATION");
      expect(err.message).toMatch(re);
    }
    expect(server.completionRequests().length).toBe(server.completionRequests().length);
    expect(server.requests.length).toBe(before);
  });

  it("health checks hit only /api/tags; unreachable Ollama is unhealthy", async () => {
    const before = server.requests.length;
    expect(await worker.healthCheck(new AbortController().signal)).toMatchObject({
      status: "healthy",
    });
    expect(server.requests.slice(before).map((r) => r.path)).toEqual(["/api/tags"]);
    const gone = await startOllamaServer();
    const host = gone.host;
    await gone.close();
    const dead = new OllamaWorker({ host });
    const report = await dead.healthCheck(new AbortController().signal);
    expect(report.status).toBe("unhealthy");
  });

  it("routing facts and secret hygiene", () => {
    expect(worker.kind).toBe("ollama");
    expect(worker.local).toBe(true);
    expect(worker.taskTypes).toEqual(["ollama_request", "llm_request"]);
    expect(worker.capabilities).toEqual(
      expect.arrayContaining(["local", "llama3.2", "llava", "vision", "tools"]),
    );
    expect(worker.estimateCost(task({ prompt: "x" }))).toBe(0);
    expect(JSON.stringify(worker)).not.toContain(TOKEN);
    expect(inspect(worker, { depth: 10, showHidden: true })).not.toContain(TOKEN);
  });
});
