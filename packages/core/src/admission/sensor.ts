import { readFile } from "node:fs/promises";
import os from "node:os";

/** Host pressure at one moment, each a fraction between 0 and 1. */
export interface PressureSample {
  /** CPU busy fraction across all cores. */
  cpu: number;
  /** Memory in use as a fraction of what this process may use (cgroup limit or host RAM). */
  memory: number;
}

/**
 * Something that measures host pressure. Implement it to feed your own signal (GPU memory,
 * queue lag…) to admission control; `sample` may be async and should not block.
 *
 * @example
 * ```ts
 * const sensor: PressureSensor = { sample: () => ({ cpu: 0.2, memory: 0.5 }) };
 * ```
 */
export interface PressureSensor {
  sample(): PressureSample | Promise<PressureSample>;
}

function cpuTimes(): { idle: number; total: number } {
  let idle = 0;
  let total = 0;
  for (const c of os.cpus()) {
    const t = c.times;
    idle += t.idle;
    total += t.user + t.nice + t.sys + t.idle + t.irq;
  }
  return { idle, total };
}

async function readNumber(path: string): Promise<number | undefined> {
  try {
    const text = (await readFile(path, "utf8")).trim();
    if (text === "max") return Number.POSITIVE_INFINITY;
    const n = Number(text);
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Options of {@link HostPressureSensor}. */
export interface HostPressureSensorOptions {
  /** Root of the cgroup file system. @default "/sys/fs/cgroup" */
  cgroupRoot?: string;
}

/**
 * The default sensor: CPU from the deltas of `os.cpus()` times between samples (load average
 * per core on the first sample); memory from the cgroup limit and usage when the process runs
 * under one (v2 `memory.max`/`memory.current`, or v1), else `1 - freemem/totalmem`. Reads files
 * asynchronously, never blocking the event loop.
 *
 * @example
 * ```ts
 * const sample = await new HostPressureSensor().sample(); // { cpu: 0.12, memory: 0.43 }
 * ```
 */
export class HostPressureSensor implements PressureSensor {
  readonly #root: string;
  #last: { idle: number; total: number } | undefined;

  constructor(options: HostPressureSensorOptions = {}) {
    this.#root = options.cgroupRoot ?? "/sys/fs/cgroup";
  }

  /** Takes one sample. @example const { cpu, memory } = await sensor.sample(); */
  async sample(): Promise<PressureSample> {
    const now = cpuTimes();
    let cpu: number;
    const last = this.#last;
    this.#last = now;
    if (last && now.total > last.total) {
      cpu = 1 - (now.idle - last.idle) / (now.total - last.total);
    } else {
      cpu = (os.loadavg()[0] ?? 0) / Math.max(1, os.cpus().length);
    }
    return { cpu: clamp(cpu), memory: clamp(await this.#memory()) };
  }

  async #memory(): Promise<number> {
    const total = os.totalmem();
    const v2max = await readNumber(`${this.#root}/memory.max`);
    if (v2max !== undefined && v2max !== Number.POSITIVE_INFINITY && v2max < total) {
      const current = await readNumber(`${this.#root}/memory.current`);
      if (current !== undefined && v2max > 0) return current / v2max;
    }
    const v1max = await readNumber(`${this.#root}/memory/memory.limit_in_bytes`);
    if (v1max !== undefined && v1max < total) {
      const usage = await readNumber(`${this.#root}/memory/memory.usage_in_bytes`);
      if (usage !== undefined && v1max > 0) return usage / v1max;
    }
    return 1 - os.freemem() / total;
  }
}

function clamp(n: number): number {
  if (!Number.isFinite(n)) return 0;
  return Math.min(1, Math.max(0, n));
}
