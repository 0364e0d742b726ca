import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const srcDir = resolve(dirname(fileURLToPath(import.meta.url)), "../src");

/** Every module specifier imported (statically or dynamically) by the files `entry` reaches. */
function reachableImports(entry: string): { files: string[]; bare: Set<string> } {
  const seen = new Set<string>();
  const bare = new Set<string>();
  const queue = [resolve(srcDir, entry)];
  while (queue.length > 0) {
    const file = queue.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    const text = readFileSync(file, "utf8");
    const re = /(?:\bfrom\s*|\bimport\s*\(?\s*)["']([^"']+)["']/g;
    for (const m of text.matchAll(re)) {
      const spec = m[1]!;
      if (spec.startsWith(".")) queue.push(resolve(dirname(file), spec.replace(/\.js$/, ".ts")));
      else bare.add(spec);
    }
  }
  return { files: [...seen], bare };
}

describe("entry points", () => {
  it("the main entry never imports vitest (FakeClock users need not install it)", () => {
    const main = reachableImports("index.ts");
    expect(main.bare.has("@flotilla/core/testing")).toBe(true); // where FakeClock comes from
    expect([...main.bare].filter((s) => s === "vitest" || s.startsWith("vitest/"))).toEqual([]);
  });

  it("the ./vitest entry holds the describe suites", async () => {
    expect(reachableImports("vitest/index.ts").bare.has("vitest")).toBe(true);
    const main = await import("@flotilla/testing");
    const suites = await import("@flotilla/testing/vitest");
    expect(typeof suites.describeWorkerConformance).toBe("function");
    expect(typeof suites.describeStoreConformance).toBe("function");
    expect("describeWorkerConformance" in main).toBe(false);
    expect("describeStoreConformance" in main).toBe(false);
    expect(typeof main.checkWorkerConformance).toBe("function");
    expect(typeof main.FakeClock).toBe("function");
  });
});
