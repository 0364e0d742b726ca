export { type AdminKeyState, resolveAdminKey } from "./admin-key.js";
export { loadServeConfig, type OptionSpec, SERVE_OPTIONS, type ServeConfig } from "./config.js";
export { buildWorkerFactories } from "./factories.js";
export { createJsonLogger, LOG_LEVELS, type LogLevel } from "./logger.js";
export { createProgram } from "./program.js";
export {
  type CliOptionSpec,
  EXEC_OPTION,
  loadRunnerConfig,
  REPORTER_OPTIONS,
  RUNNER_OPTIONS,
  type RunnerConfig,
  type RunningRunner,
  reporterOptions,
  runMcpReporter,
  runRunner,
} from "./runner.js";
export { type RunningServer, runServe, VERSION } from "./serve.js";
export { SHARED_PARTITIONS, type ShareOptions, type Sharing, shareSchema } from "./shared.js";
export {
  type ClientOptions,
  cancelTask,
  decideTask,
  getTask,
  listTasks,
  submitTask,
  watchTask,
} from "./task.js";
export { detectWorkers, type WorkerDecision } from "./workers.js";
