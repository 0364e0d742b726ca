#!/usr/bin/env node
// Runs one server example: starts `flotilla serve` on a free port with a fresh data dir and
// the example's flags, runs its demo.sh against it (FLOTILLA_URL, FLOTILLA_API_KEY,
// FLOTILLA_PID set, `flotilla` on PATH), then stops the server. Exit code: the demo's.
// Usage, from an example's directory: `npm start` (the repository's pinned Node), which runs
// node ../server-run.mjs [flotilla serve flags…]
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

// The CLI runs from its sources (no build needed), in one process so that signals reach it.
const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const bin = join(root, "packages/cli/src/bin.ts");
const tsx = pathToFileURL(join(root, "node_modules/tsx/dist/loader.mjs")).href;
const cliEnv = { TSX_TSCONFIG_PATH: join(root, "packages/cli/tsconfig.json") };
const work = mkdtempSync(join(tmpdir(), "flotilla-example-"));

// `flotilla` for the demo: the same sources.
const binDir = join(work, "bin");
mkdirSync(binDir);
writeFileSync(
  join(binDir, "flotilla"),
  `#!/usr/bin/env bash\nexec "${process.execPath}" --import "${tsx}" "${bin}" "$@"\n`,
);
chmodSync(join(binDir, "flotilla"), 0o755);

const key = `flt_example_${randomBytes(12).toString("hex")}`;
const server = spawn(
  process.execPath,
  [
    "--import",
    tsx,
    bin,
    "serve",
    "--port",
    "0",
    "--data-dir",
    join(work, "data"),
    "--no-detect-workers",
    ...process.argv.slice(2),
  ],
  {
    env: { ...process.env, ...cliEnv, FLOTILLA_ADMIN_KEY: key, FLOTILLA_LOG_LEVEL: "warn" },
    stdio: ["ignore", "pipe", "pipe"],
  },
);
let out = "";
server.stdout.on("data", (d) => {
  out += d;
});
server.stderr.on("data", (d) => process.stderr.write(d));
const url = await new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`flotilla serve did not start:\n${out}`)), 60_000);
  server.stdout.on("data", () => {
    const m = /listening on (http:\/\/\S+)/.exec(out);
    if (m && /^Fleet:/m.test(out)) {
      clearTimeout(t);
      resolve(m[1]);
    }
  });
  server.on("exit", (code) => reject(new Error(`flotilla serve exited (${code}):\n${out}`)));
});
console.log(`flotilla serve is up at ${url}\n`);
const demo = spawnSync("bash", ["demo.sh"], {
  stdio: "inherit",
  timeout: 120_000,
  env: {
    ...process.env,
    ...cliEnv,
    FLOTILLA_URL: url,
    FLOTILLA_API_KEY: key,
    FLOTILLA_PID: String(server.pid),
    PATH: `${binDir}:${process.env.PATH}`,
  },
});
const stopped = new Promise((r) => server.once("exit", r));
server.kill("SIGTERM");
await stopped;
rmSync(work, { recursive: true, force: true });
if (demo.status !== 0) console.error(`demo.sh failed (exit ${demo.status ?? demo.signal})`);
process.exit(demo.status ?? 1);
