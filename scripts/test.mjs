#!/usr/bin/env node
// The whole test run: provisions what the tests need (container engines, browser, Redis, PostgreSQL),
// then lint, typecheck, unit and integration tests, examples, package checks.
// Usage: npm test [-- <vitest filters>]   (with filters: provisioning + matching tests only)
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const filters = process.argv.slice(2);
const env = { ...process.env, TURBO_TELEMETRY_DISABLED: "1" };
const testEnv = join(root, "scripts/test-env.sh");
const envFile = join(root, ".test-env/env.json");
const report = join(root, ".test-env/vitest-report.json");
// The benchmark smoke run measures real time (rate-limit windows), so it runs on its own,
// after the other tests, never beside them.
const benchReport = join(root, ".test-env/vitest-bench-report.json");
let provisioned = false;

function teardown() {
  if (provisioned && !process.env.FLOTILLA_KEEP_TEST_ENV) {
    spawnSync("bash", [testEnv, "down"], { cwd: root, stdio: "inherit", env });
    provisioned = false;
  }
}

function summary() {
  if (!existsSync(report)) return;
  const r = JSON.parse(readFileSync(report, "utf8"));
  const skipped = (r.numPendingTests ?? 0) + (r.numTodoTests ?? 0);
  console.log(
    `\nTests: ${r.numPassedTests} passed, ${r.numFailedTests} failed, ${skipped} skipped`,
  );
}

const failed = [];

/** Runs one step; a failed step is recorded (and, with `fatal`, ends the run at once). */
function run(title, cmd, args, { fatal = false } = {}) {
  console.log(`\n=== ${title}: ${cmd} ${args.join(" ")}`);
  const started = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: "inherit", env });
  const secs = ((Date.now() - started) / 1000).toFixed(1);
  if (r.status === 0) {
    console.log(`=== ${title} ok (${secs}s)`);
    return;
  }
  console.error(`\n=== ${title} failed (exit ${r.status ?? r.signal}) after ${secs}s`);
  failed.push(title);
  if (fatal) finish();
}

function finish() {
  teardown();
  summary();
  if (failed.length) console.error(`\nFailed steps: ${failed.join(", ")}`);
  process.exit(failed.length ? 1 : 0);
}

rmSync(report, { force: true });
rmSync(benchReport, { force: true });
if (existsSync(testEnv) && !process.env.FLOTILLA_SKIP_TEST_ENV) {
  run("provision test environment", "bash", [testEnv, "up"], { fatal: true });
  provisioned = true;
  if (existsSync(envFile)) Object.assign(env, JSON.parse(readFileSync(envFile, "utf8")));
}

if (filters.length === 0) {
  run("lint", "npx", ["biome", "check", "."]);
  run("typecheck", "npx", ["turbo", "run", "typecheck", "--output-logs=errors-only"]);
  run("public API docs", "node", ["scripts/check-docs.mjs"]);
  run("doc examples compile", "node", ["scripts/check-examples.mjs"]);
}
const vitest = (out, extra) => [
  "vitest",
  "run",
  "--reporter=default",
  "--reporter=json",
  `--outputFile.json=${out}`,
  ...extra,
];
if (filters.length === 0) {
  run("tests", "npx", vitest(report, ["--exclude", "bench/test/**"]));
  run("benchmark smoke (correctness checks)", "npx", vitest(benchReport, ["bench/test"]));
} else {
  run("tests", "npx", vitest(report, filters));
}
if (filters.length === 0) {
  run("examples", "node", ["scripts/run-examples.mjs"]);
  run("build and package checks", "npx", [
    "turbo",
    "run",
    "check:package",
    "--output-logs=errors-only",
  ]);
}
finish();
