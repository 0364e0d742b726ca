import { readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const src = fileURLToPath(new URL("..", import.meta.url));

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => {
    const path = join(dir, d.name);
    if (d.isDirectory()) return sources(path);
    return d.name.endsWith(".ts") && !d.name.includes(".test") ? [path] : [];
  });
}

/** `x.status = …`, `x.status ??= …`, `x["status"] = …` (not `==`/`===`). */
const ASSIGNS_STATUS = /(\.status|\[\s*["']status["']\s*\])\s*(\?\?|\|\||&&)?=(?!=)/;

describe("only the transitions part changes a task's status", () => {
  it("no other source file of the core assigns a status", () => {
    const offenders: string[] = [];
    for (const file of sources(src)) {
      const name = relative(src, file);
      if (name === join("orchestrator", "transitions.ts")) continue;
      readFileSync(file, "utf8")
        .split("\n")
        .forEach((line, i) => {
          if (ASSIGNS_STATUS.test(line)) offenders.push(`${name}:${i + 1}: ${line.trim()}`);
        });
    }
    expect(offenders).toEqual([]);
  });

  it("the check itself sees an assignment", () => {
    expect(ASSIGNS_STATUS.test("    live.rec.status = 'running';")).toBe(true);
    expect(ASSIGNS_STATUS.test('rec["status"] ??= x')).toBe(true);
    expect(ASSIGNS_STATUS.test("if (rec.status === 'queued')")).toBe(false);
  });
});
