export {
  type AnthropicServer,
  type AnthropicServerOptions,
  anthropicErrorPlan,
  startAnthropicServer,
} from "./anthropic.js";
export type {
  PlannedResponse,
  ProtocolServer,
  RecordedRequest,
  ReplyControl,
  Scripted,
} from "./base.js";
export {
  type OllamaReply,
  type OllamaServer,
  type OllamaServerOptions,
  ollamaErrorPlan,
  startOllamaServer,
} from "./ollama.js";
export {
  type ChatReply,
  type OpenAIServer,
  type OpenAIServerOptions,
  openAIErrorPlan,
  type ScriptedError,
  type ScriptedToolCall,
  startOpenAIServer,
} from "./openai.js";
