import { type ChildProcess, execFile } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, describe, expect, it } from "vitest";
import { loadServeConfig, SERVE_OPTIONS } from "../src/index.js";
import { bin, cleanUpServes, cliEnv, root, spawnServe, tempDir, tsx } from "./serve-process.js";

const run = promisify(execFile);
const node = process.execPath;
const env = cliEnv;
afterAll(cleanUpServes);

/** Spawns `flotilla serve` and resolves once it printed its whole banner (URL, admin key when generated). */
async function startServe(
  args: string[],
  { oneProcess = false } = {},
): Promise<{ child: ChildProcess; url: string; key?: string; out: () => string }> {
  // One process (tsx loaded in-process) when the test signals it with what the tsx CLI does not relay.
  const s = spawnServe(args, { oneProcess });
  const { url, key } = await s.ready();
  return { child: s.child, url, ...(key ? { key } : {}), out: s.out };
}

async function stop(child: ChildProcess): Promise<number | null> {
  const exited = new Promise<number | null>((r) => child.on("exit", (code) => r(code)));
  child.kill("SIGTERM");
  return exited;
}

describe("flotilla --help", () => {
  it("documents every serve option and the task commands", async () => {
    const top = await run(node, [tsx, bin, "--help"], { env, cwd: root });
    expect(top.stdout).toContain("serve");
    expect(top.stdout).toContain("task");
    const serve = await run(node, [tsx, bin, "serve", "--help"], { env, cwd: root });
    for (const o of SERVE_OPTIONS) {
      expect(serve.stdout).toContain(o.flag.split(" ")[0]);
      expect(serve.stdout).toContain(o.env);
    }
    expect(serve.stdout).toContain("--config");
    const bad = await run(node, [tsx, bin, "serve", "--port", "nope"], { env, cwd: root }).catch(
      (e) => e,
    );
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("flag --port: expected an integer >= 0");
  }, 60_000);
});

describe("configuration precedence", () => {
  it("flags > environment > config file > defaults, errors name the source", () => {
    const dir = tempDir();
    const file = join(dir, "c.json");
    writeFileSync(
      file,
      JSON.stringify({ port: 7001, host: "0.0.0.0", leaseSeconds: 60, allowHosts: ["a.example"] }),
    );
    const c = loadServeConfig({ config: file, host: "127.0.0.2" }, { FLOTILLA_PORT: "7002" });
    expect(c.host).toBe("127.0.0.2");
    expect(c.port).toBe(7002);
    expect(c.leaseSeconds).toBe(60);
    expect(c.allowHosts).toEqual(["a.example"]);
    expect(c.nodeTimeoutSeconds).toBe(90);
    expect(c.open).toBe(false);
    expect(loadServeConfig({}, { FLOTILLA_OPEN: "1" }).open).toBe(true);
    expect(() => loadServeConfig({}, { FLOTILLA_LOG_LEVEL: "loud" })).toThrow(
      /environment FLOTILLA_LOG_LEVEL: expected one of/,
    );
    writeFileSync(file, JSON.stringify({ prot: 1 }));
    expect(() => loadServeConfig({ config: file }, {})).toThrow(/unknown setting "prot"/);
    expect(c.nodeExpiryHours).toBe(24);
    expect(loadServeConfig({}, { FLOTILLA_NODE_EXPIRY_HOURS: "0" }).nodeExpiryHours).toBe(0);
    expect(() => loadServeConfig({ nodeExpiryHours: "0.01" }, {})).toThrow(
      "invalid configuration: flag --node-expiry-hours: 0.01 h is not longer than the node timeout (90 s); use 0 to never expire nodes",
    );
    const proxy = loadServeConfig(
      {},
      {
        FLOTILLA_TRUST_PROXY: "loopback, 10.0.0.0/8",
        FLOTILLA_PUBLIC_URL: "https://ops.example.com/fl",
        FLOTILLA_AUTH_LOCK_AFTER: "10",
      },
    );
    expect(proxy.trustProxy).toEqual(["loopback", "10.0.0.0/8"]);
    expect(proxy.publicUrl).toBe("https://ops.example.com/fl");
    expect(proxy.authLockAfter).toBe(10);
    expect(proxy.registrationLimitPerMinute).toBe(60);
    expect(() => loadServeConfig({ trustProxy: "10.0.0.0/99" }, {})).toThrow(
      /invalid configuration: flag --trust-proxy: .*expected addresses, CIDRs/,
    );
    expect(() => loadServeConfig({ publicUrl: "ops.example.com" }, {})).toThrow(
      /flag --public-url: expected an http\(s\) URL/,
    );
  });
});

describe("flotilla serve shutdown", () => {
  it("on SIGTERM lets a running task finish before exiting", async () => {
    const dataDir = tempDir();
    // One process: through the tsx CLI, a SIGTERM that comes right after start-up can reach
    // the wrapper before it knows the server handles it, and the wrapper exits 143.
    const s = await startServe(["--data-dir", dataDir, "--admin-key", "drain-test-key-123"], {
      oneProcess: true,
    });
    const api = `${s.url}/api/v2/orchestrator`;
    const headers = { "x-api-key": "drain-test-key-123", "content-type": "application/json" };
    const { task_id } = (await (
      await fetch(`${api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          type: "tool_call",
          payload: { tool_name: "sleep", tool_input: { ms: 1500 } },
        }),
      })
    ).json()) as { task_id: string };
    const running = async () =>
      ((await (await fetch(`${api}/tasks/${task_id}`, { headers })).json()) as { status: string })
        .status;
    while ((await running()) !== "running") await new Promise((r) => setTimeout(r, 20));
    expect(await stop(s.child)).toBe(0);
    const again = await startServe(["--data-dir", dataDir, "--admin-key", "drain-test-key-123"], {
      oneProcess: true,
    });
    const rec = (await (
      await fetch(`${again.url}/api/v2/orchestrator/tasks/${task_id}`, { headers })
    ).json()) as { status: string; attempts: number; result: unknown };
    expect(rec).toMatchObject({ status: "succeeded", attempts: 1, result: { slept_ms: 1500 } });
    expect(await stop(again.child)).toBe(0);
  }, 60_000);
});

describe("flotilla serve", () => {
  it("prints the admin key once, keeps tasks across a restart, and answers `flotilla task`", async () => {
    const dataDir = tempDir();
    const first = await startServe(["--data-dir", dataDir]);
    expect(first.key).toMatch(/^flt_/);
    expect(first.out()).toContain("+ tool-call");
    expect(first.out()).toContain("+ api-request");
    const key = first.key!;
    const api = `${first.url}/api/v2/orchestrator`;
    const post = async (path: string, body: unknown) =>
      (
        await fetch(`${api}${path}`, {
          method: "POST",
          headers: { "x-api-key": key, "content-type": "application/json" },
          body: JSON.stringify(body),
        })
      ).json() as Promise<Record<string, unknown>>;
    const done = await post("/tasks/execute", {
      type: "tool_call",
      payload: { tool_name: "echo", tool_input: "kept" },
    });
    expect(done.success).toBe(true);
    // `custom` has no worker here: it stays queued across the restart.
    const waiting = await post("/tasks/submit", { type: "custom", payload: { n: 1 } });
    expect(waiting.status).toBe("submitted");

    const cli = await run(
      node,
      [
        tsx,
        bin,
        "task",
        "submit",
        "--type",
        "tool_call",
        "--payload",
        '{"tool_name":"math","tool_input":{"expression":"1+2"}}',
        "--wait",
        "--url",
        first.url,
        "--api-key",
        key,
      ],
      { env, cwd: root },
    );
    expect(JSON.parse(cli.stdout)).toMatchObject({ success: true, data: { result: 3 } });
    // A task that waits for approval, across the restart, approved from the CLI there.
    const gated = await run(
      node,
      [
        tsx,
        bin,
        "task",
        "submit",
        "--type",
        "tool_call",
        "--payload",
        '{"tool_name":"echo","tool_input":"approved"}',
        "--approval",
        "before_run",
        "--url",
        first.url,
        "--api-key",
        key,
      ],
      { env, cwd: root },
    );
    const gatedId = (JSON.parse(gated.stdout) as { task_id: string }).task_id;

    expect(await stop(first.child)).toBe(0);

    const second = await startServe(["--data-dir", dataDir]);
    expect(second.key).toBeUndefined();
    expect(second.out()).toContain("stored hashed");
    const api2 = `${second.url}/api/v2/orchestrator`;
    const get = async (id: unknown) =>
      (
        await fetch(`${api2}/tasks/${id}`, { headers: { authorization: `Bearer ${key}` } })
      ).json() as Promise<Record<string, unknown>>;
    expect(await get(done.task_id)).toMatchObject({ status: "succeeded", result: "kept" });
    expect(await get(waiting.task_id)).toMatchObject({ status: "queued", type: "custom" });
    const listed = await run(
      node,
      [tsx, bin, "task", "list", "--limit", "10", "--url", second.url],
      { env: { ...env, FLOTILLA_API_KEY: key }, cwd: root },
    );
    const ids = (JSON.parse(listed.stdout) as { tasks: Array<{ task_id: string }> }).tasks.map(
      (t) => t.task_id,
    );
    expect(ids).toEqual(expect.arrayContaining([done.task_id, waiting.task_id]));
    const got = await run(
      node,
      [tsx, bin, "task", "get", String(waiting.task_id), "--url", second.url, "--api-key", key],
      { env, cwd: root },
    );
    expect(JSON.parse(got.stdout)).toMatchObject({ task_id: waiting.task_id });
    expect(await get(gatedId)).toMatchObject({ status: "awaiting_approval" });
    const approved = await run(
      node,
      [tsx, bin, "task", "approve", gatedId, "--comment", "ship it", "--url", second.url],
      { env: { ...env, FLOTILLA_API_KEY: key }, cwd: root },
    );
    expect(JSON.parse(approved.stdout)).toMatchObject({
      task_id: gatedId,
      approval: { decision: "approved", comment: "ship it" },
    });
    const rejectedAgain = (await run(
      node,
      [tsx, bin, "task", "reject", gatedId, "--url", second.url, "--api-key", key],
      { env, cwd: root },
    ).catch((err: unknown) => err)) as { code?: number; stderr: string };
    expect(rejectedAgain.code).toBe(1);
    expect(rejectedAgain.stderr).toContain("409");
    // A task held for approval until the watcher is connected (however long starting the
    // CLI takes on a loaded machine), then approved: the watcher sees it run and end.
    const sleeper = (await (
      await fetch(`${api2}/tasks/submit`, {
        method: "POST",
        headers: { "x-api-key": key, "content-type": "application/json" },
        body: JSON.stringify({
          type: "tool_call",
          approval: "before_run",
          payload: { tool_name: "sleep", tool_input: { ms: 200 } },
        }),
      })
    ).json()) as { task_id: string };
    const watching = run(
      node,
      [tsx, bin, "task", "watch", sleeper.task_id, "--url", second.url, "--api-key", key],
      { env, cwd: root },
    );
    const wsClients = async () => {
      const text = await (
        await fetch(`${second.url}/metrics`, { headers: { "x-api-key": key } })
      ).text();
      return Number(/^flotilla_ws_clients (\d+)/m.exec(text)?.[1] ?? 0);
    };
    for (let i = 0; i < 600 && (await wsClients()) === 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(await wsClients()).toBeGreaterThan(0);
    const approve = await fetch(`${api2}/tasks/${sleeper.task_id}/approve`, {
      method: "POST",
      headers: { "x-api-key": key, "content-type": "application/json" },
      body: "{}",
    });
    expect(approve.status, await approve.clone().text()).toBe(200);
    const watched = await watching;
    expect(watched.stdout).toMatch(/task:snapshot \(awaiting_approval\)/);
    expect(watched.stdout).toContain("task:running");
    expect(watched.stdout).toContain("task:succeeded (succeeded)");
    // The fleet routes are mounted at the root; registration is off without a token.
    const reg = await fetch(`${second.url}/register`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ name: "n1" }),
    });
    expect(reg.status).toBe(503);
    const denied = await fetch(`${api2}/status`, { headers: { "x-api-key": "wrong" } });
    expect(denied.status).toBe(401);
    // A second server on the same port fails clearly, and its data dir gets no orphan key.
    const port = new URL(second.url).port;
    const otherDir = tempDir();
    const clash = await run(
      node,
      [tsx, bin, "serve", "--port", port, "--data-dir", otherDir, "--log-level", "silent"],
      { env, cwd: root },
    ).catch((e) => e);
    expect(clash.code).toBe(1);
    expect(clash.stderr).toContain(`cannot listen on 127.0.0.1:${port}`);
    expect(clash.stdout).not.toContain("Admin key");
    expect(existsSync(join(otherDir, "admin-key.json"))).toBe(false);
    expect(await stop(second.child)).toBe(0);
  }, 90_000);
});

describe("SIGHUP", () => {
  it("re-reads the config file and applies its resource policy; a bad file changes nothing", async () => {
    const dir = tempDir();
    const file = join(dir, "flotilla.json");
    writeFileSync(file, JSON.stringify({ resources: { limits: { openai: ["10/min"] } } }));
    const s = await startServe(["--data-dir", dir, "--config", file], { oneProcess: true });
    const headers = { "x-api-key": s.key! };
    const policy = async () =>
      (await (
        await fetch(`${s.url}/api/v2/orchestrator/resources/config`, { headers })
      ).json()) as Record<string, unknown>;
    expect((await policy()).limits).toEqual({ openai: ["10/min"] });

    const said = (text: string) =>
      new Promise<void>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no "${text}" in:\n${s.out()}`)), 20_000);
        const check = () => {
          if (s.out().includes(text)) {
            clearTimeout(t);
            s.child.stderr!.off("data", check);
            resolve();
          }
        };
        s.child.stderr!.on("data", check);
        check();
      });
    writeFileSync(
      file,
      JSON.stringify({
        resources: { limits: { openai: ["20/min"] } },
        tenantWeights: { acme: 2 },
      }),
    );
    s.child.kill("SIGHUP");
    await said("SIGHUP: resource policy reloaded");
    expect(await policy()).toEqual({ limits: { openai: ["20/min"] }, tenantWeights: { acme: 2 } });

    writeFileSync(file, JSON.stringify({ resources: { limits: { openai: ["20/fortnight"] } } }));
    s.child.kill("SIGHUP");
    await said("SIGHUP: reload refused, the running policy is unchanged");
    expect(s.out()).toContain('resources.limits.openai[0]: unknown time unit "fortnight"');
    expect((await policy()).limits).toEqual({ openai: ["20/min"] });
    expect(await stop(s.child)).toBe(0);
  }, 60_000);
});
