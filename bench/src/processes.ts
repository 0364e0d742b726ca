/**
 * Servers and load generators in their own processes, so that the client's CPU is not taken
 * from the server it measures: `flotilla serve` (the real command, on SQLite) and a Hono
 * hello-world, loaded by autocannon.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, "../..");
const require = createRequire(import.meta.url);

export interface ChildServer {
  url: string;
  stop(): Promise<void>;
}

/** Spawns `args` and resolves once its output matches `ready` (its first group is the URL). */
async function start(
  args: string[],
  ready: RegExp,
  env = process.env,
): Promise<{
  child: ChildProcess;
  url: string;
}> {
  const child = spawn(process.execPath, args, {
    cwd: root,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`did not start: ${args.join(" ")}\n${out}`)),
      60_000,
    );
    const onData = (d: Buffer) => {
      out += d;
      const m = ready.exec(out);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]!);
      }
    };
    child.stdout!.on("data", onData);
    child.stderr!.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code}) before it listened: ${args.join(" ")}\n${out}`));
    });
  });
  return { child, url };
}

function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

/**
 * `flotilla serve` on a fresh SQLite data dir (its defaults: `synchronous=full`, the built-in
 * workers). From the built package when it exists (`npm run bench` builds first), else from
 * the sources through tsx (the smoke run in the test suite).
 */
export async function startFlotillaServe(adminKey: string): Promise<ChildServer> {
  const dataDir = mkdtempSync(join(tmpdir(), "flotilla-bench-serve-"));
  const built = join(dirname(require.resolve("@flotilla/cli/package.json")), "dist/bin.js");
  const launcher = existsSync(built)
    ? [built]
    : ["--import", "tsx", join(root, "packages/cli/src/bin.ts")];
  const env = {
    ...process.env,
    FLOTILLA_DETECT_WORKERS: "false",
    TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json"),
  };
  const { child, url } = await start(
    [
      ...launcher,
      "serve",
      "--port",
      "0",
      "--data-dir",
      dataDir,
      "--admin-key",
      adminKey,
      "--log-level",
      "warn",
    ],
    /listening on (http:\/\/\S+)/,
    env,
  );
  return {
    url,
    async stop() {
      await stopChild(child);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The same-stack hello-world (`servers/hono-hello.mjs`) in its own process. */
export async function startHonoHello(): Promise<ChildServer> {
  const { child, url } = await start([join(here, "servers/hono-hello.mjs")], /listening (\S+)/);
  return { url, stop: () => stopChild(child) };
}

export interface CannonResult {
  requestsPerSecond: number;
  p50: number;
  p99: number;
  requests: number;
  /** Answers outside 2xx, and connection errors and timeouts. */
  failures: number;
}

/** autocannon in its own process: `connections` keep-alive clients for `seconds`. */
export function autocannon(o: {
  url: string;
  method?: "GET" | "POST";
  headers?: Record<string, string>;
  body?: string;
  connections: number;
  seconds: number;
}): Promise<CannonResult> {
  const bin = join(dirname(require.resolve("autocannon/package.json")), "autocannon.js");
  const args = [bin, "-j", "-c", String(o.connections), "-d", String(o.seconds)];
  if (o.method) args.push("-m", o.method);
  for (const [k, v] of Object.entries(o.headers ?? {})) args.push("-H", `${k}: ${v}`);
  if (o.body !== undefined) args.push("-b", o.body);
  args.push(o.url);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => {
      out += d;
    });
    child.stderr.on("data", (d) => {
      err += d;
    });
    child.once("exit", (code) => {
      if (code !== 0) return reject(new Error(`autocannon exited ${code}: ${err.slice(-500)}`));
      try {
        const r = JSON.parse(out) as {
          requests: { average: number; total: number };
          latency: { p50: number; p99: number };
          non2xx: number;
          errors: number;
          timeouts: number;
          "2xx": number;
          duration: number;
        };
        resolve({
          requestsPerSecond: r["2xx"] / r.duration,
          p50: r.latency.p50,
          p99: r.latency.p99,
          requests: r["2xx"],
          failures: r.non2xx + r.errors + r.timeouts,
        });
      } catch (e) {
        reject(
          new Error(`autocannon output not JSON: ${(e as Error).message}\n${out.slice(0, 500)}`),
        );
      }
    });
  });
}
