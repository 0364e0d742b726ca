import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type PostgresServer, startPostgres } from "@flotilla/testing";
import { afterAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const ADMIN = "admin-key-for-the-outage-test";
const headers = { "x-api-key": ADMIN, "content-type": "application/json" };
let cluster: PostgresServer | undefined;
let server: RunningServer | undefined;
const dirs: string[] = [];

afterAll(async () => {
  await server?.stop().catch(() => {});
  await cluster?.destroy();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("flotilla serve on PostgreSQL through a database outage", () => {
  it("answers 503 while the database is down, loses no accepted task, and carries on after it is back", async () => {
    cluster = await startPostgres();
    const dir = mkdtempSync(join(tmpdir(), "flotilla-serve-outage-"));
    dirs.push(dir);
    const start = () =>
      runServe(
        loadServeConfig(
          {
            port: 0,
            dataDir: dir,
            adminKey: ADMIN,
            logLevel: "silent",
            detectWorkers: false,
            store: cluster!.url,
          },
          {},
        ),
        {},
        () => {},
      );
    server = await start();
    const api = `${server.url}/api/v2/orchestrator`;
    const submit = async (ms: number) => {
      const res = await fetch(`${api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          type: "tool_call",
          payload: { tool_name: "sleep", tool_input: { ms } },
        }),
      });
      return { status: res.status, body: (await res.json()) as Record<string, unknown> };
    };
    const status = async (id: unknown) =>
      (
        (await (await fetch(`${api}/tasks/${id}`, { headers })).json()) as {
          status: string;
        }
      ).status;

    // Work in flight when the database goes away: running, and queued behind it.
    const before: unknown[] = [];
    for (let i = 0; i < 12; i++) {
      const r = await submit(200);
      expect(r.status).toBe(200);
      before.push(r.body.task_id);
    }
    await cluster.stop();

    // A submission now cannot be stored: 503 with a message naming the store, never 500.
    const refused = await submit(1);
    expect(refused.status).toBe(503);
    expect(JSON.stringify(refused.body)).toMatch(/STORE_ERROR|store|postgres/i);
    expect(JSON.stringify(refused.body)).toContain("127.0.0.1"); // which database
    // Reads answer from memory, or 503 when they need the database; never 500.
    for (const id of before) {
      expect([200, 503]).toContain((await fetch(`${api}/tasks/${id}`, { headers })).status);
    }

    await cluster.start();
    // Once it is back, submissions are accepted again (the pool connects anew)…
    let after: { status: number; body: Record<string, unknown> } | undefined;
    for (let i = 0; i < 100; i++) {
      after = await submit(1);
      if (after.status === 200) break;
      expect(after.status).toBe(503);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(after?.status).toBe(200);
    // …and every task accepted before, during or after ends, exactly once.
    const all = [...before, after!.body.task_id];
    for (let i = 0; i < 300; i++) {
      const states = await Promise.all(all.map(status));
      if (states.every((s) => s === "succeeded")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const id of all) {
      const rec = (await (await fetch(`${api}/tasks/${id}`, { headers })).json()) as {
        status: string;
        attempts: number;
      };
      expect(rec).toMatchObject({ status: "succeeded", attempts: 1 });
    }
    // What the new process would load agrees: nothing is left unfinished in the database.
    await server.stop();
    server = undefined;
    const again = await start();
    server = again;
    for (const id of all) {
      const rec = (await (
        await fetch(`${again.url}/api/v2/orchestrator/tasks/${id}`, { headers })
      ).json()) as { status: string };
      expect(rec.status).toBe("succeeded");
    }
  }, 120_000);
});
