export * from "./clock.js";
export * from "./errors.js";
export * from "./logger.js";
export * from "./store/types.js";
export * from "./task/schema.js";
export * from "./task/types.js";
export * from "./worker/types.js";
