import { fileURLToPath } from "node:url";
import { defineConfig } from "vitest/config";

const src = (pkg: string, file = "index.ts") =>
  fileURLToPath(new URL(`./packages/${pkg}/src/${file}`, import.meta.url));

/**
 * Tests run against source: every `@flotilla/*` import resolves to the package's
 * `src/` entry, so no build is needed before `vitest`.
 */
export default defineConfig({
  resolve: {
    alias: [
      { find: /^@flotilla\/core\/(.+)$/, replacement: src("core", "$1/index.ts") },
      { find: /^@flotilla\/testing\/(.+)$/, replacement: src("testing", "$1/index.ts") },
      { find: /^@flotilla\/([a-z-]+)$/, replacement: src("$1") },
    ],
  },
  test: {
    include: [
      "packages/*/src/**/*.test.ts",
      "packages/*/test/**/*.test.ts",
      "examples/*/test/**/*.test.ts",
      "bench/test/**/*.test.ts",
      "docs/test/**/*.test.ts",
    ],
    testTimeout: 20_000,
    hookTimeout: 60_000,
    pool: "forks",
    maxWorkers: 2,
  },
});
