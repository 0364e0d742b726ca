export {
  type AnthropicServer,
  type AnthropicServerOptions,
  anthropicErrorPlan,
  startAnthropicServer,
} from "./anthropic.js";
export type {
  ChatReply,
  ChatServer,
  ChatServerOptions,
  PlannedResponse,
  ProtocolServer,
  RecordedRequest,
  ReplyControl,
  Scripted,
  ScriptedError,
  ScriptedToolCall,
} from "./base.js";
export {
  type OllamaReply,
  type OllamaServer,
  type OllamaServerOptions,
  ollamaErrorPlan,
  startOllamaServer,
} from "./ollama.js";
export {
  type OpenAIServer,
  type OpenAIServerOptions,
  openAIErrorPlan,
  startOpenAIServer,
} from "./openai.js";
