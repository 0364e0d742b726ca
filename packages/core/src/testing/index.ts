// `@flotilla/core/testing`: what tests of code built on the core need and nothing that
// pulls in a test runner — a fake clock and small fixtures. `@flotilla/testing` re-exports
// them next to its conformance suites and protocol servers.
export { FakeClock, type FakeClockOptions } from "./fake-clock.js";
export { makeStubWorker, makeTaskRecord } from "./fixtures.js";
