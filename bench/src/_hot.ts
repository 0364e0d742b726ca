import { flotillaRun } from "./flotilla.ts";
import { pQueueRun, fastqRun } from "./peers.ts";
const n = Number(process.env.N ?? 20000);
const pr = (lv: number) => Array.from({ length: n }, (_, i) => ((i * 7919) % lv) * 10);
const which = process.env.W ?? "all";
async function time(name: string, fn: () => Promise<unknown>) {
  const xs: number[] = [];
  for (let i = 0; i < 6; i++) { const t = performance.now(); await fn(); xs.push(performance.now() - t); }
  xs.sort((a, b) => a - b);
  console.log(name, ((xs[3]! * 1000) / n).toFixed(2), "µs/task");
}
for (const c of [1, 16]) {
  if (which === "all" || which === "f") {
    await time(`flotilla c${c} prio`, () => flotillaRun(pr(5), { concurrency: c, usePriority: true }));
    await time(`flotilla c${c} noprio`, () => flotillaRun(pr(1), { concurrency: c, usePriority: false }));
  }
  if (which === "all") {
    await time(`pqueue c${c} prio`, () => pQueueRun(pr(5), c, true));
    await time(`fastq c${c}`, () => fastqRun(pr(1), c));
  }
}
