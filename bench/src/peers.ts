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

/**
 * One no-op job per priority, recording the order jobs start in: `job(p)` is what each peer
 * schedules, `run` what it resolves to.
 */
function recorder() {
  const run: DispatchRun = { startOrder: [], completed: 0 };
  const job = async (p: number) => {
    run.startOrder.push(p);
    await noop();
    run.completed++;
  };
  return { run, job };
}

/** The floor: no queue at all. */
export async function promiseAll(priorities: readonly number[]): Promise<DispatchRun> {
  const { run, job } = recorder();
  await Promise.all(priorities.map(job));
  return run;
}

export async function fastqRun(
  priorities: readonly number[],
  concurrency: number,
): Promise<DispatchRun> {
  const { run, job } = recorder();
  const q = fastq.promise(job, concurrency);
  await Promise.all(priorities.map((p) => q.push(p)));
  return run;
}

export async function pLimitRun(
  priorities: readonly number[],
  concurrency: number,
): Promise<DispatchRun> {
  const { run, job } = recorder();
  const limit = pLimit(concurrency);
  await Promise.all(priorities.map((p) => limit(() => job(p))));
  return run;
}

export async function pQueueRun(
  priorities: readonly number[],
  concurrency: number,
  usePriority: boolean,
): Promise<DispatchRun> {
  const { run, job } = recorder();
  const q = new PQueue({ concurrency });
  await Promise.all(priorities.map((p) => q.add(() => job(p), usePriority ? { priority: p } : {})));
  return run;
}

export async function bottleneckRun(
  priorities: readonly number[],
  concurrency: number,
  usePriority: boolean,
): Promise<DispatchRun> {
  const { run, job } = recorder();
  const limiter = new Bottleneck({ maxConcurrent: concurrency });
  // Bottleneck: 0 is the highest of its 10 levels; map larger numbers to smaller levels.
  const level = (p: number) => Math.max(0, Math.min(9, 9 - Math.round(p / 5)));
  await Promise.all(
    priorities.map((p) =>
      limiter.schedule(usePriority ? { priority: level(p) } : {}, () => job(p)),
    ),
  );
  await limiter.stop({ dropWaitingJobs: false });
  return run;
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
