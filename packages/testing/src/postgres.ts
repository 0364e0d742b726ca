import { execFile, execFileSync } from "node:child_process";
import {
  chownSync,
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** Options of {@link startPostgres}. */
export interface PostgresServerOptions {
  /**
   * Folder of PostgreSQL's programs (`initdb`, `pg_ctl`). @default `FLOTILLA_TEST_PG_BIN`,
   * else the newest `/usr/lib/postgresql/<major>/bin` (Debian's layout)
   */
  bin?: string;
  /** Settings passed to the server (`-c name=value`), e.g. `{ fsync: "off" }` for throwaway data. */
  settings?: Record<string, string>;
}

/** A throwaway PostgreSQL server of a test's own, on 127.0.0.1. */
export interface PostgresServer {
  /** `postgres://postgres@127.0.0.1:<port>/postgres` (trust authentication, loopback only). */
  url: string;
  port: number;
  /** The server's version (`PostgreSQL 15.x`). */
  version: string;
  /** Stops the server, keeping its data (for outage tests); `start()` starts it again. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops the server and deletes its data. */
  destroy(): Promise<void>;
}

function findBin(explicit?: string): string {
  const bin = explicit ?? process.env.FLOTILLA_TEST_PG_BIN;
  if (bin) return bin;
  const root = "/usr/lib/postgresql";
  const majors = existsSync(root)
    ? readdirSync(root)
        .filter((d) => existsSync(join(root, d, "bin", "pg_ctl")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (majors.length === 0) {
    throw new Error(
      "PostgreSQL's programs were not found (set FLOTILLA_TEST_PG_BIN, or install Debian's postgresql: `bash scripts/test-env.sh up` does)",
    );
  }
  return join(root, majors[0]!, "bin");
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.on("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const PREFIX = "flotilla-postgres-";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Stops a cluster's server at once and deletes its folder (synchronously: also at exit). */
function removeCluster(dir: string, bin: string, asRoot: boolean): void {
  const pgCtl = join(bin, "pg_ctl");
  const args = ["-D", join(dir, "data"), "-m", "immediate", "-w", "stop"];
  try {
    if (asRoot)
      execFileSync("runuser", ["-u", "postgres", "--", pgCtl, ...args], { stdio: "ignore" });
    else execFileSync(pgCtl, args, { stdio: "ignore" });
  } catch {
    // not running
  }
  rmSync(dir, { recursive: true, force: true });
}

/** Clusters left behind by processes that were killed before they could remove them. */
function sweepOrphans(bin: string, asRoot: boolean): void {
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(PREFIX)) continue;
    const dir = join(tmpdir(), name);
    let owner = Number.NaN;
    try {
      owner = Number(readFileSync(join(dir, "owner.pid"), "utf8"));
    } catch {
      continue; // being created, or not ours
    }
    if (Number.isInteger(owner) && !alive(owner)) removeCluster(dir, bin, asRoot);
  }
}

/**
 * Creates a PostgreSQL cluster in a temporary folder (`initdb`) and starts it on a free
 * port of 127.0.0.1, for tests and benchmarks that need a real server they may stop, start
 * or fill as they like. Run as root, the programs run as the `postgres` user (they refuse
 * root). Starting takes a few seconds: start one per test file, not per test. A process that
 * exits without `destroy()` stops its server on exit; one that is killed leaves it to the
 * next `startPostgres()`, which removes clusters whose process is gone.
 *
 * @example
 * ```ts
 * import { startPostgres } from "@flotilla/testing";
 * import { PostgresStore } from "@flotilla/store-postgres";
 *
 * const pg = await startPostgres();
 * const store = new PostgresStore({ connectionString: pg.url });
 * // ...
 * await pg.destroy();
 * ```
 */
export async function startPostgres(options: PostgresServerOptions = {}): Promise<PostgresServer> {
  const bin = findBin(options.bin);
  const asRoot = process.getuid?.() === 0;
  sweepOrphans(bin, asRoot);
  const dir = mkdtempSync(join(tmpdir(), PREFIX));
  writeFileSync(join(dir, "owner.pid"), String(process.pid));
  if (asRoot) {
    const uid = Number((await run("id", ["-u", "postgres"])).stdout.trim());
    const gid = Number((await run("id", ["-g", "postgres"])).stdout.trim());
    chownSync(dir, uid, gid);
  }
  const pg = (program: string, args: string[]) =>
    asRoot
      ? run("runuser", ["-u", "postgres", "--", join(bin, program), ...args])
      : run(join(bin, program), args);
  const data = join(dir, "data");
  const port = await freePort();
  try {
    await pg("initdb", [
      "-D",
      data,
      "-U",
      "postgres",
      "--auth=trust",
      "-E",
      "UTF8",
      "--locale=C.UTF-8",
    ]);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${(err as Error).message}`);
  }
  const settings = Object.entries(options.settings ?? {})
    .map(([k, v]) => ` -c ${k}=${v}`)
    .join("");
  const serverOptions = `-p ${port} -k ${dir} -h 127.0.0.1${settings}`;
  const log = join(dir, "postgres.log");
  const start = async () => {
    await pg("pg_ctl", ["-D", data, "-l", log, "-w", "-t", "60", "-o", serverOptions, "start"]);
  };
  // A process that exits without destroy() does not leave its server running.
  const atExit = () => removeCluster(dir, bin, asRoot);
  process.once("exit", atExit);
  await start();
  const version = (await run(join(bin, "postgres"), ["--version"])).stdout
    .trim()
    .replace(/^postgres \(PostgreSQL\) /, "PostgreSQL ");
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    version,
    start,
    async stop() {
      await pg("pg_ctl", ["-D", data, "-m", "fast", "-w", "-t", "60", "stop"]);
    },
    async destroy() {
      process.removeListener("exit", atExit);
      await pg("pg_ctl", ["-D", data, "-m", "immediate", "-w", "stop"]).catch(() => {});
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
