import Anthropic from "@anthropic-ai/sdk";
import {
  contentText,
  type FinishReason,
  FlotillaError,
  type LlmRequest,
  type Message,
  type ToolCall,
} from "@flotilla/core";
import { malformed, truncated } from "./errors.js";
import {
  type CallContext,
  LlmWorker,
  type LlmWorkerOptions,
  type ProviderCall,
} from "./llm-worker.js";

/** Options of {@link AnthropicWorker}. */
export interface AnthropicWorkerOptions extends LlmWorkerOptions {
  /** @default process.env.ANTHROPIC_API_KEY */
  apiKey?: string;
  /** @default "https://api.anthropic.com" */
  baseURL?: string;
  /** @default "claude-sonnet-4-5" */
  defaultModel?: string;
  /** `max_tokens` sent when a payload has no `maxTokens` (Anthropic requires one). @default 4096 */
  defaultMaxTokens?: number;
}

type Block = Record<string, unknown>;
/** A Messages API response as assembled here (only the fields read are typed). */
interface AMessageBody {
  [key: string]: unknown;
  content: Block[];
  usage: Record<string, unknown>;
}
/** One streamed event (only the fields read are typed). */
interface StreamEvent {
  type: string;
  index: number;
  message?: { usage?: Record<string, unknown> } & Record<string, unknown>;
  content_block?: Block;
  delta?: { type?: string; text?: string; partial_json?: string } & Record<string, unknown>;
  usage?: Record<string, unknown>;
}
const num = (v: unknown): number | undefined => (typeof v === "number" ? v : undefined);
type AMessage = { role: "user" | "assistant"; content: Block[] };

const STOP: Record<string, FinishReason> = {
  end_turn: "stop",
  stop_sequence: "stop",
  max_tokens: "length",
  model_context_window_exceeded: "length",
  tool_use: "tool_calls",
  refusal: "content_filter",
};

function imageBlock(p: {
  url?: string | undefined;
  data?: string | undefined;
  mediaType?: string | undefined;
}): Block {
  const dataUrl = p.url?.match(/^data:([^;]+);base64,(.*)$/s);
  if (dataUrl)
    return { type: "image", source: { type: "base64", media_type: dataUrl[1], data: dataUrl[2] } };
  if (p.url) return { type: "image", source: { type: "url", url: p.url } };
  return {
    type: "image",
    source: { type: "base64", media_type: p.mediaType ?? "image/png", data: p.data },
  };
}

function blocks(m: Message): Block[] {
  if (m.role === "tool") {
    return [{ type: "tool_result", tool_use_id: m.toolCallId, content: contentText(m.content) }];
  }
  const out: Block[] =
    typeof m.content === "string"
      ? m.content
        ? [{ type: "text", text: m.content }]
        : []
      : m.content.map((p) => (p.type === "text" ? { type: "text", text: p.text } : imageBlock(p)));
  for (const c of m.toolCalls ?? [])
    out.push({ type: "tool_use", id: c.id, name: c.name, input: c.arguments });
  return out;
}

/**
 * Maps a Flotilla request to an Anthropic Messages body.
 *
 * @example
 * ```ts
 * const req = parseLlmRequest({ system: "Be brief.", prompt: "Name a colour." });
 * const { body } = toAnthropicBody(req, "claude-3-5-haiku-latest", { defaultMaxTokens: 1024 });
 * // body: { model, system: "Be brief.", messages: [{ role: "user", … }], max_tokens: 1024, … }
 * ```
 */
export function toAnthropicBody(
  req: LlmRequest,
  model: string,
  opts: { defaultMaxTokens: number; providerOptions?: Record<string, unknown> },
): { body: Record<string, unknown>; schemaTool?: string } {
  const system: string[] = req.system ? [req.system] : [];
  const messages: AMessage[] = [];
  for (const m of req.messages) {
    if (m.role === "system") {
      system.push(contentText(m.content));
      continue;
    }
    const role = m.role === "assistant" ? "assistant" : "user";
    const content = blocks(m);
    const last = messages[messages.length - 1];
    // Anthropic wants alternating roles: consecutive same-role turns (e.g. several tool results) merge.
    if (last && last.role === role) last.content.push(...content);
    else messages.push({ role, content });
  }
  const body: Record<string, unknown> = {
    model,
    max_tokens: req.maxTokens ?? opts.defaultMaxTokens,
    messages,
  };
  let schemaTool: string | undefined;
  const tools: Block[] = (req.tools ?? []).map((t) => ({
    name: t.name,
    ...(t.description ? { description: t.description } : {}),
    input_schema: t.parameters,
  }));
  if (req.responseFormat?.type === "json") {
    system.push("Respond with a single valid JSON object and nothing else.");
  } else if (req.responseFormat?.type === "json_schema") {
    // Structured output the portable way: one forced tool whose input is the answer.
    schemaTool = req.responseFormat.name;
    tools.push({
      name: schemaTool,
      description: "Return the answer in this shape.",
      input_schema: req.responseFormat.schema,
    });
    body.tool_choice = { type: "tool", name: schemaTool };
  }
  if (system.length) body.system = system.join("\n\n");
  if (tools.length) body.tools = tools;
  if (req.toolChoice !== undefined && schemaTool === undefined) {
    const c = req.toolChoice;
    body.tool_choice =
      c === "auto"
        ? { type: "auto" }
        : c === "required"
          ? { type: "any" }
          : c === "none"
            ? { type: "none" }
            : { type: "tool", name: c.name };
  }
  if (req.temperature !== undefined) body.temperature = req.temperature;
  if (req.topP !== undefined) body.top_p = req.topP;
  if (req.stop !== undefined) body.stop_sequences = Array.isArray(req.stop) ? req.stop : [req.stop];
  return {
    body: { ...body, ...(opts.providerOptions ?? {}) },
    ...(schemaTool ? { schemaTool } : {}),
  };
}

/**
 * A worker for Anthropic's Messages API. Payloads without `maxTokens` get
 * `defaultMaxTokens`; `responseFormat: json_schema` is served by a forced tool call whose
 * input becomes the response text.
 *
 * @example
 * ```ts
 * const worker = new AnthropicWorker({ apiKey: process.env.ANTHROPIC_API_KEY, defaultModel: "claude-haiku-4-5" });
 * await orchestrator.register(worker);
 * ```
 */
export class AnthropicWorker extends LlmWorker {
  readonly #client: Anthropic;
  readonly defaultMaxTokens: number;

  constructor(options: AnthropicWorkerOptions = {}) {
    const apiKey = options.apiKey ?? process.env.ANTHROPIC_API_KEY;
    if (!apiKey)
      throw new FlotillaError("VALIDATION", "apiKey: required (or set ANTHROPIC_API_KEY)");
    const baseURL = options.baseURL ?? "https://api.anthropic.com";
    super(
      "anthropic",
      { ...options, baseURL, defaultModel: options.defaultModel ?? "claude-sonnet-4-5" },
      [apiKey],
    );
    this.defaultMaxTokens = options.defaultMaxTokens ?? 4096;
    this.#client = new Anthropic({
      apiKey,
      baseURL,
      maxRetries: 0,
      timeout: this.timeoutMs,
      ...(options.headers ? { defaultHeaders: options.headers } : {}),
    });
  }

  protected override validate(req: LlmRequest): void {
    if (req.temperature !== undefined && req.temperature > 1) {
      throw new FlotillaError("VALIDATION", "payload.temperature: Anthropic accepts 0 to 1");
    }
    if (req.messages.every((m) => m.role === "system")) {
      throw new FlotillaError(
        "VALIDATION",
        "payload.messages: at least one user message is required besides system ones",
      );
    }
  }

  protected async listModels(signal: AbortSignal): Promise<string[]> {
    const page = await this.#client.models.list({}, { signal });
    return page.data.map((m) => m.id);
  }

  protected async call(req: LlmRequest, call: CallContext): Promise<ProviderCall> {
    const providerOptions = req.providerOptions?.anthropic;
    const { body, schemaTool } = toAnthropicBody(req, call.model, {
      defaultMaxTokens: this.defaultMaxTokens,
      ...(providerOptions ? { providerOptions } : {}),
    });
    if (req.stream) return this.#stream(body, schemaTool, call);
    const { data, response } = await this.#client.messages
      .create(body as unknown as Anthropic.MessageCreateParamsNonStreaming, {
        signal: call.signal,
      })
      .withResponse();
    call.headers(response.headers, response.status);
    const msg = data as unknown as AMessageBody;
    if (!msg || typeof msg !== "object" || !Array.isArray(msg.content)) {
      throw malformed(this.provider, "no content array");
    }
    return { response: this.#assemble(msg, schemaTool, call.model) };
  }

  #assemble(
    msg: AMessageBody,
    schemaTool: string | undefined,
    model: string,
  ): ProviderCall["response"] {
    let text = "";
    const toolCalls: ToolCall[] = [];
    for (const b of msg.content) {
      if (b.type === "text" && typeof b.text === "string") text += b.text;
      else if (b.type === "tool_use") {
        const input = (b.input && typeof b.input === "object" ? b.input : {}) as Record<
          string,
          unknown
        >;
        if (schemaTool !== undefined && b.name === schemaTool) text = JSON.stringify(input);
        else toolCalls.push({ id: String(b.id), name: String(b.name), arguments: input });
      }
    }
    const usage: { inputTokens?: number; outputTokens?: number } = {};
    const inTok = num(msg.usage?.input_tokens);
    const outTok = num(msg.usage?.output_tokens);
    if (inTok !== undefined) usage.inputTokens = inTok;
    if (outTok !== undefined) usage.outputTokens = outTok;
    let finishReason = STOP[String(msg.stop_reason)] ?? "other";
    if (schemaTool !== undefined && finishReason === "tool_calls" && toolCalls.length === 0)
      finishReason = "stop";
    return {
      text,
      toolCalls,
      finishReason,
      model: typeof msg.model === "string" ? msg.model : model,
      usage,
      raw: msg,
    };
  }

  async #stream(
    body: Record<string, unknown>,
    schemaTool: string | undefined,
    call: CallContext,
  ): Promise<ProviderCall> {
    const { data: stream, response } = await this.#client.messages
      .create({ ...body, stream: true } as unknown as Anthropic.MessageCreateParamsStreaming, {
        signal: call.signal,
      })
      .withResponse();
    call.headers(response.headers, response.status);
    let message: AMessageBody | undefined;
    const content: Block[] = [];
    const partialJson = new Map<number, string>();
    let stopped = false;
    for await (const ev of stream as unknown as AsyncIterable<StreamEvent>) {
      switch (ev.type) {
        case "message_start":
          message = { ...ev.message, content: [], usage: { ...(ev.message?.usage ?? {}) } };
          if (num(message.usage.input_tokens) !== undefined) {
            call.usage({ inputTokens: num(message.usage.input_tokens), outputTokens: 0 });
          }
          break;
        case "content_block_start":
          if (!Number.isInteger(ev.index) || ev.index < 0 || ev.index > 1024) {
            throw malformed(this.provider, "content_block_start without a valid index");
          }
          content[ev.index] = { ...ev.content_block };
          break;
        case "content_block_delta": {
          const block = content[ev.index];
          if (!block) throw malformed(this.provider, `delta for unknown content block ${ev.index}`);
          if (ev.delta?.type === "text_delta") {
            block.text = `${block.text ?? ""}${ev.delta.text}`;
            if (ev.delta.text) call.ctx.progress({ type: "token", text: ev.delta.text });
          } else if (ev.delta?.type === "input_json_delta") {
            partialJson.set(
              ev.index,
              (partialJson.get(ev.index) ?? "") + (ev.delta.partial_json ?? ""),
            );
          }
          break;
        }
        case "content_block_stop": {
          const json = partialJson.get(ev.index);
          const block = content[ev.index];
          if (block && json !== undefined) {
            try {
              block.input = json ? JSON.parse(json) : {};
            } catch {
              throw malformed(this.provider, `tool input of block ${ev.index} is not JSON`);
            }
          }
          break;
        }
        case "message_delta":
          if (!message) throw malformed(this.provider, "message_delta before message_start");
          Object.assign(message, ev.delta ?? {});
          for (const [k, v] of Object.entries(ev.usage ?? {}))
            if (v !== null && v !== undefined) message.usage[k] = v;
          call.usage({
            inputTokens: num(message.usage.input_tokens),
            outputTokens: num(message.usage.output_tokens),
          });
          break;
        case "message_stop":
          stopped = true;
          break;
        default:
          break;
      }
    }
    if (!message || !stopped) throw truncated(this.provider, "no message_stop event");
    message.content = content.filter(Boolean);
    return { response: this.#assemble(message, schemaTool, call.model) };
  }
}
