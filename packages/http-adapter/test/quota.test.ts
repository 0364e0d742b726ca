import { FunctionWorker } from "@flotilla/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { WorkerQuotaGate } from "../src/index.js";
import { type Harness, startHarness } from "./helpers.js";

let plain: Harness;
let gated: Harness;
const quotas = new WorkerQuotaGate();
const factories = {
  llmApi: (input: { worker_id?: string | undefined }) =>
    new FunctionWorker({
      id: input.worker_id ?? "llm",
      taskTypes: ["llm_request"],
      fn: async () => ({ text: "ok" }),
    }),
};
beforeAll(async () => {
  plain = await startHarness({ workers: [], workerFactories: factories });
  gated = await startHarness({ workers: [], workerFactories: factories, workerQuotas: quotas });
});
afterAll(async () => {
  await plain?.close();
  await gated?.close();
});

const body = { api_type: "openai", api_key: "sk-x", worker_id: "w1", quota_requests_per_day: 3 };

describe("quota fields of POST /workers/llm-api/register", () => {
  it("are refused (501, nothing registered) when no quota gate is configured", async () => {
    const res = await plain.req("/workers/llm-api/register", { json: body });
    expect(res.status).toBe(501);
    expect(((await res.json()) as { detail: string }).detail).toContain("quota");
    const list = (await (await plain.req("/workers/list")).json()) as { workers: unknown[] };
    expect(list.workers).toHaveLength(0);
  });

  it("are set on the gate before the worker takes tasks, shown in /resources/stats, and dropped with the worker", async () => {
    const res = await gated.req("/workers/llm-api/register", {
      json: { ...body, quota_tokens_per_day: 1000, quota_cost_limit_per_day: 2.5 },
    });
    expect(res.status).toBe(200);
    expect(quotas.get("w1")).toEqual({ requestsPerDay: 3, tokensPerDay: 1000, costUsdPerDay: 2.5 });
    const stats = (await (await gated.req("/resources/stats")).json()) as {
      worker_quotas: Record<string, { quota_requests_per_day: number; requests_today: number }>;
    };
    expect(stats.worker_quotas.w1).toMatchObject({ quota_requests_per_day: 3, requests_today: 0 });
    await gated.orchestrator.unregister("w1");
    expect(quotas.get("w1")).toBeUndefined();
  });
});
