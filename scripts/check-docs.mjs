#!/usr/bin/env node
// Checks the documentation of every published package's public API.
//
// For each package under packages/ that is not private, the entries are `src/index.ts` and the
// `src/<sub>/index.ts` of every subpath listed in its package.json `exports`. Everything those
// entries export is resolved to its declaration, and the checker reports:
//   - an exported function or class without a JSDoc comment carrying an `@example`;
//   - a public method of an exported class without a JSDoc comment carrying an `@example`
//     (a doc comment inherited from the base class or implemented interface member counts;
//     runtime protocol members such as `toJSON` and symbol-keyed methods are exempt);
//   - an exported const without a JSDoc comment (with an `@example` when its value is a function);
//   - a property of an exported options interface (a name ending in `Options`) without a doc comment.
// It prints one line per finding (`file:line  kind  name  problem`) and exits 1 if there is any.
//
// Usage: node scripts/check-docs.mjs [package-name-substring…]
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const filters = process.argv.slice(2);

/** Entry files of every published package, as { pkg, entry } pairs. */
function entries() {
  const out = [];
  const dir = join(root, "packages");
  for (const name of readdirSync(dir).sort()) {
    const pkgFile = join(dir, name, "package.json");
    if (!existsSync(pkgFile)) continue;
    const pkg = JSON.parse(readFileSync(pkgFile, "utf8"));
    if (pkg.private) continue;
    if (filters.length && !filters.some((f) => pkg.name.includes(f))) continue;
    const subs = Object.keys(pkg.exports ?? { ".": null }).filter(
      (k) => !k.endsWith(".json") && !k.includes("*"),
    );
    for (const sub of subs.length ? subs : ["."]) {
      const file =
        sub === "."
          ? join(dir, name, "src", "index.ts")
          : join(dir, name, "src", sub.replace(/^\.\//, ""), "index.ts");
      if (existsSync(file)) out.push({ pkg: pkg.name + (sub === "." ? "" : sub.slice(1)), file });
      else out.push({ pkg: pkg.name + sub.slice(1), file, missing: true });
    }
  }
  return out;
}

const list = entries();
const config = ts.readConfigFile(join(root, "tsconfig.base.json"), ts.sys.readFile).config;
const parsed = ts.parseJsonConfigFileContent(
  { ...config, include: [] },
  ts.sys,
  root,
  undefined,
  "tsconfig.base.json",
);
const program = ts.createProgram({
  rootNames: list.filter((e) => !e.missing).map((e) => e.file),
  options: { ...parsed.options, noEmit: true },
});
const checker = program.getTypeChecker();

/** JSDoc blocks attached to a declaration (a variable's are on its statement). */
function jsDocsOf(node) {
  let target = node;
  if (ts.isVariableDeclaration(node)) target = node.parent?.parent ?? node;
  return (target.jsDoc ?? []).filter((d) => ts.isJSDoc(d));
}
const hasDoc = (node) =>
  jsDocsOf(node).some((d) => (d.comment && String(d.comment).trim()) || d.tags?.length);
const hasExample = (node) =>
  jsDocsOf(node).some((d) => (d.tags ?? []).some((t) => t.tagName.text === "example"));

const findings = [];
const seen = new Set();
function report(node, kind, name, problem, pkg) {
  const sf = node.getSourceFile();
  const { line } = sf.getLineAndCharacterOfPosition(node.getStart());
  const where = `${relative(root, sf.fileName)}:${line + 1}`;
  const key = `${where} ${name}`;
  if (seen.has(key)) return;
  seen.add(key);
  findings.push({ pkg, where, kind, name, problem });
}

const isPublicMember = (m) => {
  const flags = ts.getCombinedModifierFlags(m);
  if (flags & (ts.ModifierFlags.Private | ts.ModifierFlags.Protected)) return false;
  if (m.name && ts.isPrivateIdentifier(m.name)) return false;
  return true;
};

/** A doc comment with `@example` on the same-named member of a base class or interface. */
function inheritedExample(cls, memberName) {
  for (const clause of cls.heritageClauses ?? []) {
    for (const t of clause.types) {
      const type = checker.getTypeAtLocation(t.expression);
      const base = checker.getTypeAtLocation(t);
      for (const ty of [base, type]) {
        const prop = ty.getProperty?.(memberName);
        for (const d of prop?.declarations ?? []) {
          if (hasExample(d)) return true;
          if (ts.isClassDeclaration(d.parent) && inheritedExample(d.parent, memberName))
            return true;
        }
      }
    }
  }
  return false;
}

function checkClass(decl, name, pkg) {
  if (!hasExample(decl)) report(decl, "class", name, "no JSDoc @example", pkg);
  for (const m of decl.members) {
    if (!ts.isMethodDeclaration(m) || !isPublicMember(m) || !m.name) continue;
    if (!m.body && decl.members.some((o) => o !== m && o.name?.getText() === m.name.getText()))
      continue; // overload signature: the implementation or first signature is checked below
    // Runtime protocol members (`toJSON`, symbol-keyed ones such as the inspect hook) are
    // called by the runtime, not by users.
    if (ts.isComputedPropertyName(m.name)) continue;
    const mName = m.name.getText();
    if (mName.startsWith("_") || mName === "toJSON") continue;
    const sigs = decl.members.filter(
      (o) => ts.isMethodDeclaration(o) && o.name?.getText() === mName,
    );
    if (sigs.some(hasExample) || inheritedExample(decl, mName)) continue;
    report(m, "method", `${name}.${mName}`, "no JSDoc @example", pkg);
  }
}

function checkOptions(decl, name, pkg) {
  const members = ts.isInterfaceDeclaration(decl)
    ? decl.members
    : ts.isTypeAliasDeclaration(decl) && ts.isTypeLiteralNode(decl.type)
      ? decl.type.members
      : [];
  for (const m of members) {
    if (!m.name) continue;
    if (!hasDoc(m)) report(m, "option", `${name}.${m.name.getText()}`, "no doc comment", pkg);
  }
}

for (const { pkg, file, missing } of list) {
  if (missing) {
    findings.push({
      pkg,
      where: relative(root, file),
      kind: "entry",
      name: pkg,
      problem: "missing",
    });
    continue;
  }
  const sf = program.getSourceFile(file);
  const modSym = sf && checker.getSymbolAtLocation(sf);
  if (!modSym) continue;
  for (const exp of checker.getExportsOfModule(modSym)) {
    const sym = exp.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(exp) : exp;
    const name = exp.getName();
    const decls = (sym.declarations ?? []).filter((d) => !d.getSourceFile().isDeclarationFile);
    const fns = decls.filter(ts.isFunctionDeclaration);
    if (fns.length) {
      if (!fns.some(hasExample)) report(fns[0], "function", name, "no JSDoc @example", pkg);
      continue;
    }
    for (const d of decls) {
      if (ts.isClassDeclaration(d)) checkClass(d, name, pkg);
      else if (ts.isVariableDeclaration(d)) {
        const init = d.initializer;
        const fnValued = init && (ts.isArrowFunction(init) || ts.isFunctionExpression(init));
        if (fnValued && !hasExample(d)) report(d, "function", name, "no JSDoc @example", pkg);
        else if (!fnValued && !hasDoc(d)) report(d, "const", name, "no JSDoc comment", pkg);
      } else if (
        /Options$/.test(name) &&
        (ts.isInterfaceDeclaration(d) || ts.isTypeAliasDeclaration(d))
      )
        checkOptions(d, name, pkg);
    }
  }
}

findings.sort((a, b) => a.where.localeCompare(b.where, undefined, { numeric: true }));
for (const f of findings) console.log(`${f.where}  ${f.kind}  ${f.name}  ${f.problem}`);
const byPkg = {};
for (const f of findings) byPkg[f.pkg] = (byPkg[f.pkg] ?? 0) + 1;
if (findings.length) {
  console.error(
    `\ncheck-docs: ${findings.length} undocumented public API item(s): ${Object.entries(byPkg)
      .map(([p, n]) => `${p} ${n}`)
      .join(", ")}`,
  );
  process.exit(1);
}
console.log(`check-docs: ${list.length} entries, every public API item documented`);
