import { FlotillaError, RetryAfterError, redact, UnrecoverableError } from "@flotilla/core";

/**
 * Ollama refused a request in a way retrying cannot fix (unknown model, bad parameters).
 *
 * @example
 * ```ts
 * const err = new OllamaRequestError(404, "model \"llama9\" not found");
 * err.message; // 'ollama 404: model "llama9" not found'
 * err instanceof UnrecoverableError; // true: the task fails without retries
 * ```
 */
export class OllamaRequestError extends UnrecoverableError {
  readonly status: number | undefined;

  constructor(status: number | undefined, message: string) {
    super(`ollama${status ? ` ${status}` : ""}: ${message}`);
    this.status = status;
  }

  toJSON() {
    return { name: this.name, message: this.message, status: this.status };
  }
}

/**
 * `retry-after-ms` or `retry-after` (seconds or HTTP date) in milliseconds.
 *
 * @example
 * ```ts
 * retryAfterMs(new Headers({ "retry-after": "2" }), Date.now()); // 2000
 * retryAfterMs(new Headers({ "retry-after-ms": "150" }), Date.now()); // 150
 * ```
 */
export function retryAfterMs(headers: Headers | undefined, now: number): number | undefined {
  if (!headers) return undefined;
  const ms = Number(headers.get("retry-after-ms") ?? Number.NaN);
  if (Number.isFinite(ms) && ms >= 0) return Math.round(ms);
  const ra = headers.get("retry-after");
  if (ra === null || ra.trim() === "") return undefined;
  const secs = Number(ra);
  if (Number.isFinite(secs)) return secs >= 0 ? Math.round(secs * 1000) : undefined;
  const t = Date.parse(ra);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/** What the mapper needs to know about the call. */
export interface OllamaErrorContext {
  secrets: readonly string[];
  signal: AbortSignal;
  timedOut: boolean;
  /** Headers of the last response seen (the `ollama` client does not keep them on errors). */
  headers: Headers | undefined;
  now: number;
}

/**
 * Maps what the `ollama` client threw: cancellation → `CANCELLED`; our timeout → retryable
 * `TIMEOUT`; HTTP 429 → `RetryAfterError`; 5xx → retryable `WORKER_ERROR` (or `RetryAfterError`
 * with the server's delay); other 4xx → {@link OllamaRequestError} with Ollama's message;
 * malformed JSON → `WORKER_ERROR`; connection failures → retryable `WORKER_ERROR`.
 *
 * @example
 * ```ts
 * try {
 *   return await ollama.chat(request);
 * } catch (err) {
 *   throw mapOllamaError(err, { secrets: [], signal, timedOut: false, headers: undefined, now: Date.now() });
 * }
 * ```
 */
export function mapOllamaError(err: unknown, ctx: OllamaErrorContext): Error {
  const clean = (m: string) => redact(m, ctx.secrets);
  if (ctx.timedOut)
    return new FlotillaError("TIMEOUT", "ollama request timed out", { retryable: true });
  if (ctx.signal.aborted) return new FlotillaError("CANCELLED", "ollama request aborted");
  if (
    err instanceof FlotillaError ||
    err instanceof UnrecoverableError ||
    err instanceof RetryAfterError
  ) {
    return err;
  }
  const e = err as { name?: string; message?: string; status_code?: number; cause?: unknown };
  const message = clean(String(e?.message ?? err));
  if (e?.name === "ResponseError" && typeof e.status_code === "number") {
    const status = e.status_code;
    const delay = retryAfterMs(ctx.headers, ctx.now);
    if (status === 429) return new RetryAfterError(delay ?? 1000, `ollama 429: ${message}`);
    if (status === 408 || status >= 500) {
      if (delay !== undefined) return new RetryAfterError(delay, `ollama ${status}: ${message}`);
      return new FlotillaError("WORKER_ERROR", `ollama ${status}: ${message}`, {
        retryable: true,
        details: { provider: "ollama", status },
      });
    }
    return new OllamaRequestError(status, message);
  }
  if (err instanceof SyntaxError || /JSON|malformed/i.test(message)) {
    return new FlotillaError("WORKER_ERROR", `malformed response from ollama: ${message}`, {
      details: { provider: "ollama" },
    });
  }
  if (e?.name === "AbortError") return new FlotillaError("CANCELLED", "ollama request aborted");
  const cause = e?.cause as { code?: unknown; message?: unknown } | undefined;
  const detail = cause ? ` (${clean(String(cause.code ?? cause.message ?? ""))})` : "";
  return new FlotillaError("WORKER_ERROR", `ollama: ${message}${detail}`, {
    retryable: true,
    details: { provider: "ollama" },
  });
}

/**
 * A response whose shape is not what Ollama documents.
 *
 * @example
 * ```ts
 * if (typeof res.message?.content !== "string") throw malformed("chat response without message.content");
 * ```
 */
export function malformed(what: string): FlotillaError {
  return new FlotillaError("WORKER_ERROR", `malformed response from ollama: ${what}`, {
    details: { provider: "ollama" },
  });
}
