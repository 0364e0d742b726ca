// Runs the `flotilla` CLI from source (packages/cli/src/bin.ts) through tsx on the
// repository's pinned Node (node:sqlite needs Node 22.5+), so no build step is needed.
// Shared by scripts/flotilla.mjs and scripts/serve.mjs.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository root. */
export const root = join(dirname(fileURLToPath(import.meta.url)), "..");

/**
 * Starts the CLI with `args`, forwards SIGINT and SIGTERM to it, and exits with its code.
 *
 * @param {string[]} args the CLI's arguments, e.g. `["task", "list"]`
 * @param {{ cwd?: string }} [options] `cwd`: the CLI's working directory (default: this one)
 */
export function runCli(args, options = {}) {
  const pinnedNode = join(root, "node_modules/.bin/node");
  const node = existsSync(pinnedNode) ? pinnedNode : process.execPath;
  const tsx = join(root, "node_modules/tsx/dist/cli.mjs");
  if (!existsSync(tsx)) {
    console.error("tsx is missing: run `npm ci` at the repository root first");
    process.exit(1);
  }
  const child = spawn(node, [tsx, join(root, "packages/cli/src/bin.ts"), ...args], {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdio: "inherit",
    env: { ...process.env, TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json") },
  });
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}
