/**
 * Scenario 9: a long history. A SQLite database seeded with N finished tasks (each with its
 * events and a usage line, spread over the last 23 hours) and 100 unfinished ones: how long a
 * restart takes until the orchestrator (with rate limits, a 24-hour budget and the cost
 * ledger restored from the usage ledger) takes a task, the memory it then holds, and the
 * database's size before and after retention keeps the newest 1% and gives the space back.
 * `FLOTILLA_HISTORY_TASKS` sets N (default 200k; the smoke run uses 20k).
 */
import { mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  FunctionWorker,
  Orchestrator,
  ResourceManager,
  scheduleRetention,
  type TaskRecord,
} from "@flotilla/core";
import { SqliteStore } from "@flotilla/core/sqlite";
import { type BenchContext, check, type Scenario } from "../report.js";
import { nowMs } from "../stats.js";

const NAME = "9. Long history";

function record(id: string, seq: number, now: number, finished: boolean): TaskRecord {
  const r: TaskRecord = {
    id,
    type: "job",
    payload: { prompt: `task ${seq}`, model: "gpt-4o-mini" },
    priority: 20,
    seq,
    status: finished ? "succeeded" : "queued",
    dependsOn: [],
    onDependencyFailure: "skip",
    retry: { maxAttempts: 1, initialDelayMs: 0, maxDelayMs: 0, factor: 2, jitter: 0 },
    rateLimitKeys: ["openai"],
    approval: "none",
    metadata: {},
    attempt: finished ? 1 : 0,
    createdAt: now - 3_600_000,
    updatedAt: now - 1_000,
    version: 1,
    tenant: `tenant-${seq % 10}`,
  };
  if (finished) {
    r.workerId = "w";
    r.result = {
      taskId: id,
      status: "succeeded",
      output: { text: "done" },
      attempts: 1,
      workerId: "w",
      timings: { createdAt: now - 3_600_000, startedAt: now - 2_000, finishedAt: now - 1_000 },
    };
  }
  return r;
}

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

async function seed(path: string, n: number, now: number): Promise<void> {
  const store = new SqliteStore({ path, synchronous: "normal" });
  await store.open();
  for (let i = 0; i < n; i += 5000) {
    const m = Math.min(5000, n - i);
    const batch = Array.from({ length: m }, (_, j) =>
      record(`done-${i + j}`, i + j + 1, now, true),
    );
    const writes: Promise<void>[] = [store.insertTasks(batch)];
    writes.push(
      store.appendEvents(
        batch.flatMap((t) => [
          { type: "task:queued", taskId: t.id, at: now - 3_000, data: { to: "queued" } },
          { type: "task:succeeded", taskId: t.id, at: now - 1_000, data: { to: "succeeded" } },
        ]),
      ),
    );
    for (const [j, t] of batch.entries()) {
      writes.push(
        store.recordUsage({
          // Spread over the last 23 hours (today's budget and ledger count every line).
          at: now - 60_000 - Math.floor(((i + j) / n) * 23 * 3_600_000),
          taskId: t.id,
          workerId: "w",
          provider: "openai",
          model: "gpt-4o-mini",
          tenant: t.tenant!,
          usage: { inputTokens: 100, outputTokens: 50 },
        }),
      );
    }
    await Promise.all(writes);
  }
  await store.insertTasks(
    Array.from({ length: 100 }, (_, i) => record(`open-${i}`, n + i + 1, now, false)),
  );
  // What the hourly retention run of a server up all day did: usage older than 2 hours summed.
  await store.rollUpUsage(now - 2 * 3_600_000);
  await store.close();
}

export const historyScenario: Scenario = {
  name: "history",
  title: NAME,
  async run(ctx: BenchContext) {
    const n = ctx.smoke ? 20_000 : Number(process.env.FLOTILLA_HISTORY_TASKS ?? 200_000);
    const caseName = `${n} finished tasks`;
    ctx.log(`${NAME}: ${caseName}`);
    const dir = mkdtempSync(join(tmpdir(), "flotilla-bench-history-"));
    const path = join(dir, "flotilla.db");
    const now = Date.now();
    try {
      await seed(path, n, now);
      const seeded = fileSize(path);

      // A restart: open, restore limits, budgets and the ledger, recover the queue, take a task.
      (globalThis as { gc?: () => void }).gc?.();
      const rss0 = process.memoryUsage().rss;
      const t0 = nowMs();
      const store = new SqliteStore({ path });
      const resources = new ResourceManager({
        limits: { openai: ["100000/min"] },
        budgets: [
          { name: "day", scope: "global", costUsd: 1_000_000, reset: "sliding", period: "24h" },
        ],
      });
      let ran = 0;
      const orchestrator = new Orchestrator({ store, gates: resources.gates });
      await orchestrator.register(
        new FunctionWorker({
          id: "w",
          taskTypes: ["job"],
          maxConcurrency: 8,
          fn: async () => {
            ran++;
            return null;
          },
        }),
      );
      const firstRun = new Promise<void>((resolve) =>
        orchestrator.once("task:succeeded", () => resolve()),
      );
      await orchestrator.start();
      await firstRun;
      const restartMs = nowMs() - t0;
      const rss = (process.memoryUsage().rss - rss0) / (1024 * 1024);
      const restored = resources.budgets.stats()[0]?.used.requests ?? 0;
      await orchestrator.stop();

      // Retention: keep the newest 1 %, then give the space back.
      const keep = Math.max(100, Math.floor(n / 100));
      const retention = scheduleRetention(store, { keep, intervalMs: 86_400_000 });
      const t1 = nowMs();
      const removed = await retention.runNow();
      const retentionMs = nowMs() - t1;
      retention.stop();
      await store.close();
      const after = fileSize(path);

      const rows = [
        ["database after seeding", seeded / (1024 * 1024), "MiB"],
        ["restart until the first task ran", restartMs, "ms"],
        ["RSS growth across the restart", rss, "MiB"],
        ["retention of 99 %", retentionMs, "ms"],
        ["database after retention", after / (1024 * 1024), "MiB"],
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
        `${caseName}: the restart restores today's usage and runs the queue`,
        // The budget counts the n restored lines plus the tasks dispatched since.
        restored >= n && ran >= 1,
        `budget counted ${restored} requests (${n} before the restart); ${ran} task(s) ran`,
      );
      check(
        ctx,
        NAME,
        `${caseName}: retention removes ${n - keep} tasks and the file shrinks to under a quarter`,
        // (The tasks run after the restart finished too: they count among the removed.)
        removed >= n - keep && after < seeded / 4,
        `removed ${removed}; ${(seeded / 1048576).toFixed(1)} → ${(after / 1048576).toFixed(1)} MiB`,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
