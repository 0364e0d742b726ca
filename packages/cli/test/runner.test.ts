// `flotilla runner` and `flotilla mcp-reporter` as child processes against `flotilla serve`.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import {
  createProgram,
  EXEC_OPTION,
  loadRunnerConfig,
  REPORTER_OPTIONS,
  RUNNER_OPTIONS,
} from "../src/index.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));
const node = process.execPath;
// tsx as a loader (no wrapper process): the PID we signal is the command's own.
const tsx = ["--import", join(root, "node_modules/tsx/dist/loader.mjs")];
const bin = join(root, "packages/cli/src/bin.ts");
const ADMIN = "runner-test-admin-key-0123456789";
const TOKEN = "runner-test-registration-token";
const env: Record<string, string | undefined> = {
  ...process.env,
  TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json"),
  FLOTILLA_DETECT_WORKERS: "false",
  FLOTILLA_ADMIN_KEY: "",
  FLOTILLA_REGISTRATION_TOKEN: "",
};
const dirs: string[] = [];
const children = new Set<ChildProcess>();

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.pid !== undefined) process.kill(c.pid, "SIGKILL");
  }
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "flotilla-runner-"));
  dirs.push(d);
  return d;
}

/** Spawns `flotilla <args>` and resolves once its output matches `ready`. */
async function start(
  args: string[],
  ready: RegExp,
  extraEnv: Record<string, string> = {},
): Promise<{ child: ChildProcess; out: () => string }> {
  const child = spawn(node, [...tsx, bin, ...args], { env: { ...env, ...extraEnv }, cwd: root });
  children.add(child);
  let out = "";
  child.stdout?.on("data", (d) => {
    out += d;
  });
  child.stderr?.on("data", (d) => {
    out += d;
  });
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(
      () => reject(new Error(`no ${ready} from flotilla ${args[0]}:\n${out}`)),
      40_000,
    );
    const check = () => {
      if (ready.test(out)) {
        clearTimeout(t);
        resolve();
      }
    };
    child.stdout?.on("data", check);
    child.stderr?.on("data", check);
    child.on("exit", (code) => {
      clearTimeout(t);
      reject(new Error(`flotilla ${args[0]} exited (${code}):\n${out}`));
    });
  });
  return { child, out: () => out };
}

async function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.pid === undefined) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  process.kill(child.pid, "SIGTERM");
  const code = await exited;
  children.delete(child);
  return code;
}

describe("flotilla runner / mcp-reporter --help", () => {
  it("documents every option with its environment variable; bad settings name the flag or variable", () => {
    const program = createProgram({});
    const help = (name: string) =>
      program.commands.find((c) => c.name() === name)?.helpInformation() ?? "";
    for (const o of [...RUNNER_OPTIONS, EXEC_OPTION]) {
      expect(help("runner")).toContain(o.flag.split(" ")[0]);
      expect(help("runner")).toContain(o.env);
    }
    expect(help("runner")).toContain("-- <command>");
    for (const o of REPORTER_OPTIONS) {
      expect(help("mcp-reporter")).toContain(o.flag.split(" ")[0]);
      expect(help("mcp-reporter")).toContain(o.env);
    }
    expect(program.helpInformation()).toContain("flotilla runner");
    expect(program.helpInformation()).toContain("flotilla mcp-reporter");

    expect(() => loadRunnerConfig({ exec: "true" }, {})).toThrow(
      "--registration-token / FLOTILLA_REGISTRATION_TOKEN: required",
    );
    expect(() =>
      loadRunnerConfig({ slots: "0", exec: "true" }, { FLOTILLA_REGISTRATION_TOKEN: "t" }),
    ).toThrow("flag --slots: expected an integer between 1 and 256");
    expect(() =>
      loadRunnerConfig({}, { FLOTILLA_REGISTRATION_TOKEN: "t", FLOTILLA_LABELS: "gpu" }),
    ).toThrow('environment FLOTILLA_LABELS: expected key=value pairs, got "gpu"');
    expect(() => loadRunnerConfig({}, { FLOTILLA_REGISTRATION_TOKEN: "t" })).toThrow(
      "no task command",
    );
    const c = loadRunnerConfig(
      { slots: "3" },
      {
        FLOTILLA_REGISTRATION_TOKEN: "t",
        FLOTILLA_SLOTS: "2",
        FLOTILLA_URL: "http://10.0.0.5:8000/",
        FLOTILLA_LABELS: "zone=eu, gpu=a100",
        FLOTILLA_EXEC: "./agent.sh --fast",
      },
    );
    expect(c).toMatchObject({
      slots: 3,
      url: "http://10.0.0.5:8000",
      labels: { zone: "eu", gpu: "a100" },
      taskTypes: ["agent_run"],
      pollIntervalSeconds: 10,
      command: ["/bin/sh", "-c", './agent.sh --fast "$@"', "flotilla-task"],
    });
    expect(
      loadRunnerConfig({}, { FLOTILLA_REGISTRATION_TOKEN: "t" }, ["python3", "agent.py"]).command,
    ).toEqual(["python3", "agent.py"]);
  });
});

describe("flotilla serve + flotilla runner on 127.0.0.1", () => {
  it("a runner registers, runs targeted fleet tasks with its command and reports success and failure", async () => {
    const serve = await start(
      ["serve", "--port", "0", "--data-dir", tempDir(), "--log-level", "warn"],
      /^Fleet: on/m,
      { FLOTILLA_ADMIN_KEY: ADMIN, FLOTILLA_REGISTRATION_TOKEN: TOKEN },
    );
    const url = /listening on (http:\/\/\S+)/.exec(serve.out())?.[1] as string;
    const admin = async (method: string, path: string, body?: unknown) => {
      const res = await fetch(`${url}${path}`, {
        method,
        headers: { "x-api-key": ADMIN, "content-type": "application/json" },
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      return { status: res.status, json: (await res.json()) as Record<string, unknown> };
    };

    const runner = await start(
      [
        "runner",
        "--url",
        url,
        "--name",
        "edge-7",
        "--labels",
        "zone=test,gpu=none",
        "--poll-interval-seconds",
        "0.2",
        "--work-dir",
        tempDir(),
        "--log-level",
        "warn",
        "--exec",
        'case "$1" in fail*) exit 3;; esac; test -n "$NODE_API_KEY" && test -n "$ORCHESTRATOR_URL" && echo done:',
      ],
      /registered as node /,
      { FLOTILLA_REGISTRATION_TOKEN: TOKEN },
    );

    const nodes = await admin("GET", "/nodes");
    expect(nodes.json.nodes).toEqual([
      expect.objectContaining({ name: "edge-7", labels: { zone: "test", gpu: "none" } }),
    ]);

    const ok = await admin("POST", "/tasks", {
      prompt: "hello fleet",
      target_node_name: "edge-*",
      target_tags: { zone: "test" },
    });
    expect(ok.status).toBe(201);
    const bad = await admin("POST", "/tasks", {
      prompt: "fail please",
      target_node_name: "edge-7",
    });
    const finished = async (id: string) => {
      const deadline = Date.now() + 30_000;
      for (;;) {
        const t = await admin("GET", `/tasks/${id}`);
        if (["completed", "failed", "cancelled"].includes(String(t.json.status))) return t.json;
        if (Date.now() > deadline)
          throw new Error(`task ${id} not finished: ${JSON.stringify(t.json)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    expect(await finished(ok.json.id as string)).toMatchObject({
      status: "completed",
      result: "done: hello fleet",
    });
    const failed = await finished(bad.json.id as string);
    expect(failed.status).toBe("failed");
    expect(JSON.stringify(failed)).toContain("Task failed with exit code 3");

    // Graceful stops, by PID.
    expect(await stop(runner.child)).toBe(0);
    expect(await stop(serve.child)).toBe(0);
  }, 90_000);
});

describe("flotilla mcp-reporter", () => {
  it("speaks MCP on stdio and lists the status tools", async () => {
    const child = spawn(node, [...tsx, bin, "mcp-reporter"], {
      env: { ...env, ORCHESTRATOR_URL: "http://127.0.0.1:9", TASK_ID: "t-1", NODE_API_KEY: "k" },
      cwd: root,
    });
    children.add(child);
    let out = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    const send = (msg: unknown) => child.stdin.write(`${JSON.stringify(msg)}\n`);
    const reply = (id: number) =>
      new Promise<Record<string, unknown>>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no MCP reply ${id}: ${out}`)), 30_000);
        const check = () => {
          for (const line of out.split("\n")) {
            if (!line.trim()) continue;
            const m = JSON.parse(line) as { id?: number };
            if (m.id === id) {
              clearTimeout(t);
              child.stdout.off("data", check);
              resolve(m as Record<string, unknown>);
            }
          }
        };
        child.stdout.on("data", check);
        check();
      });
    send({
      jsonrpc: "2.0",
      id: 1,
      method: "initialize",
      params: {
        protocolVersion: "2025-03-26",
        capabilities: {},
        clientInfo: { name: "test", version: "1" },
      },
    });
    expect(await reply(1)).toHaveProperty("result.serverInfo");
    send({ jsonrpc: "2.0", method: "notifications/initialized" });
    send({ jsonrpc: "2.0", id: 2, method: "tools/list" });
    const tools = (await reply(2)) as { result: { tools: Array<{ name: string }> } };
    expect(tools.result.tools.map((t) => t.name)).toEqual(
      expect.arrayContaining(["report_status", "report_complete", "report_error", "get_job_info"]),
    );
    child.stdin.end();
    if (child.exitCode === null && child.pid !== undefined) process.kill(child.pid, "SIGTERM");
  }, 60_000);
});
