import {
  type ChatReply,
  type ChatServer,
  type ChatServerOptions,
  control,
  nextId,
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

/** Options of {@link startAnthropicServer}. */
export interface AnthropicServerOptions extends ChatServerOptions<ChatReply> {
  /** Models `/v1/models` lists and `/v1/messages` accepts; others get a 404. @default ["claude-sonnet-4-5", "claude-haiku-4-5"] */
  models?: string[];
  /** When set, requests must carry `x-api-key: <apiKey>` or `Authorization: Bearer <apiKey>` (401 otherwise). */
  apiKey?: string;
}

/** A local Anthropic-shaped server (messages and models). */
export interface AnthropicServer extends ChatServer<ChatReply> {
  /** What `@anthropic-ai/sdk` takes as `baseURL` (the server's origin). */
  readonly baseURL: string;
}

const ANTHROPIC_ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_error",
  404: "not_found_error",
  413: "request_too_large",
  429: "rate_limit_error",
  500: "api_error",
  529: "overloaded_error",
};

/**
 * Builds an Anthropic-shaped error response.
 *
 * @example
 * ```ts
 * anthropicErrorPlan({ status: 529, message: "Overloaded", retryAfterSeconds: 2 });
 * // { status: 529, headers: { "retry-after": "2" },
 * //   body: { type: "error", error: { type: "overloaded_error", message: "Overloaded" }, request_id: "req_…" } }
 * ```
 */
export function anthropicErrorPlan(err: ScriptedError): PlannedResponse {
  return {
    status: err.status,
    headers: retryHeaders(err),
    body: {
      type: "error",
      error: {
        type: err.type ?? ANTHROPIC_ERROR_TYPES[err.status] ?? "api_error",
        message: err.message,
      },
      request_id: `req_${Date.now().toString(36)}`,
    },
  };
}

/**
 * Starts a local server that speaks Anthropic's Messages API (`POST /v1/messages`, JSON and
 * SSE with `message_start` / `content_block_*` / `message_delta` / `message_stop` events;
 * `GET /v1/models`).
 *
 * @example
 * ```ts
 * await using server = await startAnthropicServer({ replies: [{ text: "hi" }] });
 * const client = new Anthropic({ apiKey: "test", baseURL: server.baseURL });
 * ```
 */
export async function startAnthropicServer(
  options: AnthropicServerOptions = {},
): Promise<AnthropicServer> {
  const models = options.models ?? ["claude-sonnet-4-5", "claude-haiku-4-5"];
  const base = await startChatServer<ChatReply>(options, (path) => path === "/v1/messages", route);

  async function route(
    req: RecordedRequest,
    nextReply: () => Promise<ChatReply>,
  ): Promise<PlannedResponse> {
    if (
      options.apiKey !== undefined &&
      req.headers["x-api-key"] !== options.apiKey &&
      req.headers.authorization !== `Bearer ${options.apiKey}`
    ) {
      return anthropicErrorPlan({ status: 401, message: "invalid x-api-key" });
    }
    if (req.method === "GET" && req.path === "/v1/models") {
      return {
        body: {
          data: models.map((id) => ({
            type: "model",
            id,
            display_name: id,
            created_at: "2025-01-01T00:00:00Z",
          })),
          has_more: false,
          first_id: models[0] ?? null,
          last_id: models[models.length - 1] ?? null,
        },
      };
    }
    if (req.method === "POST" && req.path === "/v1/messages") return messages(req, nextReply);
    return anthropicErrorPlan({ status: 404, message: `Not found: ${req.method} ${req.path}` });
  }

  async function messages(
    req: RecordedRequest,
    nextReply: () => Promise<ChatReply>,
  ): Promise<PlannedResponse> {
    const body = (req.body ?? {}) as Record<string, any>;
    const model = typeof body.model === "string" ? body.model : "";
    if (typeof body.max_tokens !== "number") {
      return anthropicErrorPlan({ status: 400, message: "max_tokens: Field required" });
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      return anthropicErrorPlan({
        status: 400,
        message: "messages: at least one message is required",
      });
    }
    if (!models.includes(model)) {
      return anthropicErrorPlan({ status: 404, message: `model: ${model}` });
    }
    const reply = await nextReply();
    if (reply.error) return control(reply, anthropicErrorPlan(reply.error));
    const text = replyText(reply);
    const tools = (reply.toolCalls ?? []).map((c) => ({
      type: "tool_use" as const,
      id: c.id ?? nextId("toolu", "_"),
      name: c.name,
      input: c.arguments,
    }));
    const stop = reply.finishReason ?? (tools.length > 0 ? "tool_use" : "end_turn");
    const inputTokens =
      reply.usage?.inputTokens ??
      roughTokens(`${textOf(body.system)} ${textOf(body.messages)}`.trim());
    const outputTokens =
      reply.usage?.outputTokens ??
      roughTokens(text + tools.map((t) => JSON.stringify(t.input)).join(""));
    const id = nextId("msg", "_");
    const content = [...(text ? [{ type: "text" as const, text }] : []), ...tools];
    if (body.stream !== true) {
      return control(reply, {
        status: reply.status ?? 200,
        body: {
          id,
          type: "message",
          role: "assistant",
          model,
          content,
          stop_reason: stop,
          stop_sequence: null,
          usage: { input_tokens: inputTokens, output_tokens: outputTokens },
        },
      });
    }
    const event = (type: string, data: Record<string, unknown>) =>
      `event: ${type}\ndata: ${JSON.stringify({ type, ...data })}\n\n`;
    const chunks: string[] = [
      event("message_start", {
        message: {
          id,
          type: "message",
          role: "assistant",
          model,
          content: [],
          stop_reason: null,
          stop_sequence: null,
          usage: { input_tokens: inputTokens, output_tokens: 1 },
        },
      }),
      event("ping", {}),
    ];
    let index = 0;
    if (text) {
      chunks.push(
        event("content_block_start", { index, content_block: { type: "text", text: "" } }),
      );
      for (const piece of splitTokens(text)) {
        chunks.push(
          event("content_block_delta", { index, delta: { type: "text_delta", text: piece } }),
        );
      }
      chunks.push(event("content_block_stop", { index }));
      index++;
    }
    for (const t of tools) {
      chunks.push(
        event("content_block_start", {
          index,
          content_block: { type: "tool_use", id: t.id, name: t.name, input: {} },
        }),
      );
      const json = JSON.stringify(t.input);
      const mid = Math.ceil(json.length / 2);
      for (const part of [json.slice(0, mid), json.slice(mid)]) {
        if (part) {
          chunks.push(
            event("content_block_delta", {
              index,
              delta: { type: "input_json_delta", partial_json: part },
            }),
          );
        }
      }
      chunks.push(event("content_block_stop", { index }));
      index++;
    }
    chunks.push(
      event("message_delta", {
        delta: { stop_reason: stop, stop_sequence: null },
        usage: { output_tokens: outputTokens },
      }),
      event("message_stop", {}),
    );
    return control(reply, {
      status: reply.status ?? 200,
      contentType: "text/event-stream",
      chunks,
    });
  }

  return Object.assign(base, { baseURL: base.url });
}
