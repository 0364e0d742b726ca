export {
  type ContainerOutputProgress,
  type ContainerRunOutput,
  type ContainerStatsProgress,
  DockerWorker,
  type ImagePullProgress,
  LABEL_MANAGED,
  LABEL_TASK,
  LABEL_WARM,
  LABEL_WORKER,
} from "./docker-worker.js";
export type { OutputFile } from "./io.js";
export {
  type ContainerLimits,
  DEFAULT_CEILINGS,
  DEFAULT_LANGUAGES,
  DEFAULT_LIMITS,
  DEFAULT_SIZES,
  type DockerWorkerOptions,
  type LanguageSpec,
  type SizeLimits,
  type WarmPoolOptions,
} from "./options.js";
export type {
  CodeExecutionPayload,
  CommonPayload,
  DockerTaskPayload,
  InputFile,
  TaskLimits,
} from "./payload.js";
