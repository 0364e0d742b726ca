#!/usr/bin/env node
// Starts the standalone Flotilla server (`flotilla serve`) from source, with its data in
// `.flotilla/` at the repository root. Extra arguments go to `flotilla serve`
// (e.g. `node scripts/serve.mjs --port 9000 --allow-hosts api.github.com`).
// Runs on the repository's pinned Node through tsx, so no build step is needed;
// `npm start` builds the packages and runs the published `flotilla` bin instead.
import { root, runCli, serveArgs } from "./run-cli.mjs";

runCli(serveArgs(process.argv.slice(2)), { cwd: root });
