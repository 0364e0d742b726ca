#!/usr/bin/env node
// Starts the standalone Flotilla server (`flotilla serve`) from source, with its data in
// `.flotilla/` at the repository root. Extra arguments go to `flotilla serve`
// (e.g. `node scripts/serve.mjs --port 9000 --allow-hosts api.github.com`).
// Runs on the repository's pinned Node (node:sqlite needs Node 22.5+), through tsx, so no
// build step is needed; `npm run build` produces the published `flotilla` bin instead.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const pinnedNode = join(root, "node_modules/.bin/node");
const node = existsSync(pinnedNode) ? pinnedNode : process.execPath;
const tsx = join(root, "node_modules/tsx/dist/cli.mjs");
if (!existsSync(tsx)) {
  console.error("tsx is missing: run `npm ci` at the repository root first");
  process.exit(1);
}
const args = process.argv.slice(2);
const hasDataDir = args.some((a) => a === "--data-dir" || a.startsWith("--data-dir="));
const child = spawn(
  node,
  [
    tsx,
    join(root, "packages/cli/src/bin.ts"),
    "serve",
    ...(hasDataDir ? [] : ["--data-dir", join(root, ".flotilla")]),
    ...args,
  ],
  {
    cwd: root,
    stdio: "inherit",
    env: { ...process.env, TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json") },
  },
);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
