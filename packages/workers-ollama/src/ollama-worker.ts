import {
  callSignal,
  contentText,
  type ExecutionContext,
  estimateInputTokens,
  type FinishReason,
  FlotillaError,
  type HealthReport,
  type LlmRequest,
  type LlmResponse,
  redact,
  type ToolCall,
  type Usage,
  type Worker,
  type WorkerResult,
  type WorkerTask,
} from "@flotilla/core";
import {
  type ChatResponse,
  type GenerateResponse,
  Ollama,
  type Message as OllamaMessage,
} from "ollama";
import { malformed, mapOllamaError, OllamaRequestError } from "./errors.js";
import { type OllamaRequest, parseOllamaRequest } from "./request.js";

/** A model an Ollama worker serves, with what it can do. */
export interface OllamaModelInfo {
  name: string;
  /** e.g. `vision`, `tools`, `json`, `embeddings`. @default inferred from the name */
  capabilities?: string[];
}

/** Progress of a model pull. */
export interface PullProgress {
  type: "pull";
  model: string;
  status: string;
  completed?: number;
  total?: number;
}

/** Options of {@link OllamaWorker}. */
export interface OllamaWorkerOptions {
  /** @default `ollama-<n>` */
  id?: string;
  /** @default id */
  name?: string;
  /** Ollama's address. @default process.env.OLLAMA_HOST ?? "http://127.0.0.1:11434" */
  host?: string;
  /** Model used when a payload names none. @default "llama3.2" */
  defaultModel?: string;
  /** Model for `embed` requests that name none. @default "nomic-embed-text" */
  defaultEmbeddingModel?: string;
  /** Models served (names or `{ name, capabilities }`); they become capabilities. @default [defaultModel] */
  models?: (string | OllamaModelInfo)[];
  /** Tasks run at once (a local GPU serves few). @default 2 */
  maxConcurrency?: number;
  /** Per-request timeout in milliseconds. @default 600000 */
  timeoutMs?: number;
  /** Pull a missing model (with `{ type: "pull" }` progress events) instead of failing. @default false */
  autoPull?: boolean;
  /** Extra headers (e.g. `Authorization` for an Ollama behind a proxy). Their values are treated as secrets. */
  headers?: Record<string, string>;
  /** `keep_alive` sent with every request (e.g. `"10m"`). @default Ollama's own */
  keepAlive?: string | number;
  /** Cost in USD per million tokens, to account for local compute. @default 0 */
  pricePerMTok?: { input: number; output: number };
  /**
   * Extra labels, merged over `{ provider: "ollama", locality }`. @default {}
   */
  labels?: Record<string, string>;
  /** Task types claimed. @default ["ollama_request", "llm_request"] */
  taskTypes?: string[];
  /** Runs on this host (admission control applies). @default true when host is loopback */
  local?: boolean;
}

const LOOPBACK = /^https?:\/\/(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(\/|$)/;

const CAPABILITY_RULES: [RegExp, string[]][] = [
  [/(llava|vision|-vl|bakllava|moondream|gemma3|llama4|mistral-small3)/, ["vision"]],
  [
    /(llama3\.[123]|llama4|qwen|mistral|mixtral|command-r|granite|gpt-oss|firefunction|hermes)/,
    ["tools"],
  ],
  [/(embed|bge|minilm|e5-)/, ["embeddings"]],
];

/**
 * Capabilities of a well-known Ollama model, by name. Every chat model gets `json` and `streaming`.
 *
 * @example
 * ```ts
 * inferOllamaCapabilities("llava:13b"); // ["vision", "json", "streaming"]
 * inferOllamaCapabilities("nomic-embed-text"); // ["embeddings"]
 * ```
 */
export function inferOllamaCapabilities(model: string): string[] {
  const name = model.toLowerCase();
  const caps = new Set<string>();
  for (const [re, c] of CAPABILITY_RULES) if (re.test(name)) for (const x of c) caps.add(x);
  if (!caps.has("embeddings")) {
    caps.add("json");
    caps.add("streaming");
  }
  return [...caps];
}

const FINISH: Record<string, FinishReason> = {
  stop: "stop",
  length: "length",
  load: "other",
  unload: "other",
};

const sameModel = (a: string, b: string) =>
  a === b || a.replace(/:latest$/, "") === b.replace(/:latest$/, "");

let counter = 0;

/** A chat or generate answer, with the token counts Ollama gave (if any). */
type Answer = Omit<LlmResponse, "usage"> & {
  usage: { inputTokens?: number; outputTokens?: number };
};

/** A stream that stopped before its `done` chunk (usually a lost connection): retryable. */
const endedEarly = () =>
  new FlotillaError("WORKER_ERROR", "ollama stream ended early: no final chunk", {
    retryable: true,
  });

/** What an `embed` request outputs. */
export interface EmbedResponse {
  embeddings: number[][];
  model: string;
  usage: Usage & { inputTokens: number; outputTokens: number; totalTokens: number };
  raw: unknown;
}

/**
 * A worker for a local (or remote) Ollama: chat, generate and embeddings, streamed as NDJSON,
 * with health checks on `/api/tags` and optional pulls of missing models. Claims
 * `ollama_request` tasks (native shape, see the docs) and `llm_request` tasks (the portable
 * shape shared with the API workers), so routing can prefer it and fall back to APIs.
 *
 * @example
 * ```ts
 * const ollama = new OllamaWorker({ defaultModel: "llama3.2", autoPull: true });
 * await orchestrator.register(ollama);
 * await orchestrator.submit({ type: "llm_request", payload: { prompt: "hi", stream: true } });
 * ```
 */
export class OllamaWorker implements Worker {
  readonly id: string;
  readonly kind = "ollama";
  readonly name: string;
  readonly taskTypes: readonly string[];
  readonly capabilities: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly maxConcurrency: number;
  readonly local: boolean;
  readonly host: string;
  readonly defaultModel: string;
  readonly defaultEmbeddingModel: string;
  readonly models: readonly Required<OllamaModelInfo>[];
  readonly timeoutMs: number;
  readonly autoPull: boolean;
  readonly #headers: Record<string, string>;
  readonly #secrets: string[];
  readonly #keepAlive: string | number | undefined;
  readonly #price: { input: number; output: number };

  constructor(options: OllamaWorkerOptions = {}) {
    this.id = options.id ?? `ollama-${++counter}`;
    this.name = options.name ?? this.id;
    this.host = (options.host ?? process.env.OLLAMA_HOST ?? "http://127.0.0.1:11434").replace(
      /\/+$/,
      "",
    );
    this.defaultModel = options.defaultModel ?? "llama3.2";
    this.defaultEmbeddingModel = options.defaultEmbeddingModel ?? "nomic-embed-text";
    this.maxConcurrency = options.maxConcurrency ?? 2;
    if (!Number.isInteger(this.maxConcurrency) || this.maxConcurrency < 1) {
      throw new FlotillaError("VALIDATION", "maxConcurrency: expected a positive integer");
    }
    this.timeoutMs = options.timeoutMs ?? 600_000;
    this.autoPull = options.autoPull ?? false;
    this.local = options.local ?? LOOPBACK.test(this.host);
    this.taskTypes = options.taskTypes ?? ["ollama_request", "llm_request"];
    const models = (options.models ?? [this.defaultModel]).map((m) =>
      typeof m === "string"
        ? { name: m, capabilities: inferOllamaCapabilities(m) }
        : { name: m.name, capabilities: m.capabilities ?? inferOllamaCapabilities(m.name) },
    );
    if (!models.some((m) => sameModel(m.name, this.defaultModel))) {
      models.unshift({
        name: this.defaultModel,
        capabilities: inferOllamaCapabilities(this.defaultModel),
      });
    }
    this.models = models;
    const caps = new Set<string>(["llm", "ollama", "local"]);
    for (const m of models) {
      caps.add(m.name);
      for (const c of m.capabilities) caps.add(c);
    }
    if (!this.local) caps.delete("local");
    this.capabilities = [...caps];
    this.labels = {
      provider: "ollama",
      locality: this.local ? "local" : "remote",
      ...(options.labels ?? {}),
    };
    this.#headers = { ...(options.headers ?? {}) };
    this.#secrets = Object.values(this.#headers).flatMap((v) => [v, v.replace(/^Bearer\s+/i, "")]);
    this.#keepAlive = options.keepAlive;
    this.#price = options.pricePerMTok ?? { input: 0, output: 0 };
  }

  /** Executes an `ollama_request` or `llm_request` task. */
  async execute(
    task: WorkerTask,
    ctx: ExecutionContext,
  ): Promise<WorkerResult<LlmResponse | EmbedResponse>> {
    const req = parseOllamaRequest(task.payload, task.type === "llm_request" ? "chat" : undefined);
    const model =
      req.model ?? (req.operation === "embed" ? this.defaultEmbeddingModel : this.defaultModel);
    try {
      return await this.#run(req, model, ctx);
    } catch (err) {
      if (
        this.autoPull &&
        err instanceof OllamaRequestError &&
        err.status === 404 &&
        /not found/i.test(err.message)
      ) {
        await this.pull(model, { signal: ctx.signal, onProgress: (p) => ctx.progress(p) });
        return await this.#run(req, model, ctx);
      }
      throw err;
    }
  }

  async #run(
    req: OllamaRequest,
    model: string,
    ctx: ExecutionContext,
  ): Promise<WorkerResult<LlmResponse | EmbedResponse>> {
    const call = this.#client(ctx.signal, ctx);
    const log = ctx.logger.child({ workerId: this.id, provider: "ollama", model });
    log.debug({ operation: req.operation }, "ollama request");
    try {
      if (req.operation === "embed") {
        const res = await call.client.embed({
          model,
          input: req.input,
          ...(req.truncate !== undefined ? { truncate: req.truncate } : {}),
          ...(req.dimensions !== undefined ? { dimensions: req.dimensions } : {}),
          ...(this.#keepAlive !== undefined ? { keep_alive: this.#keepAlive } : {}),
          ...(req.options ? { options: req.options } : {}),
        });
        if (!res || !Array.isArray(res.embeddings)) throw malformed("no embeddings array");
        const inputTokens = typeof res.prompt_eval_count === "number" ? res.prompt_eval_count : 0;
        const usage = {
          inputTokens,
          outputTokens: 0,
          totalTokens: inputTokens,
          requests: 1,
          costUsd: this.#cost(inputTokens, 0),
        };
        return {
          output: { embeddings: res.embeddings, model: res.model ?? model, usage, raw: res },
          usage,
          raw: res,
        };
      }
      const response =
        req.operation === "generate"
          ? await this.#generate(req, model, call.client, ctx)
          : await this.#chat(req, model, call.client, ctx);
      const inputTokens =
        response.usage.inputTokens ??
        (req.operation === "chat"
          ? estimateInputTokens(req.request)
          : Math.ceil(req.prompt.length / 4));
      const outputTokens = response.usage.outputTokens ?? Math.ceil(response.text.length / 4);
      const usage = {
        inputTokens,
        outputTokens,
        totalTokens: inputTokens + outputTokens,
        requests: 1,
        costUsd: this.#cost(inputTokens, outputTokens),
      };
      log.debug({ usage, finishReason: response.finishReason }, "ollama response");
      return { output: { ...response, usage }, usage, raw: response.raw };
    } catch (err) {
      throw mapOllamaError(err, {
        secrets: this.#secrets,
        signal: ctx.signal,
        timedOut: call.timedOut(),
        headers: call.lastHeaders(),
        now: ctx.clock.now(),
      });
    } finally {
      call.dispose();
    }
  }

  async #chat(
    req: Extract<OllamaRequest, { operation: "chat" }>,
    model: string,
    client: Ollama,
    ctx: ExecutionContext,
  ): Promise<Answer> {
    const r = req.request;
    const body = {
      model,
      messages: toOllamaMessages(r),
      ...(r.tools?.length && r.toolChoice !== "none"
        ? {
            tools: r.tools.map((t) => ({
              type: "function",
              function: {
                name: t.name,
                description: t.description ?? "",
                parameters: t.parameters as never,
              },
            })),
          }
        : {}),
      ...formatOf(r),
      ...this.#common(r, req.options),
      ...(r.providerOptions?.ollama ?? {}),
    };
    if (r.stream) {
      const stream = await client.chat({ ...body, stream: true });
      let text = "";
      const toolCalls: ToolCall[] = [];
      let last: ChatResponse | undefined;
      for await (const part of stream) {
        if (!part || typeof part !== "object" || !part.message)
          throw malformed("chat chunk without message");
        const piece = part.message.content ?? "";
        if (piece) {
          text += piece;
          ctx.progress({ type: "token", text: piece });
        }
        for (const c of part.message.tool_calls ?? [])
          toolCalls.push(toolCall(c, toolCalls.length));
        if (part.done) last = part;
      }
      if (!last) throw endedEarly();
      return {
        text,
        toolCalls,
        finishReason: toolCalls.length ? "tool_calls" : (FINISH[last.done_reason] ?? "other"),
        model: last.model ?? model,
        usage: counts(last),
        raw: {
          ...last,
          message: {
            role: "assistant",
            content: text,
            ...(toolCalls.length ? { tool_calls: last.message?.tool_calls } : {}),
          },
        },
      };
    }
    const res = await client.chat({ ...body, stream: false });
    if (!res || typeof res !== "object" || !res.message)
      throw malformed("no message in chat response");
    const toolCalls = (res.message.tool_calls ?? []).map((c, i) => toolCall(c, i));
    return {
      text: res.message.content ?? "",
      toolCalls,
      finishReason: toolCalls.length ? "tool_calls" : (FINISH[res.done_reason] ?? "other"),
      model: res.model ?? model,
      usage: counts(res),
      raw: res,
    };
  }

  async #generate(
    req: Extract<OllamaRequest, { operation: "generate" }>,
    model: string,
    client: Ollama,
    ctx: ExecutionContext,
  ): Promise<Answer> {
    const body = {
      model,
      prompt: req.prompt,
      ...(req.system !== undefined ? { system: req.system } : {}),
      ...(req.images ? { images: req.images } : {}),
      ...(req.format !== undefined ? { format: req.format } : {}),
      ...(req.raw !== undefined ? { raw: req.raw } : {}),
      ...(req.suffix !== undefined ? { suffix: req.suffix } : {}),
      ...(this.#keepAlive !== undefined ? { keep_alive: this.#keepAlive } : {}),
      ...(req.options ? { options: req.options } : {}),
    };
    let res: GenerateResponse | undefined;
    let text = "";
    if (req.stream) {
      for await (const part of await client.generate({ ...body, stream: true })) {
        if (!part || typeof part !== "object") throw malformed("generate chunk is not an object");
        if (part.response) {
          text += part.response;
          ctx.progress({ type: "token", text: part.response });
        }
        if (part.done) res = part;
      }
      if (!res) throw endedEarly();
      res = { ...res, response: text };
    } else {
      res = await client.generate({ ...body, stream: false });
      if (!res || typeof res.response !== "string") throw malformed("no response text");
      text = res.response;
    }
    return {
      text,
      toolCalls: [],
      finishReason: FINISH[res.done_reason] ?? "other",
      model: res.model ?? model,
      usage: counts(res),
      raw: res,
    };
  }

  #common(r: LlmRequest, extra: Record<string, unknown> | undefined) {
    const options: Record<string, unknown> = { ...(extra ?? {}) };
    if (r.temperature !== undefined) options.temperature = r.temperature;
    if (r.topP !== undefined) options.top_p = r.topP;
    if (r.maxTokens !== undefined) options.num_predict = r.maxTokens;
    if (r.stop !== undefined) options.stop = Array.isArray(r.stop) ? r.stop : [r.stop];
    return {
      ...(Object.keys(options).length ? { options } : {}),
      ...(this.#keepAlive !== undefined ? { keep_alive: this.#keepAlive } : {}),
    };
  }

  #cost(input: number, output: number): number {
    return (
      Math.round(((input * this.#price.input + output * this.#price.output) / 1e6) * 1e10) / 1e10
    );
  }

  /** An `ollama` client bound to one call: aborts with `signal` or the timeout, keeps the last response headers. */
  #client(signal: AbortSignal | undefined, ctx?: ExecutionContext) {
    const deadline = callSignal(signal, ctx && { clock: ctx.clock, ms: this.timeoutMs });
    let lastHeaders: Headers | undefined;
    const client = new Ollama({
      host: this.host,
      headers: this.#headers,
      fetch: async (input, init) => {
        const signals = [deadline.signal, ...(init?.signal ? [init.signal] : [])];
        const res = await fetch(input, { ...init, signal: AbortSignal.any(signals) });
        lastHeaders = res.headers;
        return res;
      },
    });
    return {
      client,
      timedOut: () => deadline.timedOut,
      lastHeaders: () => lastHeaders,
      dispose: () => deadline.dispose(),
    };
  }

  /**
   * Names of the models Ollama has locally (`GET /api/tags`, free).
   *
   * @example
   * ```ts
   * const models = await worker.listModels(); // e.g. ["llama3.2:latest", "nomic-embed-text:latest"]
   * ```
   */
  async listModels(signal?: AbortSignal): Promise<string[]> {
    const call = this.#client(signal);
    try {
      const res = await call.client.list();
      if (!res || !Array.isArray(res.models)) throw malformed("no models array in tags");
      return res.models.map((m) => m.name);
    } catch (err) {
      throw mapOllamaError(err, {
        secrets: this.#secrets,
        signal: signal ?? new AbortController().signal,
        timedOut: false,
        headers: call.lastHeaders(),
        now: Date.now(),
      });
    } finally {
      call.dispose();
    }
  }

  /**
   * Pulls a model, reporting progress. Resolves when Ollama says `success`.
   *
   * @example
   * ```ts
   * await worker.pull("llama3.2", { onProgress: (p) => console.log(p.status, p.completed, p.total) });
   * ```
   */
  async pull(
    model: string,
    opts: { signal?: AbortSignal; onProgress?: (p: PullProgress) => void } = {},
  ): Promise<void> {
    const call = this.#client(opts.signal);
    try {
      let ok = false;
      for await (const p of await call.client.pull({ model, stream: true })) {
        const ev: PullProgress = { type: "pull", model, status: String(p.status ?? "") };
        if (typeof p.completed === "number") ev.completed = p.completed;
        if (typeof p.total === "number") ev.total = p.total;
        opts.onProgress?.(ev);
        if (p.status === "success") ok = true;
      }
      if (!ok)
        throw new FlotillaError("WORKER_ERROR", `ollama: pull of ${model} ended without success`, {
          retryable: true,
        });
    } catch (err) {
      const mapped = mapOllamaError(err, {
        secrets: this.#secrets,
        signal: opts.signal ?? new AbortController().signal,
        timedOut: false,
        headers: call.lastHeaders(),
        now: Date.now(),
      });
      // An `{"error": …}` line in the pull stream (e.g. no such model on the registry) reaches us
      // as a plain Error: retrying will not help. Network failures keep their retryable mapping.
      if (err instanceof Error && err.constructor === Error && mapped instanceof FlotillaError) {
        throw new OllamaRequestError(
          undefined,
          `pull of ${model} failed: ${redact(String((err as Error).message), this.#secrets)}`,
        );
      }
      throw mapped;
    } finally {
      call.dispose();
    }
  }

  /**
   * `GET /api/tags` (never a generation): `healthy` when the default model is present,
   * `degraded` when it is missing, `unhealthy` when Ollama does not answer.
   */
  async healthCheck(signal: AbortSignal): Promise<HealthReport> {
    try {
      const names = await this.listModels(signal);
      const missing = this.models
        .filter((m) => !names.some((n) => sameModel(n, m.name)))
        .map((m) => m.name);
      if (missing.includes(this.defaultModel)) {
        return {
          status: "degraded",
          message: `model ${this.defaultModel} is not pulled`,
          details: { models: names, missing },
        };
      }
      return { status: "healthy", details: { models: names, missing } };
    } catch (err) {
      return { status: "unhealthy", message: (err as Error).message };
    }
  }

  /** Local models cost nothing unless `pricePerMTok` says otherwise. */
  estimateCost(task: WorkerTask): number | undefined {
    if (this.#price.input === 0 && this.#price.output === 0) return 0;
    try {
      const req = parseOllamaRequest(
        task.payload,
        task.type === "llm_request" ? "chat" : undefined,
      );
      const input =
        task.estimate?.inputTokens ??
        (req.operation === "chat" ? estimateInputTokens(req.request) : 100);
      const output =
        task.estimate?.outputTokens ??
        (req.operation === "chat" ? (req.request.maxTokens ?? 256) : 256);
      return this.#cost(input, output);
    } catch {
      return undefined;
    }
  }

  /** The worker as JSON: configuration without header values. */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      kind: this.kind,
      name: this.name,
      host: this.host,
      defaultModel: this.defaultModel,
      models: this.models,
      capabilities: this.capabilities,
      labels: this.labels,
      maxConcurrency: this.maxConcurrency,
      local: this.local,
      headers: Object.fromEntries(Object.keys(this.#headers).map((k) => [k, "[redacted]"])),
    };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): Record<string, unknown> {
    return this.toJSON();
  }
}

function toolCall(
  c: { function: { name: string; arguments: Record<string, unknown> } },
  i: number,
): ToolCall {
  if (!c?.function?.name) throw malformed("tool call without a function name");
  const args = c.function.arguments;
  return {
    id: `call_${i}`,
    name: c.function.name,
    arguments: args && typeof args === "object" && !Array.isArray(args) ? args : {},
  };
}

function counts(r: { prompt_eval_count?: number; eval_count?: number }): Answer["usage"] {
  const out: Answer["usage"] = {};
  if (typeof r.prompt_eval_count === "number") out.inputTokens = r.prompt_eval_count;
  if (typeof r.eval_count === "number") out.outputTokens = r.eval_count;
  return out;
}

function formatOf(r: LlmRequest): { format?: string | object } {
  if (r.responseFormat?.type === "json") return { format: "json" };
  if (r.responseFormat?.type === "json_schema") return { format: r.responseFormat.schema };
  return {};
}

/**
 * Maps the portable messages to Ollama's (images as base64 strings).
 *
 * @example
 * ```ts
 * toOllamaMessages(parseLlmRequest({ system: "Be brief.", prompt: "hi" }));
 * // [{ role: "system", content: "Be brief." }, { role: "user", content: "hi" }]
 * ```
 */
export function toOllamaMessages(r: LlmRequest): OllamaMessage[] {
  const out: OllamaMessage[] = [];
  if (r.system) out.push({ role: "system", content: r.system });
  r.messages.forEach((m, i) => {
    const images: string[] = [];
    if (Array.isArray(m.content)) {
      m.content.forEach((p, j) => {
        if (p.type !== "image") return;
        if (p.data) images.push(p.data);
        else {
          const dataUrl = p.url?.match(/^data:[^;]+;base64,(.*)$/s);
          if (!dataUrl?.[1]) {
            throw new FlotillaError(
              "VALIDATION",
              `payload.messages[${i}].content[${j}]: Ollama takes images as base64 data (or data: URLs), not remote URLs`,
            );
          }
          images.push(dataUrl[1]);
        }
      });
    }
    const msg: OllamaMessage = { role: m.role, content: contentText(m.content) };
    if (images.length) msg.images = images;
    if (m.toolCalls?.length)
      msg.tool_calls = m.toolCalls.map((c) => ({
        function: { name: c.name, arguments: c.arguments },
      }));
    if (m.role === "tool" && m.name) msg.tool_name = m.name;
    out.push(msg);
  });
  return out;
}
