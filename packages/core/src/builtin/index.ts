export * from "./api-request.js";
export * from "./http.js";
export * from "./math.js";
export * from "./tool-call.js";
