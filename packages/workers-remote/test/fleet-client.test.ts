import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { inspect } from "node:util";
import { FlotillaError } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { FleetClient, fleetErrorStatus } from "../src/index.js";

type Route = (req: IncomingMessage, body: string, res: ServerResponse) => void;

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: string;
}

let servers: Server[] = [];
afterEach(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }
  servers = [];
});

async function server(route: Route): Promise<{ url: string; seen: Seen[] }> {
  const seen: Seen[] = [];
  const s = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks).toString("utf8");
      seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers, body });
      route(req, body, res);
    });
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  return { url: `http://127.0.0.1:${(s.address() as AddressInfo).port}`, seen };
}

const json = (res: ServerResponse, status: number, body: unknown) => {
  res.writeHead(status, { "content-type": "application/json" });
  res.end(JSON.stringify(body));
};

const TOKEN = "registration-secret-xyz";

describe("FleetClient", () => {
  it("registers, keeps the key, polls null and assignments under a prefixed base URL", async () => {
    const assignment = {
      task_id: "6f1c2b9e-0000-4000-8000-000000000001",
      prompt: "go",
      orchestrator_url: "http://127.0.0.1/x",
      timeout_seconds: 60,
      files: ["a.txt"],
      file_checksums: ["ab"],
      extra: 1,
    };
    let polls = 0;
    const { url, seen } = await server((req, _body, res) => {
      if (req.url === "/qb/register")
        return json(res, 201, { id: "node-1", api_key: "node-key-1", name: "n" });
      if (req.url === "/qb/tasks/pending") return json(res, 200, polls++ === 0 ? null : assignment);
      if (req.url === "/qb/nodes/heartbeat") return json(res, 200, { status: "ok" });
      if (req.url === "/qb/status")
        return json(res, 200, { id: assignment.task_id, status: "running" });
      if (req.url === "/qb/logs") return json(res, 200, { status: "ok" });
      json(res, 404, { detail: "no" });
    });
    const client = new FleetClient({ baseUrl: `${url}/qb/`, registrationToken: TOKEN });
    const reg = await client.register({
      name: "n",
      hostname: "h",
      os_type: "linux",
      labels: { zone: "eu" },
    });
    expect(reg).toMatchObject({ id: "node-1", api_key: "node-key-1" });
    expect(client.nodeId).toBe("node-1");
    expect(seen[0]?.headers["x-registration-token"]).toBe(TOKEN);
    expect(JSON.parse(seen[0]!.body)).toMatchObject({ name: "n", labels: { zone: "eu" } });
    expect(await client.pollTask()).toBeNull();
    const task = await client.pollTask();
    expect(task).toMatchObject({ task_id: assignment.task_id, extra: 1 });
    expect(seen[2]?.headers["x-api-key"]).toBe("node-key-1");
    await client.heartbeat("busy", assignment.task_id);
    expect(JSON.parse(seen[3]!.body)).toEqual({
      node_id: "node-1",
      status: "busy",
      current_task_id: assignment.task_id,
    });
    await client.reportStatus({
      taskId: assignment.task_id,
      status: "running",
      progress: 10,
      sessionId: "s1",
    });
    expect(JSON.parse(seen[4]!.body)).toMatchObject({
      task_id: assignment.task_id,
      status: "running",
      progress: 10,
      crush_session_id: "s1",
    });
    await client.uploadLogs(assignment.task_id, {
      id: "s1",
      messages: [{ role: "user", content: "[]" }],
    });
    expect(JSON.parse(seen[5]!.body)).toMatchObject({
      task_id: assignment.task_id,
      session: { id: "s1" },
    });
  });

  it("rejects malformed answers with the field named, and maps HTTP errors to codes with the status", async () => {
    const { url } = await server((req, _b, res) => {
      if (req.url === "/tasks/pending")
        return json(res, 200, { prompt: "no id", orchestrator_url: "x" });
      if (req.url === "/nodes/heartbeat") return json(res, 401, { detail: "invalid API key" });
      if (req.url === "/status") return json(res, 403, { detail: "not yours" });
      res.writeHead(302, { location: "/elsewhere" });
      res.end();
    });
    const client = new FleetClient({ baseUrl: url, apiKey: "k", nodeId: "n" });
    const bad = await client.pollTask().catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(FlotillaError);
    expect((bad as FlotillaError).message).toMatch(/task_id/);
    const unauth = await client.heartbeat("idle").catch((e: unknown) => e);
    expect((unauth as FlotillaError).code).toBe("UNAUTHORIZED");
    expect(fleetErrorStatus(unauth)).toBe(401);
    expect((unauth as FlotillaError).message).toContain("invalid API key");
    const forbidden = await client
      .reportStatus({ taskId: "t", status: "success" })
      .catch((e: unknown) => e);
    expect((forbidden as FlotillaError).code).toBe("FORBIDDEN");
    // A redirect is a failure, never followed.
    const redirected = await client.uploadLogs("t", { messages: [] }).catch((e: unknown) => e);
    expect(fleetErrorStatus(redirected)).toBe(302);
  });

  it("downloads by percent-encoded basename and verifies the checksum", async () => {
    const bytes = Buffer.from("hello file");
    const sum = createHash("sha256").update(bytes).digest("hex");
    const { url, seen } = await server((_req, _b, res) => {
      res.writeHead(200, { "content-type": "application/octet-stream" });
      res.end(bytes);
    });
    const client = new FleetClient({ baseUrl: "http://127.0.0.1:1", apiKey: "k" });
    const got = await client.downloadFile(
      { orchestrator_url: `${url}/p/` },
      "../../dir/my report.txt",
      sum,
    );
    expect(Buffer.from(got).toString()).toBe("hello file");
    expect(seen[0]?.url).toBe("/p/files/my%20report.txt");
    const mismatch = await client
      .downloadFile({ orchestrator_url: url }, "x.txt", "0".repeat(64))
      .catch((e: unknown) => e);
    expect((mismatch as FlotillaError).code).toBe("VALIDATION");
    expect((mismatch as FlotillaError).message).toMatch(/checksum/);
  });

  it("times out, honours AbortSignal, and never shows secrets", async () => {
    const { url } = await server(() => {
      // never answers
    });
    const client = new FleetClient({
      baseUrl: url,
      apiKey: "super-secret-node-key",
      registrationToken: "super-secret-token",
      timeoutMs: 150,
    });
    const started = Date.now();
    const timedOut = await client.pollTask().catch((e: unknown) => e);
    expect((timedOut as FlotillaError).code).toBe("TIMEOUT");
    expect(Date.now() - started).toBeLessThan(5000); // the server never answers
    const ac = new AbortController();
    const p = client.pollTask({ signal: ac.signal }).catch((e: unknown) => e);
    setTimeout(() => ac.abort(), 20);
    expect(((await p) as FlotillaError).code).toBe("CANCELLED");
    const reg = await client
      .register({ name: "n", hostname: "h", os_type: "l" })
      .catch((e: unknown) => e);
    for (const shown of [
      JSON.stringify(client),
      inspect(client),
      String(timedOut),
      JSON.stringify(timedOut),
      String(reg),
      JSON.stringify((reg as FlotillaError).toJSON()),
    ]) {
      expect(shown).not.toContain("super-secret");
    }
  });

  it("validates its options", () => {
    expect(() => new FleetClient({ baseUrl: "not a url" })).toThrow(/baseUrl/);
    expect(() => new FleetClient({ baseUrl: "ftp://x" })).toThrow(/baseUrl/);
    const c = new FleetClient({ baseUrl: "http://127.0.0.1:1" });
    return expect(c.pollTask()).rejects.toThrow(/register first/);
  });
});
