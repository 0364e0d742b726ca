import { EventEmitter } from "eventemitter3";
import { z } from "zod";
import { type Clock, systemClock, type TimerHandle } from "../clock.js";
import { type Logger, silentLogger } from "../logger.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate, GateDecision } from "../resources/gate.js";
import { parseConfig } from "../resources/validate.js";
import { Wakers } from "../resources/wakers.js";
import type { TaskRecord } from "../task/types.js";
import { HostPressureSensor, type PressureSample, type PressureSensor } from "./sensor.js";

/** Host pressure: `green` (fine), `yellow` (busy), `red` (hold new local work). */
export type PressureLevel = "green" | "yellow" | "red";

const RANK: Record<PressureLevel, number> = { green: 0, yellow: 1, red: 2 };

const Fraction = z
  .number()
  .gt(0, { error: "must be above 0" })
  .lte(1, { error: "must be at most 1" });
const Band = z
  .object({ enter: Fraction, exit: Fraction })
  .strict()
  .refine((b) => b.exit < b.enter, { error: "exit must be below enter (hysteresis)" });
const MetricThresholds = z
  .object({ yellow: Band, red: Band })
  .strict()
  .refine((t) => t.yellow.enter <= t.red.enter && t.yellow.exit <= t.red.exit, {
    error: "yellow thresholds must not be above red ones",
  });

/** Validates {@link AdmissionOptions} (without the injected parts). @example AdmissionConfigSchema.parse({ intervalMs: 1000, holdAt: "yellow" }) */
export const AdmissionConfigSchema = z
  .object({
    /** Sampling period. @default 2000 */
    intervalMs: z.number().int().min(10, { error: "must be at least 10 ms" }).default(2000),
    /** Enter/exit thresholds per metric (fractions 0–1). */
    cpu: MetricThresholds.default({
      yellow: { enter: 0.8, exit: 0.7 },
      red: { enter: 0.95, exit: 0.85 },
    }),
    memory: MetricThresholds.default({
      yellow: { enter: 0.8, exit: 0.7 },
      red: { enter: 0.92, exit: 0.85 },
    }),
    /** Level at which dispatch to local workers is held. @default "red" */
    holdAt: z.enum(["yellow", "red"]).default("red"),
  })
  .strict();
/** Input form of the admission configuration. */
export type AdmissionConfig = z.input<typeof AdmissionConfigSchema>;

/** Options of {@link AdmissionControl}. */
export interface AdmissionOptions extends AdmissionConfig {
  /** @default new HostPressureSensor() */
  sensor?: PressureSensor;
  /** @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
}

/** Events of {@link AdmissionControl}. */
export interface AdmissionEvents {
  level: [level: PressureLevel, previous: PressureLevel, sample: PressureSample];
  sample: [sample: PressureSample, level: PressureLevel];
}

type Thresholds = z.output<typeof MetricThresholds>;

function next(current: PressureLevel, v: number, t: Thresholds): PressureLevel {
  if (v >= t.red.enter) return "red";
  if (current === "red" && v >= t.red.exit) return "red";
  if (v >= t.yellow.enter) return "yellow";
  if (current !== "green" && v >= t.yellow.exit) return "yellow";
  return "green";
}

/**
 * Admission control: samples host pressure on a clock interval (without blocking; a slow
 * sample never overlaps the next), turns it into green/yellow/red with hysteresis (a level
 * is entered above its `enter` threshold and left only below its `exit` threshold), and —
 * as a dispatch gate — holds new dispatch to local workers (`worker.local !== false`) while
 * red. Remote workers keep receiving work. The HTTP adapter reads {@link level} and
 * {@link retryAfterSeconds} to answer 503 with `Retry-After`.
 *
 * @example
 * ```ts
 * const admission = new AdmissionControl({ intervalMs: 1000 });
 * admission.start();
 * admission.on("level", (level) => console.log("host pressure", level));
 * const orchestrator = new Orchestrator({ gates: [admission] });
 * ```
 */
export class AdmissionControl extends EventEmitter<AdmissionEvents> implements DispatchGate {
  readonly name = "admission";
  readonly intervalMs: number;
  readonly #cfg: z.output<typeof AdmissionConfigSchema>;
  readonly #sensor: PressureSensor;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #wakers: Wakers;
  #cpuLevel: PressureLevel = "green";
  #memLevel: PressureLevel = "green";
  #level: PressureLevel = "green";
  #sample: PressureSample | undefined;
  #timer: TimerHandle | undefined;
  #running = false;
  #sampling = false;

  constructor(options: AdmissionOptions = {}) {
    super();
    const { sensor, clock, logger, ...config } = options;
    this.#cfg = parseConfig(AdmissionConfigSchema, config, "admission");
    this.intervalMs = this.#cfg.intervalMs;
    this.#sensor = sensor ?? new HostPressureSensor();
    this.#clock = clock ?? systemClock;
    this.#logger = logger ?? silentLogger;
    this.#wakers = new Wakers(this.#logger);
  }

  /** The current level. @default "green" (before the first sample) @example if (admission.level === "red") shedLoad(); */
  get level(): PressureLevel {
    return this.#level;
  }

  /** The last sample, if any. @example admission.lastSample?.cpu */
  get lastSample(): PressureSample | undefined {
    return this.#sample;
  }

  /** Whether new local work is held now. @example if (admission.holding) return c.body(null, 503); */
  get holding(): boolean {
    return RANK[this.#level] >= RANK[this.#cfg.holdAt];
  }

  /** Seconds a client should wait before retrying while holding (for `Retry-After`). @example res.setHeader("Retry-After", admission.retryAfterSeconds()) */
  retryAfterSeconds(): number {
    return Math.max(1, Math.ceil(this.intervalMs / 1000));
  }

  /** Starts periodic sampling (first sample at once). Idempotent. @example admission.start() */
  start(): void {
    if (this.#running) return;
    this.#running = true;
    void this.#tick();
  }

  /** Stops sampling. Idempotent. @example admission.stop() */
  stop(): void {
    this.#running = false;
    if (this.#timer !== undefined) this.#clock.clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  async #tick(): Promise<void> {
    if (!this.#running) return;
    this.#timer = this.#clock.setTimeout(() => void this.#tick(), this.intervalMs);
    if (this.#sampling) return;
    this.#sampling = true;
    try {
      this.update(await this.#sensor.sample());
    } catch (err) {
      this.#logger.warn({ err }, "pressure sample failed; level unchanged");
    } finally {
      this.#sampling = false;
    }
  }

  /**
   * Feeds one sample (what the sampling loop does; call it yourself with a custom source) and
   * returns the new level. Wakes the scheduler when dispatch is no longer held.
   *
   * @example
   * ```ts
   * admission.update({ cpu: 0.97, memory: 0.4 }); // "red"
   * ```
   */
  update(sample: PressureSample): PressureLevel {
    this.#sample = sample;
    this.#cpuLevel = next(this.#cpuLevel, sample.cpu, this.#cfg.cpu);
    this.#memLevel = next(this.#memLevel, sample.memory, this.#cfg.memory);
    const level = RANK[this.#cpuLevel] >= RANK[this.#memLevel] ? this.#cpuLevel : this.#memLevel;
    const previous = this.#level;
    const wasHolding = this.holding;
    this.#level = level;
    this.emit("sample", sample, level);
    if (level !== previous) {
      this.#logger.info({ level, previous, ...sample }, "host pressure level changed");
      this.emit("level", level, previous, sample);
      if (wasHolding && !this.holding) this.#wake();
    }
    return level;
  }

  /** Gate: holds tasks bound for local workers while the level is at `holdAt`. @example admission.check(task, entry, Date.now()) */
  check(_task: TaskRecord, worker: WorkerEntry): GateDecision {
    if (!this.holding || worker.worker.local === false) return { ok: true };
    const s = this.#sample;
    const detail = s
      ? `: cpu ${Math.round(s.cpu * 100)}%, memory ${Math.round(s.memory * 100)}%`
      : "";
    return { ok: false, reason: `host pressure is ${this.#level}${detail}; local dispatch held` };
  }

  /**
   * Gate: when a remote worker's attempt ends while local dispatch is held, wakes the
   * scheduler, since held tasks may now go to that remote slot.
   * @example admission.onSettle(task, entry)
   */
  onSettle(_task: TaskRecord, worker: WorkerEntry): void {
    if (this.holding && worker.worker.local === false) this.#wake();
  }

  /** Gate: registers the scheduler's wake-up (called when pressure falls back). @example admission.subscribe(() => {}) */
  subscribe(wake: () => void): () => void {
    return this.#wakers.subscribe(wake);
  }

  #wake(): void {
    this.#wakers.wake();
  }

  /** Level, last sample and hold state, for stats. @example admission.snapshot().level */
  snapshot(): {
    level: PressureLevel;
    holding: boolean;
    sample?: PressureSample;
    retryAfterSeconds: number;
  } {
    const out: {
      level: PressureLevel;
      holding: boolean;
      sample?: PressureSample;
      retryAfterSeconds: number;
    } = {
      level: this.#level,
      holding: this.holding,
      retryAfterSeconds: this.retryAfterSeconds(),
    };
    if (this.#sample) out.sample = { ...this.#sample };
    return out;
  }
}
