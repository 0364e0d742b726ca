import { type ModelPrice, PriceBook, type PriceTable } from "@flotilla/core";

/**
 * Prices (USD per million tokens, providers' public lists of 2025) for current models that
 * core's `DEFAULT_PRICES` does not list; LLM workers price with core's `PriceBook` holding
 * both. Override any entry with the `prices` option of a worker.
 */
export const LLM_PRICES: PriceTable = {
  openai: {
    "gpt-5": { input: 1.25, output: 10 },
    "gpt-5-mini": { input: 0.25, output: 2 },
    "gpt-5-nano": { input: 0.05, output: 0.4 },
  },
  anthropic: {
    "claude-opus-4-1": { input: 15, output: 75 },
    "claude-sonnet-4-5": { input: 3, output: 15 },
    "claude-haiku-4-5": { input: 1, output: 5 },
  },
  gemini: {
    "gemini-2.5-pro": { input: 1.25, output: 10 },
    "gemini-2.5-flash": { input: 0.3, output: 2.5 },
    "gemini-2.5-flash-lite": { input: 0.1, output: 0.4 },
    "gemini-2.0-flash": { input: 0.1, output: 0.4 },
  },
};

/**
 * Core's default prices plus {@link LLM_PRICES}, plus `overrides`.
 *
 * @example
 * ```ts
 * const prices = createPriceBook({ vllm: { "*": { input: 0.05, output: 0.05 } } });
 * prices.costMicros({ provider: "vllm", model: "qwen" }, 1000, 1000); // 100
 * ```
 */
export function createPriceBook(overrides: PriceTable = {}): PriceBook {
  const table: PriceTable = {};
  for (const source of [LLM_PRICES, overrides]) {
    for (const [provider, models] of Object.entries(source)) {
      table[provider] = { ...table[provider], ...models };
    }
  }
  return new PriceBook(table);
}

/** A worker's `prices` option: a whole `PriceBook`, or per-model prices for the worker's provider. */
export type PricesOption = PriceBook | Record<string, ModelPrice>;

/**
 * Resolves a `prices` option into a book.
 *
 * @example
 * ```ts
 * const book = resolvePrices("openai", { "my-fine-tune": { input: 0.3, output: 1.2 } });
 * book.price("openai", "my-fine-tune"); // { input: 0.3, output: 1.2 } (USD per 1M tokens)
 * ```
 */
export function resolvePrices(provider: string, prices: PricesOption | undefined): PriceBook {
  if (prices instanceof PriceBook) return prices;
  return createPriceBook(prices ? { [provider]: prices } : {});
}
