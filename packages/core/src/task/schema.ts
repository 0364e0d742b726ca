import { z } from "zod";
import { strictObject } from "./fields.js";

/** Named priority levels, most urgent first. */
export const PRIORITY_NAMES = ["critical", "high", "normal", "low", "background"] as const;
export type PriorityName = (typeof PRIORITY_NAMES)[number];

/** The number each priority name stands for; higher runs first. Any finite number is allowed too. */
export const PRIORITY_VALUES: Readonly<Record<PriorityName, number>> = {
  critical: 40,
  high: 30,
  normal: 20,
  low: 10,
  background: 0,
};

/** Every task status: one state machine with guarded transitions (see `task/lifecycle`). */
export const TASK_STATUSES = [
  "pending",
  "awaiting_approval",
  "queued",
  "leased",
  "running",
  "succeeded",
  "failed",
  "cancelled",
  "timed_out",
  "rejected",
  "skipped",
] as const;
export type TaskStatus = (typeof TASK_STATUSES)[number];

/** Statuses a task never leaves. */
export const TERMINAL_STATUSES: ReadonlySet<TaskStatus> = new Set([
  "succeeded",
  "failed",
  "cancelled",
  "timed_out",
  "rejected",
  "skipped",
]);

/** Task types Flotilla's own workers claim. Any other non-empty string is allowed for custom workers. */
export const BUILTIN_TASK_TYPES = [
  "llm_request",
  "ollama_request",
  "tool_call",
  "code_execution",
  "docker_task",
  "api_request",
  "remote_compute",
  "agent_run",
  "custom",
] as const;

const key = z.string().min(1).max(256);

/**
 * A priority: a name (`critical`, `high`, `normal`, `low`, `background`) or any finite number (higher runs first).
 */
export const PrioritySchema = z.union([z.enum(PRIORITY_NAMES), z.number().finite()], {
  error: (issue) =>
    `expected one of ${PRIORITY_NAMES.join(", ")}, or a finite number (got ${shown(issue.input)})`,
});

/** A short, readable form of a rejected value for an error message. */
function shown(value: unknown): string {
  if (typeof value === "number") return String(value);
  try {
    return JSON.stringify(value)?.slice(0, 40) ?? String(value);
  } catch {
    return typeof value;
  }
}

/**
 * Zod schema of {@link Usage}: token counts, cost in USD and request count, all optional.
 */
export const UsageSchema = z.object({
  inputTokens: z.number().nonnegative().optional(),
  outputTokens: z.number().nonnegative().optional(),
  totalTokens: z.number().nonnegative().optional(),
  costUsd: z.number().nonnegative().optional(),
  requests: z.number().nonnegative().optional(),
});
/** Token and cost usage of one call or task. */
export type Usage = z.infer<typeof UsageSchema>;

/**
 * Zod schema of {@link RetryPolicy}: exponential backoff with jitter between attempts.
 */
export const RetryPolicySchema = strictObject({
  /** Total attempts including the first. @default 1 */
  maxAttempts: z.number().int().min(1).max(100).default(1),
  /** Delay before the first retry. @default 1000 */
  initialDelayMs: z.number().int().nonnegative().default(1000),
  /** Upper bound of the delay. @default 60000 */
  maxDelayMs: z.number().int().nonnegative().default(60_000),
  /** Growth per attempt. @default 2 */
  factor: z.number().min(1).default(2),
  /** Fraction of the delay randomised (0 = none, 1 = full jitter). @default 0.2 */
  jitter: z.number().min(0).max(1).default(0.2),
});
export type RetryPolicy = z.infer<typeof RetryPolicySchema>;

/**
 * Zod schema of {@link Requirements}: capabilities and labels a worker must offer to run the task.
 */
export const RequirementsSchema = strictObject({
  /** Every capability listed must be offered by the worker. */
  capabilities: z.array(key).optional(),
  /** Every label must be present on the worker with this value. */
  labels: z.record(z.string(), z.string()).optional(),
});
export type Requirements = z.infer<typeof RequirementsSchema>;

/**
 * Zod schema of {@link Target}: pins a task to a worker id, a name glob or tags.
 */
export const TargetSchema = strictObject({
  /** Only this worker (or node) id. */
  workerId: key.optional(),
  /** A name glob such as `client-acme-*`. */
  name: key.optional(),
  /** Worker labels/tags that must match exactly. */
  tags: z.record(z.string(), z.string()).optional(),
});
export type Target = z.infer<typeof TargetSchema>;

/**
 * Zod schema of {@link Estimate}: expected tokens or cost, used by budgets and cost-aware routing before the task runs.
 */
export const EstimateSchema = strictObject({
  inputTokens: z.number().nonnegative().optional(),
  outputTokens: z.number().nonnegative().optional(),
  tokens: z.number().nonnegative().optional(),
  costUsd: z.number().nonnegative().optional(),
});
export type Estimate = z.infer<typeof EstimateSchema>;

/**
 * What a caller submits. Everything but `type` is optional.
 *
 * @example
 * ```ts
 * const spec: TaskSpec = {
 *   type: "llm_request",
 *   payload: { messages: [{ role: "user", content: "hi" }] },
 *   priority: "high",
 *   dependsOn: ["fetch-docs"],
 *   timeoutMs: 30_000,
 *   retry: { maxAttempts: 3 },
 * };
 * ```
 */
export const TaskSpecSchema = strictObject({
  id: key.optional(),
  type: key,
  payload: z.unknown().optional(),
  priority: PrioritySchema.optional(),
  dependsOn: z.array(key).optional(),
  /** What happens to this task when a dependency fails. @default "skip" */
  onDependencyFailure: z.enum(["skip", "run"]).optional(),
  /** Input mapping: `{ name: "taskId" | "taskId.path.to.field" }`, resolved from dependency outputs. */
  inputs: z.record(z.string(), z.string()).optional(),
  requirements: RequirementsSchema.optional(),
  target: TargetSchema.optional(),
  timeoutMs: z.number().int().positive().optional(),
  retry: RetryPolicySchema.partial().optional(),
  rateLimitKey: z.union([key, z.array(key)]).optional(),
  estimate: EstimateSchema.optional(),
  /** `before_run`: waits for approval before it is queued; `after_run`: its result waits for approval. @default "none" */
  approval: z.enum(["none", "before_run", "after_run"]).optional(),
  idempotencyKey: key.optional(),
  tenant: key.optional(),
  /**
   * Who submitted it: an API key's id (the server sets it from the request's key, e.g.
   * `key:0123456789ab`; never trust one from a request body). `apiKey` budgets count by it.
   */
  apiKey: key.optional(),
  /** Do not start before this time (ms since epoch). */
  runAt: z.number().int().nonnegative().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});
export type TaskSpec = z.input<typeof TaskSpecSchema>;
export type ParsedTaskSpec = z.output<typeof TaskSpecSchema>;
