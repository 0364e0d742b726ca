import { FlotillaError } from "../errors.js";
import { newId } from "../util/ids.js";
import {
  type ParsedTaskSpec,
  PRIORITY_NAMES,
  PRIORITY_VALUES,
  type PriorityName,
  type RetryPolicy,
  RetryPolicySchema,
  type TaskSpec,
  TaskSpecSchema,
} from "./schema.js";
import type { TaskRecord } from "./types.js";
import { parseOrThrow } from "./validation.js";

/**
 * Defaults applied to every submitted task that does not set the field itself.
 *
 * @example
 * ```ts
 * new Orchestrator({ defaults: { priority: "low", timeoutMs: 60_000, retry: { maxAttempts: 3 } } });
 * ```
 */
export interface TaskDefaults {
  /** @default "normal" (20) */
  priority?: PriorityName | number;
  /** Per-attempt timeout. @default undefined (no timeout) */
  timeoutMs?: number;
  /** Merged under each task's own `retry`. @default { maxAttempts: 1, initialDelayMs: 1000, maxDelayMs: 60000, factor: 2, jitter: 0.2 } */
  retry?: Partial<RetryPolicy>;
  /** @default undefined (the anonymous tenant) */
  tenant?: string;
}

/**
 * Maps a priority name or number to its number (higher runs first).
 *
 * @example
 * ```ts
 * priorityValue("high"); // 30
 * priorityValue(undefined); // 20 (normal)
 * ```
 */
export function priorityValue(priority: PriorityName | number | undefined): number {
  if (priority === undefined) return PRIORITY_VALUES.normal;
  return typeof priority === "number" ? priority : PRIORITY_VALUES[priority];
}

/**
 * Validates a `TaskSpec` and turns it into a new `TaskRecord` (status `pending`, attempt 0).
 * Throws `FlotillaError("VALIDATION")` naming the field path (prefixed by `where`).
 *
 * Defaults: id a random UUID, priority `normal` (20), `onDependencyFailure: "skip"`,
 * `approval: "none"`, retry `{ maxAttempts: 1, initialDelayMs: 1000, maxDelayMs: 60000,
 * factor: 2, jitter: 0.2 }`, no timeout, metadata `{}`.
 *
 * @example
 * ```ts
 * const record = normalizeTaskSpec({ type: "echo", priority: "high" }, { now: Date.now(), seq: 1 });
 * record.priority; // 30
 * ```
 */
export function normalizeTaskSpec(
  spec: TaskSpec,
  options: { now: number; seq: number; defaults?: TaskDefaults; where?: string },
): TaskRecord {
  const where = options.where ?? "task";
  if (spec === null || typeof spec !== "object" || Array.isArray(spec)) {
    throw new FlotillaError(
      "VALIDATION",
      `${where}: expected a task object, got ${describe(spec)}`,
    );
  }
  const parsed = plainSpec(spec) ?? parseOrThrow(TaskSpecSchema, spec, where);
  const defaults = options.defaults ?? {};
  // The raw (already validated) retry object: only the fields the caller set override defaults.
  const retry: RetryPolicy =
    spec.retry === undefined
      ? defaultRetry(defaults.retry)
      : RetryPolicySchema.parse({ ...defaults.retry, ...spec.retry });
  if (retry.maxDelayMs < retry.initialDelayMs) {
    throw new FlotillaError(
      "VALIDATION",
      `${where}.retry.maxDelayMs: expected >= initialDelayMs (${retry.initialDelayMs}), got ${retry.maxDelayMs}`,
    );
  }
  const dependsOn = parsed.dependsOn ? [...new Set(parsed.dependsOn)] : [];
  const id = parsed.id ?? newId();
  if (dependsOn.includes(id)) {
    throw new FlotillaError("CYCLE_DETECTED", `${where}: task ${id} depends on itself`, {
      details: { cycle: [id] },
    });
  }
  const rateLimitKeys =
    parsed.rateLimitKey === undefined
      ? []
      : Array.isArray(parsed.rateLimitKey)
        ? [...new Set(parsed.rateLimitKey)]
        : [parsed.rateLimitKey];
  const timeoutMs = parsed.timeoutMs ?? defaults.timeoutMs;
  const tenant = parsed.tenant ?? defaults.tenant;
  const record: TaskRecord = {
    id,
    type: parsed.type,
    payload: parsed.payload,
    priority: priorityValue(parsed.priority ?? defaults.priority),
    seq: options.seq,
    status: "pending",
    dependsOn,
    onDependencyFailure: parsed.onDependencyFailure ?? "skip",
    retry,
    rateLimitKeys,
    approval: parsed.approval ?? "none",
    metadata: parsed.metadata ?? {},
    attempt: 0,
    createdAt: options.now,
    updatedAt: options.now,
    version: 0,
  };
  if (parsed.inputs) record.inputs = parsed.inputs;
  if (parsed.requirements) record.requirements = parsed.requirements;
  if (parsed.target) record.target = parsed.target;
  if (timeoutMs !== undefined) record.timeoutMs = timeoutMs;
  if (parsed.estimate) record.estimate = parsed.estimate;
  if (parsed.idempotencyKey) record.idempotencyKey = parsed.idempotencyKey;
  if (tenant !== undefined) record.tenant = tenant;
  if (parsed.apiKey !== undefined) record.apiKey = parsed.apiKey;
  if (parsed.runAt !== undefined) record.runAt = parsed.runAt;
  return record;
}

/** Fields the fast path leaves to the schema (objects the schema copies, or rarer checks). */
const SCHEMA_FIELDS = [
  "onDependencyFailure",
  "inputs",
  "requirements",
  "target",
  "retry",
  "estimate",
  "approval",
  "metadata",
] as const;
const PRIORITY_NAME_SET: ReadonlySet<unknown> = new Set(PRIORITY_NAMES);
/** Every field a task spec may have: any other sends the spec to the schema, which names it. */
const SPEC_FIELDS: ReadonlySet<string> = new Set(Object.keys(TaskSpecSchema.shape));

function isKey(v: unknown): boolean {
  return typeof v === "string" && v.length >= 1 && v.length <= 256;
}

function isKeyList(v: unknown): boolean {
  if (!Array.isArray(v)) return false;
  for (const item of v) if (!isKey(item)) return false;
  return true;
}

/**
 * The spec itself when its fields are plainly valid and none needs copying or a rarer
 * check, else `undefined` — the schema then parses it (and names what is wrong, so every
 * error message comes from the schema). Only ever stricter than the schema.
 */
function plainSpec(spec: TaskSpec): ParsedTaskSpec | undefined {
  const s = spec as Record<string, unknown>;
  if (!isKey(s.type)) return undefined;
  for (const field in s) if (!SPEC_FIELDS.has(field)) return undefined;
  for (const field of SCHEMA_FIELDS) if (s[field] !== undefined) return undefined;
  const { id, priority, dependsOn, timeoutMs, rateLimitKey, idempotencyKey, tenant, runAt } = s;
  if (s.apiKey !== undefined && !isKey(s.apiKey)) return undefined;
  if (id !== undefined && !isKey(id)) return undefined;
  if (
    priority !== undefined &&
    !(typeof priority === "number" ? Number.isFinite(priority) : PRIORITY_NAME_SET.has(priority))
  ) {
    return undefined;
  }
  if (dependsOn !== undefined && !isKeyList(dependsOn)) return undefined;
  if (timeoutMs !== undefined && !(Number.isSafeInteger(timeoutMs) && (timeoutMs as number) > 0))
    return undefined;
  if (rateLimitKey !== undefined && !isKey(rateLimitKey) && !isKeyList(rateLimitKey))
    return undefined;
  if (idempotencyKey !== undefined && !isKey(idempotencyKey)) return undefined;
  if (tenant !== undefined && !isKey(tenant)) return undefined;
  if (runAt !== undefined && !(Number.isSafeInteger(runAt) && (runAt as number) >= 0))
    return undefined;
  return s as ParsedTaskSpec;
}

const NO_RETRY_DEFAULTS = {};
const retryByDefaults = new WeakMap<object, RetryPolicy>();

/**
 * The policy of a task that sets no `retry`: parsed once per defaults object and shared
 * (frozen) by every such task, instead of one parse and one object per task.
 */
function defaultRetry(defaults: Partial<RetryPolicy> | undefined): RetryPolicy {
  const key = defaults ?? NO_RETRY_DEFAULTS;
  let policy = retryByDefaults.get(key);
  if (!policy) {
    policy = Object.freeze(RetryPolicySchema.parse({ ...defaults })) as RetryPolicy;
    retryByDefaults.set(key, policy);
  }
  return policy;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  return typeof value;
}
