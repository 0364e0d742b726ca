export * from "./channel.js";
export * from "./deferred.js";
export * from "./heap.js";
export * from "./ids.js";
export * from "./partition.js";
export * from "./path.js";
