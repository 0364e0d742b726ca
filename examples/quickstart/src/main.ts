/**
 * The README's library quick start, verbatim above the marker line (a test in docs/test keeps
 * the two identical), followed by a check of what it printed. Run it with `npm start` here
 * or `npm run examples` at the repository root.
 */
import { FunctionWorker, Orchestrator } from "@flotilla/core";

const orchestrator = new Orchestrator({ concurrency: 8 });
await orchestrator.register(
  new FunctionWorker({
    taskTypes: ["summarize"],
    maxConcurrency: 4,
    fn: async (payload: { text: string }) => payload.text.slice(0, 40),
  }),
);
await orchestrator.start();

// "summary" waits for "draft" and receives its output through the {{draft}} template.
const handles = await orchestrator.submitBatch([
  {
    id: "draft",
    type: "summarize",
    payload: { text: "Flotilla schedules tasks across workers, in order." },
  },
  {
    id: "summary",
    type: "summarize",
    priority: "high",
    dependsOn: ["draft"],
    payload: { text: "{{draft}}" },
  },
]);
for (const handle of handles) {
  const { status, output } = await handle.result();
  console.log(handle.id, status, output);
}
await orchestrator.stop();

// ---- not part of the README: check what the quick start printed ----
import assert from "node:assert/strict";
import { printed } from "./capture.js";

assert.deepEqual(printed, [
  "draft succeeded Flotilla schedules tasks across workers,",
  "summary succeeded Flotilla schedules tasks across workers,",
]);
