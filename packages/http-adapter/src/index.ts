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
export * from "./fleet/index.js";
export { FlotillaMetrics } from "./metrics.js";
export { type WorkerQuota, WorkerQuotaGate, type WorkerQuotaGateOptions } from "./quota.js";
export * from "./schemas.js";
export {
  attachWebSockets,
  type FlotillaServer,
  type ServeOptions,
  serveFlotilla,
} from "./serve.js";
export { type EventEnvelope, EventHub, type WebSocketOptions } from "./ws.js";
