import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const url = process.env.FLOTILLA_TEST_PG_URL;
const ADMIN = "admin-key-for-the-postgres-store";
const headers = { "x-api-key": ADMIN, "content-type": "application/json" };
const dirs: string[] = [];
const running = new Set<RunningServer>();
const schema = `serve_${process.pid}_${randomBytes(4).toString("hex")}`;

afterAll(async () => {
  for (const r of running) await r.stop().catch(() => {});
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
  if (url) {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.end();
  }
});

async function start(printed: string[]) {
  const dir = mkdtempSync(join(tmpdir(), "flotilla-serve-pg-"));
  dirs.push(dir);
  const config = loadServeConfig(
    {
      port: 0,
      dataDir: dir,
      adminKey: ADMIN,
      logLevel: "silent",
      detectWorkers: false,
      store: url,
      storeSchema: schema,
    },
    {},
  );
  const server = await runServe(config, {}, (l) => printed.push(l));
  running.add(server);
  return server;
}

describe("flotilla serve --store postgres://", () => {
  it("is configured (FLOTILLA_TEST_PG_URL, set by `bash scripts/test-env.sh up` / `npm test`)", () => {
    expect(url, "this test needs a real PostgreSQL server").toBeTruthy();
  });

  it("keeps tasks in PostgreSQL across a restart, and one server holds a schema at a time", async () => {
    if (!url) return;
    const printed: string[] = [];
    const first = await start(printed);
    expect(printed.join("\n")).toContain(`(schema "${schema}")`);
    expect(printed.join("\n")).not.toContain(":flotilla@"); // no password in what is printed
    const api = `${first.url}/api/v2/orchestrator`;
    const post = async (path: string, body: unknown) =>
      (await (
        await fetch(`${api}${path}`, { method: "POST", headers, body: JSON.stringify(body) })
      ).json()) as Record<string, unknown>;
    const done = await post("/tasks/execute", {
      type: "tool_call",
      payload: { tool_name: "echo", tool_input: "kept in postgres" },
    });
    expect(done.success).toBe(true);
    const waiting = await post("/tasks/submit", { type: "custom", payload: { n: 1 } });
    expect(waiting.status).toBe("submitted");

    // A second server on the same schema would run the same tasks: it is refused.
    await expect(start([])).rejects.toThrow(/in use by another Flotilla instance/);

    await first.stop();
    running.delete(first);
    const again = await start([]);
    const get = async (id: unknown) =>
      (await (
        await fetch(`${again.url}/api/v2/orchestrator/tasks/${id}`, { headers })
      ).json()) as Record<string, unknown>;
    expect(await get(done.task_id)).toMatchObject({
      status: "succeeded",
      result: "kept in postgres",
    });
    expect(await get(waiting.task_id)).toMatchObject({ status: "queued", type: "custom" });
  }, 60_000);

  it("refuses a store that is neither sqlite nor a postgres:// URL, naming the setting", () => {
    expect(() => loadServeConfig({ store: "mysql://x" }, {})).toThrow(
      /flag --store: expected sqlite or a postgres:\/\/user:password@host:port\/database URL/,
    );
    expect(() => loadServeConfig({}, { FLOTILLA_STORE_SCHEMA: "Bad-Name" })).toThrow(
      /environment FLOTILLA_STORE_SCHEMA: expected a lower-case identifier/,
    );
  });
});
