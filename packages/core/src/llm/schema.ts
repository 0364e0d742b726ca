import { z } from "zod";
import { FlotillaError } from "../errors.js";
import type { Usage } from "../task/schema.js";
import { formatIssues } from "../worker/validate.js";

// The payload of the built-in `llm_request` task type, shared by every LLM worker package.

/** A text part of a message. */
export const TextPartSchema = z.object({ type: z.literal("text"), text: z.string() });

/** An image part: a URL (`https:` or `data:`) or base64 `data` with its `mediaType`. */
export const ImagePartSchema = z
  .object({
    type: z.literal("image"),
    url: z.string().min(1).optional(),
    data: z.string().min(1).optional(),
    /** e.g. `image/png`. @default "image/png" */
    mediaType: z.string().min(1).optional(),
  })
  .refine((p) => (p.url === undefined) !== (p.data === undefined), {
    message: "an image part needs exactly one of url or data",
  });

/**
 * One part of a message's content: text or an image.
 */
export const ContentPartSchema = z.discriminatedUnion("type", [TextPartSchema, ImagePartSchema]);
export type ContentPart = z.infer<typeof ContentPartSchema>;

/** A tool call, as the model asked for it (and as sent back in assistant messages). */
export const ToolCallSchema = z.object({
  id: z.string().min(1),
  name: z.string().min(1),
  arguments: z.record(z.string(), z.unknown()),
});
export type ToolCall = z.infer<typeof ToolCallSchema>;

/**
 * Roles a message may have.
 */
export const MESSAGE_ROLES = ["system", "user", "assistant", "tool"] as const;

/**
 * A chat message: a role and its content (a string or parts), plus tool-call fields.
 */
export const MessageSchema = z
  .object({
    role: z.enum(MESSAGE_ROLES),
    content: z.union([z.string(), z.array(ContentPartSchema)]).default(""),
    /** Tool calls of an assistant message. */
    toolCalls: z.array(ToolCallSchema).optional(),
    /** For `role: "tool"`: the id of the call this message answers. */
    toolCallId: z.string().min(1).optional(),
    /** For `role: "tool"`: the tool's name (Ollama uses it). */
    name: z.string().min(1).optional(),
  })
  .superRefine((m, ctx) => {
    if (m.role === "tool" && !m.toolCallId) {
      ctx.addIssue({ code: "custom", path: ["toolCallId"], message: 'required for role "tool"' });
    }
    if (m.toolCalls && m.role !== "assistant") {
      ctx.addIssue({
        code: "custom",
        path: ["toolCalls"],
        message: "only assistant messages carry toolCalls",
      });
    }
  });
export type Message = z.infer<typeof MessageSchema>;

/** A function the model may call; `parameters` is a JSON schema. */
export const ToolSchema = z.object({
  name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/, "1-64 letters, digits, _ or -"),
  description: z.string().optional(),
  parameters: z.record(z.string(), z.unknown()).default({ type: "object", properties: {} }),
});
export type Tool = z.infer<typeof ToolSchema>;

/**
 * The answer's format: plain `text`, any `json` object, or JSON matching a `json_schema`.
 */
export const ResponseFormatSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("text") }),
  z.object({ type: z.literal("json") }),
  z.object({
    type: z.literal("json_schema"),
    name: z
      .string()
      .regex(/^[a-zA-Z0-9_-]{1,64}$/)
      .default("response"),
    schema: z.record(z.string(), z.unknown()),
    strict: z.boolean().optional(),
  }),
]);
export type ResponseFormat = z.infer<typeof ResponseFormatSchema>;

/**
 * The payload of an `llm_request` task: one shape for every provider.
 *
 * @example
 * ```ts
 * const payload: LlmRequest = {
 *   model: "gpt-4o-mini",
 *   system: "Be brief.",
 *   messages: [{ role: "user", content: "Name three rivers." }],
 *   maxTokens: 200,
 *   stream: true,
 * };
 * ```
 */
export const LlmRequestSchema = z
  .object({
    /** Model id; the worker's default model when absent. */
    model: z.string().min(1).optional(),
    /** A shorthand for `messages: [{ role: "user", content: prompt }]` (appended after `messages`). */
    prompt: z.string().min(1).optional(),
    messages: z.array(MessageSchema).default([]),
    /** System instructions (sent the way each provider expects). */
    system: z.string().optional(),
    /** Sampling temperature, 0 to 2 (Anthropic accepts 0 to 1). */
    temperature: z.number().min(0).max(2).optional(),
    topP: z.number().gt(0).max(1).optional(),
    /** Most tokens to generate; must be a positive integer. Anthropic requires one: see the worker's `defaultMaxTokens`. */
    maxTokens: z.number().int().positive().optional(),
    stop: z.union([z.string().min(1), z.array(z.string().min(1)).max(4)]).optional(),
    tools: z.array(ToolSchema).optional(),
    /** `auto` (default when tools are given), `none`, `required`, or one tool by name. */
    toolChoice: z
      .union([z.enum(["auto", "none", "required"]), z.object({ name: z.string().min(1) })])
      .optional(),
    responseFormat: ResponseFormatSchema.optional(),
    /** Stream tokens as task progress events (`{ type: "token", text }`). @default false */
    stream: z.boolean().optional(),
    /** Provider-specific fields, merged into the request body: `{ openai: {...}, anthropic: {...}, ollama: {...} }`. */
    providerOptions: z.record(z.string(), z.record(z.string(), z.unknown())).optional(),
    /** A routing hint (`openai`, `anthropic`, `ollama`, ...); workers ignore it. */
    provider: z.string().optional(),
  })
  .superRefine((r, ctx) => {
    if (r.messages.length === 0 && r.prompt === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["messages"],
        message: "at least one message is required (or a prompt)",
      });
    }
    if (r.toolChoice && typeof r.toolChoice === "object") {
      const name = r.toolChoice.name;
      if (!r.tools?.some((t) => t.name === name)) {
        ctx.addIssue({
          code: "custom",
          path: ["toolChoice", "name"],
          message: `names a tool that is not in tools: ${name}`,
        });
      }
    }
  });
export type LlmRequestInput = z.input<typeof LlmRequestSchema>;
export type LlmRequest = z.output<typeof LlmRequestSchema>;

/** Why generation stopped, normalised across providers. */
export type FinishReason = "stop" | "length" | "tool_calls" | "content_filter" | "other";

/** What an `llm_request` task outputs, whatever the provider. */
export interface LlmResponse {
  text: string;
  toolCalls: ToolCall[];
  finishReason: FinishReason;
  /** The model that answered, as the provider names it. */
  model: string;
  usage: Usage & { inputTokens: number; outputTokens: number; totalTokens: number };
  /** The provider's response (for a stream: the response assembled from its events). */
  raw: unknown;
}

/**
 * Validates an `llm_request` payload; throws a `FlotillaError` with code `VALIDATION`
 * naming the field when it is invalid. `prompt` is folded into `messages`.
 *
 * @example
 * ```ts
 * const req = parseLlmRequest({ prompt: "hi" }); // req.messages = [{ role: "user", content: "hi" }]
 * ```
 */
export function parseLlmRequest(payload: unknown): LlmRequest {
  const parsed = LlmRequestSchema.safeParse(payload);
  if (!parsed.success) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid llm_request: ${formatIssues(parsed.error, "payload", Number.POSITIVE_INFINITY)}`,
      {
        details: { issues: parsed.error.issues.map((i) => ({ path: i.path, message: i.message })) },
      },
    );
  }
  const req = parsed.data;
  if (req.prompt !== undefined) {
    req.messages = [...req.messages, { role: "user", content: req.prompt }];
  }
  return req;
}

/**
 * The plain text of a message's content.
 *
 * @example
 * ```ts
 * contentText([{ type: "text", text: "a " }, { type: "image", url: "https://x/y.png" }, { type: "text", text: "cat" }]); // "a cat"
 * ```
 */
export function contentText(content: Message["content"]): string {
  if (typeof content === "string") return content;
  return content
    .filter((p): p is z.infer<typeof TextPartSchema> => p.type === "text")
    .map((p) => p.text)
    .join("");
}

/**
 * Whether any message carries an image.
 *
 * @example
 * ```ts
 * hasImages(parseLlmRequest({ prompt: "hi" })); // false
 * ```
 */
export function hasImages(req: LlmRequest): boolean {
  return req.messages.some(
    (m) => Array.isArray(m.content) && m.content.some((p) => p.type === "image"),
  );
}

/**
 * A rough token estimate (four characters per token) of a request's input.
 *
 * @example
 * ```ts
 * estimateInputTokens(parseLlmRequest({ prompt: "hello" })); // 3: (5 characters + 4 per message) / 4, rounded up
 * ```
 */
export function estimateInputTokens(req: LlmRequest): number {
  let chars = req.system?.length ?? 0;
  for (const m of req.messages) chars += contentText(m.content).length + 4;
  for (const t of req.tools ?? []) chars += JSON.stringify(t).length;
  return Math.ceil(chars / 4);
}
