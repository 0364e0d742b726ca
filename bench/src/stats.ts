/** Small statistics helpers for the benchmarks. */

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const i = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1));
  return s[i]!;
}

/** Nanosecond-resolution wall time in milliseconds. */
export function nowMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Runs `fn` `runs` times after `warmup` runs and returns the median of what it returns. */
export async function medianOf(
  runs: number,
  warmup: number,
  fn: () => Promise<number>,
): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) out.push(await fn());
  return median(out);
}

/** Forces a full GC when the process runs with --expose-gc. */
export function gc(): void {
  const g = (globalThis as { gc?: () => void }).gc;
  if (g) {
    g();
    g();
  }
}

export function heapUsed(): number {
  gc();
  return process.memoryUsage().heapUsed;
}

/** The largest number of timestamps that fall in any window of `windowMs` (sliding). */
export function maxInSlidingWindow(timestamps: readonly number[], windowMs: number): number {
  const s = [...timestamps].sort((a, b) => a - b);
  let best = 0;
  let lo = 0;
  for (let hi = 0; hi < s.length; hi++) {
    while (s[hi]! - s[lo]! >= windowMs) lo++;
    best = Math.max(best, hi - lo + 1);
  }
  return best;
}

/** Counts adjacent starts out of priority order: a task started right after one of lower priority. */
export function countInversions(prioritiesInStartOrder: readonly number[]): number {
  let inversions = 0;
  for (let i = 1; i < prioritiesInStartOrder.length; i++) {
    if (prioritiesInStartOrder[i]! > prioritiesInStartOrder[i - 1]!) inversions++;
  }
  return inversions;
}
