#!/usr/bin/env node
// `npm start`: the main job. Builds the packages (cached by turbo) and starts the standalone
// server (`flotilla serve`, the built bin) on its embedded SQLite store in `.flotilla/` at the
// repository root. Extra arguments go to `flotilla serve`: `npm start -- --port 9000 --open`.
import { spawnSync } from "node:child_process";
import { root, runCli, serveArgs } from "./run-cli.mjs";

const build = spawnSync(
  "npx",
  ["turbo", "run", "build", "--filter=@flotilla/cli...", "--output-logs=errors-only"],
  { cwd: root, stdio: "inherit", env: { ...process.env, TURBO_TELEMETRY_DISABLED: "1" } },
);
if (build.status !== 0) process.exit(build.status ?? 1);
runCli(serveArgs(process.argv.slice(2)), { cwd: root, built: true });
