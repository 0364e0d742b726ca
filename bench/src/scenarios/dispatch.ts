/**
 * Scenario 1: dispatch overhead. 20k no-op tasks at concurrency 1, 16 and 256, priorities
 * off and on: µs per task (median of 3 after a warm-up), and heap per queued task.
 */

import { bullmqRun } from "../bullmq.js";
import { flotillaQueued, flotillaRun } from "../flotilla.js";
import {
  bottleneckRun,
  type DispatchRun,
  fastqRun,
  pLimitRun,
  pQueueQueued,
  pQueueRun,
  promiseAll,
} from "../peers.js";
import { type BenchContext, check, type Scenario } from "../report.js";
import { countInversions, heapUsed, medianOf, nowMs } from "../stats.js";

const NAME = "1. Dispatch overhead";

function priorities(n: number, levels: number): number[] {
  // A deterministic mix of levels (0, 10, 20, ...), spread across the submission order.
  return Array.from({ length: n }, (_, i) => ((i * 7919) % levels) * 10);
}

export const dispatchScenario: Scenario = {
  name: "dispatch",
  title: NAME,
  async run(ctx: BenchContext) {
    // 20k tasks: large enough to be steady, small enough that no peer is measured where its
    // queue degrades (p-queue inserts in O(n), so a 100k backlog built up front is its worst
    // case, not its use).
    const n = ctx.smoke ? 2_000 : 20_000;
    const nSmall = ctx.smoke ? 200 : 2_000;
    const nBull = ctx.smoke ? 500 : 10_000;
    const runs = ctx.smoke ? 1 : 3;
    for (const concurrency of [1, 16, 256]) {
      for (const usePriority of [false, true]) {
        const caseName = `concurrency ${concurrency}, priorities ${usePriority ? "on" : "off"}`;
        ctx.log(`${NAME}: ${caseName}`);
        const pr = priorities(n, usePriority ? 5 : 1);
        const subjects: Array<[string, number, () => Promise<DispatchRun>]> = [
          ["Flotilla", n, () => flotillaRun(pr, { concurrency, usePriority })],
          ["p-queue", n, () => pQueueRun(pr, concurrency, usePriority)],
        ];
        if (!usePriority) {
          subjects.push(
            ["Promise.all (floor)", n, () => promiseAll(pr)],
            ["fastq", n, () => fastqRun(pr, concurrency)],
            ["p-limit", n, () => pLimitRun(pr, concurrency)],
          );
        }
        subjects.push([
          "bottleneck",
          nSmall,
          () => bottleneckRun(pr.slice(0, nSmall), concurrency, usePriority),
        ]);
        if (ctx.redis) {
          const redis = ctx.redis;
          subjects.push([
            "BullMQ + Redis",
            nBull,
            () => bullmqRun(redis, pr.slice(0, nBull), concurrency, usePriority),
          ]);
        }
        for (const [subject, count, fn] of subjects) {
          let last: DispatchRun | undefined;
          const ms = await medianOf(runs, ctx.smoke ? 0 : 1, async () => {
            const t = nowMs();
            last = await fn();
            return nowMs() - t;
          });
          ctx.rows.push({
            scenario: NAME,
            case: caseName,
            subject,
            metric: "µs per task",
            value: (ms * 1000) / count,
            unit: "µs",
            better: "lower",
            ...(count !== n ? { note: `N=${count}` } : {}),
          });
          if (subject === "Flotilla") {
            check(
              ctx,
              NAME,
              `${caseName}: every task completed once`,
              last?.completed === count,
              `${last?.completed}/${count}`,
            );
            if (usePriority && concurrency === 1) {
              const inv = countInversions(last?.startOrder ?? []);
              check(
                ctx,
                NAME,
                `${caseName}: zero priority inversions`,
                inv === 0,
                `${inv} inversions`,
              );
            }
          }
        }
      }
    }
    // Heap per queued task: a paused backlog (no worker), measured after a full GC
    // (run with --expose-gc, as `npm run bench` does; without it the figure is noisier).
    const queued = ctx.smoke ? 20_000 : 100_000;
    for (const [subject, make] of [
      ["p-queue", async () => pQueueQueued(queued, true)],
      ["Flotilla", () => flotillaQueued(queued)],
    ] as const) {
      await new Promise((r) => setTimeout(r, 50));
      const before = heapUsed();
      const held = await make();
      const perTask = (heapUsed() - before) / queued;
      await held.release();
      await new Promise((r) => setTimeout(r, 50));
      ctx.rows.push({
        scenario: NAME,
        case: `${queued.toLocaleString("en")} queued, priorities on`,
        subject,
        metric: "heap per queued task",
        value: perTask,
        unit: "B",
        better: "lower",
      });
    }
  },
};
