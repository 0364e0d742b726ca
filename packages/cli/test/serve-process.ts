import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";

/** The repository's root, and the CLI's entry point run from its sources. */
export const root = fileURLToPath(new URL("../../../", import.meta.url));
export const bin = join(root, "packages/cli/src/bin.ts");
export const tsx = join(root, "node_modules/tsx/dist/cli.mjs");
/** The environment the CLI runs in under test: worker detection off, no admin key given. */
export const cliEnv = {
  ...process.env,
  TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json"),
  FLOTILLA_DETECT_WORKERS: "false",
  FLOTILLA_ADMIN_KEY: "",
};

const children = new Set<ChildProcess>();
const dirs: string[] = [];

/** A temporary directory removed by {@link cleanUpServes}. */
export function tempDir(prefix = "flotilla-cli-"): string {
  const d = mkdtempSync(join(tmpdir(), prefix));
  dirs.push(d);
  return d;
}

/** Kills every server {@link spawnServe} started and removes the temporary directories (afterAll). */
export function cleanUpServes(): void {
  for (const c of children) c.kill("SIGKILL");
  children.clear();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
}

/** A `flotilla serve` child process and what it printed. */
export interface ServeProcess {
  child: ChildProcess;
  out(): string;
  /** Resolves with the first match of `re` in the output; rejects if the server exits first or after 60 s. */
  printed(re: RegExp, what: string): Promise<RegExpExecArray>;
  /** Resolves once the whole start-up banner is printed: the URL, and the admin key when one was generated. */
  ready(): Promise<{ url: string; key?: string }>;
}

/**
 * Spawns `flotilla serve --port 0 --log-level warn <args>` from the sources, worker detection
 * off and no admin key from the environment. `oneProcess`: tsx loaded into the server's own
 * process (so a signal or SIGKILL reaches the server itself, not a tsx parent).
 */
export function spawnServe(args: string[], { oneProcess = false } = {}): ServeProcess {
  const launcher = oneProcess ? ["--import", "tsx", bin] : [tsx, bin];
  const child = spawn(
    process.execPath,
    [...launcher, "serve", "--port", "0", "--log-level", "warn", ...args],
    {
      cwd: root,
      env: cliEnv,
    },
  );
  children.add(child);
  let out = "";
  child.stdout!.on("data", (d) => {
    out += d;
  });
  child.stderr!.on("data", (d) => {
    out += d;
  });
  const printed = (re: RegExp, what: string) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ${what} within 60 s:\n${out}`)), 60_000);
      const check = () => {
        const m = re.exec(out);
        if (m) {
          clearTimeout(t);
          resolve(m);
        }
      };
      child.stdout!.on("data", check);
      child.stderr!.on("data", check);
      child.on("exit", (code) => {
        clearTimeout(t);
        reject(new Error(`serve exited (${code}) before ${what}:\n${out}`));
      });
      check();
    });
  // The start-up banner ends with the whole line about the admin key.
  const ready = async () => {
    const m = await printed(
      /listening on (http:\/\/\S+)[\s\S]*\n(?:Auth|Admin key)[^\n]*\n/,
      "start-up",
    );
    const key = /Admin key \(shown once[^)]*\): (\S+)/.exec(out)?.[1];
    return { url: m[1]!, ...(key ? { key } : {}) };
  };
  return { child, out: () => out, printed, ready };
}

/** Runs one statement on the database at `url` with a connection of its own. */
export async function queryDatabase<R extends pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Waits until `cond()` holds (checked every 100 ms), failing after `ms` naming `what`. */
export async function until(
  cond: () => boolean | Promise<boolean>,
  what: string,
  ms = 60_000,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
