import { flotillaRun } from "./flotilla.ts";
const n = 20000;
const pr = Array.from({ length: n }, (_, i) => ((i * 7919) % 5) * 10);
for (let i = 0; i < 3; i++) await flotillaRun(pr, { concurrency: 1, usePriority: true });
const t = performance.now();
for (let i = 0; i < 10; i++) await flotillaRun(pr, { concurrency: 1, usePriority: true });
console.log(((performance.now() - t) * 100) / n, "µs/task");
