/**
 * The closed set of error codes Flotilla uses. Every error that leaves a public API is a
 * {@link FlotillaError} carrying one of these.
 */
export const ERROR_CODES = [
  "VALIDATION",
  "NOT_FOUND",
  "CONFLICT",
  "INVALID_STATE",
  "TIMEOUT",
  "CANCELLED",
  "RATE_LIMITED",
  "QUOTA_EXCEEDED",
  "NO_ELIGIBLE_WORKER",
  "DEPENDENCY_FAILED",
  "UNKNOWN_DEPENDENCY",
  "CYCLE_DETECTED",
  "WORKER_ERROR",
  "WORKER_LOST",
  "REJECTED",
  "UNAUTHORIZED",
  "FORBIDDEN",
  "STORE_ERROR",
  "SHUTTING_DOWN",
  "INTERNAL",
] as const;

/** One of {@link ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number];

/** The JSON form of an error as stored in a task result and sent over the wire. */
export interface SerializedError {
  code: ErrorCode;
  message: string;
  /** Whether the scheduler may retry the task after this error. */
  retryable?: boolean;
  details?: unknown;
}

/** Options for {@link FlotillaError}. */
export interface FlotillaErrorOptions {
  /**
   * The underlying error, kept as the standard `Error.cause`. @default undefined
   */
  cause?: unknown;
  /**
   * Extra data for the caller (serialised by `toJSON`), e.g. the offending field. @default undefined
   */
  details?: unknown;
  /** Whether a task that failed with this error may be retried. @default false */
  retryable?: boolean;
}

/**
 * The one error type of Flotilla's public API.
 *
 * @example
 * ```ts
 * try {
 *   await orchestrator.submit({ type: "" });
 * } catch (err) {
 *   if (err instanceof FlotillaError && err.code === "VALIDATION") console.error(err.message);
 * }
 * ```
 */
export class FlotillaError extends Error {
  override readonly name = "FlotillaError";
  readonly code: ErrorCode;
  readonly details: unknown;
  readonly retryable: boolean;

  constructor(code: ErrorCode, message: string, options: FlotillaErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details;
    this.retryable = options.retryable ?? false;
  }

  /**
   * Normalises anything thrown into a `FlotillaError` (`fallback` code for foreign errors).
   *
   * @example
   * ```ts
   * FlotillaError.from(new Error("disk full"), "STORE_ERROR").code; // "STORE_ERROR"
   * FlotillaError.from(new RetryAfterError(5_000)).code; // "RATE_LIMITED", retryable
   * ```
   */
  static from(err: unknown, fallback: ErrorCode = "INTERNAL"): FlotillaError {
    if (err instanceof FlotillaError) return err;
    if (err instanceof UnrecoverableError) {
      return new FlotillaError("WORKER_ERROR", err.message, { cause: err, retryable: false });
    }
    if (err instanceof RetryAfterError) {
      return new FlotillaError("RATE_LIMITED", err.message, {
        cause: err,
        retryable: true,
        details: { retryAfterMs: err.retryAfterMs },
      });
    }
    const message = err instanceof Error ? err.message : String(err);
    return new FlotillaError(fallback, message || fallback, { cause: err, retryable: true });
  }

  /** The serialisable form (no stack, no cause). */
  toJSON(): SerializedError {
    const out: SerializedError = { code: this.code, message: this.message };
    if (this.retryable) out.retryable = true;
    if (this.details !== undefined) out.details = this.details;
    return out;
  }
}

/**
 * Thrown by a worker for a failure that retrying cannot fix (bad input, a 4xx from a
 * provider). The task fails at once, whatever attempts it has left.
 *
 * @example
 * ```ts
 * if (!payload.prompt) throw new UnrecoverableError("payload.prompt is required");
 * ```
 */
export class UnrecoverableError extends Error {
  override readonly name = "UnrecoverableError";
}

/**
 * Thrown by a worker when the upstream asked it to slow down (an HTTP 429 with
 * `Retry-After`). The task is retried no sooner than `retryAfterMs`, and the task's
 * rate-limit keys are paused until then.
 *
 * @example
 * ```ts
 * if (res.status === 429) throw new RetryAfterError(Number(res.headers.get("retry-after")) * 1000);
 * ```
 */
export class RetryAfterError extends Error {
  override readonly name = "RetryAfterError";
  readonly retryAfterMs: number;

  constructor(retryAfterMs: number, message = `retry after ${retryAfterMs} ms`) {
    super(message);
    this.retryAfterMs = Math.max(0, retryAfterMs);
  }
}
