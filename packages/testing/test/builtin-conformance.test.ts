import { ToolCallWorker } from "@flotilla/core";
import { describeWorkerConformance } from "@flotilla/testing/vitest";

// Flotilla's own built-in workers pass the suite that custom workers run.
describeWorkerConformance("ToolCallWorker", () => new ToolCallWorker(), {
  task: { type: "tool_call", payload: { tool_name: "echo", tool_input: { a: 1 } } },
  slowTask: { type: "tool_call", payload: { tool_name: "sleep", tool_input: { ms: 5_000 } } },
  failingTask: { type: "tool_call", payload: { tool_name: "no-such-tool", tool_input: {} } },
  abortWithinMs: 500,
  healthTimeoutMs: 1_000,
  callTimeoutMs: 5_000,
});
