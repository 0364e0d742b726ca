import { defineConfig } from "tsup";

export default defineConfig({
  entry: { index: "src/index.ts", "vitest/index": "src/vitest/index.ts" },
  // vitest is a peer dependency, loaded only by the ./vitest entry.
  external: ["vitest"],
  format: ["esm", "cjs"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node22",
});
