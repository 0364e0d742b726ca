/** BullMQ on a real Redis, reduced to the benchmark shapes. */

import { randomUUID } from "node:crypto";
import { Queue, Worker } from "bullmq";

export interface RedisConn {
  host: string;
  port: number;
}

/**
 * Adds `priorities.length` jobs, processes them at `concurrency`, and resolves when all have
 * completed. Returns the start order and each job's add→completed latency.
 */
export async function bullmqRun(
  conn: RedisConn,
  priorities: readonly number[],
  concurrency: number,
  usePriority: boolean,
  options: { limiter?: { max: number; duration: number }; onStart?: (t: number) => void } = {},
): Promise<{ startOrder: number[]; completed: number; latenciesMs: number[] }> {
  const name = `bench-${randomUUID()}`;
  const connection = { host: conn.host, port: conn.port, maxRetriesPerRequest: null };
  const queue = new Queue(name, { connection });
  const startOrder: number[] = [];
  const latenciesMs: number[] = [];
  let completed = 0;
  const n = priorities.length;
  let resolveDone!: () => void;
  const done = new Promise<void>((r) => {
    resolveDone = r;
  });
  // Add everything first (paused worker) so priorities are honoured from a full backlog.
  const worker = new Worker(
    name,
    async (job) => {
      options.onStart?.(performance.now());
      startOrder.push(job.data.p as number);
    },
    {
      connection,
      concurrency,
      autorun: false,
      removeOnComplete: { count: 0 },
      ...(options.limiter ? { limiter: options.limiter } : {}),
    },
  );
  worker.on("completed", (job) => {
    latenciesMs.push(Date.now() - job.timestamp);
    if (++completed === n) resolveDone();
  });
  const jobs = priorities.map((p) => ({
    name: "noop",
    data: { p },
    // BullMQ: 1 is the highest priority; larger numbers run later.
    opts: usePriority ? { priority: Math.max(1, 100 - p) } : {},
  }));
  for (let i = 0; i < jobs.length; i += 1000) await queue.addBulk(jobs.slice(i, i + 1000));
  void worker.run();
  await done;
  await worker.close();
  await queue.obliterate({ force: true });
  await queue.close();
  return { startOrder, completed, latenciesMs };
}
