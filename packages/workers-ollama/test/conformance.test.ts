import { startOllamaServer } from "@flotilla/testing";
import { describeWorkerConformance } from "@flotilla/testing/vitest";
import { afterAll } from "vitest";
import { OllamaWorker } from "../src/index.js";

const server = await startOllamaServer({
  defaultReply: (req) =>
    JSON.stringify(req.body.messages ?? req.body.prompt ?? "").includes("slow")
      ? { text: "late", delayMs: 5_000 }
      : { text: "ok" },
});
afterAll(() => server.close());

describeWorkerConformance("OllamaWorker", () => new OllamaWorker({ host: server.host }), {
  task: { type: "llm_request", payload: { prompt: "hi" } },
  slowTask: {
    type: "ollama_request",
    payload: { operation: "generate", prompt: "slow", stream: true },
  },
  failingTask: { type: "ollama_request", payload: { operation: "embed", input: [] } },
});
