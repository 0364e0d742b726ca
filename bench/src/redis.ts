import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

/** A Redis server started by the benchmark on 127.0.0.1. */
export interface RedisHandle {
  host: string;
  port: number;
  version: string;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Starts `redis-server` (Debian's package) and waits until it accepts connections: without
 * persistence, or (`durable`) with an append-only file fsynced on every write
 * (`appendfsync always`), which acknowledges a job only once it is on disk, as SQLite's
 * `synchronous=full` does.
 */
export async function startRedis(
  options: { durable?: boolean } = {},
  bin = process.env.FLOTILLA_REDIS_SERVER ?? "redis-server",
): Promise<RedisHandle> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-redis-"));
  const child: ChildProcess = spawn(
    bin,
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      options.durable ? "yes" : "no",
      ...(options.durable ? ["--appendfsync", "always"] : []),
      "--dir",
      dir,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  let output = "";
  child.stdout?.on("data", (d) => {
    output += String(d);
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
  const spawnError = new Promise<never>((_, reject) =>
    child.once("error", (e) => reject(new Error(`cannot start ${bin}: ${e.message}`))),
  );
  const ready = (async () => {
    for (let i = 0; i < 200; i++) {
      if (/Ready to accept connections/i.test(output)) return;
      await new Promise((r) => setTimeout(r, 25));
    }
    throw new Error(`redis-server did not start on port ${port}: ${output.slice(-500)}`);
  })();
  await Promise.race([ready, spawnError]);
  const version =
    /v=([\d.]+)/.exec(output)?.[1] ?? /Redis version=([\d.]+)/.exec(output)?.[1] ?? "unknown";
  return {
    host: "127.0.0.1",
    port,
    version,
    async stop() {
      child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
