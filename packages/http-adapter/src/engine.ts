import type { EngineEventName } from "@flotilla/core";

/** Engine events the adapter relays to WebSocket clients (payloads as the engine emits them). */
export const RELAYED_EVENTS = [
  "task:transition",
  "task:progress",
  "task:waiting",
  "worker:registered",
  "worker:unregistered",
  "worker:health",
  "worker:circuit",
] as const satisfies readonly EngineEventName[];
