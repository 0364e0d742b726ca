#!/usr/bin/env node
// Starts the standalone Flotilla server (`flotilla serve`) from source, with its data in
// `.flotilla/` at the repository root. Extra arguments go to `flotilla serve`
// (e.g. `node scripts/serve.mjs --port 9000 --allow-hosts api.github.com`).
// Runs on the repository's pinned Node (node:sqlite needs Node 22.5+), through tsx, so no
// build step is needed; `npm run build` produces the published `flotilla` bin instead.
import { join } from "node:path";
import { root, runCli } from "./run-cli.mjs";

const args = process.argv.slice(2);
const hasDataDir = args.some((a) => a === "--data-dir" || a.startsWith("--data-dir="));
runCli(["serve", ...(hasDataDir ? [] : ["--data-dir", join(root, ".flotilla")]), ...args], {
  cwd: root,
});
