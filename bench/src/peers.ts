/**
 * The peers Flotilla is measured against, each reduced to the same shape: run `n` no-op
 * tasks at `concurrency`, optionally with priorities, and report the order tasks started in.
 */

import { existsSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Bottleneck from "bottleneck";
import fastq from "fastq";
import pLimit from "p-limit";
import PQueue from "p-queue";

export interface DispatchRun {
  /** Priority of each task, in the order the tasks started. */
  startOrder: number[];
  completed: number;
}

export type Noop = () => Promise<void>;
export const noop: Noop = async () => {};

/** The floor: no queue at all. */
export async function promiseAll(priorities: readonly number[]): Promise<DispatchRun> {
  const startOrder: number[] = [];
  let completed = 0;
  await Promise.all(
    priorities.map(async (p) => {
      startOrder.push(p);
      await noop();
      completed++;
    }),
  );
  return { startOrder, completed };
}

export async function fastqRun(
  priorities: readonly number[],
  concurrency: number,
): Promise<DispatchRun> {
  const startOrder: number[] = [];
  let completed = 0;
  const q = fastq.promise(async (p: number) => {
    startOrder.push(p);
    await noop();
    completed++;
  }, concurrency);
  await Promise.all(priorities.map((p) => q.push(p)));
  return { startOrder, completed };
}

export async function pLimitRun(
  priorities: readonly number[],
  concurrency: number,
): Promise<DispatchRun> {
  const startOrder: number[] = [];
  let completed = 0;
  const limit = pLimit(concurrency);
  await Promise.all(
    priorities.map((p) =>
      limit(async () => {
        startOrder.push(p);
        await noop();
        completed++;
      }),
    ),
  );
  return { startOrder, completed };
}

export async function pQueueRun(
  priorities: readonly number[],
  concurrency: number,
  usePriority: boolean,
): Promise<DispatchRun> {
  const startOrder: number[] = [];
  let completed = 0;
  const q = new PQueue({ concurrency });
  const all = priorities.map((p) =>
    q.add(
      async () => {
        startOrder.push(p);
        await noop();
        completed++;
      },
      usePriority ? { priority: p } : {},
    ),
  );
  await Promise.all(all);
  return { startOrder, completed };
}

export async function bottleneckRun(
  priorities: readonly number[],
  concurrency: number,
  usePriority: boolean,
): Promise<DispatchRun> {
  const startOrder: number[] = [];
  let completed = 0;
  const limiter = new Bottleneck({ maxConcurrent: concurrency });
  // Bottleneck: 0 is the highest of its 10 levels; map larger numbers to smaller levels.
  const level = (p: number) => Math.max(0, Math.min(9, 9 - Math.round(p / 5)));
  await Promise.all(
    priorities.map((p) =>
      limiter.schedule(usePriority ? { priority: level(p) } : {}, async () => {
        startOrder.push(p);
        await noop();
        completed++;
      }),
    ),
  );
  await limiter.stop({ dropWaitingJobs: false });
  return { startOrder, completed };
}

/** Paused-queue memory per queued task, for p-queue. */
export function pQueueQueued(
  n: number,
  usePriority: boolean,
): { hold: unknown; release(): Promise<void> } {
  const q = new PQueue({ concurrency: 1, autoStart: false });
  for (let i = 0; i < n; i++) {
    void q.add(noop, usePriority ? { priority: i % 5 } : {});
  }
  return {
    hold: q,
    release: async () => {
      q.clear();
    },
  };
}

export function peerVersions(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of ["p-queue", "fastq", "p-limit", "bottleneck", "bullmq"]) {
    out[p] = packageVersion(p);
  }
  return out;
}

/** Reads an installed package's version from the nearest node_modules (works despite `exports` maps). */
export function packageVersion(name: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const f = join(dir, "node_modules", name, "package.json");
    if (existsSync(f)) return JSON.parse(readFileSync(f, "utf8")).version as string;
    const up = dirname(dir);
    if (up === dir) return "unknown";
    dir = up;
  }
}
