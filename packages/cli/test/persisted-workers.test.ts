import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type OpenAIServer, startOpenAIServer } from "@flotilla/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const PROVIDER_KEY = "sk-provider-secret-0123456789abcdef";
const REMOTE_TOKEN = "remote-token-from-the-environment-42";
const ADMIN = "admin-key-for-persisted-workers";
const SECRET = "server-secret-key-0123456789";
const headers = { "x-api-key": ADMIN, "content-type": "application/json" };
let llm: OpenAIServer;
const dirs: string[] = [];
const running = new Set<RunningServer>();

beforeAll(async () => {
  // The provider refuses any other key: a request that succeeds after a restart proves the
  // stored key was decrypted.
  llm = await startOpenAIServer({ replies: [{ text: "Paris." }], apiKey: PROVIDER_KEY });
});
afterAll(async () => {
  for (const r of running) await r.stop().catch(() => {});
  await llm?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function start(dir: string, flags: Record<string, unknown> = {}) {
  const printed: string[] = [];
  const config = loadServeConfig(
    {
      port: 0,
      dataDir: dir,
      adminKey: ADMIN,
      logLevel: "silent",
      detectWorkers: false,
      ...flags,
    },
    {},
  );
  const server = await runServe(config, { REMOTE_TOKEN }, (l) => printed.push(l));
  running.add(server);
  const stop = async () => {
    await server.stop();
    running.delete(server);
  };
  return { server, api: `${server.url}/api/v2/orchestrator`, printed, stop };
}

async function post(url: string, body: unknown) {
  const res = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

function tempDir() {
  const d = mkdtempSync(join(tmpdir(), "flotilla-persist-"));
  dirs.push(d);
  return d;
}

describe("workers registered through the API survive a restart", () => {
  it("stores them with their secrets encrypted, registers them again, and keeps spent quotas", async () => {
    const dir = tempDir();
    const first = await start(dir, { secretKey: SECRET });
    const reg = await post(`${first.api}/workers/llm-api/register`, {
      api_type: "openai",
      api_key: PROVIDER_KEY,
      base_url: llm.baseURL,
      model: "gpt-4o-mini",
      worker_id: "openai-1",
      quota_requests_per_day: 5,
    });
    expect(reg.body).toMatchObject({ worker_id: "openai-1", persisted: true });
    const remote = await post(`${first.api}/workers/remote/register`, {
      remote_url: "http://127.0.0.1:9/api/v2/orchestrator",
      worker_id: "far-box",
      auth_token_env: "REMOTE_TOKEN",
      task_types: ["render"],
    });
    expect(remote.body).toMatchObject({ worker_id: "far-box", persisted: true });
    const answer = await post(`${first.api}/llm/request`, { prompt: "Capital of France?" });
    expect(answer.body).toMatchObject({ success: true, response: "Paris." });
    await first.stop();

    // Neither secret is on disk in plaintext (the remote token is stored as its variable's name).
    const db = readFileSync(join(dir, "flotilla.db"));
    const wal = join(dir, "flotilla.db-wal");
    const bytes = existsSync(wal) ? Buffer.concat([db, readFileSync(wal)]) : db;
    expect(bytes.includes(PROVIDER_KEY)).toBe(false);
    expect(bytes.includes(REMOTE_TOKEN)).toBe(false);
    expect(bytes.includes("REMOTE_TOKEN")).toBe(true);

    const second = await start(dir, { secretKey: SECRET });
    expect(second.printed.join("\n")).toContain("+ openai-1: registered through the API earlier");
    expect(second.printed.join("\n")).toContain("+ far-box:");
    const list = (await (await fetch(`${second.api}/workers/list`, { headers })).json()) as {
      workers: Array<{ id: string }>;
    };
    expect(list.workers.map((w) => w.id)).toEqual(expect.arrayContaining(["openai-1", "far-box"]));
    const again = await post(`${second.api}/llm/request`, { prompt: "And again?" });
    expect(again.body).toMatchObject({ success: true, error: null });
    const stats = (await (await fetch(`${second.api}/resources/stats`, { headers })).json()) as {
      worker_quotas: Record<string, { requests_today: number; quota_requests_per_day: number }>;
    };
    // One request before the restart and one after: the quota's spend was kept.
    expect(stats.worker_quotas["openai-1"]).toMatchObject({
      quota_requests_per_day: 5,
      requests_today: 2,
    });

    // Unregistering forgets the registration: the next start does not bring it back.
    const del = await fetch(`${second.api}/workers/openai-1?mode=handback`, {
      method: "DELETE",
      headers,
    });
    expect(await del.json()).toEqual({
      worker_id: "openai-1",
      status: "unregistered",
      forgotten: true,
    });
    expect(
      (await fetch(`${second.api}/workers/nobody`, { method: "DELETE", headers })).status,
    ).toBe(404);
    await second.stop();
    const third = await start(dir, { secretKey: SECRET });
    expect(third.printed.join("\n")).not.toContain("openai-1");
    await third.stop();
  }, 60_000);

  it("a missing or different secret key for stored credentials stops the start", async () => {
    const dir = tempDir();
    const first = await start(dir, { secretKey: SECRET });
    await post(`${first.api}/workers/llm-api/register`, {
      api_type: "openai",
      api_key: PROVIDER_KEY,
      base_url: llm.baseURL,
      worker_id: "sealed-1",
    });
    await first.stop();
    await expect(start(dir)).rejects.toThrow(
      /stored workers sealed-1 have encrypted credentials, and no secret key was given/,
    );
    await expect(start(dir, { secretKey: "another-secret-key-9876543210" })).rejects.toThrow(
      /stored worker sealed-1: .*secret key differs/,
    );
    const ok = await start(dir, { secretKey: SECRET });
    expect(ok.printed.join("\n")).toContain("+ sealed-1:");
    await ok.stop();
  }, 60_000);

  it("without a secret key a literal secret is never written: the worker lasts until the restart", async () => {
    const dir = tempDir();
    const first = await start(dir);
    const literal = await post(`${first.api}/workers/llm-api/register`, {
      api_type: "openai",
      api_key: PROVIDER_KEY,
      base_url: llm.baseURL,
      worker_id: "temporary",
    });
    expect(literal.status).toBe(200);
    expect(literal.body.persisted).toBe(false);
    expect(literal.body.message).toContain("not kept across restarts");
    const named = await post(`${first.api}/workers/remote/register`, {
      remote_url: "http://127.0.0.1:9/api",
      worker_id: "named",
      auth_token_env: "REMOTE_TOKEN",
    });
    expect(named.body.persisted).toBe(true);
    const unset = await post(`${first.api}/workers/remote/register`, {
      remote_url: "http://127.0.0.1:9/api",
      auth_token_env: "NOT_SET_ANYWHERE",
    });
    expect(unset.status).toBe(400);
    expect(String(unset.body.detail)).toContain(
      "body.auth_token_env: the environment variable NOT_SET_ANYWHERE is not set on the server",
    );
    const both = await post(`${first.api}/workers/llm-api/register`, {
      api_type: "openai",
      api_key: "k",
      api_key_env: "REMOTE_TOKEN",
    });
    expect(both.status).toBe(400);
    expect(String(both.body.detail)).toContain("give exactly one of api_key and api_key_env");
    await first.stop();
    expect(readFileSync(join(dir, "flotilla.db")).includes(PROVIDER_KEY)).toBe(false);
    const second = await start(dir);
    const out = second.printed.join("\n");
    expect(out).toContain("+ named:");
    expect(out).not.toContain("temporary");
    await second.stop();
  }, 60_000);
});
