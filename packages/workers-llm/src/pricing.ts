import type { Usage } from "@flotilla/core";

/** Price of a model in USD per million tokens. */
export interface ModelPrice {
  inputPerMTok: number;
  outputPerMTok: number;
}

/**
 * List prices (USD per million tokens) of current models, as published by their providers
 * in 2025. Prices change: override them with the `prices` option of a worker. Models are
 * matched by exact name, then by the longest name that prefixes the model
 * (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`).
 */
export const DEFAULT_PRICES: Readonly<Record<string, ModelPrice>> = {
  "gpt-5": { inputPerMTok: 1.25, outputPerMTok: 10 },
  "gpt-5-mini": { inputPerMTok: 0.25, outputPerMTok: 2 },
  "gpt-5-nano": { inputPerMTok: 0.05, outputPerMTok: 0.4 },
  "gpt-4.1": { inputPerMTok: 2, outputPerMTok: 8 },
  "gpt-4.1-mini": { inputPerMTok: 0.4, outputPerMTok: 1.6 },
  "gpt-4.1-nano": { inputPerMTok: 0.1, outputPerMTok: 0.4 },
  "gpt-4o": { inputPerMTok: 2.5, outputPerMTok: 10 },
  "gpt-4o-mini": { inputPerMTok: 0.15, outputPerMTok: 0.6 },
  o3: { inputPerMTok: 2, outputPerMTok: 8 },
  "o4-mini": { inputPerMTok: 1.1, outputPerMTok: 4.4 },
  "claude-opus-4-1": { inputPerMTok: 15, outputPerMTok: 75 },
  "claude-opus-4": { inputPerMTok: 15, outputPerMTok: 75 },
  "claude-sonnet-4-5": { inputPerMTok: 3, outputPerMTok: 15 },
  "claude-sonnet-4": { inputPerMTok: 3, outputPerMTok: 15 },
  "claude-3-7-sonnet": { inputPerMTok: 3, outputPerMTok: 15 },
  "claude-haiku-4-5": { inputPerMTok: 1, outputPerMTok: 5 },
  "claude-3-5-haiku": { inputPerMTok: 0.8, outputPerMTok: 4 },
  "gemini-2.5-pro": { inputPerMTok: 1.25, outputPerMTok: 10 },
  "gemini-2.5-flash": { inputPerMTok: 0.3, outputPerMTok: 2.5 },
  "gemini-2.5-flash-lite": { inputPerMTok: 0.1, outputPerMTok: 0.4 },
  "gemini-2.0-flash": { inputPerMTok: 0.1, outputPerMTok: 0.4 },
};

/**
 * A price table: the defaults plus overrides.
 *
 * @example
 * ```ts
 * const prices = new PriceTable({ "my-finetune": { inputPerMTok: 1, outputPerMTok: 2 } });
 * prices.cost("my-finetune", { inputTokens: 1000, outputTokens: 500 }); // 0.002
 * ```
 */
export class PriceTable {
  readonly #prices: Map<string, ModelPrice>;
  readonly #byLength: string[];

  /**
   * @param overrides prices that replace or extend the defaults
   * @param includeDefaults start from {@link DEFAULT_PRICES}. @default true
   */
  constructor(overrides: Record<string, ModelPrice> = {}, includeDefaults = true) {
    this.#prices = new Map(
      Object.entries({ ...(includeDefaults ? DEFAULT_PRICES : {}), ...overrides }),
    );
    this.#byLength = [...this.#prices.keys()].sort((a, b) => b.length - a.length);
  }

  /** The price of `model` (exact, then longest prefix), or undefined. */
  lookup(model: string): ModelPrice | undefined {
    const exact = this.#prices.get(model);
    if (exact) return exact;
    const name = model.includes("/") ? model.slice(model.lastIndexOf("/") + 1) : model;
    const key = this.#byLength.find(
      (k) => name === k || name.startsWith(`${k}-`) || name.startsWith(`${k}@`),
    );
    return key ? this.#prices.get(key) : undefined;
  }

  /** Cost in USD of `usage` on `model`; undefined when the model has no price. */
  cost(model: string, usage: Pick<Usage, "inputTokens" | "outputTokens">): number | undefined {
    const price = this.lookup(model);
    if (!price) return undefined;
    const usd =
      ((usage.inputTokens ?? 0) * price.inputPerMTok +
        (usage.outputTokens ?? 0) * price.outputPerMTok) /
      1e6;
    return Math.round(usd * 1e10) / 1e10;
  }
}
