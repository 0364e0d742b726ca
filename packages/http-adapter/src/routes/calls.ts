import type { AppContext } from "../app/context.js";
import {
  LlmRequestSchema,
  LlmResponseSchema,
  ToolExecuteSchema,
  ToolResponseSchema,
} from "../schemas.js";
import { llmText } from "../views.js";

/** The waiting call routes: `{prefix}/llm/request` and `/tools/execute`. @internal */
export function callRoutes(ctx: AppContext): void {
  const { prefix } = ctx;
  ctx.define({
    method: "post",
    path: `${prefix}/llm/request`,
    summary: "Run an LLM request and wait for the answer",
    tags: ["vera"],
    body: LlmRequestSchema,
    response: LlmResponseSchema,
    extraResponses: {
      422: "No LLM worker registered",
      429: "Refused by a quota or rate limit (same body, success false, error_code)",
      504: "Still running when the wait ended",
    },
    handler: async (c) => {
      const input = await ctx.body(c, LlmRequestSchema);
      const ollama = ctx.workers().some((w) => w.taskTypes.includes("ollama_request"));
      const type = input.prefer_ollama && ollama ? "ollama_request" : "llm_request";
      ctx.requireWorkerFor(type);
      // The LLM workers' request shape: `prompt` is folded into `messages`, `system` sent as each provider expects.
      const payload: Record<string, unknown> = { prompt: input.prompt };
      if (input.system) payload.system = input.system;
      if (input.model) payload.model = input.model;
      if (input.temperature !== undefined) payload.temperature = input.temperature;
      if (input.max_tokens !== undefined) payload.maxTokens = input.max_tokens;
      const spec = ctx.withPriorityAndTimeout({ type, payload }, input);
      if (input.prefer_ollama) spec.metadata = { prefer_ollama: true };
      if (!input.stream) return ctx.runAndAnswer(c, spec, "response", llmText);
      // Streamed: token events as the model writes, then the usual answer as a `result` event.
      ctx.admit(spec.type);
      const handle = await ctx.submitAs(c, spec);
      return ctx.sse.stream(c, handle.id, { n: 0, k: 0 }, (rec) => ({
        event: "result",
        data: rec.result
          ? ctx.callAnswer(handle.id, rec.result, "response", llmText).body
          : { task_id: handle.id, success: false, response: null, error: rec.status },
      }));
    },
  });
  ctx.define({
    method: "post",
    path: `${prefix}/tools/execute`,
    summary: "Run a tool call and wait for the result",
    tags: ["vera"],
    body: ToolExecuteSchema,
    response: ToolResponseSchema,
    extraResponses: {
      422: "No tool worker registered",
      429: "Refused by a quota or rate limit (same body, success false, error_code)",
      504: "Still running when the wait ended",
    },
    handler: async (c) => {
      const input = await ctx.body(c, ToolExecuteSchema);
      ctx.requireWorkerFor("tool_call");
      const spec = ctx.withPriorityAndTimeout(
        {
          type: "tool_call",
          payload: { tool_name: input.tool_name, tool_input: input.tool_input ?? {} },
        },
        input,
      );
      return ctx.runAndAnswer(c, spec, "result", (output) => output ?? null);
    },
  });
}
