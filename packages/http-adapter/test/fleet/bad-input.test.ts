import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ADMIN_KEY, type FleetUnderTest, REG_TOKEN, removeDir, startFleet } from "./harness.js";
import { httpRequest } from "./victoria-runner.js";

let f: FleetUnderTest;
let nodeKey: string;
beforeAll(async () => {
  f = await startFleet({ fleet: { registrationRateLimit: { max: 10_000, windowMs: 60_000 } } });
  const reg = await httpRequest(
    "POST",
    `${f.url}/register`,
    { "Content-Type": "application/json", "X-Registration-Token": REG_TOKEN },
    JSON.stringify({ hostname: "h", name: "fuzz-node", os_type: "linux" }),
  );
  nodeKey = reg.json.api_key;
});
afterAll(async () => {
  await f.stop();
  await removeDir(f.dir);
});

const bodies = [
  "",
  "null",
  "[]",
  "42",
  '"text"',
  "{",
  '{"task_id": 5, "status": []}',
  '{"task_id": "x", "status": "running", "progress": "lots"}',
  '{"node_id": {}, "status": null}',
  '{"prompt": {"a": 1}, "priority": "urgent", "timeout_seconds": -1}',
  '{"prompt": "p", "files": "a.txt", "target_tags": ["x"]}',
  '{"prompt": "p", "scheduled_for": "tomorrow"}',
  '{"name": "", "scopes": ["root"]}',
  '{"hostname": "", "slots": 0, "tags": 7}',
  '{"session": "not an object", "task_id": "t"}',
  JSON.stringify({ deep: JSON.parse(`${"[".repeat(200)}${"]".repeat(200)}`) }),
  "\u0000\u0001binary",
];

const routes: Array<[string, string, Record<string, string>]> = [
  ["POST", "/register", { "X-Registration-Token": REG_TOKEN }],
  ["POST", "/nodes/heartbeat", {}],
  ["POST", "/status", {}],
  ["POST", "/logs", {}],
  ["POST", "/tasks", { "X-API-Key": ADMIN_KEY }],
  ["POST", "/keys", { "X-API-Key": ADMIN_KEY }],
  ["POST", "/upload", { "X-API-Key": ADMIN_KEY }],
];

describe("fleet bad input never gets a 500", () => {
  it("answers every malformed body with a 4xx and a JSON detail", async () => {
    for (const [method, path, headers] of routes) {
      for (const body of bodies) {
        const h = { "Content-Type": "application/json", ...headers };
        if (!("X-API-Key" in h) && path !== "/register") Object.assign(h, { "X-API-Key": nodeKey });
        const res = await httpRequest(method, `${f.url}${path}`, h, body);
        expect(res.status, `${method} ${path} ${body.slice(0, 40)}`).toBeGreaterThanOrEqual(400);
        expect(res.status, `${method} ${path} ${body.slice(0, 40)}`).toBeLessThan(500);
        expect(typeof res.json?.detail, `${method} ${path} ${body.slice(0, 40)}`).toBe("string");
      }
    }
    for (const path of [
      "/tasks/%ZZ",
      "/nodes/%00",
      "/keys/..%2F..%2F",
      "/logs/%E0%A4%A",
      "/tasks?limit=abc",
      "/tasks?status=%00",
      "/keys/audit?limit=-5",
    ]) {
      const res = await httpRequest("GET", `${f.url}${path}`, { "X-API-Key": ADMIN_KEY });
      expect(res.status, path).toBeLessThan(500);
    }
    for (const q of ["days=abc", "days=-1", "days=1e400"]) {
      const res = await httpRequest("POST", `${f.url}/tasks/cleanup?${q}`, {
        "X-API-Key": ADMIN_KEY,
      });
      expect(res.status, q).toBe(400);
    }
    const rot = await httpRequest("POST", `${f.url}/keys/nope/rotate?grace_period_hours=x`, {
      "X-API-Key": ADMIN_KEY,
    });
    expect(rot.status).toBe(400);
    // Nothing was created by any of it.
    const tasks = await f.admin("GET", "/tasks");
    expect(tasks.json.total).toBe(0);
    const nodes = await f.admin("GET", "/nodes");
    expect(nodes.json.count).toBe(1);
    const keys = await f.admin("GET", "/keys");
    expect(keys.json.keys.filter((k: { kind: string }) => k.kind !== "node")).toHaveLength(0);
  });
});
