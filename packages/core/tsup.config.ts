import { defineConfig } from "tsup";

export default defineConfig({
  // `sqlite/index` is the `@flotilla/core/sqlite` subpath: it alone imports `node:sqlite`.
  entry: {
    index: "src/index.ts",
    "sqlite/index": "src/sqlite/index.ts",
    "store/index": "src/store/index.ts",
    "testing/index": "src/testing/index.ts",
  },
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node22",
  // Shared code (errors, clock) lives in one chunk for both formats, so `instanceof
  // FlotillaError` holds across entry points in CommonJS too.
  splitting: true,
  // Keep `node:` specifiers: `node:sqlite` has no bare `sqlite` alias.
  removeNodeProtocol: false,
});
