/**
 * The code in the docs must keep compiling against the current sources. Every fenced
 * ```ts block that imports from `@flotilla/*` (in README.md's library quick start and in
 * docs/*.md) is a complete program by convention: this test writes each one to a module of
 * its own and typechecks them all with the repository's compiler options and path mappings.
 * Shorter ```ts blocks without such an import are fragments and are not checked.
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

interface Snippet {
  /** `docs/core.md:120` — the line of the opening fence. */
  where: string;
  code: string;
}

const FENCE = /^```ts[^\n]*\n([\s\S]*?)^```/gm;
const COMPLETE = /from\s+["']@flotilla\//;

/** The ```ts blocks of `text` that import from `@flotilla/*`, with the line they start on. */
function programsIn(file: string, text: string, offsetLines = 0): Snippet[] {
  const out: Snippet[] = [];
  for (const m of text.matchAll(FENCE)) {
    const code = m[1] ?? "";
    if (!COMPLETE.test(code)) continue;
    const line = text.slice(0, m.index).split("\n").length + offsetLines;
    out.push({ where: `${file}:${line}`, code });
  }
  return out;
}

function readmeQuickStart(): Snippet[] {
  const readme = readFileSync(join(root, "README.md"), "utf8");
  const start = readme.indexOf("## Library quick start");
  if (start < 0) return [];
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return programsIn("README.md", section, readme.slice(0, start).split("\n").length - 1);
}

function docSnippets(): Snippet[] {
  const dir = join(root, "docs");
  return readdirSync(dir)
    .filter((f) => f.endsWith(".md"))
    .sort()
    .flatMap((f) => programsIn(`docs/${f}`, readFileSync(join(dir, f), "utf8")));
}

/** Typechecks `snippets`; returns one message per error, naming the doc line it comes from. */
function typecheck(snippets: Snippet[]): string[] {
  // Inside the repository so `@types/node` and the packages' dependencies resolve.
  const dir = join(root, "node_modules", ".cache", "flotilla-doc-snippets");
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const files = new Map<string, Snippet>();
  snippets.forEach((s, i) => {
    const file = join(dir, `snippet-${i}.ts`);
    writeFileSync(file, s.code);
    files.set(file, s);
  });
  const base = ts.readConfigFile(join(root, "tsconfig.base.json"), ts.sys.readFile);
  const parsed = ts.parseJsonConfigFileContent(base.config, ts.sys, root);
  const program = ts.createProgram({
    rootNames: [...files.keys()],
    options: { ...parsed.options, noEmit: true, declaration: false, sourceMap: false },
  });
  const errors: string[] = [];
  for (const [file, snippet] of files) {
    const sf = program.getSourceFile(file);
    if (!sf) {
      errors.push(`${snippet.where}: not compiled`);
      continue;
    }
    const diagnostics = [
      ...program.getSyntacticDiagnostics(sf),
      ...program.getSemanticDiagnostics(sf),
    ];
    for (const d of diagnostics) {
      const line = d.start === undefined ? 0 : sf.getLineAndCharacterOfPosition(d.start).line;
      const [doc, fence] = snippet.where.split(":");
      const text = ts.flattenDiagnosticMessageText(d.messageText, "\n");
      errors.push(`${doc}:${Number(fence) + 1 + line}: TS${d.code} ${text}`);
    }
  }
  rmSync(dir, { recursive: true, force: true });
  return errors;
}

describe("documentation code", () => {
  const quickStart = readmeQuickStart();
  const docs = docSnippets();

  it("finds the README quick start and the docs' complete programs", () => {
    expect(quickStart).toHaveLength(1);
    expect(docs.length).toBeGreaterThan(10);
  });

  it("README quick start is the quickstart example, verbatim", () => {
    const main = readFileSync(join(root, "examples/quickstart/src/main.ts"), "utf8");
    expect(main).toContain(quickStart[0]?.code);
  });

  it("every complete program typechecks against the current sources", () => {
    const errors = typecheck([...quickStart, ...docs]);
    expect(errors).toEqual([]);
  }, 60_000);
});
