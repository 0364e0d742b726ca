/** A model a worker serves, with what it can do. */
export interface ModelInfo {
  name: string;
  /** e.g. `vision`, `tools`, `json`, `streaming`, `embeddings`. */
  capabilities?: string[];
}

const RULES: [RegExp, string[]][] = [
  [/^(gpt-4o|gpt-4\.1|gpt-5|o3|o4|chatgpt-4o)/, ["vision", "tools", "json", "streaming"]],
  [/^(gpt-4|gpt-3\.5)/, ["tools", "json", "streaming"]],
  [/^claude-/, ["vision", "tools", "json", "streaming"]],
  [/^gemini-/, ["vision", "tools", "json", "streaming"]],
  [/(llava|vision|-vl|bakllava|moondream|gemma3)/, ["vision", "streaming"]],
  [
    /(llama3\.[123]|qwen|mistral|mixtral|command-r|granite|gpt-oss)/,
    ["tools", "json", "streaming"],
  ],
  [/(embed|bge|minilm)/, ["embeddings"]],
];

/**
 * Capabilities of a well-known model, by name (`gpt-4o` → vision, tools, json, streaming).
 * Unknown models get `["streaming"]`. Pass `ModelInfo` objects to a worker to be exact.
 *
 * @example
 * ```ts
 * inferCapabilities("claude-sonnet-4-5"); // ["vision", "tools", "json", "streaming"]
 * ```
 */
export function inferCapabilities(model: string): string[] {
  const name = model.toLowerCase();
  const out = new Set<string>();
  for (const [re, caps] of RULES) if (re.test(name)) for (const c of caps) out.add(c);
  if (out.size === 0) out.add("streaming");
  return [...out];
}

/**
 * Normalises a `models` option to `ModelInfo` with capabilities filled in.
 *
 * @example
 * ```ts
 * normaliseModels(["gpt-4o-mini", { name: "my-model", capabilities: ["tools"] }]);
 * // [{ name: "gpt-4o-mini", capabilities: inferCapabilities("gpt-4o-mini") }, { name: "my-model", capabilities: ["tools"] }]
 * ```
 */
export function normaliseModels(models: readonly (string | ModelInfo)[]): Required<ModelInfo>[] {
  return models.map((m) =>
    typeof m === "string"
      ? { name: m, capabilities: inferCapabilities(m) }
      : { name: m.name, capabilities: m.capabilities ?? inferCapabilities(m.name) },
  );
}
