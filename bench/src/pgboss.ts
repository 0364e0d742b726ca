/** pg-boss on a real PostgreSQL, reduced to the durable benchmark's shape. */

import { randomBytes } from "node:crypto";
import pg from "pg";
import { PgBoss } from "pg-boss";
import { nowMs } from "./stats.js";

/**
 * Inserts `n` jobs (1000 per call), works them with `concurrency` local workers fetching 10
 * jobs at a time back to back (pg-boss's defaults otherwise), and resolves once the database
 * shows all `n` completed. Each run uses a schema of its own, dropped afterwards.
 */
export async function pgBossRun(
  url: string,
  n: number,
  concurrency: number,
): Promise<{ perSec: number; completed: number }> {
  const schema = `pgboss_${randomBytes(4).toString("hex")}`;
  const boss = new PgBoss({ connectionString: url, schema });
  boss.on("error", () => {});
  await boss.start();
  const queue = "bench";
  await boss.createQueue(queue);
  const probe = new pg.Client({ connectionString: url });
  await probe.connect();
  const completed = async () =>
    Number(
      (
        await probe.query<{ n: string }>(
          `SELECT count(*) AS n FROM "${schema}".job WHERE name = $1 AND state = 'completed'`,
          [queue],
        )
      ).rows[0]!.n,
    );
  try {
    const t0 = nowMs();
    for (let i = 0; i < n; i += 1000) {
      const count = Math.min(1000, n - i);
      await boss.insert(
        queue,
        Array.from({ length: count }, () => ({ data: {} })),
      );
    }
    // A worker waits its polling interval (2 s) after every fetch unless a burst trigger
    // holds: batches of 10 fetched back to back while they come back full are pg-boss's
    // documented way to drain a backlog.
    await boss.work(
      queue,
      { localConcurrency: concurrency, batchSize: 10, burstWhenBatchFull: true },
      async () => {},
    );
    let done = 0;
    for (let i = 0; i < 12_000 && done < n; i++) {
      done = await completed();
      if (done < n) await new Promise((r) => setTimeout(r, 10));
    }
    const ms = nowMs() - t0;
    return { perSec: (n / ms) * 1000, completed: done };
  } finally {
    const stopped = new Promise<void>((resolve) => {
      boss.once("stopped", () => resolve());
      setTimeout(resolve, 10_000).unref();
    });
    await boss.stop({ graceful: true, timeout: 5_000 }).catch(() => {});
    await stopped;
    await probe.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
    await probe.end();
  }
}
