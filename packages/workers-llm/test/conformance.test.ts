import { startAnthropicServer, startOpenAIServer } from "@flotilla/testing";
import { describeWorkerConformance } from "@flotilla/testing/vitest";
import { afterAll } from "vitest";
import { AnthropicWorker, OpenAIWorker } from "../src/index.js";

// Replies by prompt: "slow" takes long enough to be aborted, anything else answers at once.
const byPrompt = (req: { body: { messages: { content: unknown }[] } }) => {
  const last = JSON.stringify(req.body.messages.at(-1)?.content ?? "");
  return last.includes("slow") ? { text: "late", delayMs: 5_000 } : { text: "ok" };
};

const openai = await startOpenAIServer({ defaultReply: byPrompt });
const anthropic = await startAnthropicServer({ defaultReply: byPrompt });
afterAll(async () => {
  await openai.close();
  await anthropic.close();
});

const tasks = {
  task: { type: "llm_request", payload: { prompt: "hi" } },
  slowTask: { type: "llm_request", payload: { prompt: "slow", stream: true } },
  failingTask: { type: "llm_request", payload: { messages: [] } },
};

describeWorkerConformance(
  "OpenAIWorker",
  () => new OpenAIWorker({ apiKey: "sk-conformance", baseURL: openai.baseURL }),
  tasks,
);
describeWorkerConformance(
  "AnthropicWorker",
  () =>
    new AnthropicWorker({
      apiKey: "sk-ant-conformance",
      baseURL: anthropic.baseURL,
      defaultModel: "claude-haiku-4-5",
    }),
  tasks,
);
