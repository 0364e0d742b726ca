// The public surface of @flotilla/core, named one by one: what is not listed here (the
// scheduler's queues, the DAG tracker, the engine's parts) is internal and may change.
export {
  type AdmissionConfig,
  AdmissionConfigSchema,
  AdmissionControl,
  type AdmissionEvents,
  type AdmissionOptions,
  type PressureLevel,
} from "./admission/admission.js";
export {
  HostPressureSensor,
  type HostPressureSensorOptions,
  type PressureSample,
  type PressureSensor,
} from "./admission/sensor.js";
export {
  type BudgetConfig,
  BudgetConfigSchema,
  type BudgetStats,
  Budgets,
  BudgetsConfigSchema,
  type BudgetsOptions,
  budgetHistorySpanMs,
} from "./budget/budgets.js";
export {
  dayBounds,
  dayKey,
  isTimeZone,
  monthBounds,
} from "./budget/calendar.js";
export {
  type ApiRequestPayload,
  ApiRequestPayloadSchema,
  ApiRequestWorker,
  type ApiRequestWorkerOptions,
  builtinTools,
  evaluateMath,
  type HttpPolicy,
  type HttpRequestSpec,
  type HttpResponseData,
  hostAllowed,
  MATH_FUNCTIONS,
  pickPath,
  policyFetch,
  ToolCallPayloadSchema,
  ToolCallWorker,
  type ToolCallWorkerOptions,
  type ToolContext,
  type ToolDefinition,
} from "./builtin/index.js";
export {
  type Clock,
  systemClock,
  type TimerHandle,
} from "./clock.js";
export {
  type CostFigures,
  CostModel,
  type CostModelOptions,
} from "./cost/costModel.js";
export {
  type CostAggregate,
  type CostEntry,
  CostLedger,
  type CostLedgerEvents,
  type CostLedgerOptions,
  type CostSnapshot,
  type DayCost,
} from "./cost/ledger.js";
export {
  DEFAULT_PRICES,
  DEFAULT_PRICES_AS_OF,
  defaultPriceSubject,
  formatUsd,
  fromMicros,
  type ModelPrice,
  PriceBook,
  type PriceSubject,
  type PriceTable,
  PriceTableSchema,
  toMicros,
} from "./cost/prices.js";
export {
  estimatedTokens,
  type ResolvedUsage,
  resolveUsage,
} from "./cost/usage.js";
export {
  ERROR_CODES,
  type ErrorCode,
  FlotillaError,
  type FlotillaErrorOptions,
  RetryAfterError,
  type SerializedError,
  UnrecoverableError,
} from "./errors.js";
export {
  checkWorkerHealth,
  type HealthCheckOptions,
  type RunningHealthCheck,
  startHealthCheck,
} from "./health/check.js";
export {
  type HealthCounters,
  type HealthThresholds,
  initialHealthCounters,
  nextHealthState,
} from "./health/state.js";
export {
  type Claim,
  type ClaimOptions,
  ClaimOptionsSchema,
  type ClaimSlot,
  ClaimSlotSchema,
} from "./lease/index.js";
export {
  ConcurrencyCapSchema,
  ConcurrencyConfigSchema,
  ConcurrencyLimiter,
  type ConcurrencyLimiterOptions,
} from "./limits/concurrency.js";
export {
  KeyLimitsSchema,
  type LimitInput,
  LimitInputSchema,
  type LimitUnit,
  parseWindow,
  type RateLimit,
  type RateLimitsConfig,
  RateLimitsConfigSchema,
  toRateLimit,
} from "./limits/rate.js";
export {
  type KeyStats,
  type LimitCheck,
  type LimitStats,
  marginFor,
  RateLimiter,
  type RateLimiterOptions,
  type Reservation,
  retryAfterOf,
} from "./limits/rateLimiter.js";
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
  TextPartSchema,
  type Tool,
  type ToolCall,
  ToolCallSchema,
  ToolSchema,
} from "./llm/index.js";
export {
  type LogFn,
  type Logger,
  silentLogger,
} from "./logger.js";
export {
  type EngineApi,
  type EngineEventName,
  type EngineListener,
  Orchestrator,
  type OrchestratorOptions,
  OrchestratorOptionsSchema,
  type OrchestratorStatus,
  REMOTE_NODE_KIND,
  ROUTING_WINDOW,
  type StopOptions,
  type TaskExplanation,
  TaskHandle,
  type TaskTelemetry,
  type TelemetryBounds,
  type TelemetrySample,
  type UnregisterOptions,
  type WaitingReason,
} from "./orchestrator/index.js";
export { orchestratorPoolHost } from "./pools/orchestratorHost.js";
export {
  type PoolHost,
  type QueueReading,
  WorkerPool,
  WorkerPoolConfigSchema,
  type WorkerPoolEvents,
  type WorkerPoolOptions,
} from "./pools/workerPool.js";
export {
  type CircuitBreakerOptions,
  DEFAULT_CIRCUIT_OPTIONS,
  DEFAULT_HEALTH_OPTIONS,
  type ExecutionOutcome,
  type HealthMonitorOptions,
  type RegistryChange,
  WorkerRegistry,
  type WorkerRegistryEvents,
  type WorkerRegistryOptions,
} from "./registry/registry.js";
export type {
  CircuitState,
  TaskMatcher,
  WorkerEntry,
  WorkerHealthState,
  WorkerInfo,
  WorkerStats,
} from "./registry/types.js";
export type {
  DispatchGate,
  GateDecision,
  SettleOutcome,
} from "./resources/gate.js";
export {
  type ProviderStats,
  type ResourceConfig,
  ResourceConfigSchema,
  ResourceManager,
  type ResourceManagerEvents,
  type ResourceManagerOptions,
  type ResourceStats,
  type UsageToday,
} from "./resources/manager.js";
export { Wakers } from "./resources/wakers.js";
export {
  cheapest,
  createRouter,
  leastLoaded,
  lowestLatency,
  type PowerOfTwoOptions,
  type PreferLocalOptions,
  powerOfTwoChoices,
  preferLocal,
  ROUTING_STRATEGY_NAMES,
  type RoutingStrategyName,
  roundRobin,
  routingView,
} from "./router/strategies.js";
export type { RoutingStrategy } from "./router/types.js";
export {
  MemoryStore,
  type MemoryStoreOptions,
} from "./store/memory.js";
export {
  type RetentionHandle,
  type RetentionOptions,
  scheduleRetention,
} from "./store/retention.js";
export type {
  AttemptRecord,
  DeleteFinishedOptions,
  EventFeed,
  EventFollow,
  Store,
  StoreClaim,
  StoredEvent,
  TaskQuery,
  UnfinishedQuery,
  UsageEntry,
} from "./store/types.js";
export type {
  OrchestratorEvents,
  ProgressEvent,
  TransitionEvent,
  WaitingEvent,
} from "./task/events.js";
export { closestName, strictObject, unknownFieldsMessage } from "./task/fields.js";
export {
  canTransition,
  isFailureStatus,
  isTerminalStatus,
  TRANSITIONS,
} from "./task/lifecycle.js";
export type { TaskDefaults } from "./task/normalize.js";
export {
  BUILTIN_TASK_TYPES,
  type Estimate,
  EstimateSchema,
  type ParsedTaskSpec,
  PRIORITY_NAMES,
  PRIORITY_VALUES,
  type PriorityName,
  PrioritySchema,
  type Requirements,
  RequirementsSchema,
  type RetryPolicy,
  RetryPolicySchema,
  TASK_STATUSES,
  type Target,
  TargetSchema,
  type TaskSpec,
  TaskSpecSchema,
  type TaskStatus,
  TERMINAL_STATUSES,
  type Usage,
  UsageSchema,
} from "./task/schema.js";
export type {
  ApprovalDecision,
  Lease,
  TaskRecord,
  TaskResult,
  TaskTimings,
} from "./task/types.js";
export { parseOrThrow } from "./task/validation.js";
export { partitionOf } from "./util/partition.js";
export {
  abortReason,
  BaseWorker,
  type BaseWorkerOptions,
  type CallSignal,
  callSignal,
  FunctionWorker,
  type FunctionWorkerOptions,
  redact,
  type WorkerFunction,
} from "./worker/base.js";
export type {
  ExecutionContext,
  HealthReport,
  HealthStatus,
  Worker,
  WorkerResult,
  WorkerTask,
} from "./worker/types.js";
export {
  formatIssues,
  HealthReportSchema,
  parseHealthReport,
  parseWorkerResult,
  validateWorker,
  WorkerResultSchema,
  WorkerShapeSchema,
} from "./worker/validate.js";
