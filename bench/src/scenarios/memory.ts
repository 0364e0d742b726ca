/**
 * Scenario 10: memory. The heap (after a full GC) an orchestrator on SQLite with its resource
 * gates holds: its fixed overhead, what each in-flight task adds, and that finished tasks do
 * not make it grow (its caches are bounded). Heap figures are taken after a full GC.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { FunctionWorker, Orchestrator, ResourceManager } from "@flotilla/core";
import { SqliteStore } from "@flotilla/core/sqlite";
import { type BenchContext, check, type Scenario } from "../report.js";

const NAME = "10. Memory";
const MiB = 1024 * 1024;

/** A full GC: the global one under --expose-gc, else one exposed at run time. */
const gc: () => void =
  (globalThis as { gc?: () => void }).gc ??
  (() => {
    setFlagsFromString("--expose-gc");
    return runInNewContext("gc") as () => void;
  })();

function heap(): number {
  gc();
  gc();
  return process.memoryUsage().heapUsed;
}

export const memoryScenario: Scenario = {
  name: "memory",
  title: NAME,
  async run(ctx: BenchContext) {
    const inFlight = ctx.smoke ? 2_000 : 10_000;
    const finished = ctx.smoke ? 20_000 : 100_000;
    const caseName = `${inFlight} in flight, ${finished} finished`;
    ctx.log(`${NAME}: ${caseName}`);
    const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-memory-"));
    try {
      const base = heap();
      const store = new SqliteStore({ path: join(dir, "flotilla.db"), synchronous: "normal" });
      const resources = new ResourceManager({ budgets: [{ scope: "global", requests: 1e12 }] });
      const orchestrator = new Orchestrator({ store, gates: resources.gates });
      let release!: () => void;
      let gate = new Promise<void>((r) => {
        release = r;
      });
      await orchestrator.register(
        new FunctionWorker({
          id: "w",
          taskTypes: ["job"],
          maxConcurrency: inFlight,
          fn: async (_p, c) => {
            c.reportUsage({ inputTokens: 100, outputTokens: 20 });
            c.progress({ step: "working" });
            await gate;
            return { text: "done" };
          },
        }),
      );
      await orchestrator.start();
      const started = heap();

      // Tasks in flight: each holds its record, attempt, handle and progress.
      let running = 0;
      const allRunning = new Promise<void>((resolve) => {
        orchestrator.on("task:running", () => {
          if (++running === inFlight) resolve();
        });
      });
      const held = await orchestrator.submitBatch(
        Array.from({ length: inFlight }, (_, i) => ({ type: "job", payload: { prompt: `p${i}` } })),
      );
      await allRunning;
      const withInFlight = heap();
      release();
      await Promise.all(held.map((h) => h.result()));
      gate = Promise.resolve();

      // Finished tasks flow through: the heap must level off.
      const run = async (n: number) => {
        for (let i = 0; i < n; i += 1000) {
          const hs = await orchestrator.submitBatch(
            Array.from({ length: 1000 }, () => ({ type: "job", payload: { prompt: "p" } })),
          );
          await Promise.all(hs.map((h) => h.result()));
        }
      };
      await run(finished / 2);
      const half = heap();
      await run(finished / 2);
      const full = heap();
      await orchestrator.stop();
      await store.close();

      const perTask = (withInFlight - started) / inFlight;
      const rows = [
        ["fixed overhead (started, idle)", (started - base) / MiB, "MiB"],
        ["heap per task in flight", perTask / 1024, "KiB"],
        [`heap after ${finished / 2} finished`, (half - base) / MiB, "MiB"],
        [`heap after ${finished} finished`, (full - base) / MiB, "MiB"],
      ] as const;
      for (const [metric, value, unit] of rows) {
        ctx.rows.push({
          scenario: NAME,
          case: caseName,
          subject: "Flotilla + SQLite",
          metric,
          value,
          unit,
          better: "lower",
        });
      }
      check(
        ctx,
        NAME,
        `${caseName}: the second half of the finished tasks grows the heap by less than 8 MiB`,
        full - half < 8 * MiB,
        `${((full - half) / MiB).toFixed(1)} MiB`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
