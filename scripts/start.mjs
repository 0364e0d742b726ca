#!/usr/bin/env node
// `npm start`: the main job. Builds the packages (cached by turbo) and starts the standalone
// server (`flotilla serve`) on its embedded SQLite store in `.flotilla/` at the repository
// root. Extra arguments go to `flotilla serve`: `npm start -- --port 9000 --open`.
import { spawn, spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const build = spawnSync(
  "npx",
  ["turbo", "run", "build", "--filter=@flotilla/cli...", "--output-logs=errors-only"],
  { cwd: root, stdio: "inherit", env: { ...process.env, TURBO_TELEMETRY_DISABLED: "1" } },
);
if (build.status !== 0) process.exit(build.status ?? 1);

const args = process.argv.slice(2);
const hasDataDir = args.some((a) => a === "--data-dir" || a.startsWith("--data-dir="));
const child = spawn(
  process.execPath,
  [
    join(root, "packages/cli/dist/bin.js"),
    "serve",
    ...(hasDataDir ? [] : ["--data-dir", join(root, ".flotilla")]),
    ...args,
  ],
  { cwd: root, stdio: "inherit" },
);
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => child.kill(sig));
child.on("exit", (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
