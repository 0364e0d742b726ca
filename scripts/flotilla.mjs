#!/usr/bin/env node
// Runs the `flotilla` command from source on the repository's pinned Node, without a build:
//   node scripts/flotilla.mjs task list --api-key flt_…
//   node scripts/flotilla.mjs task watch <task-id>
// (`node scripts/serve.mjs` is the shortcut for `serve` with the data in `.flotilla/`.)
import { runCli } from "./run-cli.mjs";

runCli(process.argv.slice(2));
