export {
  type LlmRequest,
  type LlmRequestInput,
  LlmRequestSchema,
  type LlmResponse,
  parseLlmRequest,
  redact,
} from "@flotilla/core";
export { malformed, mapOllamaError, OllamaRequestError, retryAfterMs } from "./errors.js";
export {
  type EmbedResponse,
  inferOllamaCapabilities,
  type OllamaModelInfo,
  OllamaWorker,
  type OllamaWorkerOptions,
  type PullProgress,
  toOllamaMessages,
} from "./ollama-worker.js";
export {
  OllamaEmbedSchema,
  OllamaGenerateSchema,
  type OllamaRequest,
  parseOllamaRequest,
} from "./request.js";
