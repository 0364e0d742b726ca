#!/usr/bin/env node
// Runs the `flotilla` command from source on the repository's pinned Node, without a build:
//   node scripts/flotilla.mjs task list --api-key flt_…
//   node scripts/flotilla.mjs task watch <task-id>
// (`node scripts/serve.mjs` is the shortcut for `serve` with the data in `.flotilla/`.)
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
const child = spawn(node, [tsx, join(root, "packages/cli/src/bin.ts"), ...process.argv.slice(2)], {
  stdio: "inherit",
  env: { ...process.env, TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json") },
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
