import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const KEY_A = "admin-key-of-server-a";
const KEY_B = "admin-key-of-server-b";
const dirs: string[] = [];
let a: RunningServer;
let b: RunningServer;
let apiA: string;
let apiB: string;

async function start(key: string): Promise<RunningServer> {
  const dir = mkdtempSync(join(tmpdir(), "flotilla-push-"));
  dirs.push(dir);
  const config = loadServeConfig(
    { port: 0, dataDir: dir, adminKey: key, logLevel: "silent", detectWorkers: false },
    {},
  );
  return runServe(config, {}, () => {});
}

const h = (key: string) => ({ "x-api-key": key, "content-type": "application/json" });

async function call(url: string, key: string, body?: unknown, method = "POST") {
  const res = await fetch(url, {
    method,
    headers: h(key),
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

/** Reads a task's event stream on server B until `want` arrives; returns every event name seen. */
async function eventsOnB(taskId: string, want: (event: string) => boolean): Promise<string[]> {
  const res = await fetch(`${apiB}/tasks/${encodeURIComponent(taskId)}/events`, {
    headers: { "x-api-key": KEY_B },
  });
  if (res.status !== 200) throw new Error(`events of ${taskId} on B: ${res.status}`);
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  const seen: string[] = [];
  let buf = "";
  for (;;) {
    const r = await reader.read();
    if (r.done) return seen;
    buf += decoder.decode(r.value, { stream: true });
    for (const m of buf.matchAll(/^event: (\S+)$/gm)) seen.push(m[1]!);
    buf = buf.slice(buf.lastIndexOf("\n\n") + 2);
    if (seen.some(want)) {
      await reader.cancel();
      return seen;
    }
  }
}

/**
 * Resolves when server B announces `type` for `taskId` on its WebSocket (opened before the
 * task is submitted on A, so the event cannot be missed).
 */
async function watchB(taskId: () => string, type: string): Promise<{ seen: Promise<void> }> {
  const ws = new WebSocket(
    `${b.url.replace(/^http/, "ws")}/api/v2/orchestrator/ws/events?types=task`,
    ["flotilla.v1", `flotilla-key.${KEY_B}`],
  );
  await new Promise((r) => ws.addEventListener("open", r, { once: true }));
  const seen = new Promise<void>((resolve) => {
    ws.addEventListener("message", (e) => {
      const msg = JSON.parse(String(e.data)) as { type: string; task_id?: string };
      if (msg.type === type && msg.task_id === taskId()) {
        ws.close();
        resolve();
      }
    });
  });
  return { seen };
}

beforeAll(async () => {
  [a, b] = await Promise.all([start(KEY_A), start(KEY_B)]);
  apiA = `${a.url}/api/v2/orchestrator`;
  apiB = `${b.url}/api/v2/orchestrator`;
  // Server A sends its tool calls to B: its own tool worker goes, a push-mode remote comes.
  const gone = await call(`${apiA}/workers/tool-call?mode=handback`, KEY_A, undefined, "DELETE");
  expect(gone.status).toBe(200);
  const reg = await call(`${apiA}/workers/remote/register`, KEY_A, {
    remote_url: apiB,
    auth_token: KEY_B,
    worker_id: "server-b",
    task_types: ["tool_call"],
  });
  expect(reg.status).toBe(200);
});
afterAll(async () => {
  await Promise.all([a?.stop(), b?.stop()]);
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("push mode between two flotilla serve", () => {
  it("runs a task on the other server and answers its result", async () => {
    const r = await call(`${apiA}/tasks/execute`, KEY_A, {
      type: "tool_call",
      payload: { tool_name: "echo", tool_input: { said: "over there" } },
    });
    expect(r.body).toMatchObject({ status: "succeeded", worker_id: "server-b" });
    expect(JSON.stringify(r.body.data)).toContain("over there");
    const there = await call(`${apiB}/tasks/${r.body.task_id}-a1`, KEY_B, undefined, "GET");
    expect(there.body).toMatchObject({
      status: "succeeded",
      metadata: { origin_task_id: r.body.task_id, origin_attempt: 1 },
    });
  });

  it("cancelling the task on the first server cancels it on the second", async () => {
    let remoteId = "";
    const running = await watchB(() => remoteId, "task:running");
    const sub = await call(`${apiA}/tasks/submit`, KEY_A, {
      type: "tool_call",
      payload: { tool_name: "sleep", tool_input: { ms: 60_000 } },
    });
    remoteId = `${sub.body.task_id}-a1`;
    await running.seen;
    const cancelled = await call(`${apiA}/tasks/${sub.body.task_id}/cancel`, KEY_A);
    expect(cancelled.body.status).toBe("cancelled");
    const seen = await eventsOnB(remoteId, (e) => e === "task:cancelled" || e === "task:succeeded");
    expect(seen.at(-1)).toBe("task:cancelled");
  });

  it("a timeout on the first server ends the task on the second", async () => {
    let remoteId = "";
    const running = await watchB(() => remoteId, "task:running");
    const sub = await call(`${apiA}/tasks/submit`, KEY_A, {
      type: "tool_call",
      payload: { tool_name: "sleep", tool_input: { ms: 60_000 } },
      timeout_seconds: 1,
    });
    remoteId = `${sub.body.task_id}-a1`;
    await running.seen;
    const seen = await eventsOnB(
      remoteId,
      (e) => e === "task:cancelled" || e === "task:succeeded" || e === "task:failed",
    );
    expect(seen.at(-1)).toBe("task:cancelled");
    const local = await call(`${apiA}/tasks/${sub.body.task_id}`, KEY_A, undefined, "GET");
    expect(local.body.status).toBe("timed_out");
  });
});
