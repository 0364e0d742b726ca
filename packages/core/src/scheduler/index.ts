export * from "./backoff.js";
export * from "./delayQueue.js";
export * from "./fairness.js";
export * from "./readyQueue.js";
export * from "./signature.js";
