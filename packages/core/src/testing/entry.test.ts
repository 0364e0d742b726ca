import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

describe("@flotilla/core/testing", () => {
  it("imports no test runner, so code under test never needs one installed", () => {
    const dir = dirname(fileURLToPath(import.meta.url));
    for (const f of readdirSync(dir).filter((n) => n.endsWith(".ts") && !n.includes(".test"))) {
      expect(readFileSync(`${dir}/${f}`, "utf8"), f).not.toMatch(/from\s+["']vitest/);
    }
  });

  it("the core, its tests included, never imports @flotilla/testing (which depends on it)", () => {
    const src = join(dirname(fileURLToPath(import.meta.url)), "..");
    const offenders: string[] = [];
    const walk = (dir: string) => {
      for (const d of readdirSync(dir, { withFileTypes: true })) {
        const p = join(dir, d.name);
        if (d.isDirectory()) walk(p);
        else if (
          d.name.endsWith(".ts") &&
          /from\s+["']@flotilla\/testing/.test(readFileSync(p, "utf8"))
        ) {
          offenders.push(p);
        }
      }
    };
    walk(src);
    expect(offenders).toEqual([]);
  });
});
