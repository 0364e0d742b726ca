import {
  type ChatReply,
  type ChatServer,
  type ChatServerOptions,
  control,
  type PlannedResponse,
  type RecordedRequest,
  replyText,
  retryHeaders,
  roughTokens,
  type ScriptedError,
  splitTokens,
  startChatServer,
  textOf,
} from "./base.js";

/** What the Ollama server answers with (`finishReason` becomes `done_reason`). */
export interface OllamaReply extends ChatReply {
  /** Embedding vectors for `/api/embed` (derived from the input when absent). */
  embeddings?: number[][];
}

/** Options of {@link startOllamaServer}. */
export interface OllamaServerOptions extends ChatServerOptions<OllamaReply> {
  /** Models present locally (`/api/tags`); others get Ollama's "not found" error. @default ["llama3.2", "nomic-embed-text"] */
  models?: string[];
  /** Models `/api/pull` can fetch (they join `models` once pulled). @default [] */
  pullable?: string[];
  /** Delay between pull progress lines. @default 0 */
  pullChunkDelayMs?: number;
}

/** A local Ollama-shaped server. */
export interface OllamaServer extends ChatServer<OllamaReply> {
  /** What the `ollama` client takes as `host`. */
  readonly host: string;
  /** The models currently "installed". */
  readonly models: string[];
}

/**
 * Builds an Ollama-shaped error response (`{"error": "..."}`).
 *
 * @example
 * ```ts
 * ollamaErrorPlan({ status: 404, message: "model \"llama9\" not found" });
 * // { status: 404, headers: {}, body: { error: 'model "llama9" not found' } }
 * ```
 */
export function ollamaErrorPlan(err: ScriptedError): PlannedResponse {
  return { status: err.status, headers: retryHeaders(err), body: { error: err.message } };
}

function fakeEmbedding(text: string, dims = 8): number[] {
  const out = new Array<number>(dims).fill(0);
  for (let i = 0; i < text.length; i++) {
    const slot = i % dims;
    out[slot] = ((out[slot] ?? 0) * 31 + text.charCodeAt(i)) % 1000;
  }
  const norm = Math.sqrt(out.reduce((s, v) => s + v * v, 0)) || 1;
  return out.map((v) => Number((v / norm).toFixed(6)));
}

const COMPLETION_PATHS = new Set(["/api/chat", "/api/generate", "/api/embed", "/api/embeddings"]);

/**
 * Starts a local server that speaks Ollama's REST API: `/api/chat` and `/api/generate`
 * (NDJSON streaming by default, JSON with `stream: false`), `/api/embed`, `/api/tags`,
 * `/api/pull` (progress lines), `/api/version`.
 *
 * @example
 * ```ts
 * await using server = await startOllamaServer({ models: ["llama3.2"] });
 * const ollama = new Ollama({ host: server.host });
 * ```
 */
export async function startOllamaServer(options: OllamaServerOptions = {}): Promise<OllamaServer> {
  const models = [...(options.models ?? ["llama3.2", "nomic-embed-text"])];
  const pullable = new Set(options.pullable ?? []);
  const has = (name: string) =>
    models.includes(name) ||
    models.includes(name.replace(/:latest$/, "")) ||
    models.includes(`${name}:latest`);

  const base = await startChatServer<OllamaReply>(
    options,
    (path) => COMPLETION_PATHS.has(path),
    route,
  );

  async function route(
    req: RecordedRequest,
    nextReply: () => Promise<OllamaReply>,
  ): Promise<PlannedResponse> {
    const body = (req.body ?? {}) as Record<string, any>;
    if (req.method === "GET" && req.path === "/api/version") return { body: { version: "0.12.0" } };
    if (req.method === "GET" && req.path === "/api/tags") {
      return {
        body: {
          models: models.map((name) => ({
            name: name.includes(":") ? name : `${name}:latest`,
            model: name.includes(":") ? name : `${name}:latest`,
            modified_at: "2025-01-01T00:00:00Z",
            size: 2_000_000_000,
            digest: "0".repeat(64),
            details: {
              parent_model: "",
              format: "gguf",
              family: "llama",
              families: ["llama"],
              parameter_size: "3B",
              quantization_level: "Q4_K_M",
            },
          })),
        },
      };
    }
    if (req.method === "POST" && req.path === "/api/pull") return pull(body);
    if (req.method === "POST" && COMPLETION_PATHS.has(req.path)) {
      const model = typeof body.model === "string" ? body.model : "";
      if (!model) return ollamaErrorPlan({ status: 400, message: "model is required" });
      if (!has(model)) {
        return ollamaErrorPlan({
          status: 404,
          message: `model "${model}" not found, try pulling it first`,
        });
      }
      const reply = await nextReply();
      if (reply.error) return control(reply, ollamaErrorPlan(reply.error));
      if (req.path === "/api/embed" || req.path === "/api/embeddings")
        return embed(req.path, body, reply);
      return generate(req.path === "/api/chat", body, reply);
    }
    return { status: 404, contentType: "text/plain", rawBody: "404 page not found" };
  }

  function embed(path: string, body: Record<string, any>, reply: OllamaReply): PlannedResponse {
    if (path === "/api/embeddings") {
      return control(reply, { body: { embedding: fakeEmbedding(String(body.prompt ?? "")) } });
    }
    const inputs: string[] = Array.isArray(body.input)
      ? body.input.map(String)
      : [String(body.input ?? "")];
    return control(reply, {
      body: {
        model: body.model,
        embeddings: reply.embeddings ?? inputs.map((i) => fakeEmbedding(i)),
        total_duration: 1_000_000,
        load_duration: 100_000,
        prompt_eval_count: reply.usage?.inputTokens ?? roughTokens(inputs.join(" ")),
      },
    });
  }

  function generate(chat: boolean, body: Record<string, any>, reply: OllamaReply): PlannedResponse {
    const text = replyText(reply);
    const toolCalls = (reply.toolCalls ?? []).map((c) => ({
      function: { name: c.name, arguments: c.arguments },
    }));
    const promptText = chat
      ? textOf(body.messages)
      : `${textOf(body.system)} ${textOf(body.prompt)}`.trim();
    const counts = {
      total_duration: 5_000_000,
      load_duration: 1_000_000,
      prompt_eval_count: reply.usage?.inputTokens ?? roughTokens(promptText),
      prompt_eval_duration: 1_000_000,
      eval_count: reply.usage?.outputTokens ?? roughTokens(text),
      eval_duration: 2_000_000,
    };
    const created_at = new Date().toISOString();
    const doneReason = reply.finishReason ?? "stop";
    const piece = (content: string, calls?: typeof toolCalls) =>
      chat
        ? {
            message: {
              role: "assistant",
              content,
              ...(calls && calls.length > 0 ? { tool_calls: calls } : {}),
            },
          }
        : { response: content };
    if (body.stream === false) {
      return control(reply, {
        status: reply.status ?? 200,
        body: {
          model: body.model,
          created_at,
          ...piece(text, toolCalls),
          done: true,
          done_reason: doneReason,
          ...(chat ? {} : { context: [1, 2, 3] }),
          ...counts,
        },
      });
    }
    const line = (obj: Record<string, unknown>) => `${JSON.stringify(obj)}\n`;
    const chunks = text
      ? splitTokens(text).map((t) =>
          line({ model: body.model, created_at, ...piece(t), done: false }),
        )
      : [];
    if (toolCalls.length > 0) {
      chunks.push(line({ model: body.model, created_at, ...piece("", toolCalls), done: false }));
    }
    chunks.push(
      line({
        model: body.model,
        created_at,
        ...piece(""),
        done: true,
        done_reason: doneReason,
        ...(chat ? {} : { context: [1, 2, 3] }),
        ...counts,
      }),
    );
    return control(reply, {
      status: reply.status ?? 200,
      contentType: "application/x-ndjson",
      chunks,
    });
  }

  function pull(body: Record<string, any>): PlannedResponse {
    const name = String(body.model ?? body.name ?? "");
    const line = (obj: Record<string, unknown>) => `${JSON.stringify(obj)}\n`;
    if (!pullable.has(name) && !has(name)) {
      const msg = "pull model manifest: file does not exist";
      if (body.stream === false) return ollamaErrorPlan({ status: 500, message: msg });
      return {
        contentType: "application/x-ndjson",
        chunks: [line({ status: "pulling manifest" }), line({ error: msg })],
      };
    }
    const digest = `sha256:${"a".repeat(64)}`;
    const total = 1000;
    const lines = [
      line({ status: "pulling manifest" }),
      ...[250, 500, 750, 1000].map((completed) =>
        line({ status: `pulling ${digest.slice(7, 19)}`, digest, total, completed }),
      ),
      line({ status: "verifying sha256 digest" }),
      line({ status: "writing manifest" }),
      line({ status: "success" }),
    ];
    if (!has(name)) models.push(name);
    if (body.stream === false) return { body: { status: "success" } };
    return {
      contentType: "application/x-ndjson",
      chunks: lines,
      chunkDelayMs: options.pullChunkDelayMs ?? 0,
    };
  }

  return Object.assign(base, { host: base.url, models });
}
