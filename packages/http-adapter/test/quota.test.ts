import { FunctionWorker, ResourceManager } from "@flotilla/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "./helpers.js";

let plain: Harness;
let gated: Harness;
const resources = new ResourceManager({});
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
  gated = await startHarness({
    workers: [],
    workerFactories: factories,
    resources,
    gates: resources.gates,
  });
});
afterAll(async () => {
  await plain?.close();
  await gated?.close();
});

const body = { api_type: "openai", api_key: "sk-x", worker_id: "w1", quota_requests_per_day: 1 };
type Quotas = {
  worker_quotas: Record<string, { quota_requests_per_day: number; requests_today: number }>;
};

describe("quota fields of POST /workers/llm-api/register", () => {
  it("are refused (501, nothing registered) without budgets to put them in", async () => {
    const res = await plain.req("/workers/llm-api/register", { json: body });
    expect(res.status).toBe(501);
    expect(((await res.json()) as { detail: string }).detail).toContain("quota");
    const list = (await (await plain.req("/workers/list")).json()) as { workers: unknown[] };
    expect(list.workers).toHaveLength(0);
  });

  it("become the worker's daily budget: enforced, shown in /resources/stats, and dropped with the worker", async () => {
    const res = await gated.req("/workers/llm-api/register", {
      json: { ...body, quota_tokens_per_day: 1000, quota_cost_limit_per_day: 2.5 },
    });
    expect(res.status).toBe(200);
    const before = (await (await gated.req("/resources/stats")).json()) as Quotas;
    expect(before.worker_quotas.w1).toMatchObject({
      quota_requests_per_day: 1,
      quota_tokens_per_day: 1000,
      quota_cost_limit_per_day: 2.5,
      requests_today: 0,
      exceeded: false,
    });
    const first = await gated.orchestrator.submit({
      type: "llm_request",
      payload: { prompt: "a" },
    });
    expect((await first.result()).status).toBe("succeeded");
    // w1 is the only worker for it and has spent its day: the task fails, naming the budget.
    const second = await gated.orchestrator.submit({
      type: "llm_request",
      payload: { prompt: "b" },
    });
    const r = await second.result();
    expect(r.error).toMatchObject({ code: "QUOTA_EXCEEDED" });
    expect(r.error?.message).toContain('budget "worker:w1/day" exceeded: requests limit 1, used 1');
    // Over HTTP the refusal is a 429 with the error table's code, in the route's own shape.
    const over = await gated.req("/llm/request", { json: { prompt: "c" } });
    expect(over.status).toBe(429);
    expect(await over.json()).toMatchObject({
      success: false,
      response: null,
      error_code: "QUOTA_EXCEEDED",
      error: expect.stringContaining('budget "worker:w1/day" exceeded'),
    });
    const after = (await (await gated.req("/resources/stats")).json()) as Quotas;
    expect(after.worker_quotas.w1).toMatchObject({ requests_today: 1, exceeded: true });
    await gated.orchestrator.unregister("w1");
    const gone = (await (await gated.req("/resources/stats")).json()) as Quotas;
    expect(gone.worker_quotas.w1).toBeUndefined();
  });
});
