// Whole lifecycles against `flotilla serve` running as a child process, as an operator runs it.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { upload } from "./harness.js";
import { httpRequest, VictoriaRunner } from "./victoria-runner.js";

const root = fileURLToPath(new URL("../../../../", import.meta.url));
const TOKEN = "serve-registration-token";
const ADMIN = "serve-admin-key-0123456789";

let dir: string;
const children = new Set<ChildProcess>();

async function startServe(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(
    process.execPath,
    [
      join(root, "node_modules/tsx/dist/cli.mjs"),
      join(root, "packages/cli/src/bin.ts"),
      "serve",
      "--port",
      "0",
      "--data-dir",
      dir,
      "--registration-token",
      TOKEN,
      "--admin-key",
      ADMIN,
      "--lease-seconds",
      "2",
      "--node-timeout-seconds",
      "30",
      "--log-level",
      "warn",
    ],
    {
      cwd: root,
      env: {
        ...process.env,
        TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json"),
        FLOTILLA_DETECT_WORKERS: "false",
      },
    },
  );
  children.add(child);
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  const url = await new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`flotilla serve did not start:\n${out}`)), 45_000);
    const check = () => {
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m?.[1] && /^Fleet:/m.test(out)) {
        clearTimeout(t);
        resolve(m[1]);
      }
    };
    child.stdout?.on("data", check);
    child.on("exit", (code) => {
      clearTimeout(t);
      reject(new Error(`flotilla serve exited (${code}):\n${out}`));
    });
  });
  expect(out).toMatch(/Fleet: on/);
  return { child, url };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise<void>((r) => child.once("exit", () => r()));
  child.kill("SIGTERM");
  await exited;
  children.delete(child);
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "fleet-serve-"));
});
afterAll(async () => {
  for (const c of children) c.kill("SIGKILL");
  await rm(dir, { recursive: true, force: true });
});

describe("fleet on `flotilla serve`", () => {
  it("registers, runs a task with a file, recovers a killed runner's task, and keeps it all across a restart", async () => {
    const { child, url } = await startServe();
    const admin = async (method: string, path: string, body?: unknown) => {
      const res = await httpRequest(
        method,
        `${url}${path}`,
        { "X-API-Key": ADMIN, ...(body ? { "Content-Type": "application/json" } : {}) },
        body ? JSON.stringify(body) : undefined,
      );
      return res;
    };
    const mk = (name: string) =>
      new VictoriaRunner({
        orchestratorUrl: url,
        registrationToken: TOKEN,
        name,
        home: join(dir, name),
      });
    const a = mk("client-acme-prod-1");
    const b = mk("client-acme-prod-2");
    expect(await a.register()).toBe(true);
    expect(await b.register()).toBe(true);
    expect(await a.poll()).toBeNull();

    const file = await upload(url, "brief.md", "# brief", ADMIN);
    expect(file.status).toBe(201);
    const t1 = await admin("POST", "/tasks", {
      prompt: "summarize the brief",
      target_node_name: "client-acme-*",
      files: [file.json.filename],
    });
    expect(t1.status).toBe(201);
    const got = await a.poll();
    expect(got).toMatchObject({ task_id: t1.json.id, files: ["brief.md"] });
    const fin = await a.run(got!, { kind: "exit", code: 0, output: "summary" });
    expect(fin?.json).toMatchObject({ status: "completed", result: "summary" });
    expect((await admin("GET", `/logs/${t1.json.id}`)).json.count).toBe(1);
    // A session log of 10 MiB goes through the whole server (its own body limits included).
    const big = await a.logs(t1.json.id, 10 * 1024 * 1024 - 8192);
    expect(big.status).toBe(200);
    expect((await admin("GET", `/logs/${t1.json.id}`)).json.count).toBe(2);

    // Killed mid-task: the 2 s lease expires and the other node gets the task.
    const t2 = await admin("POST", "/tasks", {
      prompt: "fragile",
      target_node_name: "client-acme-*",
    });
    const first = await a.poll();
    expect(first?.task_id).toBe(t2.json.id);
    await a.run(first!, { kind: "killed" });
    expect(await b.poll()).toBeNull();
    let again: Record<string, unknown> | null = null;
    for (let i = 0; i < 40 && !again; i++) {
      await new Promise((r) => setTimeout(r, 250));
      again = await b.poll();
    }
    expect(again?.task_id).toBe(t2.json.id);

    // Restart the server while b holds the task: its 2 s lease runs out meanwhile, so after the
    // restart the task is handed out again (never lost), and b's key still works.
    await stop(child);
    const next = await startServe();
    const b2 = new VictoriaRunner({
      orchestratorUrl: next.url,
      registrationToken: TOKEN,
      name: "client-acme-prod-2",
      home: join(dir, "b2"),
    });
    b2.apiKey = b.apiKey;
    b2.nodeId = b.nodeId;
    let back: Record<string, unknown> | null = null;
    for (let i = 0; i < 40 && !back; i++) {
      back = await b2.poll();
      if (!back) await new Promise((r) => setTimeout(r, 250));
    }
    expect(back?.task_id).toBe(t2.json.id);
    expect(back?.orchestrator_url).toBe(next.url);
    const fin2 = await b2.run(back!, { kind: "exit", code: 0 });
    expect(fin2?.status).toBe(200);
    expect(fin2?.json).toMatchObject({ id: t2.json.id, status: "completed", attempts: 3 });
    const nodes = await httpRequest("GET", `${next.url}/nodes`, { "X-API-Key": ADMIN });
    expect(nodes.json.count).toBe(2);
    const logs = await httpRequest("GET", `${next.url}/logs/${t1.json.id}`, { "X-API-Key": ADMIN });
    expect(logs.json.count).toBe(2);
    await stop(next.child);
  }, 90_000);
});
