import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type OpenAIServer, startOpenAIServer } from "@flotilla/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const KEY = "admin-key-for-resources-test";
const headers = { "x-api-key": KEY, "content-type": "application/json" };
let llm: OpenAIServer;
let dir: string;
let file: string;
const running: RunningServer[] = [];

function writeConfig(body: Record<string, unknown>) {
  writeFileSync(
    file,
    JSON.stringify({
      dataDir: dir,
      adminKey: KEY,
      logLevel: "silent",
      detectWorkers: false,
      ...body,
    }),
  );
}

async function start(): Promise<{ server: RunningServer; api: string }> {
  const server = await runServe(loadServeConfig({ config: file, port: 0 }, {}), {}, () => {});
  running.push(server);
  return { server, api: `${server.url}/api/v2/orchestrator` };
}

async function json<T = Record<string, unknown>>(res: Response | Promise<Response>) {
  const r = await res;
  return { status: r.status, body: (await r.json()) as T };
}

const policy = {
  resources: {
    limits: { openai: ["2/min"] },
    budgets: [{ name: "daily", scope: "global", requests: 3 }],
    tenantConcurrency: { "*": 4 },
  },
  tenantWeights: { acme: 3 },
};

beforeAll(async () => {
  llm = await startOpenAIServer({ replies: [{ text: "Paris." }] });
  dir = mkdtempSync(join(tmpdir(), "flotilla-resources-"));
  file = join(dir, "flotilla.json");
  writeConfig(policy);
});
afterAll(async () => {
  for (const r of running) await r.stop().catch(() => {});
  await llm?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

type Stats = {
  providers: Record<string, { limits: Array<{ limit: number; used: number; remaining: number }> }>;
  budgets: Array<{ name: string; limit: { requests?: number }; used: { requests: number } }>;
  totals: { tokens_today: number; cost_today: number };
};

describe("resource policy of flotilla serve", () => {
  it("comes from the config file, changes while running without losing counted use, and survives a restart", async () => {
    const { server, api } = await start();
    const current = await json(fetch(`${api}/resources/config`, { headers }));
    expect(current.body).toEqual({ ...policy.resources, tenantWeights: { acme: 3 } });

    // An LLM API registered with its own price: cost is counted at that price.
    const reg = await fetch(`${api}/workers/llm-api/register`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        api_type: "openai",
        api_key: "sk-test-0123456789",
        base_url: llm.baseURL,
        model: "gpt-4o-mini",
        worker_id: "priced",
        cost_per_1k_tokens: 0.01,
      }),
    });
    expect(reg.status).toBe(200);
    const run = await json<{ status: string }>(
      fetch(`${api}/tasks/execute`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          type: "llm_request",
          payload: { prompt: "Capital of France?", model: "gpt-4o-mini" },
          rate_limit_key: "openai",
          tenant: "acme",
        }),
      }),
    );
    expect(run.body.status).toBe("succeeded");

    let stats = (await json<Stats>(fetch(`${api}/resources/stats`, { headers }))).body;
    expect(stats.providers.openai?.limits[0]).toMatchObject({ limit: 2, used: 1, remaining: 1 });
    expect(stats.budgets.find((b) => b.name === "daily")?.used.requests).toBe(1);
    expect(stats.totals.tokens_today).toBeGreaterThan(0);
    // $0.01 per 1k tokens, input and output alike (not the built-in gpt-4o-mini price).
    expect(stats.totals.cost_today).toBeCloseTo(stats.totals.tokens_today * 1e-5, 9);

    // Raise the limit and the budget through the API: the call already made stays counted.
    const put = await json<{ applied: boolean; restart_required: string[]; config: unknown }>(
      fetch(`${api}/resources/config`, {
        method: "PUT",
        headers,
        body: JSON.stringify({
          limits: { openai: ["5/min"] },
          budgets: [{ name: "daily", scope: "global", requests: 10 }],
          tenantWeights: { acme: 2, beta: 5 },
        }),
      }),
    );
    expect(put.status).toBe(200);
    expect(put.body.restart_required).toEqual([]);
    expect(put.body.config).toMatchObject({ tenantWeights: { acme: 2, beta: 5 } });
    stats = (await json<Stats>(fetch(`${api}/resources/stats`, { headers }))).body;
    expect(stats.providers.openai?.limits[0]).toMatchObject({ limit: 5, used: 1, remaining: 4 });
    expect(stats.budgets.find((b) => b.name === "daily")).toMatchObject({
      limit: { requests: 10 },
      used: { requests: 1 },
    });
    const metrics = await (await fetch(`${server.url}/metrics`, { headers })).text();
    expect(metrics).toMatch(
      /flotilla_rate_limit_used\{key="openai",limit="requests\/min",unit="requests"\} 1/,
    );
    expect(metrics).toMatch(
      /flotilla_budget_remaining\{budget="daily",subject="\*",metric="requests"\} 9/,
    );

    // Bad input: 400 naming the setting, and nothing changes.
    const bad = await json<{ detail: string }>(
      fetch(`${api}/resources/config`, {
        method: "PUT",
        headers,
        body: JSON.stringify({ limits: { openai: "5/fortnight" } }),
      }),
    );
    expect(bad.status).toBe(400);
    expect(bad.body.detail).toContain('limits.openai: unknown time unit "fortnight"');
    const typo = await json<{ detail: string }>(
      fetch(`${api}/resources/config`, {
        method: "PUT",
        headers,
        body: JSON.stringify({ limit: {} }),
      }),
    );
    expect(typo.status).toBe(400);
    expect(typo.body.detail).toContain("limit");
    const zeroWeight = await fetch(`${api}/resources/config`, {
      method: "PUT",
      headers,
      body: JSON.stringify({ tenantWeights: { acme: 0 } }),
    });
    expect(zeroWeight.status).toBe(400);
    expect((await json(fetch(`${api}/resources/config`, { headers }))).body).toMatchObject({
      limits: { openai: ["5/min"] },
      tenantWeights: { acme: 2, beta: 5 },
    });

    // A reload from the file (what SIGHUP does) puts the file's policy back, keeping use.
    writeConfig({
      ...policy,
      resources: { ...policy.resources, timeZone: "Europe/Berlin", limits: { openai: ["3/min"] } },
    });
    const reloaded = await server.reload(loadServeConfig({ config: file, port: 0 }, {}));
    expect(reloaded.restartRequired).toEqual(["resources.timeZone"]);
    stats = (await json<Stats>(fetch(`${api}/resources/stats`, { headers }))).body;
    expect(stats.providers.openai?.limits[0]).toMatchObject({ limit: 3, used: 1 });
    expect((await json(fetch(`${api}/resources/config`, { headers }))).body.tenantWeights).toEqual({
      acme: 3,
    });

    // A restart keeps the spend: the budget counts today's call from the usage ledger.
    await server.stop();
    const again = await start();
    stats = (await json<Stats>(fetch(`${again.api}/resources/stats`, { headers }))).body;
    expect(stats.budgets.find((b) => b.name === "daily")?.used.requests).toBe(1);
  }, 60_000);

  it("a nonsensical limit or budget in the file stops the start naming the setting and the file", () => {
    const bad = join(dir, "bad.json");
    writeFileSync(
      bad,
      JSON.stringify({ resources: { budgets: [{ scope: "global", costUsd: 0 }] } }),
    );
    expect(() => loadServeConfig({ config: bad }, {})).toThrow(
      `invalid configuration: config file ${bad}: resources.budgets[0].costUsd: costUsd must be greater than zero`,
    );
    writeFileSync(bad, JSON.stringify({ resources: { limits: { openai: "lots" } } }));
    expect(() => loadServeConfig({ config: bad }, {})).toThrow(
      /config file .*bad\.json: resources\.limits\.openai/,
    );
    writeFileSync(bad, JSON.stringify({ tenantWeights: { acme: -1 } }));
    expect(() => loadServeConfig({ config: bad }, {})).toThrow(
      /config file .*bad\.json: tenantWeights\.acme: /,
    );
  });
});
