export { AnthropicWorker, type AnthropicWorkerOptions, toAnthropicBody } from "./anthropic.js";
export { mapProviderError, ProviderRequestError, redact } from "./errors.js";
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
export * from "./schema.js";
