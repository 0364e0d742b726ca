import type { TimerHandle } from "../clock.js";
import { ERROR_CODES, FlotillaError, RetryAfterError, type SerializedError } from "../errors.js";
import type { Logger } from "../logger.js";
import { toJsonSafe } from "../registry/json-safe.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate } from "../resources/gate.js";
import { toJson } from "../store/common.js";
import type { UsageEntry } from "../store/types.js";
import { type Usage, UsageSchema } from "../task/schema.js";
import type { Lease, TaskRecord } from "../task/types.js";
import { parseWorkerResult } from "../worker/validate.js";
import type { AttemptEnd } from "./outcome.js";
import type { Live } from "./taskTable.js";

interface AttemptBase {
  live: Live;
  /** The attempt's number (1 for the first). */
  n: number;
  entry: WorkerEntry;
  /** Whether a registry slot was acquired (released on settle). */
  slot: boolean;
  lease: Lease;
  leaseMs: number;
  timeoutTimer?: TimerHandle;
  settled: boolean;
  /** Whether the gates were told the attempt started. */
  started?: boolean;
  dispatchedAt: number;
  startedAt?: number;
  usage?: Usage;
  /** The gates told of the dispatch, to be told of the settle. */
  gates: readonly DispatchGate[];
}

/** An attempt run by an in-process worker slot. @internal */
export interface LocalAttempt extends AttemptBase {
  kind: "local";
  /** Created on first use of `ctx.signal` (most workers never look at it). */
  controller?: AbortController;
  /** Why the attempt was aborted, for a signal created after the fact. */
  abortReason?: FlotillaError;
}

/** An attempt held by a remote slot that claimed it (pull), kept alive by its lease. @internal */
export interface RemoteAttempt extends AttemptBase {
  kind: "remote";
  leaseTimer?: TimerHandle;
}

/** One attempt of a task on one worker slot or remote holder. @internal */
export type Attempt = LocalAttempt | RemoteAttempt;

/** How a worker's return value ends its attempt (a malformed result fails it). @internal */
export function successEnd(value: unknown, logger: Logger): AttemptEnd {
  try {
    let v = value;
    if (v !== null && typeof v === "object" && "usage" in v) {
      const usage = (v as { usage?: unknown }).usage;
      if (usage !== undefined && !UsageSchema.safeParse(usage).success) {
        logger.warn({ usage: safeJson(usage) }, "worker reported malformed usage; ignored");
        const { usage: _ignored, ...rest } = v as Record<string, unknown>;
        v = rest;
      }
    }
    const result = parseWorkerResult(v);
    const out = result.output;
    if (out !== null && (typeof out === "object" || typeof out === "bigint")) {
      toJson(out, "output"); // refused now rather than failing every store write later
    }
    return { kind: "success", result };
  } catch (err) {
    return { kind: "error", error: FlotillaError.from(err, "WORKER_ERROR") };
  }
}

/** How a thrown (or reported) error ends an attempt, with the Retry-After it asks for. @internal */
export function errorEnd(original: unknown): AttemptEnd {
  const error = toFlotillaError(original);
  const end: AttemptEnd = { kind: "error", error };
  const retryAfterMs =
    original instanceof RetryAfterError
      ? original.retryAfterMs
      : typeof (error.details as { retryAfterMs?: unknown } | undefined)?.retryAfterMs === "number"
        ? (error.details as { retryAfterMs: number }).retryAfterMs
        : undefined;
  if (retryAfterMs !== undefined) end.retryAfterMs = retryAfterMs;
  return end;
}

const FLOTILLA_ERROR_CODES = new Set<string>(ERROR_CODES);

function toFlotillaError(err: unknown): FlotillaError {
  if (
    !(err instanceof Error) &&
    err !== null &&
    typeof err === "object" &&
    typeof (err as SerializedError).code === "string" &&
    typeof (err as SerializedError).message === "string"
  ) {
    const s = err as SerializedError;
    const code = (
      FLOTILLA_ERROR_CODES.has(s.code) ? s.code : "WORKER_ERROR"
    ) as SerializedError["code"];
    return new FlotillaError(code, s.message, {
      retryable: s.retryable ?? false,
      details: s.details,
    });
  }
  return FlotillaError.from(err, "WORKER_ERROR");
}

/** Usage reported during a run, overlaid by the usage in the result. @internal */
export function mergeUsage(a: Usage | undefined, b: Usage | undefined): Usage | undefined {
  if (!a) return b ? { ...b } : undefined;
  if (!b) return { ...a };
  return { ...a, ...b };
}

/** `value` itself when JSON can hold it, else a JSON-safe copy (so a later store write cannot fail on it). @internal */
export function storable(value: unknown): unknown {
  if (value === null || (typeof value !== "object" && typeof value !== "bigint")) return value;
  try {
    JSON.stringify(value);
    return value;
  } catch {
    return toJsonSafe(value);
  }
}

/**
 * The ledger line of one settled attempt: what budgets and rate limits replay after a
 * restart (provider: the task's first rate-limit key; model: `payload.model` when a string).
 *
 * @internal
 */
export function usageLine(rec: TaskRecord, workerId: string, usage: Usage, at: number): UsageEntry {
  const line: UsageEntry = { at, taskId: rec.id, workerId, usage };
  const provider = rec.rateLimitKeys[0];
  if (provider !== undefined) line.provider = provider;
  const model = (rec.payload as { model?: unknown } | null | undefined)?.model;
  if (typeof model === "string") line.model = model;
  if (rec.tenant !== undefined) line.tenant = rec.tenant;
  if (rec.apiKey !== undefined) line.apiKey = rec.apiKey;
  return line;
}

/** At most 200 characters of `value` as JSON, for a log line. @internal */
export function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value)?.slice(0, 200) ?? String(value);
  } catch {
    return String(value);
  }
}
