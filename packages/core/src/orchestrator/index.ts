export type { EngineApi, EngineEventName, EngineListener } from "./engineApi.js";
export type { TaskExplanation, WaitingReason } from "./explain.js";
export { TaskHandle } from "./handle.js";
export * from "./options.js";
export * from "./orchestrator.js";
export type { TaskTelemetry, TelemetryBounds, TelemetrySample } from "./telemetry.js";
