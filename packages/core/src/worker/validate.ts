import { z } from "zod";
import { FlotillaError } from "../errors.js";
import { UsageSchema } from "../task/schema.js";
import type { HealthReport, Worker, WorkerResult } from "./types.js";

/**
 * Formats zod issues as `path: message; path: message` (at most `max`), with `prefix` before
 * every path, for `VALIDATION` messages that name the field.
 *
 * @param max How many issues to list. @default 5
 *
 * @example
 * ```ts
 * const r = schema.safeParse(input);
 * if (!r.success) throw new FlotillaError("VALIDATION", formatIssues(r.error, "options"));
 * // "options.maxConcurrency: expected an integer >= 1"
 * ```
 */
export function formatIssues(error: z.ZodError, prefix: string, max = 5): string {
  return error.issues
    .slice(0, max)
    .map((issue) => {
      const path = issue.path.map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`));
      return `${prefix}${path.join("")}: ${issue.message}`;
    })
    .join("; ");
}

const nonEmpty = z.string().min(1, "expected a non-empty string");
const fn = z.custom<(...args: unknown[]) => unknown>((v) => typeof v === "function", {
  message: "expected a function",
});

/**
 * The shape every worker must have; {@link validateWorker} checks it.
 *
 * @example
 * ```ts
 * WorkerShapeSchema.safeParse({ ...worker }).success;
 * ```
 */
export const WorkerShapeSchema = z.object({
  id: z.string({ error: "expected a non-empty string" }).min(1, "expected a non-empty string"),
  kind: z.string({ error: "expected a non-empty string" }).min(1, "expected a non-empty string"),
  name: nonEmpty.optional(),
  taskTypes: z
    .array(nonEmpty, { error: "expected an array of task types" })
    .min(1, "expected at least one task type"),
  capabilities: z.array(nonEmpty, { error: "expected an array of strings" }).optional(),
  labels: z
    .record(z.string(), z.string({ error: "expected a string label value" }), {
      error: "expected an object of string labels",
    })
    .optional(),
  maxConcurrency: z
    .number({ error: "expected an integer >= 1" })
    .int("expected an integer >= 1")
    .min(1, "expected an integer >= 1"),
  local: z.boolean({ error: "expected a boolean" }).optional(),
  execute: fn,
  start: fn.optional(),
  stop: fn.optional(),
  healthCheck: fn.optional(),
  estimateCost: fn.optional(),
});

/**
 * Checks that `worker` has valid declared fields (non-empty `id` and `kind`, at least one
 * task type, an integer `maxConcurrency` >= 1, string capabilities and labels, an `execute`
 * function) and throws `FlotillaError` `VALIDATION` naming every wrong field otherwise.
 * `WorkerRegistry.add` calls it.
 *
 * @example
 * ```ts
 * validateWorker({ id: "w1", kind: "echo", taskTypes: [], maxConcurrency: 0, execute });
 * // throws FlotillaError VALIDATION:
 * // "invalid worker: worker.taskTypes: expected at least one task type; worker.maxConcurrency: expected an integer >= 1"
 * ```
 */
export function validateWorker(worker: unknown): asserts worker is Worker {
  if (typeof worker !== "object" || worker === null) {
    throw new FlotillaError("VALIDATION", "invalid worker: worker: expected an object");
  }
  // Read through the object (getters on classes included), not just own enumerable keys.
  const w = worker as Record<string, unknown>;
  const view: Record<string, unknown> = {};
  for (const key of Object.keys(WorkerShapeSchema.shape)) view[key] = w[key];
  const parsed = WorkerShapeSchema.safeParse(view);
  if (!parsed.success) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid worker${typeof w.id === "string" && w.id ? ` "${w.id}"` : ""}: ${formatIssues(parsed.error, "worker")}`,
      {
        details: { issues: parsed.error.issues.map((i) => ({ path: i.path, message: i.message })) },
      },
    );
  }
}

/**
 * The schema of a valid {@link WorkerResult}: an object with an `output` key. Prefer
 * {@link parseWorkerResult}, which also names what is wrong.
 *
 * @example
 * ```ts
 * WorkerResultSchema.safeParse({ output: "hi", usage: { inputTokens: 3 } }).success; // true
 * ```
 */
export const WorkerResultSchema = z.object(
  {
    output: z.unknown(),
    usage: UsageSchema.optional(),
    raw: z.unknown().optional(),
  },
  { error: "expected an object with an `output` field" },
);

/**
 * Validates what a worker's `execute` resolved to. Returns it typed, or throws
 * `FlotillaError` `WORKER_ERROR` (not retryable) naming what was wrong, so a malformed
 * answer fails the task instead of completing it.
 *
 * @example
 * ```ts
 * const result = parseWorkerResult(await worker.execute(task, ctx));
 * parseWorkerResult({ answer: 42 });
 * // throws FlotillaError WORKER_ERROR: "worker returned a malformed result: result.output: ..."
 * ```
 */
export function parseWorkerResult(value: unknown): WorkerResult {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new FlotillaError(
      "WORKER_ERROR",
      `worker returned a malformed result: expected an object with an \`output\` field, got ${describe(value)}`,
    );
  }
  if (!("output" in value)) {
    throw new FlotillaError(
      "WORKER_ERROR",
      "worker returned a malformed result: result.output: missing (return `{ output }`)",
    );
  }
  if ((value as { usage?: unknown }).usage === undefined) {
    // Nothing left for the schema to refuse: `output` and `raw` may be anything.
    const out: WorkerResult = { output: (value as { output: unknown }).output };
    if ("raw" in value) out.raw = (value as { raw?: unknown }).raw;
    return out;
  }
  const parsed = WorkerResultSchema.safeParse(value);
  if (!parsed.success) {
    throw new FlotillaError(
      "WORKER_ERROR",
      `worker returned a malformed result: ${formatIssues(parsed.error, "result")}`,
    );
  }
  const out: WorkerResult = { output: parsed.data.output };
  if (parsed.data.usage !== undefined) out.usage = parsed.data.usage;
  if ("raw" in value) out.raw = (value as { raw?: unknown }).raw;
  return out;
}

/**
 * The schema of a valid {@link HealthReport}.
 *
 * @example
 * ```ts
 * HealthReportSchema.safeParse({ status: "degraded", message: "slow" }).success; // true
 * ```
 */
export const HealthReportSchema = z.object({
  status: z.enum(["healthy", "degraded", "unhealthy"]),
  message: z.string().optional(),
  details: z.record(z.string(), z.unknown()).optional(),
});

/**
 * Validates what a worker's `healthCheck` resolved to; throws `FlotillaError`
 * `WORKER_ERROR` naming what was wrong.
 *
 * @example
 * ```ts
 * parseHealthReport({ status: "healthy" }); // { status: "healthy" }
 * parseHealthReport({ status: "ok" }); // throws WORKER_ERROR
 * ```
 */
export function parseHealthReport(value: unknown): HealthReport {
  const parsed = HealthReportSchema.safeParse(value);
  if (!parsed.success) {
    throw new FlotillaError(
      "WORKER_ERROR",
      `malformed health report: ${formatIssues(parsed.error, "report")}`,
    );
  }
  const out: HealthReport = { status: parsed.data.status };
  if (parsed.data.message !== undefined) out.message = parsed.data.message;
  if (parsed.data.details !== undefined) out.details = parsed.data.details;
  return out;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}
