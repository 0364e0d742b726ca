import type { WorkerEntry } from "../registry/types.js";
import type { TaskStatus } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import { defaultPriceSubject, PriceBook, type PriceSubject, toMicros } from "./prices.js";
import { estimatedTokens, type ResolvedUsage, resolveUsage } from "./usage.js";

/** What one attempt cost, in tokens and integer micro-dollars. */
export interface CostFigures {
  subject: PriceSubject;
  usage: ResolvedUsage;
  /** Integer micro-dollars. */
  costMicros: number;
}

/** Options of {@link CostModel}. */
export interface CostModelOptions {
  /** @default new PriceBook() (the default table) */
  prices?: PriceBook;
  /** Tells the provider and model of a task on a worker. @default defaultPriceSubject */
  subject?: (task: TaskRecord, worker: WorkerEntry | undefined) => PriceSubject;
}

/**
 * Turns estimates and usage reports into tokens and money. Cost comes from, in order: the
 * cost the worker reported, the price table × actual tokens, the task's estimated cost.
 *
 * @example
 * ```ts
 * const model = new CostModel({ prices: new PriceBook({ acme: { "*": { input: 1, output: 2 } } }) });
 * model.actual(task, entry, { inputTokens: 1000, outputTokens: 100 }).costMicros; // 1200
 * ```
 */
export class CostModel {
  readonly prices: PriceBook;
  readonly #subject: (task: TaskRecord, worker: WorkerEntry | undefined) => PriceSubject;

  constructor(options: CostModelOptions = {}) {
    this.prices = options.prices ?? new PriceBook();
    this.#subject = options.subject ?? defaultPriceSubject;
  }

  /** Provider and model of `task` on `worker`. @example model.subject(task, entry).provider */
  subject(task: TaskRecord, worker: WorkerEntry | undefined): PriceSubject {
    return this.#subject(task, worker);
  }

  /**
   * The expected cost of a task before it runs: its `estimate.costUsd`, else its estimated
   * tokens priced on the worker's model (all as input tokens when only `tokens` is given).
   *
   * @example
   * ```ts
   * model.estimate(task, entry); // { tokens: 1200, costMicros: 3000 }
   * ```
   */
  estimate(
    task: TaskRecord,
    worker: WorkerEntry | undefined,
  ): { tokens: number; costMicros: number } {
    const tokens = estimatedTokens(task) ?? 0;
    const e = task.estimate;
    if (e?.costUsd !== undefined) return { tokens, costMicros: toMicros(e.costUsd) };
    const input = e?.inputTokens ?? (e?.outputTokens === undefined ? tokens : 0);
    const output = e?.outputTokens ?? 0;
    const micros = this.prices.costMicros(this.subject(task, worker), input, output);
    return { tokens, costMicros: micros ?? 0 };
  }

  /**
   * The cost of a finished attempt from the worker's usage report (`unknown`: it is validated;
   * missing or malformed reports fall back to the estimate and say so in `usage.problem`).
   * With a `status` other than `succeeded` and no report, the attempt costs nothing.
   *
   * @example
   * ```ts
   * const { usage, costMicros } = model.actual(task, entry, outcome.usage);
   * ```
   */
  actual(
    task: TaskRecord,
    worker: WorkerEntry | undefined,
    reported: unknown,
    status?: TaskStatus,
  ): CostFigures {
    const subject = this.subject(task, worker);
    const usage = resolveUsage(task, reported, status);
    if (usage.source === "none") return { subject, usage, costMicros: 0 };
    let costMicros: number | undefined;
    if (usage.costUsd !== undefined) costMicros = toMicros(usage.costUsd);
    else if (usage.source === "reported") {
      costMicros = this.prices.costMicros(subject, usage.inputTokens, usage.outputTokens);
    }
    if (costMicros === undefined) costMicros = this.estimate(task, worker).costMicros;
    return { subject, usage, costMicros };
  }
}
