import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { createStatusReporter, FleetClient } from "@flotilla/workers-remote";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { InMemoryTransport } from "@modelcontextprotocol/sdk/inMemory.js";
import { afterEach, describe, expect, it } from "vitest";
import { type FleetUnderTest, REG_TOKEN, removeDir, startFleet } from "./harness.js";

let f: FleetUnderTest | undefined;
const closers: Array<() => Promise<unknown>> = [];
afterEach(async () => {
  for (const c of closers.splice(0)) await c().catch(() => undefined);
  if (f) {
    await f.stop().catch(() => undefined);
    await removeDir(f.dir);
    f = undefined;
  }
});

function crushDb(path: string): void {
  const db = new DatabaseSync(path);
  db.exec(`CREATE TABLE sessions (id TEXT PRIMARY KEY, parent_session_id TEXT, title TEXT,
    prompt_tokens INTEGER, completion_tokens INTEGER, cost REAL, created_at INTEGER, updated_at INTEGER);
    CREATE TABLE messages (id TEXT PRIMARY KEY, session_id TEXT, role TEXT, parts TEXT, model TEXT,
    provider TEXT, created_at INTEGER, finished_at INTEGER);`);
  db.prepare("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run(
    "old",
    null,
    "Old",
    1,
    1,
    0,
    1,
    1,
  );
  db.prepare("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run(
    "s-42",
    null,
    "Sales",
    900,
    300,
    0.02,
    10,
    20,
  );
  db.prepare("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?)").run(
    "child",
    "s-42",
    "Sub",
    1,
    1,
    0,
    30,
    30,
  );
  const m = db.prepare("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  m.run(
    "m1",
    "s-42",
    "user",
    JSON.stringify([{ type: "text", text: "analyze" }]),
    null,
    null,
    11,
    11,
  );
  m.run(
    "m2",
    "s-42",
    "assistant",
    JSON.stringify([{ type: "text", text: "3 insights" }]),
    "claude",
    "anthropic",
    12,
    13,
  );
  db.close();
}

async function connect(options: Parameters<typeof createStatusReporter>[0]) {
  const server = createStatusReporter(options);
  const [a, b] = InMemoryTransport.createLinkedPair();
  const client = new Client({ name: "agent", version: "1.0.0" });
  await Promise.all([server.connect(a), client.connect(b)]);
  closers.push(
    () => client.close(),
    () => server.close(),
  );
  const call = async (name: string, args: Record<string, unknown> = {}) => {
    const r = (await client.callTool({ name, arguments: args })) as {
      content: Array<{ text: string }>;
      isError?: boolean;
    };
    return { isError: r.isError === true, data: JSON.parse(r.content[0]?.text ?? "{}") };
  };
  return { client, call };
}

describe("status-reporter MCP server against the fleet routes", () => {
  it("reports progress and completion with the latest Crush session, as an agent in the container would", async () => {
    f = await startFleet();
    const node = new FleetClient({ baseUrl: f.url, registrationToken: REG_TOKEN });
    const reg = await node.register({ name: "victoria-1", hostname: "v1", os_type: "linux" });
    const t = await f.admin("POST", "/tasks", { prompt: "analyze sales" });
    const task = await node.pollTask();
    expect(task?.task_id).toBe(t.json.id);
    const db = join(f.dir, "crush.db");
    crushDb(db);

    const { client, call } = await connect({
      orchestratorUrl: task!.orchestrator_url,
      taskId: t.json.id,
      apiKey: reg.api_key,
      crushDbPath: db,
    });
    const tools = (await client.listTools()).tools.map((x) => x.name).sort();
    expect(tools).toEqual([
      "get_job_info",
      "report_complete",
      "report_error",
      "report_started",
      "report_status",
      "submit_crush_logs",
    ]);
    const info = await call("get_job_info");
    expect(info.data).toMatchObject({
      job_id: t.json.id,
      api_key_configured: true,
      crush_db_path: db,
    });
    expect(JSON.stringify(info.data)).not.toContain(reg.api_key);

    expect((await call("report_started")).data.sent).toBe(true);
    const progress = await call("report_status", {
      status: "analyzing",
      message: "Q4",
      progress: 40,
    });
    expect(progress.data.response).toMatchObject({
      status: "running",
      progress: 40,
      message: "Q4",
    });
    const bad = await client
      .callTool({ name: "report_status", arguments: { status: "done" } })
      .catch((e: unknown) => ({ isError: true, e }));
    expect((bad as { isError?: boolean }).isError).toBe(true);

    const done = await call("report_complete", { message: "Found 3 key insights" });
    expect(done.isError).toBe(false);
    expect(done.data).toMatchObject({ status_sent: true, logs_sent: true });
    const view = await f.admin("GET", `/tasks/${t.json.id}`);
    expect(view.json).toMatchObject({
      status: "completed",
      result: "Found 3 key insights",
      crush_session_id: "s-42",
      log_count: 1,
    });
    const logs = await f.admin("GET", `/logs/${t.json.id}`);
    expect(logs.json.logs[0].session).toMatchObject({
      id: "s-42",
      title: "Sales",
      prompt_tokens: 900,
    });
    expect(logs.json.logs[0].session.messages.map((m: { role: string }) => m.role)).toEqual([
      "user",
      "assistant",
    ]);
  });

  it("says what is missing instead of failing silently", async () => {
    const { call } = await connect({
      orchestratorUrl: "http://127.0.0.1:9",
      crushDbPath: "/nonexistent.db",
    });
    const r = await call("report_status", { status: "running" });
    expect(r.isError).toBe(true);
    expect(r.data.error).toMatch(/TASK_ID/);
  });
});
