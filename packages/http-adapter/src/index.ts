export {
  type CredentialSealer,
  createCredentialSealer,
  MIN_SECRET_LENGTH,
} from "./app/credentials.js";
export type { WorkerStoreOptions } from "./app/options.js";
export { applyResourcePolicy, currentResourcePolicy } from "./app/policy.js";
export {
  type CorsOptions,
  createFlotillaApp,
  type FlotillaApp,
  type FlotillaAppHandles,
  type FlotillaAppOptions,
  type ResourcesLike,
  VERA_TASK_TYPES,
  type WorkerFactories,
  type WorkerFactoryContext,
} from "./app.js";
export {
  type AuthOptions,
  generateApiKey,
  hashApiKey,
  KeyVerifier,
  keyFromHeaders,
} from "./auth.js";
export {
  type ErrorBody,
  errorBody,
  errorResponse,
  HTTP_STATUS_BY_CODE,
  HttpError,
  httpStatusOf,
  validationError,
} from "./errors.js";
export {
  createFleetRoutes,
  FLEET_TASK_TYPE,
  type FleetApp,
  type FleetRoutesOptions,
  KEY_SCOPES,
  type KeyScope,
  type RegistrationRateLimit,
} from "./fleet/index.js";
export { ClientResolver, type TrustedProxies } from "./http/client.js";
export {
  type ConnectionLimits,
  guardConnections,
  type ResolvedLimits,
  resolveLimits,
  serverTimeouts,
} from "./http/connections.js";
export {
  AuthThrottle,
  type AuthThrottleOptions,
  type ThrottleVerdict,
} from "./http/throttle.js";
export { FlotillaMetrics } from "./metrics.js";
export {
  ErrorResponseSchema,
  ExecuteResponseSchema,
  HealthResponseSchema,
  HistoryQuerySchema,
  HistoryResponseSchema,
  type LlmApiRegisterInput,
  LlmApiRegisterSchema,
  type LlmRequestInput,
  LlmRequestSchema,
  LlmResponseSchema,
  MetricsObject,
  PriorityInputSchema,
  RegisteredResponseSchema,
  type RemoteRegisterInput,
  RemoteRegisterSchema,
  type ResourcePolicy,
  ResourcePolicySchema,
  ResourcePolicyUpdateSchema,
  ResourceStatsSchema,
  StatusResponseSchema,
  SubmitResponseSchema,
  type TaskSubmitInput,
  TaskSubmitSchema,
  TaskViewSchema,
  type ToolExecuteInput,
  ToolExecuteSchema,
  ToolResponseSchema,
  UnregisteredResponseSchema,
  WorkerListResponseSchema,
  z,
} from "./schemas.js";
export {
  attachWebSockets,
  type FlotillaServer,
  type ServeOptions,
  serveFlotilla,
} from "./serve.js";
export { parseEventId, type SseOptions } from "./sse.js";
export { type EventEnvelope, EventHub, type WebSocketOptions } from "./ws.js";
