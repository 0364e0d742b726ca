export * from "./templates.js";
export * from "./tracker.js";
export * from "./validate.js";
