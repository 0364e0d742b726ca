export * from "./fake-clock.js";
export * from "./fixtures.js";
export * from "./servers/index.js";
export * from "./store-conformance.js";
export * from "./worker-conformance.js";
