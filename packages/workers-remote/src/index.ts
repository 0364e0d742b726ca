export {
  FleetClient,
  type FleetClientOptions,
  fleetErrorStatus,
  type RegisterInput,
  type RequestOptions,
  type StatusUpdate,
  sha256Hex,
} from "./fleet/client.js";
export {
  ErrorBodySchema,
  NODE_STATUSES,
  type NodeStatus,
  PollResponseSchema,
  REPORTED_STATUSES,
  type Registration,
  RegistrationSchema,
  type ReportedStatus,
  type SessionLog,
  SessionLogSchema,
  type SessionMessage,
  SessionMessageSchema,
  type TaskAssignment,
  TaskAssignmentSchema,
} from "./fleet/schemas.js";
export { RemoteWorker, type RemoteWorkerOptions } from "./push/remote-worker.js";
export { findCrushDb, readCrushSessions } from "./reporter/crush.js";
export {
  createStatusReporter,
  runStatusReporter,
  type StatusReporterOptions,
} from "./reporter/server.js";
export {
  type CommandExecutorOptions,
  commandExecutor,
  workersExecutor,
} from "./runner/executors.js";
export {
  NodeRunner,
  type NodeRunnerOptions,
  type RunContext,
  type RunOutcome,
  type TaskExecutor,
} from "./runner/runner.js";
