import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { cleanUpServes, spawnServe, tempDir } from "./serve-process.js";

const url = process.env.FLOTILLA_TEST_PG_URL;
const schema = `failover_${process.pid}_${randomBytes(4).toString("hex")}`;
const fencedSchema = `fenced_${process.pid}_${randomBytes(4).toString("hex")}`;

afterAll(async () => {
  cleanUpServes();
  if (url) {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await client.query(`DROP SCHEMA IF EXISTS "${fencedSchema}" CASCADE`);
    await client.end();
  }
});

/** `flotilla serve` on the test database in one process (so SIGKILL ends the server itself). */
function serve(extra: string[], storeSchema = schema) {
  const dir = tempDir("flotilla-failover-");
  const s = spawnServe(
    ["--data-dir", dir, "--store", url!, "--store-schema", storeSchema, ...extra],
    {
      oneProcess: true,
    },
  );
  return { ...s, ready: () => s.ready().then((r) => r.url) };
}

describe("flotilla serve --standby on PostgreSQL", () => {
  it("is configured (FLOTILLA_TEST_PG_URL, set by `bash scripts/test-env.sh up` / `npm test`)", () => {
    expect(url, "this test needs a real PostgreSQL server").toBeTruthy();
  });

  it("takes over when the serving instance is killed, and finishes every task it had accepted", async () => {
    if (!url) return;
    // No --admin-key: A generates one and keeps its hash in the database, where B finds it.
    const a = serve([]);
    const aUrl = await a.ready();
    const key = /Admin key \(shown once; stored hashed in the database.*\): (flt_\S+)/.exec(
      a.out(),
    )?.[1];
    expect(key, a.out()).toBeTruthy();
    const headers = { "x-api-key": key!, "content-type": "application/json" };
    const b = serve(["--standby"]);
    await b.printed(/Standby: serving/, "the standby line");

    const api = `${aUrl}/api/v2/orchestrator`;
    const ids: string[] = [];
    for (let i = 0; i < 6; i++) {
      const res = await fetch(`${api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          type: "tool_call",
          payload: { tool_name: "sleep", tool_input: { ms: 1000 } },
        }),
      });
      expect(res.status).toBe(200);
      ids.push(((await res.json()) as { task_id: string }).task_id);
    }
    // Some are running on A when it dies.
    for (let i = 0; i < 200; i++) {
      const r = (await (await fetch(`${api}/tasks/${ids[0]}`, { headers })).json()) as {
        status: string;
      };
      if (r.status === "running") break;
      await new Promise((r) => setTimeout(r, 20));
    }
    const killed = new Promise((r) => a.child.once("exit", r));
    a.child.kill("SIGKILL");
    await killed;

    const bUrl = await b.ready();
    expect(b.out()).toContain("Auth: admin key stored hashed in the database");
    const bApi = `${bUrl}/api/v2/orchestrator`;
    const status = async (id: string) =>
      (await (await fetch(`${bApi}/tasks/${id}`, { headers })).json()) as {
        status: string;
        result: unknown;
      };
    for (let i = 0; i < 300; i++) {
      const all = await Promise.all(ids.map(status));
      if (all.every((t) => t.status === "succeeded")) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    for (const id of ids) {
      expect(await status(id)).toMatchObject({ status: "succeeded", result: { slept_ms: 1000 } });
    }
    // The new server accepts work too.
    const res = await fetch(`${bApi}/tasks/execute`, {
      method: "POST",
      headers,
      body: JSON.stringify({ type: "tool_call", payload: { tool_name: "echo", tool_input: "b" } }),
    });
    expect(((await res.json()) as { success: boolean }).success).toBe(true);
  }, 120_000);

  it("stops and exits 3 when another server took its schema after it lost its lock", async () => {
    if (!url) return;
    const a = serve(["--admin-key", "fenced-test-admin-key"], fencedSchema);
    await a.ready();
    const exited = new Promise<number | null>((r) => a.child.once("exit", (code) => r(code)));
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    try {
      // A's schema lock: the advisory lock (namespace "FLOT", hash of "<schema>:instance").
      const key = [0x464c4f54, `${fencedSchema}:instance`];
      const holder = await client.query<{ pid: number }>(
        `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
           AND classid = $1::bigint::oid AND objid = (hashtext($2)::bigint & 4294967295)::oid`,
        key,
      );
      expect(holder.rows).toHaveLength(1);
      // Its connection is cut (as a database restart or a lost network would), and another
      // holder gets in before A takes the lock again.
      await client.query("SELECT pg_terminate_backend($1)", [holder.rows[0]!.pid]);
      let got = false;
      for (let i = 0; i < 400 && !got; i++) {
        got = (
          await client.query<{ ok: boolean }>(
            "SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok",
            key,
          )
        ).rows[0]!.ok;
      }
      expect(got).toBe(true);
      expect(await exited).toBe(3);
      expect(a.out()).toContain("another server holds this server's schema now: stopping");
      expect(a.out()).toMatch(/flotilla serve: stopped: another server took /);
    } finally {
      await client.end();
    }
  }, 120_000);
});
