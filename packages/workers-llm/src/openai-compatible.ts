import { FlotillaError } from "@flotilla/core";
import { OpenAIWorker, type OpenAIWorkerOptions } from "./openai.js";

/** Known OpenAI-compatible endpoints and their defaults. */
export const OPENAI_COMPATIBLE_PRESETS = {
  /** vLLM's OpenAI-compatible server (`vllm serve`). */
  vllm: { baseURL: "http://localhost:8000/v1", local: true, apiKeyRequired: false },
  /** LM Studio's local server. */
  lmstudio: { baseURL: "http://localhost:1234/v1", local: true, apiKeyRequired: false },
  /** llama.cpp's `llama-server`. */
  llamacpp: { baseURL: "http://localhost:8080/v1", local: true, apiKeyRequired: false },
  /** Ollama's OpenAI-compatible endpoint. */
  "ollama-openai": { baseURL: "http://localhost:11434/v1", local: true, apiKeyRequired: false },
  /** Google Gemini's OpenAI-compatible endpoint. */
  gemini: {
    baseURL: "https://generativelanguage.googleapis.com/v1beta/openai/",
    local: false,
    apiKeyRequired: true,
  },
} as const;

export type OpenAICompatiblePreset = keyof typeof OPENAI_COMPATIBLE_PRESETS;

/** Options of {@link OpenAICompatibleWorker}. */
export interface OpenAICompatibleWorkerOptions extends Omit<OpenAIWorkerOptions, "defaultModel"> {
  /** A known endpoint: sets `baseURL`, `kind` and locality. */
  preset?: OpenAICompatiblePreset;
  /** The model to use (endpoints serve their own). */
  defaultModel: string;
  /** `kind` of the worker. @default the preset, or "openai-compatible" */
  kind?: string;
}

const LOOPBACK = /^https?:\/\/(localhost|127\.\d+\.\d+\.\d+|\[::1\])(:\d+)?(\/|$)/;

/**
 * A worker for any endpoint that speaks OpenAI's chat completions API: vLLM, LM Studio,
 * llama.cpp server, Ollama's `/v1`, Gemini's OpenAI-compatible endpoint, or a `baseURL` of
 * your own. Local endpoints need no API key and cost nothing unless `prices` says otherwise.
 *
 * @example
 * ```ts
 * const vllm = new OpenAICompatibleWorker({ preset: "vllm", defaultModel: "Qwen/Qwen2.5-7B-Instruct" });
 * const gemini = new OpenAICompatibleWorker({
 *   preset: "gemini",
 *   apiKey: process.env.GEMINI_API_KEY,
 *   defaultModel: "gemini-2.5-flash",
 * });
 * ```
 */
export class OpenAICompatibleWorker extends OpenAIWorker {
  constructor(options: OpenAICompatibleWorkerOptions) {
    const preset = options.preset ? OPENAI_COMPATIBLE_PRESETS[options.preset] : undefined;
    const baseURL = options.baseURL ?? preset?.baseURL;
    if (!baseURL)
      throw new FlotillaError("VALIDATION", "baseURL: required when no preset is given");
    if (preset?.apiKeyRequired && !options.apiKey) {
      throw new FlotillaError("VALIDATION", `apiKey: required for the ${options.preset} preset`);
    }
    const kind = options.kind ?? options.preset ?? "openai-compatible";
    const local = options.local ?? preset?.local ?? LOOPBACK.test(baseURL);
    super(
      {
        ...options,
        baseURL,
        apiKey: options.apiKey ?? "not-needed",
        local,
        // A local endpoint costs nothing unless told otherwise, so cost-aware routing prefers it.
        prices: options.prices ?? (local ? { "*": { input: 0, output: 0 } } : undefined),
        providerOptionsKey: options.providerOptionsKey ?? kind,
        maxTokensField: options.maxTokensField ?? "max_tokens",
      },
      kind,
    );
  }
}
