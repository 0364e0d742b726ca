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

/** Options of {@link startOpenAIServer}. */
export interface OpenAIServerOptions extends ChatServerOptions<ChatReply> {
  /** Models `/v1/models` lists and completions accept; any other model gets a 404. @default ["gpt-4o-mini", "gpt-4o"] */
  models?: string[];
  /** When set, requests must carry `Authorization: Bearer <apiKey>` (401 otherwise). */
  apiKey?: string;
}

/** A local OpenAI-shaped server (chat completions and models). */
export interface OpenAIServer extends ChatServer<ChatReply> {
  /** `<url>/v1`, what the `openai` client takes as `baseURL`. */
  readonly baseURL: string;
}

const OPENAI_ERROR_TYPES: Record<number, string> = {
  400: "invalid_request_error",
  401: "authentication_error",
  403: "permission_denied",
  404: "invalid_request_error",
  429: "rate_limit_exceeded",
  500: "server_error",
  503: "server_error",
};

/**
 * Builds an OpenAI-shaped error response.
 *
 * @example
 * ```ts
 * openAIErrorPlan({ status: 429, message: "Rate limit reached", retryAfterMs: 500 });
 * // { status: 429, headers: { "retry-after-ms": "500" },
 * //   body: { error: { message: "Rate limit reached", type: "rate_limit_exceeded", param: null, code: null } } }
 * ```
 */
export function openAIErrorPlan(err: ScriptedError): PlannedResponse {
  return {
    status: err.status,
    headers: retryHeaders(err),
    body: {
      error: {
        message: err.message,
        type: err.type ?? OPENAI_ERROR_TYPES[err.status] ?? "api_error",
        param: err.param ?? null,
        code: err.code ?? null,
      },
    },
  };
}

/**
 * Starts a local server that speaks OpenAI's chat completions API
 * (`POST /v1/chat/completions`, JSON and SSE with a usage chunk and `data: [DONE]`;
 * `GET /v1/models`), for tests and examples. Any OpenAI-compatible client can talk to it.
 *
 * @example
 * ```ts
 * await using server = await startOpenAIServer({ replies: [{ text: "hi" }] });
 * const client = new OpenAI({ apiKey: "test", baseURL: server.baseURL });
 * ```
 */
export async function startOpenAIServer(options: OpenAIServerOptions = {}): Promise<OpenAIServer> {
  const models = options.models ?? ["gpt-4o-mini", "gpt-4o"];
  const base = await startChatServer<ChatReply>(
    options,
    (path) => path === "/v1/chat/completions",
    route,
  );

  async function route(
    req: RecordedRequest,
    nextReply: () => Promise<ChatReply>,
  ): Promise<PlannedResponse> {
    if (options.apiKey !== undefined && req.headers.authorization !== `Bearer ${options.apiKey}`) {
      return openAIErrorPlan({
        status: 401,
        message: "Incorrect API key provided.",
        code: "invalid_api_key",
      });
    }
    if (req.method === "GET" && req.path === "/v1/models") {
      return {
        body: {
          object: "list",
          data: models.map((id) => ({
            id,
            object: "model",
            created: 1_700_000_000,
            owned_by: "flotilla-test",
          })),
        },
      };
    }
    if (req.method === "POST" && req.path === "/v1/chat/completions")
      return completion(req, nextReply);
    return openAIErrorPlan({
      status: 404,
      message: `Unknown request URL: ${req.method} ${req.path}.`,
    });
  }

  async function completion(
    req: RecordedRequest,
    nextReply: () => Promise<ChatReply>,
  ): Promise<PlannedResponse> {
    const body = (req.body ?? {}) as Record<string, any>;
    const model = typeof body.model === "string" ? body.model : "";
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      return openAIErrorPlan({
        status: 400,
        message: "Invalid 'messages': empty array. Expected an array with minimum length 1.",
        param: "messages",
        code: "empty_array",
      });
    }
    if (!models.includes(model)) {
      return openAIErrorPlan({
        status: 404,
        message: `The model \`${model}\` does not exist or you do not have access to it.`,
        code: "model_not_found",
      });
    }
    const reply = await nextReply();
    if (reply.error) return control(reply, openAIErrorPlan(reply.error));
    const text = replyText(reply);
    const toolCalls = (reply.toolCalls ?? []).map((c) => ({
      id: c.id ?? nextId("call", "-"),
      type: "function" as const,
      function: { name: c.name, arguments: JSON.stringify(c.arguments) },
    }));
    const finish = reply.finishReason ?? (toolCalls.length > 0 ? "tool_calls" : "stop");
    const inputTokens = reply.usage?.inputTokens ?? roughTokens(textOf(body.messages));
    const outputTokens =
      reply.usage?.outputTokens ??
      roughTokens(text + toolCalls.map((c) => c.function.arguments).join(""));
    const usage = {
      prompt_tokens: inputTokens,
      completion_tokens: outputTokens,
      total_tokens: inputTokens + outputTokens,
    };
    const id = nextId("chatcmpl", "-");
    const created = Math.floor(Date.now() / 1000);
    if (body.stream !== true) {
      return control(reply, {
        status: reply.status ?? 200,
        body: {
          id,
          object: "chat.completion",
          created,
          model,
          choices: [
            {
              index: 0,
              message: {
                role: "assistant",
                content: toolCalls.length > 0 && !text ? null : text,
                refusal: null,
                ...(toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
              },
              logprobs: null,
              finish_reason: finish,
            },
          ],
          usage,
        },
      });
    }
    const chunk = (choices: unknown[], extra: Record<string, unknown> = {}) =>
      `data: ${JSON.stringify({ id, object: "chat.completion.chunk", created, model, choices, ...extra })}\n\n`;
    const chunks: string[] = [
      chunk([
        {
          index: 0,
          delta: { role: "assistant", content: "" },
          logprobs: null,
          finish_reason: null,
        },
      ]),
    ];
    if (text) {
      for (const piece of splitTokens(text)) {
        chunks.push(
          chunk([{ index: 0, delta: { content: piece }, logprobs: null, finish_reason: null }]),
        );
      }
    }
    toolCalls.forEach((c, index) => {
      chunks.push(
        chunk([
          {
            index: 0,
            delta: {
              tool_calls: [
                {
                  index,
                  id: c.id,
                  type: "function",
                  function: { name: c.function.name, arguments: "" },
                },
              ],
            },
            logprobs: null,
            finish_reason: null,
          },
        ]),
      );
      const args = c.function.arguments;
      const mid = Math.ceil(args.length / 2);
      for (const part of [args.slice(0, mid), args.slice(mid)]) {
        if (!part) continue;
        chunks.push(
          chunk([
            {
              index: 0,
              delta: { tool_calls: [{ index, function: { arguments: part } }] },
              logprobs: null,
              finish_reason: null,
            },
          ]),
        );
      }
    });
    chunks.push(chunk([{ index: 0, delta: {}, logprobs: null, finish_reason: finish }]));
    if (body.stream_options?.include_usage === true) chunks.push(chunk([], { usage }));
    chunks.push("data: [DONE]\n\n");
    return control(reply, {
      status: reply.status ?? 200,
      contentType: "text/event-stream",
      chunks,
    });
  }

  return Object.assign(base, { baseURL: `${base.url}/v1` });
}
