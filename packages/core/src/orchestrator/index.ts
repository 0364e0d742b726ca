export { TaskHandle } from "./handle.js";
export * from "./options.js";
export * from "./orchestrator.js";
