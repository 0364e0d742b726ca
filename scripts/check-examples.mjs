#!/usr/bin/env node
// Type-checks the `@example` code of every JSDoc comment in the packages' sources, so an
// example that calls a method that does not exist, passes a wrong argument or imports a name
// a package does not export fails the test run instead of misleading a reader.
//
// Each example becomes its own module. Examples are fragments: the names they use without
// declaring them (`orchestrator`, `task`, `store`, …) are declared once, globally, with
// their real types (see PRELUDE), so a call on them is checked against the real API; any
// other undeclared name is ignored, as are the errors that only say a fragment is a
// fragment. What is reported: calls and properties that do not exist, wrong arguments, wrong
// object fields, and imports of names a package does not export.
//
// Usage: node scripts/check-examples.mjs [path-substring…]
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const filters = process.argv.slice(2);

/** Names examples use without declaring them, with their real types. */
const PRELUDE = `
import type * as core from "@flotilla/core";
import type * as http from "@flotilla/http-adapter";
import type * as remote from "@flotilla/workers-remote";
import type * as testing from "@flotilla/testing";
declare global {
  const orchestrator: core.Orchestrator;
  const engine: core.EngineApi;
  const registry: core.WorkerRegistry;
  const store: core.Store;
  const task: core.TaskRecord;
  const handle: core.TaskHandle;
  const budgets: core.Budgets;
  const limiter: core.RateLimiter;
  const resources: core.ResourceManager;
  const pool: core.WorkerPool;
  const clock: testing.FakeClock;
  const app: http.FlotillaApp;
  const client: remote.FleetClient;
  const assignment: remote.TaskAssignment;
}
export {};
`;

/** Error codes that say an API is misused (everything else is a fragment's looseness). */
const REPORTED = new Set([
  2305, // module has no exported member
  2724, // has no exported member named X. Did you mean
  2339, // property does not exist on type
  2551, // property does not exist on type. Did you mean
  2554, // expected N arguments
  2555, // expected at least N arguments
  2345, // argument not assignable to parameter
  2353, // object literal may only specify known properties
  2561, // object literal may only specify known properties. Did you mean
]);

function sourceFiles(dir, out = []) {
  for (const d of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, d.name);
    if (d.isDirectory()) {
      if (d.name !== "node_modules" && d.name !== "dist") sourceFiles(p, out);
    } else if (d.name.endsWith(".ts") && !d.name.includes(".test") && !d.name.endsWith(".d.ts")) {
      out.push(p);
    }
  }
  return out;
}

/** The ```ts blocks of the @example tags of a file, with the line each starts on. */
function examplesOf(file) {
  const text = readFileSync(file, "utf8");
  const out = [];
  const lines = text.split("\n");
  let inExample = false;
  let block;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].replace(/^\s*\*\s?/, "");
    if (/^\s*\*\s*@example/.test(lines[i])) inExample = true;
    else if (/^\s*\*\s*@\w+/.test(lines[i]) || /\*\//.test(lines[i])) {
      if (!block) inExample = false;
    }
    if (!inExample) continue;
    if (!block && /^```(ts|typescript)\s*$/.test(line.trim())) {
      block = { line: i + 2, code: [] };
    } else if (block && line.trim() === "```") {
      out.push({ line: block.line, code: block.code.join("\n") });
      block = undefined;
      inExample = false;
    } else if (block) block.code.push(line);
  }
  return out;
}

const files = ["packages"].flatMap((d) => sourceFiles(join(root, d)));
const virtual = new Map();
const origin = new Map();
const prelude = join(root, "packages/__examples__/prelude.d.ts");
virtual.set(prelude, PRELUDE);
let n = 0;
for (const file of files) {
  const rel = relative(root, file);
  if (filters.length && !filters.some((f) => rel.includes(f))) continue;
  for (const ex of examplesOf(file)) {
    const name = join(root, `packages/__examples__/ex${n++}.ts`);
    // A module of its own, so that examples never clash with one another.
    virtual.set(name, `${ex.code}\nexport {};\n`);
    origin.set(name, { file: rel, line: ex.line });
  }
}

const config = ts.readConfigFile(join(root, "tsconfig.base.json"), ts.sys.readFile).config;
const { options } = ts.convertCompilerOptionsFromJson(config.compilerOptions, root);
options.noEmit = true;
options.baseUrl = root;
options.noUnusedLocals = false;
const host = ts.createCompilerHost(options);
const read = host.readFile.bind(host);
const exists = host.fileExists.bind(host);
const getSource = host.getSourceFile.bind(host);
host.readFile = (f) => virtual.get(f) ?? read(f);
host.fileExists = (f) => virtual.has(f) || exists(f);
host.getSourceFile = (f, lang, onError, create) =>
  virtual.has(f)
    ? ts.createSourceFile(f, virtual.get(f), lang, true)
    : getSource(f, lang, onError, create);
const program = ts.createProgram([...virtual.keys()], options, host);

let problems = 0;
for (const [name, where] of origin) {
  const sf = program.getSourceFile(name);
  for (const d of program.getSemanticDiagnostics(sf)) {
    if (!REPORTED.has(d.code)) continue;
    const { line } = sf.getLineAndCharacterOfPosition(d.start ?? 0);
    const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n").split("\n")[0];
    console.log(`${where.file}:${where.line + line}  @example  TS${d.code}: ${msg}`);
    problems++;
  }
}
console.log(
  problems === 0
    ? `check-examples: ${origin.size} examples type-checked, no misuse of the API`
    : `check-examples: ${problems} problem(s) in ${origin.size} examples`,
);
process.exit(problems === 0 ? 0 : 1);
