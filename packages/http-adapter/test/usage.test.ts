import { FunctionWorker, Orchestrator } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { createFlotillaApp } from "../src/index.js";

const KEY = "usage-test-key-0123456789";
let orchestrator: Orchestrator | undefined;
afterEach(async () => {
  await orchestrator?.stop();
  orchestrator = undefined;
});

async function usageOf(app: ReturnType<typeof createFlotillaApp>) {
  const res = await app.fetch(
    new Request("http://x/api/v2/orchestrator/resources/stats", { headers: { "x-api-key": KEY } }),
  );
  return (
    (await res.json()) as { llm_api_usage: { workers: Record<string, unknown>; totals: unknown } }
  ).llm_api_usage;
}

describe("usage figures come from the engine's ledger", () => {
  it("shows each worker's usage today, also to an adapter created afterwards", async () => {
    orchestrator = new Orchestrator();
    await orchestrator.register(
      new FunctionWorker({
        id: "metered",
        taskTypes: ["llm_request"],
        fn: async (_p, ctx) => {
          ctx.reportUsage({ inputTokens: 20, outputTokens: 10, costUsd: 0.002 });
          return "ok";
        },
      }),
    );
    await orchestrator.start();
    const first = createFlotillaApp({ orchestrator, auth: { keys: [KEY] } });
    for (let i = 0; i < 2; i++) {
      const h = await orchestrator.submit({ type: "llm_request", payload: { prompt: "hi" } });
      expect((await h.result()).status).toBe("succeeded");
    }
    const expected = {
      workers: { metered: { requests_today: 2, tokens_today: 60, cost_today: 0.004 } },
      totals: { requests_today: 2, tokens_today: 60, cost_today: 0.004 },
    };
    expect(await usageOf(first)).toMatchObject(expected);
    first.flotilla.close();
    // A new adapter over the same engine keeps no copy of its own: it reads the same ledger.
    const second = createFlotillaApp({ orchestrator, auth: { keys: [KEY] } });
    expect(await usageOf(second)).toMatchObject(expected);
    second.flotilla.close();
  });
});
