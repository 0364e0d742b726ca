import {
  PRIORITY_NAMES,
  PRIORITY_VALUES,
  type PriorityName,
  TASK_STATUSES,
  type TaskRecord,
  type TaskResult,
  type TaskStatus,
  type TaskTelemetry,
  TERMINAL_STATUSES,
  type WorkerInfo,
} from "@flotilla/core";

const iso = (ms: number | undefined): string | null =>
  typeof ms === "number" && Number.isFinite(ms) ? new Date(ms).toISOString() : null;

/**
 * Replaces what JSON cannot carry as such, recursively: non-finite numbers become `null`,
 * bigints and dates strings, maps objects, sets arrays, functions are left out. A value
 * that needs none of it is returned as it is (no copy); only what changes is copied.
 */
export function jsonSafe(value: unknown, depth = 0): unknown {
  if (typeof value === "number") return Number.isFinite(value) ? value : null;
  if (typeof value === "bigint") return value.toString();
  if (value === null || typeof value !== "object" || depth > 32) return value;
  if (value instanceof Date) return value.toISOString();
  if (Array.isArray(value)) {
    let out: unknown[] | undefined;
    for (let i = 0; i < value.length; i++) {
      const v: unknown = value[i];
      const safe = jsonSafe(v, depth + 1);
      if (out) out.push(safe);
      else if (safe !== v) {
        out = value.slice(0, i);
        out.push(safe);
      }
    }
    return out ?? value;
  }
  if (value instanceof Map) return jsonSafe(Object.fromEntries(value), depth + 1);
  if (value instanceof Set) return jsonSafe([...value], depth + 1);
  // Instances of classes become plain objects of their own fields.
  const proto = Object.getPrototypeOf(value);
  let copy = proto !== Object.prototype && proto !== null;
  const keys = Object.keys(value);
  const safe: unknown[] = new Array(keys.length);
  for (let i = 0; i < keys.length; i++) {
    const v = (value as Record<string, unknown>)[keys[i]!];
    safe[i] = typeof v === "function" ? FUNCTION : jsonSafe(v, depth + 1);
    if (safe[i] !== v) copy = true;
  }
  if (!copy) return value;
  const out: Record<string, unknown> = {};
  for (let i = 0; i < keys.length; i++) if (safe[i] !== FUNCTION) out[keys[i]!] = safe[i];
  return out;
}

const FUNCTION = Symbol("function");

/** Normalises a Vera priority (name in any case, or number) to the engine's number. */
export function priorityValue(p: string | number | undefined): number | undefined {
  if (p === undefined) return undefined;
  if (typeof p === "number") return p;
  const name = p.trim().toLowerCase();
  if ((PRIORITY_NAMES as readonly string[]).includes(name)) {
    return PRIORITY_VALUES[name as PriorityName];
  }
  return undefined;
}

/** The name of a numeric priority when it is exactly one of the named levels. */
export function priorityName(n: number): string | undefined {
  return PRIORITY_NAMES.find((name) => PRIORITY_VALUES[name] === n);
}

/** Vera's status names mapped onto Flotilla's (`completed` is `succeeded`). */
export function engineStatuses(status: string): TaskStatus[] | undefined {
  const s = status.trim().toLowerCase();
  const aliases: Record<string, TaskStatus[]> = {
    completed: ["succeeded"],
    success: ["succeeded"],
    timeout: ["timed_out"],
    canceled: ["cancelled"],
    assigned: ["leased"],
  };
  if (aliases[s]) return aliases[s];
  const all: readonly string[] = TASK_STATUSES;
  return all.includes(s) ? [s as TaskStatus] : undefined;
}

function errorText(result: TaskResult | undefined): string | null {
  if (!result?.error) return null;
  return result.error.message || result.error.code;
}

/** Metrics block of a task answer. */
export function taskMetrics(record: TaskRecord | undefined, result: TaskResult | undefined) {
  const t = result?.timings ?? (record ? { createdAt: record.createdAt } : undefined);
  return jsonSafe({
    attempts: result?.attempts ?? record?.attempt ?? 0,
    queue_wait_ms: t && "queueWaitMs" in t ? (t.queueWaitMs ?? null) : null,
    duration_ms: t && "durationMs" in t ? (t.durationMs ?? null) : null,
    input_tokens: result?.usage?.inputTokens ?? null,
    output_tokens: result?.usage?.outputTokens ?? null,
    total_tokens:
      result?.usage?.totalTokens ??
      (result?.usage?.inputTokens !== undefined || result?.usage?.outputTokens !== undefined
        ? (result?.usage?.inputTokens ?? 0) + (result?.usage?.outputTokens ?? 0)
        : null),
    cost_usd: result?.usage?.costUsd ?? null,
  }) as Record<string, unknown>;
}

/** A task as Vera clients see it (`/tasks/history`, `/tasks/{id}`). */
export function taskView(record: TaskRecord) {
  const result = record.result;
  const terminal = TERMINAL_STATUSES.has(record.status);
  return jsonSafe({
    task_id: record.id,
    type: record.type,
    status: record.status,
    priority: record.priority,
    priority_name: priorityName(record.priority) ?? null,
    depends_on: record.dependsOn ?? [],
    created_at: iso(record.createdAt),
    started_at: iso(result?.timings.startedAt),
    completed_at: terminal ? iso(result?.timings.finishedAt ?? record.updatedAt) : null,
    worker_id: result?.workerId ?? record.workerId ?? null,
    attempts: result?.attempts ?? record.attempt ?? 0,
    success: terminal ? record.status === "succeeded" : null,
    result: result?.output ?? null,
    error: errorText(result),
    error_code: result?.error?.code ?? null,
    metrics: taskMetrics(record, result),
    metadata: record.metadata ?? {},
    tenant: record.tenant ?? null,
    api_key: record.apiKey ?? null,
    rate_limit_keys: record.rateLimitKeys ?? [],
    approval:
      record.approval === "none" || record.approval === undefined
        ? null
        : {
            mode: record.approval,
            decision: record.approvalDecision?.decision ?? null,
            by: record.approvalDecision?.by ?? null,
            comment: record.approvalDecision?.comment ?? null,
            decided_at: iso(record.approvalDecision?.at),
          },
  }) as Record<string, unknown>;
}

/** The answer of `/tasks/execute` for a finished task. */
export function executeView(taskId: string, result: TaskResult) {
  return jsonSafe({
    task_id: taskId,
    status: result.status,
    success: result.status === "succeeded",
    data: result.output ?? null,
    error: errorText(result),
    error_code: result.error?.code ?? null,
    metrics: taskMetrics(undefined, result),
    execution_time_ms: result.timings.durationMs ?? null,
    worker_id: result.workerId ?? null,
  }) as Record<string, unknown>;
}

/** A worker entry as Vera clients see it (`/workers/list`). */
export function workerView(w: WorkerInfo) {
  const load = w.maxConcurrency > 0 ? w.inFlight / w.maxConcurrency : 0;
  // A fleet node reports its liveness as a health report whose details carry its status.
  const reported = (w.stats?.lastHealthReport?.details as { status?: unknown } | undefined)?.status;
  const status =
    w.health === "unhealthy" || w.circuit === "open"
      ? "error"
      : !w.accepting || (w.health !== "healthy" && reported === "offline")
        ? "offline"
        : w.inFlight >= w.maxConcurrency
          ? "busy"
          : "idle";
  return jsonSafe({
    id: w.id,
    name: w.name,
    kind: w.kind,
    status,
    health: w.health,
    circuit: w.circuit,
    capabilities: [...new Set([...(w.taskTypes ?? []), ...(w.capabilities ?? [])])],
    task_types: w.taskTypes,
    labels: w.labels,
    local: w.local,
    current_tasks: w.inFlight,
    max_concurrent_tasks: w.maxConcurrency,
    load,
    accepting: w.accepting,
    registered_at: iso(w.registeredAt),
    metrics: {
      tasks_completed: w.stats?.tasksCompleted ?? 0,
      tasks_failed: w.stats?.tasksFailed ?? 0,
      avg_execution_time_ms: w.stats?.avgExecutionMs ?? 0,
      consecutive_failures: w.stats?.consecutiveFailures ?? 0,
      last_error: w.stats?.lastError?.message ?? null,
      last_health_check_at: iso(w.stats?.lastHealthCheckAt),
    },
  }) as Record<string, unknown>;
}

/** Pulls the text out of an LLM worker's output, whatever its shape. */
export function llmText(output: unknown): string | null {
  if (output == null) return null;
  if (typeof output === "string") return output;
  if (typeof output === "object") {
    const o = output as Record<string, unknown>;
    for (const k of ["text", "content", "response", "message", "output"]) {
      const v = o[k];
      if (typeof v === "string") return v;
      if (v && typeof v === "object" && typeof (v as { content?: unknown }).content === "string") {
        return (v as { content: string }).content;
      }
    }
  }
  return JSON.stringify(output);
}

/** A task's telemetry in the API's shape (snake_case, ISO times); empty when none was reported. @internal */
export function telemetryView(taskId: string, t: TaskTelemetry | undefined) {
  const figures = (f: TaskTelemetry["latest"]) => {
    const out: Record<string, number | string> = {};
    if (f.cpuPercent !== undefined) out.cpu_percent = f.cpuPercent;
    if (f.memoryMb !== undefined) out.memory_mb = f.memoryMb;
    if (f.memoryLimitMb !== undefined) out.memory_limit_mb = f.memoryLimitMb;
    if (f.tool !== undefined) out.tool = f.tool;
    if (f.step !== undefined) out.step = f.step;
    return out;
  };
  return {
    task_id: taskId,
    samples: (t?.samples ?? []).map((s) => ({
      at: new Date(s.at).toISOString(),
      attempt: s.attempt,
      kind: s.kind,
      ...figures(s),
      ...(s.data === undefined ? {} : { data: s.data }),
    })),
    dropped: t?.dropped ?? 0,
    token_chunks: t?.tokenChunks ?? 0,
    output_chunks: t?.outputChunks ?? 0,
    latest: {
      ...(t?.latest.at === undefined ? {} : { at: new Date(t.latest.at).toISOString() }),
      ...(t ? figures(t.latest) : {}),
    },
  };
}
