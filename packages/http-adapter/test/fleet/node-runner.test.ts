import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { Worker } from "@flotilla/core";
import { commandExecutor, NodeRunner, workersExecutor } from "@flotilla/workers-remote";
import { afterEach, describe, expect, it } from "vitest";
import { type FleetUnderTest, REG_TOKEN, removeDir, startFleet, upload } from "./harness.js";

let f: FleetUnderTest | undefined;
const runners: NodeRunner[] = [];
afterEach(async () => {
  for (const r of runners.splice(0)) await r.stop({ abort: true });
  if (f) {
    await f.stop().catch(() => undefined);
    await removeDir(f.dir);
    f = undefined;
  }
});

async function until<T>(fn: () => Promise<T | undefined | false>, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}

async function finished(fleet: FleetUnderTest, id: string) {
  return until(async () => {
    const t = await fleet.admin("GET", `/tasks/${id}`);
    return ["completed", "failed", "timed_out", "cancelled"].includes(t.json.status) && t.json;
  });
}

describe("NodeRunner against the fleet routes", () => {
  it("runs tasks with local workers on two slots, files included, and stops gracefully", async () => {
    f = await startFleet();
    const seen: string[] = [];
    let release: (() => void) | undefined;
    const worker: Worker = {
      id: "local",
      kind: "function",
      taskTypes: ["agent_run"],
      maxConcurrency: 2,
      async execute(task, ctx) {
        const p = task.payload as { prompt: string };
        seen.push(p.prompt);
        ctx.progress({ step: 1 });
        if (p.prompt === "wait") await new Promise<void>((r) => (release = r));
        return { output: `did ${p.prompt}` };
      },
    };
    const workDir = join(f.dir, "runner");
    const runner = new NodeRunner({
      orchestratorUrl: f.url,
      registrationToken: REG_TOKEN,
      name: "flotilla-node-1",
      workDir,
      slots: 2,
      labels: { zone: "eu" },
      pollIntervalMs: 20,
      heartbeatIntervalMs: 50,
      execute: workersExecutor([worker]),
    });
    runners.push(runner);
    await runner.start();
    const up = await upload(f.url, "input.txt", "payload bytes");
    const a = await f.admin("POST", "/tasks", { prompt: "alpha", files: [up.json.filename] });
    const b = await f.admin("POST", "/tasks", { prompt: "beta", target_tags: { zone: "eu" } });
    expect(await finished(f, a.json.id)).toMatchObject({
      status: "completed",
      result: "did alpha",
    });
    expect(await finished(f, b.json.id)).toMatchObject({ status: "completed", result: "did beta" });
    const file = await readFile(
      join(workDir, "tasks", a.json.id.slice(0, 8), "files", "input.txt"),
      "utf8",
    );
    expect(file).toBe("payload bytes");

    const w = await f.admin("POST", "/tasks", { prompt: "wait" });
    await until(async () => release !== undefined);
    const node = await f.admin("GET", `/nodes/${runner.client.nodeId}`);
    expect(node.json).toMatchObject({ slots: 2, labels: { zone: "eu" } });
    const stopping = runner.stop();
    await new Promise((r) => setTimeout(r, 100));
    expect((await f.admin("GET", `/tasks/${w.json.id}`)).json.status).toBe("running");
    release?.();
    await stopping;
    expect((await f.admin("GET", `/tasks/${w.json.id}`)).json).toMatchObject({
      status: "completed",
    });
    expect((await f.admin("GET", `/nodes/${runner.client.nodeId}`)).json.status).toBe("offline");
    expect(seen.sort()).toEqual(["alpha", "beta", "wait"]);
  });

  it("runs command lines: exit codes, timeouts, and re-registers after its key is revoked", async () => {
    f = await startFleet();
    const script =
      "const p = process.argv[process.argv.length - 1];" +
      "if (p === 'sleep') setTimeout(() => {}, 20000);" +
      "else if (p.startsWith('exit ')) process.exit(Number(p.slice(5)));" +
      "else console.log('ran ' + p + ' in ' + (process.env.TASK_ID || '').slice(0, 8));";
    const runner = new NodeRunner({
      orchestratorUrl: f.url,
      registrationToken: REG_TOKEN,
      name: "cmd-node",
      workDir: join(f.dir, "cmd"),
      pollIntervalMs: 20,
      heartbeatIntervalMs: 50,
      execute: commandExecutor([process.execPath, "-e", script], { killGraceMs: 500 }),
    });
    runners.push(runner);
    await runner.start();
    const ok = await f.admin("POST", "/tasks", { prompt: "hello" });
    expect(await finished(f, ok.json.id)).toMatchObject({
      status: "completed",
      result: `ran hello in ${ok.json.id.slice(0, 8)}`,
    });
    const bad = await f.admin("POST", "/tasks", { prompt: "exit 3" });
    expect(await finished(f, bad.json.id)).toMatchObject({
      status: "failed",
      error_message: "Task failed with exit code 3",
    });
    const slow = await f.admin("POST", "/tasks", { prompt: "sleep", timeout_seconds: 1 });
    const timed = await finished(f, slow.json.id);
    expect(timed.status).toBe("failed");
    expect(timed.error_message).toMatch(/timed out after 1 s/);

    const firstId = runner.client.nodeId;
    const keys = await f.admin("GET", "/keys");
    const nodeKey = keys.json.keys.find((k: { node_id: string | null }) => k.node_id === firstId);
    await f.admin("POST", `/keys/${nodeKey.id}/revoke`);
    const after = await f.admin("POST", "/tasks", { prompt: "again" });
    expect(await finished(f, after.json.id)).toMatchObject({ status: "completed" });
    expect(runner.client.nodeId).toBe(firstId);
    expect((await f.admin("GET", `/nodes/${firstId}`)).json.registrations).toBe(2);
  });

  it("stops a task the server cancelled (told by the heartbeat answer)", async () => {
    f = await startFleet();
    let sawAbort = false;
    let started = false;
    const runner = new NodeRunner({
      orchestratorUrl: f.url,
      registrationToken: REG_TOKEN,
      name: "cancel-node",
      workDir: join(f.dir, "cancel"),
      pollIntervalMs: 20,
      heartbeatIntervalMs: 40,
      execute: (_task, ctx) =>
        new Promise((_resolve, reject) => {
          started = true;
          ctx.signal.addEventListener("abort", () => {
            sawAbort = true;
            reject(ctx.signal.reason);
          });
        }),
    });
    runners.push(runner);
    await runner.start();
    const t = await f.admin("POST", "/tasks", { prompt: "forever" });
    await until(async () => started);
    expect((await f.admin("DELETE", `/tasks/${t.json.id}`)).json.status).toBe("cancelled");
    await until(async () => sawAbort);
    await until(async () => runner.runningTaskIds.length === 0);
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.status).toBe("cancelled");
  });
});
