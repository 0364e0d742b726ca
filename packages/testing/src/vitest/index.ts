/**
 * The conformance suites as vitest `describe` blocks. A separate entry point
 * (`@flotilla/testing/vitest`), so that importing `@flotilla/testing` for a `FakeClock` or a
 * fixture never loads vitest.
 *
 * @example
 * ```ts
 * import { describeStoreConformance, describeWorkerConformance } from "@flotilla/testing/vitest";
 * ```
 */
export { describeStoreConformance } from "./store.js";
export { describeWorkerConformance } from "./worker.js";
