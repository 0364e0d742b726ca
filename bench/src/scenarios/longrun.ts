/**
 * Scenario 11: a long run with retention on. N tasks (each reporting usage and progress)
 * through an orchestrator on SQLite with its resource gates, spread over ten simulated days
 * (a fake clock moves on after each thousand), with the retention `flotilla serve` runs
 * (finished tasks kept 2 days and at most 2000, usage summed after 2 hours and kept 3 days)
 * after every tenth of the run: the database file and the heap (after a full GC) at each,
 * which must level off instead of growing with N. `FLOTILLA_LONGRUN_TASKS` sets N (default
 * 200k; the smoke run uses 20k).
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { FunctionWorker, Orchestrator, ResourceManager, scheduleRetention } from "@flotilla/core";
import { SqliteStore } from "@flotilla/core/sqlite";
import { FakeClock } from "@flotilla/testing";
import { type BenchContext, check, type Scenario } from "../report.js";
import { nowMs } from "../stats.js";

const NAME = "11. Long run with retention";
const MiB = 1024 * 1024;

const gc: () => void =
  (globalThis as { gc?: () => void }).gc ??
  (() => {
    setFlagsFromString("--expose-gc");
    return runInNewContext("gc") as () => void;
  })();

const fileSize = (path: string) => {
  let n = 0;
  for (const p of [path, `${path}-wal`]) {
    try {
      n += statSync(p).size;
    } catch {
      // no WAL
    }
  }
  return n;
};

export const longRunScenario: Scenario = {
  name: "longrun",
  title: NAME,
  async run(ctx: BenchContext) {
    const n = ctx.smoke ? 20_000 : Number(process.env.FLOTILLA_LONGRUN_TASKS ?? 200_000);
    const caseName = `${n} tasks, keep 2000`;
    ctx.log(`${NAME}: ${caseName}`);
    const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-longrun-"));
    const path = join(dir, "flotilla.db");
    try {
      const clock = new FakeClock({ now: Date.now() });
      const store = new SqliteStore({ path, synchronous: "normal", clock });
      const resources = new ResourceManager({
        clock,
        limits: { openai: ["10000000/min"] },
        budgets: [{ scope: "global", requests: 1e12 }],
      });
      const orchestrator = new Orchestrator({ store, clock, gates: resources.gates });
      await orchestrator.register(
        new FunctionWorker({
          id: "w",
          taskTypes: ["job"],
          maxConcurrency: 64,
          fn: async (_p, c) => {
            c.reportUsage({ inputTokens: 100, outputTokens: 20 });
            c.progress({ step: "working" });
            return { text: "done" };
          },
        }),
      );
      await orchestrator.start();
      const retention = scheduleRetention(store, {
        olderThan: 2 * 86_400_000,
        keep: 2000,
        usageOlderThan: 3 * 86_400_000,
        intervalMs: 365 * 86_400_000,
        clock,
      });
      const perBatchMs = (10 * 86_400_000) / (n / 1000);
      const samples: Array<{ done: number; fileMiB: number; heapMiB: number }> = [];
      const t0 = nowMs();
      const step = n / 10;
      for (let done = 0; done < n; ) {
        for (let i = 0; i < step; i += 1000) {
          const hs = await orchestrator.submitBatch(
            Array.from({ length: 1000 }, () => ({
              type: "job",
              payload: { prompt: "p", model: "gpt-4o-mini" },
              rateLimitKey: "openai",
            })),
          );
          await Promise.all(hs.map((h) => h.result()));
          await clock.advance(perBatchMs);
        }
        done += step;
        await retention.runNow();
        gc();
        gc();
        samples.push({
          done,
          fileMiB: fileSize(path) / MiB,
          heapMiB: process.memoryUsage().heapUsed / MiB,
        });
      }
      const seconds = (nowMs() - t0) / 1000;
      retention.stop();
      await orchestrator.stop();
      await store.close();
      const first = samples[1]!; // after the first retention has had a full tenth to remove
      const last = samples[samples.length - 1]!;
      const rows = [
        ["tasks per second, retention included", n / seconds, "/s"],
        [`database after ${first.done} tasks`, first.fileMiB, "MiB"],
        [`database after ${last.done} tasks`, last.fileMiB, "MiB"],
        [`heap after ${first.done} tasks`, first.heapMiB, "MiB"],
        [`heap after ${last.done} tasks`, last.heapMiB, "MiB"],
      ] as const;
      for (const [metric, value, unit] of rows) {
        ctx.rows.push({
          scenario: NAME,
          case: caseName,
          subject: "Flotilla + SQLite",
          metric,
          value,
          unit,
          better: metric.startsWith("tasks") ? "higher" : "lower",
        });
      }
      check(
        ctx,
        NAME,
        `${caseName}: the database and the heap level off`,
        last.fileMiB < first.fileMiB * 1.5 + 4 && last.heapMiB < first.heapMiB + 16,
        `file ${first.fileMiB.toFixed(1)} → ${last.fileMiB.toFixed(1)} MiB, heap ${first.heapMiB.toFixed(1)} → ${last.heapMiB.toFixed(1)} MiB`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
