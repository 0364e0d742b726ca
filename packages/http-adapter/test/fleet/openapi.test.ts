// The fleet routes in /openapi.json and /docs when mounted in the adapter, as `flotilla serve` does.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { SqliteStore } from "@flotilla/core/sqlite";
import { Validator } from "@seriousme/openapi-schema-validator";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createFleetRoutes } from "../../src/fleet/index.js";
import { createFlotillaApp, type FlotillaServer, serveFlotilla } from "../../src/index.js";
import { ADMIN_KEY, makeOrchestrator, REG_TOKEN, removeDir } from "./harness.js";

type Op = {
  security?: Array<Record<string, unknown>>;
  requestBody?: { content: Record<string, { schema: { $ref?: string; properties?: object } }> };
  parameters?: Array<{ name: string; in: string }>;
  responses: Record<string, unknown>;
};
let doc: {
  openapi: string;
  paths: Record<string, Record<string, Op>>;
  components: { schemas: Record<string, { properties?: Record<string, unknown> }> };
};
let dir: string;
let server: FlotillaServer;
let close: () => Promise<void>;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fleet-openapi-"));
  const store = new SqliteStore({ path: join(dir, "flotilla.db") });
  await store.open();
  const { systemClock } = await import("@flotilla/core");
  const orchestrator = await makeOrchestrator(store, systemClock, 60_000);
  const fleet = createFleetRoutes({
    orchestrator,
    store,
    registrationToken: REG_TOKEN,
    adminKeys: [ADMIN_KEY],
  });
  await fleet.ready;
  const app = createFlotillaApp({
    orchestrator,
    auth: { keys: [ADMIN_KEY] },
    mount: [{ app: fleet }],
  });
  server = await serveFlotilla(app, { host: "127.0.0.1", port: 0 });
  doc = (await (await fetch(`${server.url}/openapi.json`)).json()) as typeof doc;
  close = async () => {
    await server.close({ graceMs: 200 });
    await fleet.close();
    await orchestrator.stop();
    await store.close();
  };
});
afterAll(async () => {
  await close?.();
  await removeDir(dir);
});

const FLEET_OPS = [
  "post /register",
  "get /tasks/pending",
  "get /files/{name}",
  "post /nodes/heartbeat",
  "post /status",
  "post /logs",
  "get /nodes",
  "get /nodes/{id}",
  "delete /nodes/{id}",
  "post /tasks",
  "get /tasks",
  "post /tasks/cleanup",
  "get /tasks/{id}",
  "delete /tasks/{id}",
  "post /upload",
  "get /logs/{task_id}",
  "post /keys",
  "get /keys",
  "get /keys/audit",
  "get /keys/{id}",
  "delete /keys/{id}",
  "post /keys/{id}/rotate",
  "post /keys/{id}/revoke",
  "get /dashboard/stats",
];

describe("fleet routes in the OpenAPI document", () => {
  it("lists every fleet operation beside the Vera routes and still validates as OpenAPI 3.1", async () => {
    const res = await new Validator().validate(doc as never);
    expect(res.errors ?? []).toEqual([]);
    expect(res.valid).toBe(true);
    for (const op of FLEET_OPS) {
      const [method, path] = op.split(" ") as [string, string];
      expect(doc.paths[path]?.[method], op).toBeDefined();
    }
    expect(doc.paths["/api/v2/orchestrator/tasks/submit"]?.post).toBeDefined();
  });

  it("request schemas are the zod schemas that validate the requests", () => {
    const body = (method: string, path: string) => {
      const schema = doc.paths[path]?.[method]?.requestBody?.content["application/json"]?.schema;
      const ref = schema?.$ref?.split("/").pop();
      return ref ? doc.components.schemas[ref] : schema;
    };
    expect(Object.keys(body("post", "/tasks")?.properties ?? {})).toEqual(
      expect.arrayContaining([
        "prompt",
        "target_node_id",
        "target_node_name",
        "target_tags",
        "priority",
        "timeout_seconds",
        "files",
        "scheduled_for",
        "recurrence",
      ]),
    );
    expect(Object.keys(body("post", "/register")?.properties ?? {})).toEqual(
      expect.arrayContaining(["hostname", "name", "os_type", "capabilities", "tags", "slots"]),
    );
    expect(Object.keys(body("post", "/status")?.properties ?? {})).toEqual(
      expect.arrayContaining(["task_id", "job_id", "status", "agent_session_id"]),
    );
    expect(Object.keys(body("post", "/keys")?.properties ?? {})).toEqual(
      expect.arrayContaining(["name", "scopes", "allowed_targets", "expires_in_days"]),
    );
    const names = (method: string, path: string) =>
      (doc.paths[path]?.[method]?.parameters ?? []).map((p) => `${p.in}:${p.name}`);
    expect(names("get", "/tasks")).toEqual(
      expect.arrayContaining(["query:status", "query:node_id", "query:limit", "query:offset"]),
    );
    expect(names("post", "/keys/{id}/rotate")).toEqual(
      expect.arrayContaining(["path:id", "query:grace_period_hours"]),
    );
    expect(names("get", "/keys/audit")).toEqual(
      expect.arrayContaining(["query:key_id", "query:limit"]),
    );
    expect(doc.paths["/register"]?.post?.security).toEqual([{ RegistrationToken: [] }]);
    expect(doc.paths["/tasks/pending"]?.get?.security).toEqual([{ ApiKey: [] }, { Bearer: [] }]);
    expect(doc.paths["/upload"]?.post?.requestBody?.content["multipart/form-data"]).toBeDefined();
  });

  it("documented query limits are the enforced ones", async () => {
    const call = async (method: string, path: string) =>
      (await fetch(`${server.url}${path}`, { method, headers: { "x-api-key": ADMIN_KEY } })).status;
    expect(await call("POST", "/tasks/cleanup?days=-1")).toBe(400);
    expect(await call("POST", "/tasks/cleanup?days=abc")).toBe(400);
    expect(await call("POST", "/tasks/cleanup")).toBe(200);
    expect(await call("GET", "/keys/audit?limit=0")).toBe(400);
    expect(await call("GET", "/keys/audit?limit=5")).toBe(200);
    expect(await call("POST", "/keys/nope/rotate?grace_period_hours=-2")).toBe(400);
    expect(await call("POST", "/keys/nope/rotate?grace_period_hours=1")).toBe(404);
  });

  it("/docs serves Swagger UI on the same document, with local assets", async () => {
    const html = await (await fetch(`${server.url}/docs`)).text();
    expect(html).toContain("/openapi.json");
    expect(html).not.toMatch(/https?:\/\/(?!127\.0\.0\.1)/);
    const js = await fetch(`${server.url}/docs/assets/swagger-ui-bundle.js`);
    expect(js.status).toBe(200);
    await js.body?.cancel();
  });
});
