// Runs the `flotilla` CLI on the repository's pinned Node (node:sqlite needs Node 22.5+):
// from source (packages/cli/src/bin.ts) through tsx, so no build step is needed, or the
// built bin (packages/cli/dist/bin.js). Shared by scripts/flotilla.mjs, serve.mjs, start.mjs.
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
 * @param {{ cwd?: string, built?: boolean }} [options] `cwd`: the CLI's working directory
 *   (default: this one); `built`: run packages/cli/dist/bin.js instead of the sources
 */
export function runCli(args, options = {}) {
  const pinnedNode = join(root, "node_modules/.bin/node");
  const node = existsSync(pinnedNode) ? pinnedNode : process.execPath;
  const tsx = join(root, "node_modules/tsx/dist/cli.mjs");
  if (!options.built && !existsSync(tsx)) {
    console.error("tsx is missing: run `npm ci` at the repository root first");
    process.exit(1);
  }
  const entry = options.built
    ? [join(root, "packages/cli/dist/bin.js")]
    : [tsx, join(root, "packages/cli/src/bin.ts")];
  const child = spawn(node, [...entry, ...args], {
    ...(options.cwd ? { cwd: options.cwd } : {}),
    stdio: "inherit",
    env: { ...process.env, TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json") },
  });
  for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
  child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
}

/**
 * `flotilla serve` arguments with the data directory defaulting to `.flotilla/` at the
 * repository root, unless `args` names one.
 *
 * @param {string[]} args extra `flotilla serve` arguments
 */
export function serveArgs(args) {
  const hasDataDir = args.some((a) => a === "--data-dir" || a.startsWith("--data-dir="));
  return ["serve", ...(hasDataDir ? [] : ["--data-dir", join(root, ".flotilla")]), ...args];
}
