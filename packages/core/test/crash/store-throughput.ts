// Measures SqliteStore write throughput with and without batching.
// Run from the repository root: npx tsx packages/core/test/crash/store-throughput.ts
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  FunctionWorker,
  MemoryStore,
  Orchestrator,
  type Store,
  type TaskRecord,
} from "../../src/index.js";
import { SqliteStore, type SqliteStoreOptions } from "../../src/sqlite/index.js";

function record(id: string, seq: number): TaskRecord {
  return {
    id,
    type: "llm_request",
    payload: { messages: [{ role: "user", content: `task ${seq} `.repeat(8) }] },
    priority: 20,
    seq,
    status: "queued",
    dependsOn: [],
    onDependencyFailure: "skip",
    retry: { maxAttempts: 3, initialDelayMs: 1000, maxDelayMs: 60000, factor: 2, jitter: 0.2 },
    rateLimitKeys: ["openai"],
    approval: "none",
    metadata: { source: "bench" },
    attempt: 0,
    createdAt: Date.now(),
    updatedAt: Date.now(),
    version: 1,
  };
}

async function run(label: string, n: number, options: Omit<SqliteStoreOptions, "path">) {
  const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-"));
  const store = new SqliteStore({ path: join(dir, "bench.db"), ...options });
  await store.open();
  const tasks = Array.from({ length: n }, (_, i) => record(`t${i}`, i));
  const rate = (ms: number) => Math.round((n / ms) * 1000);

  let t0 = performance.now();
  await Promise.all(tasks.map((t) => store.insertTasks([t])));
  const concurrentInsert = performance.now() - t0;

  t0 = performance.now();
  await Promise.all(
    tasks.map((t) => store.saveTask({ ...t, status: "running", attempt: 1, version: 2 }, 1)),
  );
  const concurrentSave = performance.now() - t0;

  const m = Math.min(n, 500);
  t0 = performance.now();
  for (let i = 0; i < m; i++) {
    const t = tasks[i]!;
    await store.saveTask({ ...t, status: "succeeded", version: 3 }, 2);
  }
  const sequentialSave = performance.now() - t0;
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(
    `${label.padEnd(34)} n=${String(n).padStart(5)}  concurrent insert ${String(rate(concurrentInsert)).padStart(7)}/s  concurrent CAS save ${String(rate(concurrentSave)).padStart(7)}/s  awaited one-by-one save ${String(Math.round((m / sequentialSave) * 1000)).padStart(6)}/s`,
  );
}

async function bulk(n: number) {
  const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-"));
  const store = new SqliteStore({ path: join(dir, "bench.db") });
  await store.open();
  const tasks = Array.from({ length: n }, (_, i) => record(`t${i}`, i));
  const t0 = performance.now();
  await store.insertTasks(tasks);
  const ms = performance.now() - t0;
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(`one insertTasks call of ${n}: ${Math.round((n / ms) * 1000)} tasks/s`);
}

await run("batched, synchronous=FULL", 10_000, {});
await run("batched, synchronous=NORMAL", 10_000, { synchronous: "normal" });
await run("unbatched, synchronous=FULL", 2_000, { batchWrites: false });
await run("unbatched, synchronous=NORMAL", 2_000, { batchWrites: false, synchronous: "normal" });
await bulk(10_000);

/** End to end: an orchestrator running no-op tasks on each store. */
async function endToEnd(label: string, makeStore: (path: string) => Store, n = 5_000) {
  const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-"));
  const store = makeStore(join(dir, "e2e.db"));
  const orchestrator = new Orchestrator({ store });
  await orchestrator.register(
    new FunctionWorker({ id: "w", taskTypes: ["noop"], maxConcurrency: 64, fn: async () => 1 }),
  );
  await orchestrator.start();
  const t0 = performance.now();
  const handles = await orchestrator.submitBatch(
    Array.from({ length: n }, () => ({ type: "noop" })),
  );
  await Promise.all(handles.map((h) => h.result()));
  const ms = performance.now() - t0;
  await orchestrator.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  console.log(`end to end, ${label.padEnd(28)} ${Math.round((n / ms) * 1000)} tasks/s`);
}

await endToEnd("MemoryStore", () => new MemoryStore());
await endToEnd("SqliteStore batched, full", (path) => new SqliteStore({ path }));
await endToEnd(
  "SqliteStore batched, normal",
  (path) => new SqliteStore({ path, synchronous: "normal" }),
);
await endToEnd(
  "SqliteStore unbatched, full",
  (path) => new SqliteStore({ path, batchWrites: false }),
);
