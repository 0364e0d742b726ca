// The fake clock and fixtures live in @flotilla/core/testing (the core's own tests use them).
export {
  FakeClock,
  type FakeClockOptions,
  makeStubWorker,
  makeTaskRecord,
} from "@flotilla/core/testing";
export { type PostgresServer, type PostgresServerOptions, startPostgres } from "./postgres.js";
export {
  type AnthropicServer,
  type AnthropicServerOptions,
  anthropicErrorPlan,
  type ChatReply,
  type ChatServer,
  type ChatServerOptions,
  type OllamaReply,
  type OllamaServer,
  type OllamaServerOptions,
  type OpenAIServer,
  type OpenAIServerOptions,
  ollamaErrorPlan,
  openAIErrorPlan,
  type PlannedResponse,
  type ProtocolServer,
  type RecordedRequest,
  type ReplyControl,
  type Scripted,
  type ScriptedError,
  type ScriptedToolCall,
  startAnthropicServer,
  startOllamaServer,
  startOpenAIServer,
} from "./servers/index.js";
export {
  STORE_TEST_BASE_TIME,
  type StoreConformanceContext,
  type StoreConformanceOptions,
  storeTestRecord,
} from "./store-conformance.js";
export {
  type ConformanceFinding,
  checkWorkerConformance,
  type MakeWorker,
  WORKER_CHECK_NAMES,
  type WorkerCheck,
  type WorkerCheckName,
  type WorkerConformanceOptions,
  workerConformanceChecks,
  workerConformanceTimeoutMs,
} from "./worker-conformance.js";
