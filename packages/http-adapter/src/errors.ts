import { type ErrorCode, FlotillaError } from "@flotilla/core";
import type { ZodError } from "zod";

/**
 * The one table from {@link FlotillaError} codes to HTTP statuses, used by every route
 * family (Vera routes, the fleet protocol, the dashboard API). Every code but `INTERNAL`
 * answers a deliberate 4xx, or 503 when trying again later may succeed.
 */
export const HTTP_STATUS_BY_CODE: Readonly<Record<ErrorCode, number>> = {
  VALIDATION: 400,
  UNKNOWN_DEPENDENCY: 400,
  CYCLE_DETECTED: 400,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  /** The task did not finish within its time limit. */
  TIMEOUT: 408,
  CONFLICT: 409,
  INVALID_STATE: 409,
  CANCELLED: 409,
  REJECTED: 409,
  NO_ELIGIBLE_WORKER: 422,
  /** What the request depended on (a dependency, the worker running it) failed. */
  DEPENDENCY_FAILED: 424,
  WORKER_ERROR: 424,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 429,
  /** The worker or node holding the task went away; the task may be retried. */
  WORKER_LOST: 503,
  STORE_ERROR: 503,
  SHUTTING_DOWN: 503,
  INTERNAL: 500,
};

/**
 * The HTTP status of any thrown value: its code's status for a `FlotillaError`, 500 for
 * anything else.
 *
 * @example
 * ```ts
 * httpStatusOf(new FlotillaError("NOT_FOUND", "no task x")); // 404
 * ```
 */
export function httpStatusOf(err: unknown): number {
  return err instanceof FlotillaError ? (HTTP_STATUS_BY_CODE[err.code] ?? 500) : 500;
}

/**
 * The `Retry-After` header (whole seconds, at least 1) of a 429 or 503 whose error knows
 * when to try again (`details.retryAfterMs`); empty otherwise.
 *
 * @example
 * ```ts
 * retryAfterHeaders(new FlotillaError("RATE_LIMITED", "slow down", { details: { retryAfterMs: 1500 } }), 429); // {"retry-after": "2"}
 * ```
 */
export function retryAfterHeaders(err: FlotillaError, status: number): Record<string, string> {
  const retryAfterMs = (err.details as { retryAfterMs?: unknown } | undefined)?.retryAfterMs;
  if ((status !== 429 && status !== 503) || typeof retryAfterMs !== "number") return {};
  return { "retry-after": String(Math.max(1, Math.ceil(retryAfterMs / 1000))) };
}

/** The JSON body of every error answer: `{error: {code, message}, detail}` (`detail` for Vera/FastAPI clients). */
export interface ErrorBody {
  error: { code: string; message: string; details?: unknown };
  detail: string;
}

/**
 * Builds the JSON error body for `err`.
 *
 * @example
 * ```ts
 * errorBody(new FlotillaError("CONFLICT", "duplicate id")); // {error: {code: "CONFLICT", …}, detail: "duplicate id"}
 * ```
 */
export function errorBody(err: FlotillaError): ErrorBody {
  const body: ErrorBody = { error: { code: err.code, message: err.message }, detail: err.message };
  if (err.details !== undefined && err.code !== "INTERNAL") body.error.details = err.details;
  return body;
}

/**
 * An HTTP-level refusal that is not an engine error (e.g. `OVERLOADED` under host pressure):
 * its own status, code and headers, answered with the usual JSON body.
 *
 * @example
 * ```ts
 * throw new HttpError(503, "OVERLOADED", "host under pressure", { "retry-after": "5" });
 * ```
 */
export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

/**
 * Builds a JSON error `Response` for anything thrown. Unknown errors become `INTERNAL`
 * without leaking internals; 429/503 carry `Retry-After` when the error knows it.
 *
 * @example
 * ```ts
 * errorResponse(new FlotillaError("NOT_FOUND", "task x not found")); // 404 {error, detail}
 * ```
 */
export function errorResponse(err: unknown, headers?: Record<string, string>): Response {
  if (err instanceof HttpError) {
    const body = { error: { code: err.code, message: err.message }, detail: err.message };
    return new Response(JSON.stringify(body), {
      status: err.status,
      headers: { "content-type": "application/json", ...err.headers, ...headers },
    });
  }
  const fe = err instanceof FlotillaError ? err : FlotillaError.from(err);
  const status = httpStatusOf(fe);
  const safe =
    fe.code === "INTERNAL" && !(err instanceof FlotillaError)
      ? new FlotillaError("INTERNAL", "internal server error")
      : fe;
  const h = { "content-type": "application/json", ...headers, ...retryAfterHeaders(fe, status) };
  return new Response(JSON.stringify(errorBody(safe)), { status, headers: h });
}

/**
 * Turns a zod error into a `VALIDATION` error naming each field and what was expected.
 *
 * @example
 * ```ts
 * const r = TaskSubmitSchema.safeParse(body);
 * if (!r.success) throw validationError(r.error); // "body.type: Invalid input: expected string…"
 * ```
 */
export function validationError(err: ZodError, where = "body"): FlotillaError {
  const issues = err.issues.map((i) => {
    const path = i.path.length ? `${where}.${i.path.map(String).join(".")}` : where;
    return { path, message: i.message };
  });
  const message = issues.map((i) => `${i.path}: ${i.message}`).join("; ");
  return new FlotillaError("VALIDATION", message || `invalid ${where}`, { details: { issues } });
}
