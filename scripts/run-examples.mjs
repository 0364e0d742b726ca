#!/usr/bin/env node
// Runs every example under examples/ (its `start` script) and fails if one fails.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const dir = join(root, "examples");
let failed = 0;
for (const name of readdirSync(dir).sort()) {
  const pkg = join(dir, name, "package.json");
  if (!existsSync(pkg) || !JSON.parse(readFileSync(pkg, "utf8")).scripts?.start) continue;
  console.log(`\n--- example ${name}`);
  const r = spawnSync("npm", ["start", "--silent"], {
    cwd: join(dir, name),
    stdio: "inherit",
    timeout: 120_000,
    env: { ...process.env, CI: "true" },
  });
  if (r.status !== 0) {
    failed++;
    console.error(`--- example ${name} failed (exit ${r.status ?? r.signal})`);
  }
}
process.exit(failed ? 1 : 0);
