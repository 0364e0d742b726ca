// One key store for the Vera routes and the fleet routes, as `flotilla serve` composes them.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const ADMIN = "shared-keys-admin-0123456789";
const TOKEN = "shared-keys-registration";
const PREFIX = "/api/v2/orchestrator";
let dir: string;
let running: RunningServer;
let url: string;

async function call(
  method: string,
  path: string,
  key?: string,
  body?: unknown,
): Promise<{ status: number; json: Record<string, unknown> }> {
  const headers: Record<string, string> = {};
  if (key) headers["x-api-key"] = key;
  if (body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${url}${path}`, {
    method,
    headers,
    ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}
const veraStatus = async (key: string) => (await call("GET", `${PREFIX}/status`, key)).status;
const createKey = async (body: Record<string, unknown>) => {
  const r = await call("POST", "/keys", ADMIN, body);
  expect(r.status).toBe(201);
  return { id: r.json.id as string, secret: r.json.api_key as string };
};
/** Resolves the HTTP status of a WebSocket upgrade (101 when accepted). */
const wsStatus = (key: string) =>
  new Promise<number>((resolve) => {
    const ws = new WebSocket(`${url.replace(/^http/, "ws")}${PREFIX}/ws/status`, {
      headers: { "x-api-key": key },
    });
    ws.on("open", () => {
      ws.close();
      resolve(101);
    });
    ws.on("unexpected-response", (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on("error", () => undefined);
  });

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "flotilla-keys-"));
  const config = loadServeConfig(
    {
      port: "0",
      dataDir: dir,
      adminKey: ADMIN,
      registrationToken: TOKEN,
      logLevel: "silent",
      detectWorkers: false,
    },
    {},
  );
  running = await runServe(config, {}, () => undefined);
  url = running.url;
}, 30_000);

afterAll(async () => {
  await running?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe("one key store serves the Vera and the fleet routes", () => {
  it("admin keys from POST /keys work on Vera routes and WebSockets; revocation applies at once", async () => {
    const k = await createKey({ name: "ops", scopes: ["admin"] });
    expect(await veraStatus(k.secret)).toBe(200);
    const submit = await call("POST", `${PREFIX}/tasks/submit`, k.secret, {
      type: "tool_call",
      payload: { tool_name: "echo", tool_input: { x: 1 } },
    });
    expect(submit.status).toBe(200);
    expect(await wsStatus(k.secret)).toBe(101);

    expect((await call("POST", `/keys/${k.id}/revoke`, ADMIN)).status).toBe(200);
    expect(await veraStatus(k.secret)).toBe(401);
    expect(await wsStatus(k.secret)).toBe(401);
    expect((await call("GET", "/nodes", k.secret)).status).toBe(401);

    // The Vera uses are in the fleet's audit log, with the route.
    const audit = await call("GET", `/keys/audit?key_id=${k.id}`, ADMIN);
    const details = JSON.stringify(audit.json);
    expect(details).toContain(`GET ${PREFIX}/status`);
  });

  it("admin-scoped keys with target limits pass; keys without the admin scope and node keys never do", async () => {
    const scopedAdmin = await createKey({
      name: "acme-admin",
      scopes: ["admin"],
      allowed_targets: ["client-acme-*"],
    });
    expect(await veraStatus(scopedAdmin.secret)).toBe(200);

    const creator = await createKey({ name: "creator", scopes: ["tasks:create", "tasks:read"] });
    expect(await veraStatus(creator.secret)).toBe(401);
    expect((await call("GET", "/tasks", creator.secret)).status).toBe(200);

    const reg = await fetch(`${url}/register`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-registration-token": TOKEN },
      body: JSON.stringify({ hostname: "n1.test", name: "n1", os_type: "linux", capabilities: [] }),
    });
    expect(reg.status).toBe(200);
    const nodeKey = ((await reg.json()) as { api_key: string }).api_key;
    expect(nodeKey).toBeTruthy();
    expect((await call("GET", "/tasks/pending", nodeKey)).status).toBe(200);
    expect(await veraStatus(nodeKey)).toBe(401);
    expect(await wsStatus(nodeKey)).toBe(401);
    expect(await veraStatus("flk_not-a-key")).toBe(401);
    // The configured admin key still works on both.
    expect(await veraStatus(ADMIN)).toBe(200);
    expect((await call("GET", "/nodes", ADMIN)).status).toBe(200);
  });

  it("rotation: the new secret works at once on both surfaces; the old one only during its grace", async () => {
    const k = await createKey({ name: "rotating", scopes: ["admin"] });
    const noGrace = await call("POST", `/keys/${k.id}/rotate?grace_period_hours=0`, ADMIN);
    expect(noGrace.status).toBe(200);
    const second = noGrace.json.api_key as string;
    expect(await veraStatus(k.secret)).toBe(401);
    expect(await veraStatus(second)).toBe(200);
    expect((await call("GET", "/nodes", second)).status).toBe(200);

    const withGrace = await call("POST", `/keys/${k.id}/rotate?grace_period_hours=1`, ADMIN);
    const third = withGrace.json.api_key as string;
    expect(await veraStatus(third)).toBe(200);
    expect(await veraStatus(second)).toBe(200); // within the hour of grace
    expect((await call("DELETE", `/keys/${k.id}`, ADMIN)).status).toBe(200);
    expect(await veraStatus(third)).toBe(401);
    expect(await veraStatus(second)).toBe(401);
  });
});
