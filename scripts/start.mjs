#!/usr/bin/env node
// `npm start`: the main job. Runs the basic example.
import { spawnSync } from "node:child_process";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const r = spawnSync("npm", ["start", "--silent"], {
  cwd: join(root, "examples/basic"),
  stdio: "inherit",
});
process.exit(r.status ?? 1);
