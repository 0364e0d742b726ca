import {
  APIUserAbortError as AnthropicAbortError,
  APIConnectionError as AnthropicConnectionError,
  APIConnectionTimeoutError as AnthropicTimeoutError,
} from "@anthropic-ai/sdk";
import { FlotillaError, RetryAfterError, redact, UnrecoverableError } from "@flotilla/core";
import {
  APIUserAbortError as OpenAIAbortError,
  APIConnectionError as OpenAIConnectionError,
  APIConnectionTimeoutError as OpenAITimeoutError,
} from "openai";
import { retryAfterMs } from "./rate-limit.js";

/**
 * A request the provider refused and that retrying cannot fix (a 4xx other than 408/409/429):
 * bad parameters, unknown model, bad credentials. Its message is the provider's own.
 *
 * @example
 * ```ts
 * const err = new ProviderRequestError("openai", 404, "The model `gpt-9` does not exist", "model_not_found");
 * err.message; // "openai 404: The model `gpt-9` does not exist"
 * err instanceof UnrecoverableError; // true: the task fails without retries
 * ```
 */
export class ProviderRequestError extends UnrecoverableError {
  readonly provider: string;
  readonly status: number | undefined;
  /** The provider's error type or code (`invalid_request_error`, `model_not_found`, ...). */
  readonly providerType: string | undefined;

  constructor(
    provider: string,
    status: number | undefined,
    message: string,
    providerType?: string,
  ) {
    super(`${provider}${status ? ` ${status}` : ""}: ${message}`);
    this.provider = provider;
    this.status = status;
    this.providerType = providerType;
  }

  toJSON() {
    return {
      name: this.name,
      message: this.message,
      provider: this.provider,
      status: this.status,
      providerType: this.providerType,
    };
  }
}

/** What the mapper needs to know about the call. */
export interface ErrorContext {
  provider: string;
  secrets: readonly string[];
  /** The caller's signal (cancellation, task timeout). */
  signal: AbortSignal;
  now: number;
  /** Delay for a retryable status without a retry-after header. @default undefined (the orchestrator's backoff) */
}

interface ApiErrorLike {
  status?: number;
  headers?: Headers | Record<string, string>;
  error?: unknown;
  message: string;
  name: string;
  type?: unknown;
  code?: unknown;
}

/** Error bodies as the SDKs keep them: OpenAI's inner `error` object, Anthropic's whole body. */
interface ErrorBody {
  message?: unknown;
  code?: unknown;
  type?: unknown;
  error?: { message?: unknown; type?: unknown } | string;
}

function providerMessage(err: ApiErrorLike): string {
  const body = err.error as ErrorBody | undefined;
  const inner = typeof body?.error === "object" ? body.error : undefined;
  const fromBody =
    (typeof body?.message === "string" && body.message) ||
    (typeof inner?.message === "string" && inner.message) ||
    (typeof body?.error === "string" && body.error);
  return fromBody || err.message.replace(/^\d{3} /, "");
}

function providerType(err: ApiErrorLike): string | undefined {
  const body = err.error as ErrorBody | undefined;
  const inner = typeof body?.error === "object" ? body.error : undefined;
  const t = body?.code ?? inner?.type ?? body?.type ?? err.code ?? err.type;
  return typeof t === "string" ? t : undefined;
}

/** Whether an error thrown by an SDK is a provider HTTP error (the OpenAI and Anthropic SDKs share the shape). */
function isApiError(err: unknown): err is ApiErrorLike {
  return err instanceof Error && "status" in err && "headers" in err && "error" in err;
}

/**
 * Turns anything an SDK threw into Flotilla's control-flow errors:
 * cancellation → `CANCELLED`; 429 → `RetryAfterError` with the server's delay; 408/409/5xx →
 * `RetryAfterError` (when the server gave a delay) or a retryable `WORKER_ERROR`; other 4xx →
 * {@link ProviderRequestError} (not retried) carrying the provider's message; a timeout →
 * retryable `TIMEOUT`; a lost connection → retryable `WORKER_ERROR`; a malformed response →
 * `WORKER_ERROR`. Secrets are scrubbed from every message.
 *
 * @example
 * ```ts
 * try {
 *   return await client.chat.completions.create(body, { signal });
 * } catch (err) {
 *   throw mapProviderError(err, { provider: "openai", secrets: [apiKey], signal, now: Date.now() });
 * }
 * ```
 */
export function mapProviderError(err: unknown, ctx: ErrorContext): Error {
  const { provider, secrets } = ctx;
  const clean = (m: string) => redact(m, secrets);
  if (ctx.signal.aborted) {
    // Some SDK streams end quietly when aborted: whatever came out, the caller cancelled.
    return new FlotillaError("CANCELLED", `${provider} request aborted`);
  }
  if (
    err instanceof FlotillaError ||
    err instanceof UnrecoverableError ||
    err instanceof RetryAfterError
  ) {
    return err;
  }
  const name = err instanceof Error ? err.name : "";
  const message = err instanceof Error ? err.message : String(err);
  if (
    err instanceof OpenAITimeoutError ||
    err instanceof AnthropicTimeoutError ||
    name === "TimeoutError"
  ) {
    return new FlotillaError("TIMEOUT", `${provider} request timed out`, { retryable: true });
  }
  if (
    err instanceof OpenAIAbortError ||
    err instanceof AnthropicAbortError ||
    name === "AbortError"
  ) {
    return new FlotillaError("CANCELLED", `${provider} request aborted`);
  }
  if (isApiError(err) && typeof err.status === "number") {
    const status = err.status;
    const msg = clean(providerMessage(err));
    const delay = retryAfterMs(err.headers, ctx.now);
    if (status === 429) {
      return new RetryAfterError(delay ?? 1000, `${provider} 429: ${msg}`);
    }
    if (status === 408 || status === 409 || status >= 500) {
      if (delay !== undefined) return new RetryAfterError(delay, `${provider} ${status}: ${msg}`);
      return new FlotillaError("WORKER_ERROR", `${provider} ${status}: ${msg}`, {
        retryable: true,
        details: { provider, status },
      });
    }
    return new ProviderRequestError(provider, status, msg, providerType(err));
  }
  const connection =
    err instanceof OpenAIConnectionError || err instanceof AnthropicConnectionError;
  if (isApiError(err) && !connection) {
    // An error event inside a stream (no HTTP status): overloaded/api errors are transient.
    const type = providerType(err);
    const msg = clean(providerMessage(err));
    const transient = type === undefined || /overloaded|api_error|server|rate_limit/.test(type);
    return new FlotillaError("WORKER_ERROR", `${provider}: ${msg}`, {
      retryable: transient,
      details: { provider, type },
    });
  }
  if (err instanceof SyntaxError || /malformed|unexpected token|invalid json/i.test(message)) {
    return new FlotillaError(
      "WORKER_ERROR",
      `malformed response from ${provider}: ${clean(message)}`,
      {
        details: { provider },
      },
    );
  }
  return new FlotillaError(
    "WORKER_ERROR",
    `connection to ${provider} failed: ${clean(message)}${causeText(err, secrets)}`,
    { retryable: true, details: { provider } },
  );
}

function causeText(err: unknown, secrets: readonly string[]): string {
  // fetch wraps the socket error twice (`Connection error.` ← `fetch failed` ← `ECONNREFUSED`).
  let cause = err instanceof Error ? (err.cause as unknown) : undefined;
  let last: string | undefined;
  for (let depth = 0; depth < 5 && cause instanceof Error; depth++) {
    const code = (cause as { code?: unknown }).code;
    if (typeof code === "string") return ` (${redact(code, secrets)})`;
    last = cause.message;
    cause = cause.cause;
  }
  return last ? ` (${redact(last, secrets)})` : "";
}

/** A response whose shape is not what the provider documents. */
export function malformed(provider: string, what: string): FlotillaError {
  return new FlotillaError("WORKER_ERROR", `malformed response from ${provider}: ${what}`, {
    details: { provider },
  });
}

/** A stream that ended before the provider's end marker (usually a lost connection): retryable. */
export function truncated(provider: string, what: string): FlotillaError {
  return new FlotillaError("WORKER_ERROR", `${provider} stream ended early: ${what}`, {
    retryable: true,
    details: { provider },
  });
}
