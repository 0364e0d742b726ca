import { formatIssues as formatZodIssues } from "@flotilla/core";
import type { z } from "zod";

// The `llm_request` payload schema and `redact` live in @flotilla/core; re-exported for existing imports.
export {
  type ContentPart,
  ContentPartSchema,
  contentText,
  estimateInputTokens,
  type FinishReason,
  hasImages,
  ImagePartSchema,
  type LlmRequest,
  type LlmRequestInput,
  LlmRequestSchema,
  type LlmResponse,
  MESSAGE_ROLES,
  type Message,
  MessageSchema,
  parseLlmRequest,
  type ResponseFormat,
  ResponseFormatSchema,
  redact,
  TextPartSchema,
  type Tool,
  type ToolCall,
  ToolCallSchema,
  ToolSchema,
} from "@flotilla/core";
export { AnthropicWorker, type AnthropicWorkerOptions, toAnthropicBody } from "./anthropic.js";
export { mapProviderError, ProviderRequestError } from "./errors.js";
export {
  type CallContext,
  LlmWorker,
  type LlmWorkerOptions,
  type ProviderCall,
} from "./llm-worker.js";
export { inferCapabilities, type ModelInfo, normaliseModels } from "./models.js";
export { OpenAIWorker, type OpenAIWorkerOptions, toOpenAIBody } from "./openai.js";
export {
  OPENAI_COMPATIBLE_PRESETS,
  type OpenAICompatiblePreset,
  OpenAICompatibleWorker,
  type OpenAICompatibleWorkerOptions,
} from "./openai-compatible.js";
export { createPriceBook, LLM_PRICES, type PricesOption, resolvePrices } from "./pricing.js";
export {
  type LimiterHookOptions,
  type PausableLimiter,
  parseDurationMs,
  parseRateLimitHeaders,
  pauseLimiterOnExhaustion,
  type RateLimitInfo,
  type RateLimitListener,
  retryAfterMs,
} from "./rate-limit.js";

/**
 * Formats every zod issue as a `<root>.<path>: <message>` line, joined with `; `.
 *
 * @param root The name before each path. @default "payload"
 * @example
 * ```ts
 * const r = LlmRequestSchema.safeParse({});
 * if (!r.success) formatIssues(r.error); // "payload.messages: at least one message is required (or a prompt)"
 * ```
 */
export function formatIssues(error: z.ZodError, root = "payload"): string {
  return formatZodIssues(error, root, Number.POSITIVE_INFINITY);
}
