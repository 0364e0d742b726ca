import { type ErrorCode, FlotillaError } from "@flotilla/core";
import type { ZodError } from "zod";

/**
 * The one table from {@link FlotillaError} codes to HTTP statuses. Everything the
 * adapter answers with an error goes through it.
 */
export const HTTP_STATUS_BY_CODE: Readonly<Record<ErrorCode, number>> = {
  VALIDATION: 400,
  NOT_FOUND: 404,
  CONFLICT: 409,
  INVALID_STATE: 409,
  TIMEOUT: 504,
  CANCELLED: 409,
  RATE_LIMITED: 429,
  QUOTA_EXCEEDED: 429,
  NO_ELIGIBLE_WORKER: 422,
  DEPENDENCY_FAILED: 409,
  UNKNOWN_DEPENDENCY: 400,
  CYCLE_DETECTED: 400,
  WORKER_ERROR: 502,
  WORKER_LOST: 502,
  REJECTED: 409,
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  STORE_ERROR: 503,
  SHUTTING_DOWN: 503,
  INTERNAL: 500,
};

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
  const status = HTTP_STATUS_BY_CODE[fe.code] ?? 500;
  const safe =
    fe.code === "INTERNAL" && !(err instanceof FlotillaError)
      ? new FlotillaError("INTERNAL", "internal server error")
      : fe;
  const h: Record<string, string> = { "content-type": "application/json", ...headers };
  const retryAfterMs = (fe.details as { retryAfterMs?: number } | undefined)?.retryAfterMs;
  if ((status === 429 || status === 503) && typeof retryAfterMs === "number") {
    h["retry-after"] = String(Math.max(1, Math.ceil(retryAfterMs / 1000)));
  }
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
