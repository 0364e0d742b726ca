import { z } from "zod";
import type { WorkerEntry } from "../registry/types.js";
import { parseConfig } from "../resources/validate.js";
import type { TaskRecord } from "../task/types.js";

/** Price of one model in USD per million tokens. */
export interface ModelPrice {
  /** USD per 1M input (prompt) tokens. */
  input: number;
  /** USD per 1M output (completion) tokens. */
  output: number;
}

/** `{ [provider]: { [model]: { input, output } } }`, USD per million tokens. */
export type PriceTable = Record<string, Record<string, ModelPrice>>;

const PriceSchema = z
  .object({
    input: z.number().nonnegative().finite(),
    output: z.number().nonnegative().finite(),
  })
  .strict();

/** Validates a {@link PriceTable}. @example PriceTableSchema.parse({ openai: { "gpt-4o": { input: 2.5, output: 10 } } }) */
export const PriceTableSchema = z.record(
  z.string().min(1),
  z.record(z.string().min(1), PriceSchema),
);

/** The date the {@link DEFAULT_PRICES} were copied from the providers' public price lists. @example console.log(`prices as of ${DEFAULT_PRICES_AS_OF}`) */
export const DEFAULT_PRICES_AS_OF = "2025-08-01";

/**
 * A small default price table (USD per million tokens) for a few OpenAI and Anthropic models,
 * as listed publicly on {@link DEFAULT_PRICES_AS_OF}. Prices change: pass your own table to
 * override any entry. Model names match by longest prefix, so `gpt-4o-2024-08-06` is priced
 * as `gpt-4o`.
 *
 * @example
 * ```ts
 * DEFAULT_PRICES.anthropic?.["claude-sonnet-4"]; // { input: 3, output: 15 }
 * ```
 */
export const DEFAULT_PRICES: PriceTable = {
  openai: {
    "gpt-4o": { input: 2.5, output: 10 },
    "gpt-4o-mini": { input: 0.15, output: 0.6 },
    "gpt-4.1": { input: 2, output: 8 },
    "gpt-4.1-mini": { input: 0.4, output: 1.6 },
    "gpt-4.1-nano": { input: 0.1, output: 0.4 },
    o3: { input: 2, output: 8 },
    "o4-mini": { input: 1.1, output: 4.4 },
  },
  anthropic: {
    "claude-opus-4": { input: 15, output: 75 },
    "claude-sonnet-4": { input: 3, output: 15 },
    "claude-3-7-sonnet": { input: 3, output: 15 },
    "claude-3-5-haiku": { input: 0.8, output: 4 },
  },
};

/** Which provider and model a task runs on, for pricing. */
export interface PriceSubject {
  provider: string;
  model?: string;
}

/**
 * The default way to tell provider and model: provider from the worker's `provider` label,
 * else its `kind`; model from `payload.model`, `metadata.model`, or the worker's `model` label.
 *
 * @example
 * ```ts
 * defaultPriceSubject(task, entry); // { provider: "openai", model: "gpt-4o-mini" }
 * ```
 */
export function defaultPriceSubject(
  task: TaskRecord,
  worker: WorkerEntry | undefined,
): PriceSubject {
  const labels = worker?.worker.labels;
  const provider = labels?.provider ?? worker?.worker.kind ?? task.rateLimitKeys[0] ?? "unknown";
  const payloadModel = (task.payload as { model?: unknown } | null | undefined)?.model;
  const model =
    typeof payloadModel === "string"
      ? payloadModel
      : typeof task.metadata.model === "string"
        ? task.metadata.model
        : labels?.model;
  return model === undefined ? { provider } : { provider, model };
}

/**
 * A price table with lookups by provider and model (exact name, else longest prefix, else the
 * provider's `*` entry) and cost arithmetic in integer micro-dollars.
 *
 * @example
 * ```ts
 * const prices = new PriceBook({ openai: { "gpt-4o": { input: 2.5, output: 10 } } });
 * prices.costMicros({ provider: "openai", model: "gpt-4o" }, 1000, 500); // 7500 (= $0.0075)
 * ```
 */
export class PriceBook {
  #table: PriceTable = {};
  readonly #base: PriceTable;
  #overrides: PriceTable;
  /** Prices set one at a time (`set`), kept across `setOverrides`. */
  readonly #set: PriceTable = {};

  /**
   * @param overrides entries that replace or add to the defaults
   * @param options.defaults include {@link DEFAULT_PRICES} @default true
   */
  constructor(overrides: PriceTable = {}, options: { defaults?: boolean } = {}) {
    this.#overrides = parseConfig(PriceTableSchema, overrides, "prices");
    this.#base = options.defaults === false ? {} : DEFAULT_PRICES;
    this.#rebuild();
  }

  #rebuild(): void {
    const table: PriceTable = {};
    for (const layer of [this.#base, this.#overrides, this.#set]) {
      for (const [provider, models] of Object.entries(layer)) {
        table[provider] = { ...table[provider], ...models };
      }
    }
    this.#table = table;
  }

  /**
   * Replaces the override table given at construction (prices from a reloaded config); the
   * defaults and prices set with {@link PriceBook.set} stay. Throws `VALIDATION` naming the
   * entry for a bad table, and then changes nothing.
   *
   * @example
   * ```ts
   * prices.setOverrides({ openai: { "gpt-4o": { input: 2, output: 8 } } });
   * ```
   */
  setOverrides(overrides: PriceTable): void {
    this.#overrides = parseConfig(PriceTableSchema, overrides, "prices");
    this.#rebuild();
  }

  /**
   * Sets the price of one provider's model (`"*"`: every model of the provider without a
   * price of its own), above the defaults and overrides — e.g. a worker registered with its
   * own price. Throws `VALIDATION` for a negative or non-finite price.
   *
   * @example
   * ```ts
   * prices.set("vllm-local", "*", { input: 0.2, output: 0.2 });
   * ```
   */
  set(provider: string, model: string, price: ModelPrice): void {
    const parsed = parseConfig(PriceTableSchema, { [provider]: { [model]: price } }, "price");
    this.#set[provider] = { ...this.#set[provider], ...parsed[provider] };
    this.#rebuild();
  }

  /** The price of a model, or `undefined` when the table does not know it. @example prices.price("openai", "gpt-4o-mini") */
  price(provider: string, model?: string): ModelPrice | undefined {
    const models = this.#table[provider];
    if (!models) return undefined;
    if (model !== undefined) {
      const exact = models[model];
      if (exact) return exact;
      let best: string | undefined;
      for (const name of Object.keys(models)) {
        if (model.startsWith(name) && (best === undefined || name.length > best.length))
          best = name;
      }
      if (best !== undefined) return models[best];
    }
    return models["*"];
  }

  /**
   * Cost in integer micro-dollars of `input` and `output` tokens on a subject, or `undefined`
   * when the price is unknown. ($1 per million tokens is 1 micro-dollar per token.)
   *
   * @example
   * ```ts
   * prices.costMicros({ provider: "anthropic", model: "claude-sonnet-4" }, 2000, 1000); // 21000
   * ```
   */
  costMicros(subject: PriceSubject, input: number, output: number): number | undefined {
    const p = this.price(subject.provider, subject.model);
    if (!p) return undefined;
    return Math.round(input * p.input + output * p.output);
  }

  /** A copy of the whole table. @example prices.table().openai */
  table(): PriceTable {
    return structuredClone(this.#table);
  }
}

/** USD → integer micro-dollars. @example toMicros(0.01) // 10000 */
export function toMicros(usd: number): number {
  return Math.round(usd * 1e6);
}

/** Integer micro-dollars → USD. @example fromMicros(10000) // 0.01 */
export function fromMicros(micros: number): number {
  return micros / 1e6;
}

/** Formats micro-dollars as dollars and cents (more digits below a cent). @example formatUsd(1_234_567) // "$1.23" */
export function formatUsd(micros: number): string {
  const usd = micros / 1e6;
  if (micros !== 0 && Math.abs(micros) < 10_000) return `$${usd.toFixed(6).replace(/0+$/, "")}`;
  return `$${usd.toFixed(2)}`;
}
