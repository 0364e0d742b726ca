import { randomBytes } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { partitionOf } from "@flotilla/core";
import { type OpenAIServer, startOpenAIServer } from "@flotilla/testing";
import type pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import WebSocket from "ws";
import { cleanUpServes, queryDatabase, spawnServe, tempDir, until } from "./serve-process.js";

const url = process.env.FLOTILLA_TEST_PG_URL;
const schema = `shared_${process.pid}_${randomBytes(4).toString("hex")}`;
const limitSchema = `shared_limit_${process.pid}_${randomBytes(4).toString("hex")}`;
const eventSchema = `shared_events_${process.pid}_${randomBytes(4).toString("hex")}`;
const budgetSchema = `shared_budget_${process.pid}_${randomBytes(4).toString("hex")}`;
const policySchema = `shared_policy_${process.pid}_${randomBytes(4).toString("hex")}`;
const authSchema = `shared_auth_${process.pid}_${randomBytes(4).toString("hex")}`;
const fleetSchema = `shared_fleet_${process.pid}_${randomBytes(4).toString("hex")}`;
const tokenSchema = `shared_tokens_${process.pid}_${randomBytes(4).toString("hex")}`;
let llm: OpenAIServer | undefined;
let tokens: OpenAIServer | undefined;
const key = `shared-admin-${randomBytes(8).toString("hex")}`;
const headers = { "x-api-key": key, "content-type": "application/json" };

/** A statement on the test database. */
const query = <R extends pg.QueryResultRow>(text: string, values: unknown[] = []) =>
  queryDatabase<R>(url!, text, values);

afterAll(async () => {
  cleanUpServes();
  await llm?.close();
  await tokens?.close();
  if (url) {
    await query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
    await query(`DROP SCHEMA IF EXISTS "${limitSchema}" CASCADE`);
    await query(`DROP SCHEMA IF EXISTS "${eventSchema}" CASCADE`);
    await query(`DROP SCHEMA IF EXISTS "${budgetSchema}" CASCADE`);
    await query(`DROP SCHEMA IF EXISTS "${policySchema}" CASCADE`);
    await query(`DROP SCHEMA IF EXISTS "${authSchema}" CASCADE`);
    await query(`DROP SCHEMA IF EXISTS "${fleetSchema}" CASCADE`);
    await query(`DROP SCHEMA IF EXISTS "${tokenSchema}" CASCADE`);
  }
});

/** `flotilla serve --shared` on the test schema, in one process (so SIGKILL ends the server). */
function serve(name: string, extra: string[] = [], storeSchema = schema) {
  const s = spawnServe(
    [
      ...extra,
      ...[
        "--data-dir",
        tempDir("flotilla-shared-"),
        "--store",
        url!,
        "--store-schema",
        storeSchema,
      ],
      ...["--shared", "--instance-id", name, "--partition-lease-seconds", "3"],
      ...["--admin-key", key],
    ],
    { oneProcess: true },
  );
  return { ...s, ready: () => s.ready().then((r) => r.url) };
}

/** Partitions held per server, from the database. */
async function holders(of = schema): Promise<Record<string, number>> {
  const rows = await query<{ owner: string; n: string }>(
    `SELECT owner, count(*) AS n FROM "${of}".partitions
     WHERE owner IS NOT NULL AND expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint
     GROUP BY owner ORDER BY owner`,
  );
  return Object.fromEntries(rows.map((r) => [r.owner, Number(r.n)]));
}

describe("flotilla serve --shared: several servers on one PostgreSQL schema", () => {
  it("is configured (FLOTILLA_TEST_PG_URL, set by `bash scripts/test-env.sh up` / `npm test`)", () => {
    expect(url, "this test needs a real PostgreSQL server").toBeTruthy();
  });

  it("both serve; a killed server's tasks finish on the other, each once", async () => {
    if (!url) return;
    const a = serve("a");
    const aUrl = await a.ready();
    expect(a.out()).toMatch(
      /Shared: {4}one of the servers of this schema \(instance a; 64 partitions/,
    );
    const b = serve("b");
    const bUrl = await b.ready();
    await until(async () => JSON.stringify(await holders()) === '{"a":32,"b":32}', "a 32/32 split");

    // Submitted through both, half of them to partitions the other server holds.
    const submit = async (base: string, i: number) => {
      const res = await fetch(`${base}/api/v2/orchestrator/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          type: "tool_call",
          payload: { tool_name: "sleep", tool_input: { ms: 1000 + (i % 5) * 200 } },
        }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
      return ((await res.json()) as { task_id: string }).task_id;
    };
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await submit(i % 2 === 0 ? aUrl : bUrl, i));

    // A task B holds, cancelled through A: B hears of it and lets it go at once.
    const onB = new Set(
      (await query<{ n: number }>(`SELECT n FROM "${schema}".partitions WHERE owner = 'b'`)).map(
        (r) => r.n,
      ),
    );
    let long = "long-0";
    for (let i = 1; !onB.has(partitionOf(long, 64)); i++) long = `long-${i}`;
    const res = await fetch(`${aUrl}/api/v2/orchestrator/tasks/submit`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        task_id: long,
        type: "tool_call",
        payload: { tool_name: "sleep", tool_input: { ms: 60_000 } },
      }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const taskStatus = async (id: string) =>
      (
        await query<{ status: string }>(`SELECT status FROM "${schema}".tasks WHERE id = $1`, [id])
      )[0]?.status;
    await until(async () => (await taskStatus(long)) === "running", "B runs the long task");
    const cancel = await fetch(`${aUrl}/api/v2/orchestrator/tasks/${long}/cancel`, {
      method: "POST",
      headers,
    });
    expect(cancel.status, await cancel.clone().text()).toBe(200);
    expect(await taskStatus(long)).toBe("cancelled");
    // B lets it go: no sleep of 60 s keeps running there, and nothing overwrites the cancel.
    await until(
      async () =>
        (
          await query<{ n: string }>(
            `SELECT count(*) AS n FROM "${schema}".events WHERE task_id = $1 AND type = 'task:cancelled'`,
            [long],
          )
        )[0]?.n === "1",
      "the cancel is recorded once",
    );

    // B dies while its share runs: A takes B's partitions once their leases lapse (3 s),
    // and runs what B left unfinished.
    const runningOnB = async () =>
      (await query<{ id: string }>(`SELECT id FROM "${schema}".tasks WHERE status = 'running'`))
        .map((r) => r.id)
        .filter((id) => onB.has(partitionOf(id, 64)));
    await until(async () => (await runningOnB()).length > 0, "B runs some of its share");
    const cutOff = await runningOnB();
    const killed = new Promise((r) => b.child.once("exit", r));
    b.child.kill("SIGKILL");
    await killed;
    await until(async () => JSON.stringify(await holders()) === '{"a":64}', "A holds all 64");
    const status = async (id: string) =>
      (await (await fetch(`${aUrl}/api/v2/orchestrator/tasks/${id}`, { headers })).json()) as {
        status: string;
      };
    await until(
      async () => (await Promise.all(ids.map(status))).every((t) => t.status === "succeeded"),
      "every task succeeded",
    );
    expect(await taskStatus(long)).toBe("cancelled");
    // Each succeeded once (a task B was running ran again on A: that is its second start).
    const ends = await query<{ task_id: string; n: string }>(
      `SELECT task_id, count(*) AS n FROM "${schema}".events WHERE type = 'task:succeeded'
       GROUP BY task_id`,
    );
    expect(ends).toHaveLength(ids.length);
    for (const e of ends) expect(Number(e.n), e.task_id).toBe(1);
    const starts = await query<{ task_id: string; n: string }>(
      `SELECT task_id, count(*) AS n FROM "${schema}".events WHERE type = 'task:running'
       AND task_id = ANY($1::text[]) GROUP BY task_id`,
      [cutOff],
    );
    for (const st of starts) expect(Number(st.n), st.task_id).toBeGreaterThanOrEqual(2);
    // The survivor takes new work for every partition.
    const more = await Promise.all([0, 1, 2, 3].map((i) => submit(aUrl, i)));
    await until(
      async () => (await Promise.all(more.map(status))).every((t) => t.status === "succeeded"),
      "new tasks succeeded",
    );
  }, 180_000);

  it("a rate limit configured on every server holds across them", async () => {
    if (!url) return;
    const dir = tempDir("flotilla-shared-config-");
    const file = join(dir, "flotilla.json");
    writeFileSync(file, JSON.stringify({ resources: { limits: { search: ["6/min"] } } }));
    const a = serve("a", ["--config", file], limitSchema);
    const b = serve("b", ["--config", file], limitSchema);
    const urls = await Promise.all([a.ready(), b.ready()]);
    await until(
      async () => JSON.stringify(await holders(limitSchema)) === '{"a":32,"b":32}',
      "a 32/32 split",
    );
    // Each admits half of the limit.
    const limitOn = async (base: string) => {
      const stats = (await (
        await fetch(`${base}/api/v2/orchestrator/resources/stats`, { headers })
      ).json()) as { providers: Record<string, { limits: Array<{ limit: number }> }> };
      return stats.providers.search?.limits[0]?.limit;
    };
    await until(
      async () => (await limitOn(urls[0]!)) === 3 && (await limitOn(urls[1]!)) === 3,
      "each server admits 3 a minute",
    );
    for (let i = 0; i < 24; i++) {
      const res = await fetch(`${urls[i % 2]}/api/v2/orchestrator/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          type: "tool_call",
          rate_limit_key: "search",
          payload: { tool_name: "echo", tool_input: i },
        }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
    }
    const ran = async () =>
      Number(
        (
          await query<{ n: string }>(
            `SELECT count(*) AS n FROM "${limitSchema}".tasks WHERE status = 'succeeded'`,
          )
        )[0]?.n,
      );
    // Both servers run their share at once; then nothing more within the minute.
    await until(async () => (await ran()) >= 4, "the first calls ran");
    await new Promise((r) => setTimeout(r, 3000));
    const n = await ran();
    expect(n).toBeGreaterThanOrEqual(4);
    expect(n).toBeLessThanOrEqual(6);
  }, 120_000);

  it("a client of one server sees the events of a task another server runs (WebSocket and SSE)", async () => {
    if (!url) return;
    const a = serve("a", [], eventSchema);
    const b = serve("b", [], eventSchema);
    const [aUrl, bUrl] = await Promise.all([a.ready(), b.ready()]);
    await until(
      async () => JSON.stringify(await holders(eventSchema)) === '{"a":32,"b":32}',
      "a 32/32 split",
    );
    const onB = new Set(
      (
        await query<{ n: number }>(`SELECT n FROM "${eventSchema}".partitions WHERE owner = 'b'`)
      ).map((r) => r.n),
    );
    let id = "elsewhere-0";
    for (let i = 1; !onB.has(partitionOf(id, 64)); i++) id = `elsewhere-${i}`;

    // A WebSocket client of A, listening to every event.
    const ws = new WebSocket(`${aUrl!.replace(/^http/, "ws")}/api/v2/orchestrator/ws/events`, {
      headers: { "x-api-key": key },
    });
    const received: Array<{ type: string; task_id?: string; data: Record<string, unknown> }> = [];
    ws.on("message", (raw) => received.push(JSON.parse(String(raw))));
    await new Promise((resolve, reject) => {
      ws.once("open", resolve);
      ws.once("error", reject);
    });
    await until(async () => received.some((m) => m.type === "hello"), "the hub says hello");

    // Submitted through B (which holds its partition and runs it); streamed through A.
    const res = await fetch(`${bUrl}/api/v2/orchestrator/tasks/submit`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        task_id: id,
        type: "tool_call",
        payload: { tool_name: "sleep", tool_input: { ms: 1500 } },
      }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const sse = await fetch(`${aUrl}/api/v2/orchestrator/tasks/${id}/events`, {
      headers,
      signal: AbortSignal.timeout(30_000), // the stream would stay open if A never heard
    });
    expect(sse.status).toBe(200);
    const text = await sse.text(); // the stream ends with the task
    const events = [...text.matchAll(/^event: (.+)$/gm)].map((m) => m[1]);
    expect(events).toContain("task:running");
    expect(events.at(-1)).toBe("task:succeeded");
    expect(events.filter((e) => e === "task:succeeded")).toHaveLength(1);
    const last = text
      .split("\n\n")
      .find((block) => block.includes("event: task:succeeded"))!
      .match(/^data: (.+)$/m)![1]!;
    expect(JSON.parse(last)).toMatchObject({ task_id: id, status: "succeeded" });

    await until(
      async () => received.some((m) => m.type === "task:succeeded" && m.task_id === id),
      "A's WebSocket client hears that B's task succeeded",
      15_000,
    );
    const done = received.find((m) => m.type === "task:succeeded" && m.task_id === id)!;
    expect(done.data).toMatchObject({ task_id: id, status: "succeeded", from: "running" });
    expect((done.data.task as { status: string }).status).toBe("succeeded");
    // Each of B's transitions reached A's client once.
    expect(received.filter((m) => m.type === "task:running" && m.task_id === id)).toHaveLength(1);
    ws.close();
  }, 120_000);

  it("a budget configured on every server holds across them", async () => {
    if (!url) return;
    llm = await startOpenAIServer({ replies: [{ text: "ok" }] });
    const dir = tempDir("flotilla-shared-config-");
    const file = join(dir, "flotilla.json");
    writeFileSync(
      file,
      JSON.stringify({
        resources: { budgets: [{ name: "calls", scope: "global", requests: 4, policy: "fail" }] },
      }),
    );
    const a = serve("a", ["--config", file], budgetSchema);
    const b = serve("b", ["--config", file], budgetSchema);
    const urls = await Promise.all([a.ready(), b.ready()]);
    const api = (i: number) => `${urls[i % 2]}/api/v2/orchestrator`;
    for (const i of [0, 1]) {
      const res = await fetch(`${api(i)}/workers/llm-api/register`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          api_type: "openai",
          api_key: "sk-test-shared-budget",
          base_url: llm.baseURL,
          model: "gpt-4o-mini",
          worker_id: `llm-${i === 0 ? "a" : "b"}`,
        }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
    }
    const used = async (i: number) => {
      const stats = (await (await fetch(`${api(i)}/resources/stats`, { headers })).json()) as {
        budgets: Array<{ name: string; used: { requests: number } }>;
      };
      return stats.budgets.find((x) => x.name === "calls")?.used.requests;
    };
    // One call at a time, alternating between the servers; each server has seen the other's
    // calls before the next one.
    const outcomes: string[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await fetch(`${api(i)}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({ type: "llm_request", payload: { prompt: `call ${i}` } }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
      const id = ((await res.json()) as { task_id: string }).task_id;
      let status = "";
      await until(async () => {
        const t = (await (await fetch(`${api(i)}/tasks/${id}`, { headers })).json()) as {
          status: string;
        };
        status = t.status;
        return status === "succeeded" || status === "failed";
      }, `call ${i} ends`);
      outcomes.push(status);
      const calls = outcomes.filter((o) => o === "succeeded").length;
      await until(
        async () => (await used(0)) === calls && (await used(1)) === calls,
        `both servers count ${calls} calls`,
        15_000,
      );
    }
    // Four calls in all, not four per server.
    expect(outcomes).toEqual([
      "succeeded",
      "succeeded",
      "succeeded",
      "succeeded",
      "failed",
      "failed",
      "failed",
      "failed",
    ]);
    expect(llm.completionRequests()).toHaveLength(4);
  }, 120_000);

  it("a resource policy set through one server is in force on every server, one started later too", async () => {
    if (!url) return;
    const dir = tempDir("flotilla-shared-config-");
    const file = join(dir, "flotilla.json");
    writeFileSync(file, JSON.stringify({ resources: { limits: { search: ["6/min"] } } }));
    const a = serve("a", ["--config", file], policySchema);
    const b = serve("b", ["--config", file], policySchema);
    const [aUrl, bUrl] = await Promise.all([a.ready(), b.ready()]);
    const limitsOn = async (base: string) =>
      (
        (await (
          await fetch(`${base}/api/v2/orchestrator/resources/config`, { headers })
        ).json()) as {
          limits?: Record<string, unknown>;
        }
      ).limits;
    expect(await limitsOn(bUrl!)).toEqual({ search: ["6/min"] });
    const put = await fetch(`${aUrl}/api/v2/orchestrator/resources/config`, {
      method: "PUT",
      headers,
      body: JSON.stringify({ limits: { search: ["60/min"], crawl: ["5/s"] } }),
    });
    expect(put.status, await put.clone().text()).toBe(200);
    await until(
      async () => JSON.stringify(await limitsOn(bUrl!)) === '{"search":["60/min"],"crawl":["5/s"]}',
      "B has the policy set through A",
      15_000,
    );
    // A server that starts later (its config file says 6/min) takes the published policy.
    const c = serve("c", ["--config", file], policySchema);
    const cUrl = await c.ready();
    expect(await limitsOn(cUrl!)).toEqual({ search: ["60/min"], crawl: ["5/s"] });
    // A bad policy is refused where it is sent and published nowhere.
    const bad = await fetch(`${bUrl}/api/v2/orchestrator/resources/config`, {
      method: "PUT",
      headers,
      body: JSON.stringify({ limits: { search: ["lots"] } }),
    });
    expect(bad.status).toBe(400);
    await new Promise((r) => setTimeout(r, 500));
    expect(await limitsOn(aUrl!)).toEqual({ search: ["60/min"], crawl: ["5/s"] });
  }, 120_000);

  it("wrong keys spread over the servers are throttled as by one server", async () => {
    if (!url) return;
    const a = serve("a", ["--auth-lock-after", "6"], authSchema);
    const b = serve("b", ["--auth-lock-after", "6"], authSchema);
    const [aUrl, bUrl] = await Promise.all([a.ready(), b.ready()]);
    const guess = async (base: string, i: number) =>
      (
        await fetch(`${base}/api/v2/orchestrator/tasks/none`, {
          headers: { "x-api-key": `wrong-key-${i}` },
        })
      ).status;
    // Six wrong keys through A (the sixth answered after a delay, the throttle's first)…
    for (let i = 0; i < 6; i++) expect(await guess(aUrl!, i)).toBe(401);
    // …and B locks this address out once the seventh in all arrives, not at its own seventh.
    // (A tells B in batches within ~100 ms: by B's first request, all six have been told.)
    const onB: number[] = [];
    for (let i = 6; i < 13 && !onB.includes(429); i++) onB.push(await guess(bUrl!, i));
    expect(onB.at(-1)).toBe(429);
    expect(onB.length).toBeLessThanOrEqual(3);
    // A right key still works from that address.
    expect((await fetch(`${bUrl}/api/v2/orchestrator/tasks/none`, { headers })).status).toBe(404);
  }, 120_000);
  it("a fleet node polling one server gets the tasks submitted to it through the other", async () => {
    if (!url) return;
    const token = "shared-fleet-registration";
    const a = serve("a", ["--registration-token", token], fleetSchema);
    const b = serve("b", ["--registration-token", token], fleetSchema);
    const [aUrl, bUrl] = await Promise.all([a.ready(), b.ready()]);
    await until(
      async () => JSON.stringify(await holders(fleetSchema)) === '{"a":32,"b":32}',
      "a 32/32 split",
    );
    const reg = await fetch(`${aUrl}/register`, {
      method: "POST",
      headers: { "x-registration-token": token, "content-type": "application/json" },
      body: JSON.stringify({ hostname: "gpu-box", name: "gpu-box", os_type: "linux" }),
    });
    expect(reg.status).toBe(200);
    const node = (await reg.json()) as { id: string; api_key: string };
    const nodeHeaders = { "x-api-key": node.api_key, "content-type": "application/json" };
    // Tasks for that node, submitted through B: some land in partitions B holds.
    const ids: string[] = [];
    for (let i = 0; i < 8; i++) {
      const res = await fetch(`${bUrl}/tasks`, {
        method: "POST",
        headers,
        body: JSON.stringify({ prompt: `job ${i}`, target_node_id: node.id }),
      });
      expect(res.status, await res.clone().text()).toBe(201);
      ids.push(((await res.json()) as { id: string }).id);
    }
    const owners = await query<{ n: number; owner: string }>(
      `SELECT n, owner FROM "${fleetSchema}".partitions`,
    );
    const ownerOf = new Map(owners.map((r) => [r.n, r.owner]));
    expect(ids.some((id) => ownerOf.get(partitionOf(id, 64)) === "b")).toBe(true);
    // The node polls only A, and reports to A: it gets and finishes every one of them.
    const got: string[] = [];
    for (let i = 0; i < 8; i++) {
      const poll = await fetch(`${aUrl}/tasks/pending`, { headers: nodeHeaders });
      expect(poll.status).toBe(200);
      const assignment = (await poll.json()) as { task_id: string } | null;
      expect(assignment, `poll ${i} got nothing`).not.toBeNull();
      got.push(assignment!.task_id);
      const done = await fetch(`${aUrl}/status`, {
        method: "POST",
        headers: nodeHeaders,
        body: JSON.stringify({
          task_id: assignment!.task_id,
          status: "success",
          timestamp: new Date().toISOString(),
          message: `done ${i}`,
        }),
      });
      expect(done.status, await done.clone().text()).toBe(200);
    }
    expect(new Set(got)).toEqual(new Set(ids));
    expect(await (await fetch(`${aUrl}/tasks/pending`, { headers: nodeHeaders })).json()).toBe(
      null,
    );
    const rows = await query<{ status: string; n: string }>(
      `SELECT status, count(*) AS n FROM "${fleetSchema}".tasks WHERE id = ANY($1::text[]) GROUP BY status`,
      [ids],
    );
    expect(rows).toEqual([{ status: "succeeded", n: "8" }]);
    // B, the holder of some of them, sees them finished too.
    for (const id of ids) {
      await until(async () => {
        const res = await fetch(`${bUrl}/api/v2/orchestrator/tasks/${id}`, { headers });
        return ((await res.json()) as { status: string }).status === "succeeded";
      }, `B sees ${id} succeeded`);
    }
  }, 120_000);
  it("an SSE client of one server gets the tokens an LLM task streams on another", async () => {
    if (!url) return;
    tokens = await startOpenAIServer({ replies: [{ text: "alpha beta gamma delta" }] });
    const a = serve("a", [], tokenSchema);
    const b = serve("b", [], tokenSchema);
    const [aUrl, bUrl] = await Promise.all([a.ready(), b.ready()]);
    await until(
      async () => JSON.stringify(await holders(tokenSchema)) === '{"a":32,"b":32}',
      "a 32/32 split",
    );
    for (const base of [aUrl, bUrl]) {
      const res = await fetch(`${base}/api/v2/orchestrator/workers/llm-api/register`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          api_type: "openai",
          api_key: "sk-test-shared-tokens",
          base_url: tokens.baseURL,
          model: "gpt-4o-mini",
          worker_id: base === aUrl ? "llm-a" : "llm-b",
        }),
      });
      expect(res.status, await res.clone().text()).toBe(200);
    }
    const onB = new Set(
      (
        await query<{ n: number }>(`SELECT n FROM "${tokenSchema}".partitions WHERE owner = 'b'`)
      ).map((r) => r.n),
    );
    let id = "streamed-0";
    for (let i = 1; !onB.has(partitionOf(id, 64)); i++) id = `streamed-${i}`;
    // Held for approval, so A's client is listening before B starts it.
    const res = await fetch(`${aUrl}/api/v2/orchestrator/tasks/submit`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        task_id: id,
        type: "llm_request",
        approval: "before_run",
        payload: { prompt: "four words", stream: true },
      }),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const sse = await fetch(`${aUrl}/api/v2/orchestrator/tasks/${id}/events`, {
      headers,
      signal: AbortSignal.timeout(30_000),
    });
    expect(sse.status).toBe(200);
    const reader = sse.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    while (!text.includes("event: task:awaiting_approval")) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    const approved = await fetch(`${aUrl}/api/v2/orchestrator/tasks/${id}/approve`, {
      method: "POST",
      headers,
      body: JSON.stringify({ comment: "go" }),
    });
    expect(approved.status, await approved.clone().text()).toBe(200);
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += decoder.decode(value, { stream: true });
    }
    const blocks = text.split("\n\n").filter((b) => b.includes("event: "));
    const events = blocks.map((b) => b.match(/^event: (.+)$/m)![1]);
    expect(events.at(-1)).toBe("task:succeeded");
    const streamed = blocks
      .filter((b) => b.includes("event: token"))
      .map((b) => (JSON.parse(b.match(/^data: (.+)$/m)![1]!) as { text: string }).text)
      .join("");
    expect(streamed).toBe("alpha beta gamma delta");
    // Every token came before the end.
    expect(events.lastIndexOf("token")).toBeLessThan(events.indexOf("task:succeeded"));
    // It ran on B.
    const ran = await query<{ worker_id: string }>(
      `SELECT worker_id FROM "${tokenSchema}".tasks WHERE id = $1`,
      [id],
    );
    expect(ran[0]?.worker_id).toBe("llm-b");
  }, 120_000);
});
