import { cheapest, Orchestrator, preferLocal } from "@flotilla/core";
import { startOllamaServer, startOpenAIServer } from "@flotilla/testing";
import { OpenAIWorker } from "@flotilla/workers-llm";
import { describe, expect, it } from "vitest";
import { OllamaWorker } from "../src/index.js";

describe("routing between Ollama and API workers through the Orchestrator", () => {
  it("preferLocal sends work to Ollama and falls back to the API when Ollama's slot is taken", async () => {
    await using ollama = await startOllamaServer({ models: ["llama3.2"] });
    await using openai = await startOpenAIServer();
    const orchestrator = new Orchestrator({ routing: preferLocal({ kind: "ollama" }) });
    await orchestrator.start();
    try {
      await orchestrator.register(
        new OllamaWorker({ id: "local", host: ollama.host, maxConcurrency: 1 }),
      );
      await orchestrator.register(
        new OpenAIWorker({ id: "cloud", apiKey: "sk-123456", baseURL: openai.baseURL }),
      );
      ollama.reply({ text: "from ollama", delayMs: 200 });
      const first = await orchestrator.submit({
        type: "llm_request",
        payload: { prompt: "one", stream: true },
      });
      while (ollama.completionRequests().length === 0) await new Promise((r) => setTimeout(r, 5));
      const second = await orchestrator.submit({ type: "llm_request", payload: { prompt: "two" } });
      const [r1, r2] = await Promise.all([first.result(), second.result()]);
      expect(r1).toMatchObject({
        status: "succeeded",
        workerId: "local",
        output: { text: "from ollama" },
      });
      expect(r1.usage?.costUsd).toBe(0);
      expect(r2).toMatchObject({ status: "succeeded", workerId: "cloud" });
      const third = await orchestrator.submit({
        type: "llm_request",
        payload: { prompt: "three" },
      });
      expect((await third.result()).workerId).toBe("local");
    } finally {
      await orchestrator.stop({ mode: "abort" });
    }
  });

  it("cheapest picks the worker whose estimate is lowest", async () => {
    await using openai = await startOpenAIServer();
    const orchestrator = new Orchestrator({ routing: cheapest() });
    await orchestrator.start();
    try {
      await orchestrator.register(
        new OpenAIWorker({
          id: "big",
          apiKey: "sk-123456",
          baseURL: openai.baseURL,
          defaultModel: "gpt-4o",
        }),
      );
      await orchestrator.register(
        new OpenAIWorker({
          id: "small",
          apiKey: "sk-123456",
          baseURL: openai.baseURL,
          defaultModel: "gpt-4o-mini",
        }),
      );
      const h = await orchestrator.submit({
        type: "llm_request",
        payload: { prompt: "hello", maxTokens: 100 },
      });
      expect(await h.result()).toMatchObject({ status: "succeeded", workerId: "small" });
      expect(openai.completionRequests().at(-1)!.body.model).toBe("gpt-4o-mini");
    } finally {
      await orchestrator.stop({ mode: "abort" });
    }
  });

  it("a task requiring a model capability goes only to a worker serving it", async () => {
    await using ollama = await startOllamaServer({ models: ["llama3.2", "llava"] });
    await using openai = await startOpenAIServer();
    const orchestrator = new Orchestrator({ routing: preferLocal() });
    await orchestrator.start();
    try {
      await orchestrator.register(
        new OllamaWorker({ id: "local", host: ollama.host, models: ["llama3.2"] }),
      );
      await orchestrator.register(
        new OpenAIWorker({ id: "cloud", apiKey: "sk-123456", baseURL: openai.baseURL }),
      );
      const h = await orchestrator.submit({
        type: "llm_request",
        payload: { prompt: "describe", model: "gpt-4o-mini" },
        requirements: { capabilities: ["gpt-4o-mini"] },
      });
      expect(await h.result()).toMatchObject({ status: "succeeded", workerId: "cloud" });
    } finally {
      await orchestrator.stop({ mode: "abort" });
    }
  });
});
