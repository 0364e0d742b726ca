import { spawn } from "node:child_process";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { startPostgres } from "../src/index.js";

const root = fileURLToPath(new URL("../../../", import.meta.url));

async function query(url: string, text: string): Promise<unknown[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query(text)).rows;
  } finally {
    await client.end();
  }
}

describe("startPostgres", () => {
  it("serves a throwaway cluster that stops and starts, and removes what a killed process left", async () => {
    // A process that starts a cluster and is killed before it can remove it.
    const child = spawn(
      process.execPath,
      [
        "--import",
        "tsx",
        "-e",
        `import("${join(root, "packages/testing/src/postgres.ts")}").then(async (m) => { const s = await m.startPostgres(); console.log(JSON.stringify({ url: s.url })); setInterval(() => {}, 1000); })`,
      ],
      { cwd: root, stdio: ["ignore", "pipe", "inherit"] },
    );
    const left = await new Promise<{ url: string }>((resolve, reject) => {
      let out = "";
      child.stdout!.on("data", (d) => {
        out += d;
        const line = out.split("\n").find((l) => l.startsWith("{"));
        if (line) resolve(JSON.parse(line));
      });
      child.on("exit", (code) =>
        reject(new Error(`child exited (${code}) before starting: ${out}`)),
      );
    });
    expect(await query(left.url, "SELECT 1 AS one")).toEqual([{ one: 1 }]);
    const killed = new Promise((r) => child.once("exit", r));
    child.kill("SIGKILL");
    await killed;

    const server = await startPostgres();
    try {
      // The orphan's server is gone.
      await expect(query(left.url, "SELECT 1")).rejects.toThrow(/ECONNREFUSED/);
      expect(server.version).toMatch(/^PostgreSQL \d+/);
      await query(server.url, "CREATE TABLE t (n int); INSERT INTO t VALUES (7)");
      await server.stop();
      await expect(query(server.url, "SELECT 1")).rejects.toThrow(/ECONNREFUSED/);
      await server.start();
      expect(await query(server.url, "SELECT n FROM t")).toEqual([{ n: 7 }]);
    } finally {
      await server.destroy();
    }
    await expect(query(server.url, "SELECT 1")).rejects.toThrow(/ECONNREFUSED/);
  }, 120_000);
});
