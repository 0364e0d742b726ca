import {
  contentText,
  type FinishReason,
  FlotillaError,
  type LlmRequest,
  type ToolCall,
} from "@flotilla/core";
import OpenAI from "openai";
import { malformed, truncated } from "./errors.js";
import {
  type CallContext,
  LlmWorker,
  type LlmWorkerOptions,
  type ProviderCall,
} from "./llm-worker.js";

/** Options of {@link OpenAIWorker}. */
export interface OpenAIWorkerOptions extends LlmWorkerOptions {
  /** @default process.env.OPENAI_API_KEY */
  apiKey?: string;
  /** @default "https://api.openai.com/v1" */
  baseURL?: string;
  /** @default "gpt-4o-mini" */
  defaultModel?: string;
  /** OpenAI organization id. */
  organization?: string;
  /** Ask for a usage chunk at the end of streams (`stream_options.include_usage`). @default true */
  streamUsage?: boolean;
  /** Body field for `maxTokens`. @default "max_completion_tokens" (OpenAI), "max_tokens" (compatible endpoints) */
  maxTokensField?: "max_tokens" | "max_completion_tokens";
  /** Key of `payload.providerOptions` merged into the request body. @default the worker's kind */
  providerOptionsKey?: string;
}

type ChatMessage = OpenAI.Chat.Completions.ChatCompletionMessageParam;

const FINISH: Record<string, FinishReason> = {
  stop: "stop",
  length: "length",
  tool_calls: "tool_calls",
  function_call: "tool_calls",
  content_filter: "content_filter",
};

function parseArgs(provider: string, name: string, text: string): Record<string, unknown> {
  if (text.trim() === "") return {};
  try {
    const v = JSON.parse(text) as unknown;
    if (v && typeof v === "object" && !Array.isArray(v)) return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new FlotillaError(
    "WORKER_ERROR",
    `${provider}: arguments of tool call ${name} are not a JSON object`,
    {
      retryable: true,
    },
  );
}

/**
 * Maps a Flotilla request to an OpenAI chat-completions body.
 *
 * @example
 * ```ts
 * const req = parseLlmRequest({ prompt: "Name a colour.", maxTokens: 20 });
 * const body = toOpenAIBody(req, "gpt-4o-mini", { maxTokensField: "max_completion_tokens" });
 * // { model: "gpt-4o-mini", messages: [{ role: "user", content: "Name a colour." }], max_completion_tokens: 20, … }
 * ```
 */
export function toOpenAIBody(
  req: LlmRequest,
  model: string,
  opts: {
    maxTokensField: "max_tokens" | "max_completion_tokens";
    providerOptions?: Record<string, unknown>;
  },
): OpenAI.Chat.Completions.ChatCompletionCreateParams {
  const messages: ChatMessage[] = [];
  if (req.system) messages.push({ role: "system", content: req.system });
  for (const m of req.messages) {
    if (m.role === "system") messages.push({ role: "system", content: contentText(m.content) });
    else if (m.role === "tool") {
      messages.push({
        role: "tool",
        tool_call_id: m.toolCallId ?? "",
        content: contentText(m.content),
      });
    } else if (m.role === "assistant") {
      const text = contentText(m.content);
      messages.push({
        role: "assistant",
        content: text || (m.toolCalls?.length ? null : ""),
        ...(m.toolCalls?.length
          ? {
              tool_calls: m.toolCalls.map((c) => ({
                id: c.id,
                type: "function" as const,
                function: { name: c.name, arguments: JSON.stringify(c.arguments) },
              })),
            }
          : {}),
      });
    } else {
      messages.push({
        role: "user",
        content:
          typeof m.content === "string"
            ? m.content
            : m.content.map((p) =>
                p.type === "text"
                  ? { type: "text" as const, text: p.text }
                  : {
                      type: "image_url" as const,
                      image_url: {
                        url: p.url ?? `data:${p.mediaType ?? "image/png"};base64,${p.data}`,
                      },
                    },
              ),
      });
    }
  }
  const body: Record<string, unknown> = { model, messages };
  if (req.temperature !== undefined) body.temperature = req.temperature;
  if (req.topP !== undefined) body.top_p = req.topP;
  if (req.maxTokens !== undefined) body[opts.maxTokensField] = req.maxTokens;
  if (req.stop !== undefined) body.stop = req.stop;
  if (req.tools?.length) {
    body.tools = req.tools.map((t) => ({
      type: "function",
      function: {
        name: t.name,
        ...(t.description ? { description: t.description } : {}),
        parameters: t.parameters,
      },
    }));
  }
  if (req.toolChoice !== undefined) {
    body.tool_choice =
      typeof req.toolChoice === "string"
        ? req.toolChoice
        : { type: "function", function: { name: req.toolChoice.name } };
  }
  if (req.responseFormat) {
    const f = req.responseFormat;
    body.response_format =
      f.type === "json"
        ? { type: "json_object" }
        : f.type === "json_schema"
          ? {
              type: "json_schema",
              json_schema: {
                name: f.name,
                schema: f.schema,
                ...(f.strict !== undefined ? { strict: f.strict } : {}),
              },
            }
          : { type: "text" };
  }
  return {
    ...body,
    ...(opts.providerOptions ?? {}),
  } as unknown as OpenAI.Chat.Completions.ChatCompletionCreateParams;
}

/**
 * A worker for OpenAI chat completions (and, through {@link OpenAICompatibleWorker}, any
 * endpoint that speaks the same API). Retries are Flotilla's: the client's own are off.
 *
 * @example
 * ```ts
 * const worker = new OpenAIWorker({ apiKey: process.env.OPENAI_API_KEY, defaultModel: "gpt-4o-mini" });
 * await orchestrator.register(worker);
 * await orchestrator.submit({ type: "llm_request", payload: { prompt: "Say hi" } });
 * ```
 */
export class OpenAIWorker extends LlmWorker {
  readonly #client: OpenAI;
  readonly #streamUsage: boolean;
  readonly #maxTokensField: "max_tokens" | "max_completion_tokens";
  readonly #optionsKey: string;

  constructor(options: OpenAIWorkerOptions = {}, kind = "openai") {
    const apiKey = options.apiKey ?? process.env.OPENAI_API_KEY;
    if (!apiKey) {
      throw new FlotillaError("VALIDATION", "apiKey: required (or set OPENAI_API_KEY)");
    }
    const baseURL = options.baseURL ?? "https://api.openai.com/v1";
    super(kind, { ...options, baseURL, defaultModel: options.defaultModel ?? "gpt-4o-mini" }, [
      apiKey,
    ]);
    this.#client = new OpenAI({
      apiKey,
      baseURL,
      organization: options.organization ?? null,
      maxRetries: 0,
      timeout: this.timeoutMs,
      ...(options.headers ? { defaultHeaders: options.headers } : {}),
    });
    this.#streamUsage = options.streamUsage ?? true;
    this.#maxTokensField =
      options.maxTokensField ?? (kind === "openai" ? "max_completion_tokens" : "max_tokens");
    this.#optionsKey = options.providerOptionsKey ?? kind;
  }

  protected async listModels(signal: AbortSignal): Promise<string[]> {
    const page = await this.#client.models.list({ signal });
    return page.data.map((m) => m.id);
  }

  protected async call(req: LlmRequest, call: CallContext): Promise<ProviderCall> {
    const providerOptions = req.providerOptions?.[this.#optionsKey];
    const body = toOpenAIBody(req, call.model, {
      maxTokensField: this.#maxTokensField,
      ...(providerOptions ? { providerOptions } : {}),
    });
    if (req.stream) return this.#stream(body, call);
    const { data, response } = await this.#client.chat.completions
      .create({ ...body, stream: false }, { signal: call.signal })
      .withResponse();
    call.headers(response.headers, response.status);
    return { response: this.#fromCompletion(data, call.model) };
  }

  #fromCompletion(
    data: OpenAI.Chat.Completions.ChatCompletion,
    model: string,
  ): ProviderCall["response"] {
    if (!data || typeof data !== "object" || !Array.isArray(data.choices)) {
      throw malformed(this.provider, "no choices array");
    }
    const choice = data.choices[0];
    if (!choice || typeof choice.message !== "object" || choice.message === null) {
      throw malformed(this.provider, "no choices[0].message");
    }
    const toolCalls: ToolCall[] = (choice.message.tool_calls ?? []).flatMap((c) =>
      c.type === "function"
        ? [
            {
              id: c.id,
              name: c.function.name,
              arguments: parseArgs(this.provider, c.function.name, c.function.arguments),
            },
          ]
        : [],
    );
    const usage: { inputTokens?: number; outputTokens?: number } = {};
    if (typeof data.usage?.prompt_tokens === "number") usage.inputTokens = data.usage.prompt_tokens;
    if (typeof data.usage?.completion_tokens === "number")
      usage.outputTokens = data.usage.completion_tokens;
    return {
      text: typeof choice.message.content === "string" ? choice.message.content : "",
      toolCalls,
      finishReason: FINISH[choice.finish_reason ?? ""] ?? "other",
      model: typeof data.model === "string" ? data.model : model,
      usage,
      raw: data,
    };
  }

  async #stream(
    body: OpenAI.Chat.Completions.ChatCompletionCreateParams,
    call: CallContext,
  ): Promise<ProviderCall> {
    const { data: stream, response } = await this.#client.chat.completions
      .create(
        {
          ...body,
          stream: true,
          ...(this.#streamUsage ? { stream_options: { include_usage: true } } : {}),
        },
        { signal: call.signal },
      )
      .withResponse();
    call.headers(response.headers, response.status);
    let text = "";
    let finish: string | null = null;
    let id = "";
    let model = call.model;
    let usage: OpenAI.Completions.CompletionUsage | undefined;
    const calls = new Map<number, { id: string; name: string; args: string }>();
    for await (const chunk of stream) {
      if (!chunk || typeof chunk !== "object")
        throw malformed(this.provider, "stream chunk is not an object");
      if (chunk.id) id = chunk.id;
      if (chunk.model) model = chunk.model;
      if (chunk.usage) {
        usage = chunk.usage;
        call.usage({ inputTokens: usage.prompt_tokens, outputTokens: usage.completion_tokens });
      }
      for (const choice of chunk.choices ?? []) {
        const delta = choice.delta ?? {};
        if (typeof delta.content === "string" && delta.content.length > 0) {
          text += delta.content;
          call.ctx.progress({ type: "token", text: delta.content });
        }
        for (const tc of delta.tool_calls ?? []) {
          const entry = calls.get(tc.index) ?? { id: "", name: "", args: "" };
          if (tc.id) entry.id = tc.id;
          if (tc.function?.name) entry.name += tc.function.name;
          if (tc.function?.arguments) entry.args += tc.function.arguments;
          calls.set(tc.index, entry);
        }
        if (choice.finish_reason) finish = choice.finish_reason;
      }
    }
    if (finish === null) throw truncated(this.provider, "no finish_reason");
    const toolCalls = [...calls.entries()]
      .sort(([a], [b]) => a - b)
      .map(([, c]) => ({
        id: c.id,
        name: c.name,
        arguments: parseArgs(this.provider, c.name, c.args),
      }));
    const u: { inputTokens?: number; outputTokens?: number } = {};
    if (usage) {
      u.inputTokens = usage.prompt_tokens;
      u.outputTokens = usage.completion_tokens;
    }
    const raw = {
      id,
      object: "chat.completion",
      model,
      choices: [
        {
          index: 0,
          message: {
            role: "assistant",
            content: text || null,
            ...(toolCalls.length
              ? {
                  tool_calls: [...calls.values()].map((c) => ({
                    id: c.id,
                    type: "function",
                    function: { name: c.name, arguments: c.args },
                  })),
                }
              : {}),
          },
          finish_reason: finish,
        },
      ],
      ...(usage ? { usage } : {}),
    };
    return {
      response: { text, toolCalls, finishReason: FINISH[finish] ?? "other", model, usage: u, raw },
    };
  }
}
