import { FlotillaError, formatIssues, type LlmRequest, parseLlmRequest } from "@flotilla/core";
import { z } from "zod";

const OptionsSchema = z.record(z.string(), z.unknown());

/** `ollama_request` with `operation: "generate"`: a raw prompt completion. */
export const OllamaGenerateSchema = z.object({
  operation: z.literal("generate"),
  model: z.string().min(1).optional(),
  prompt: z.string().min(1),
  system: z.string().optional(),
  /** Base64 images. */
  images: z.array(z.string().min(1)).optional(),
  format: z.union([z.literal("json"), z.record(z.string(), z.unknown())]).optional(),
  raw: z.boolean().optional(),
  suffix: z.string().optional(),
  stream: z.boolean().optional(),
  /** Ollama model options (`temperature`, `num_ctx`, `num_predict`, ...). */
  options: OptionsSchema.optional(),
});

/** `ollama_request` with `operation: "embed"`: embeddings of one or more inputs. */
export const OllamaEmbedSchema = z.object({
  operation: z.literal("embed"),
  model: z.string().min(1).optional(),
  input: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]),
  truncate: z.boolean().optional(),
  dimensions: z.number().int().positive().optional(),
  options: OptionsSchema.optional(),
});

/** A validated `ollama_request` (or an `llm_request` routed to Ollama, as `chat`). */
export type OllamaRequest =
  | { operation: "chat"; model?: string; request: LlmRequest; options?: Record<string, unknown> }
  | z.infer<typeof OllamaGenerateSchema>
  | z.infer<typeof OllamaEmbedSchema>;

/**
 * Validates an `ollama_request` payload. `operation` is `chat` (the default; the portable
 * `llm_request` fields plus Ollama `options`), `generate` or `embed`. Errors name the field.
 *
 * @example
 * ```ts
 * parseOllamaRequest({ operation: "embed", input: ["a", "b"] });
 * ```
 */
export function parseOllamaRequest(payload: unknown, force?: "chat"): OllamaRequest {
  const op =
    force ??
    (payload && typeof payload === "object"
      ? (payload as { operation?: unknown }).operation
      : undefined) ??
    "chat";
  if (op === "chat") {
    const req = parseLlmRequest(payload);
    const options = (payload as { options?: unknown }).options;
    if (
      options !== undefined &&
      (typeof options !== "object" || options === null || Array.isArray(options))
    ) {
      throw new FlotillaError(
        "VALIDATION",
        "invalid ollama_request: payload.options: expected an object",
      );
    }
    return {
      operation: "chat",
      request: req,
      ...(req.model ? { model: req.model } : {}),
      ...(options ? { options: options as Record<string, unknown> } : {}),
    };
  }
  const schema =
    op === "generate" ? OllamaGenerateSchema : op === "embed" ? OllamaEmbedSchema : undefined;
  if (!schema) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid ollama_request: payload.operation: expected "chat", "generate" or "embed", got ${JSON.stringify(op)}`,
    );
  }
  const parsed = schema.safeParse(payload);
  if (!parsed.success) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid ollama_request: ${formatIssues(parsed.error, "payload", Number.POSITIVE_INFINITY)}`,
    );
  }
  return parsed.data;
}
