import { extendZodWithOpenApi } from "@asteasolutions/zod-to-openapi";
import { PRIORITY_NAMES, strictObject } from "@flotilla/core";
import { z } from "zod";

extendZodWithOpenApi(z);

/** A priority as Vera clients send it: a name in any case (`"HIGH"`, `"normal"`) or a number. */
export const PriorityInputSchema = z
  .union([z.string(), z.number()])
  .superRefine((v, ctx) => {
    if (typeof v === "number") {
      if (!Number.isFinite(v)) ctx.addIssue({ code: "custom", message: "must be a finite number" });
      return;
    }
    if (!(PRIORITY_NAMES as readonly string[]).includes(v.trim().toLowerCase())) {
      ctx.addIssue({
        code: "custom",
        message: `unknown priority "${v.slice(0, 64)}": expected one of ${PRIORITY_NAMES.join(", ")} (any case) or a number`,
      });
    }
  })
  .openapi("Priority", {
    description: `One of ${PRIORITY_NAMES.join(", ")} (any case), or a number (higher runs first).`,
    example: "high",
  });

const taskId = z.string().min(1).max(256);

/** Body of `POST /tasks/submit` and `POST /tasks/execute`. */
export const TaskSubmitSchema = strictObject({
  type: z.string().min(1).max(256).openapi({
    description: "Task type (llm_request, tool_call, api_request, ...)",
    example: "tool_call",
  }),
  payload: z
    .record(z.string(), z.unknown())
    .optional()
    .openapi({ example: { tool_name: "echo", tool_input: { text: "hi" } } }),
  priority: PriorityInputSchema.optional(),
  max_retries: z
    .number()
    .int()
    .min(0)
    .max(99)
    .optional()
    .openapi({ description: "Retries after the first attempt. Default 0." }),
  metadata: z.record(z.string(), z.unknown()).optional(),
  depends_on: z
    .array(taskId)
    .max(1000)
    .optional()
    .openapi({ description: "Ids of tasks that must succeed first." }),
  task_id: taskId.optional().openapi({ description: "Caller-chosen id (generated when absent)." }),
  timeout_seconds: z
    .number()
    .positive()
    .max(86_400)
    .optional()
    .openapi({ description: "Per-attempt timeout." }),
  idempotency_key: z.string().min(1).max(256).optional(),
  tenant: z.string().min(1).max(256).optional().openapi({
    description: "Who the task is for: fair share, per-tenant caps and budgets apply.",
  }),
  rate_limit_key: z
    .union([z.string().min(1).max(256), z.array(z.string().min(1).max(256)).min(1).max(16)])
    .optional()
    .openapi({ description: "Rate-limit key(s) the task spends, e.g. `openai`." }),
  estimate: strictObject({
    input_tokens: z.number().nonnegative().optional(),
    output_tokens: z.number().nonnegative().optional(),
    tokens: z.number().nonnegative().optional(),
    cost_usd: z.number().nonnegative().optional(),
  })
    .optional()
    .openapi({
      description: "Expected use, reserved against token limits and budgets until it settles.",
    }),
  approval: z.enum(["none", "before_run", "after_run"]).optional().openapi({
    description:
      "`before_run`: the task waits in `awaiting_approval` until approved or rejected; `after_run`: its result does. Default `none`.",
  }),
}).openapi("TaskSubmit");

/** Body of `POST …/tasks/{id}/approve` and `/reject` (may be empty). */
export const ApprovalDecisionSchema = strictObject({
  comment: z
    .string()
    .max(4_000)
    .optional()
    .openapi({ description: "Why; kept with the decision in the task's history." }),
}).openapi("ApprovalDecision");

/** Body of `POST /llm/request`. */
export const LlmRequestSchema = strictObject({
  prompt: z.string().min(1).max(1_000_000),
  model: z.string().min(1).max(256).optional(),
  system: z.string().max(1_000_000).optional(),
  temperature: z.number().min(0).max(2).optional(),
  max_tokens: z.number().int().positive().max(1_000_000).optional(),
  prefer_ollama: z.boolean().optional(),
  priority: PriorityInputSchema.optional(),
  timeout_seconds: z.number().positive().max(86_400).optional(),
  stream: z.boolean().optional().openapi({
    description:
      "Answer as text/event-stream: token events as the model writes, lifecycle events, then a `result` event with the usual answer",
  }),
}).openapi("LlmRequest");

/** Body of `POST /tools/execute`. */
export const ToolExecuteSchema = strictObject({
  tool_name: z.string().min(1).max(256),
  tool_input: z.unknown().optional(),
  priority: PriorityInputSchema.optional(),
  timeout_seconds: z.number().positive().max(86_400).optional(),
}).openapi("ToolExecute");

/** Query of `GET /tasks/history`. */
export const HistoryQuerySchema = z
  .object({
    limit: z.coerce
      .number()
      .int()
      .min(1)
      .max(1000)
      .optional()
      .openapi({ description: "Default 100, at most 1000." }),
    status: z.string().max(64).optional().openapi({
      description:
        "Filter: pending, queued, running, completed (=succeeded), succeeded, failed, cancelled, timed_out, ...",
    }),
    type: z.string().max(256).optional(),
  })
  .openapi("HistoryQuery");

/** Body of `POST /workers/llm-api/register`. */
export const LlmApiRegisterSchema = strictObject({
  api_type: z.string().min(1).max(64).openapi({ example: "openai" }),
  api_key: z
    .string()
    .min(1)
    .max(4096)
    .optional()
    .openapi({ description: "Never echoed back. Give this or `api_key_env`." }),
  api_key_env: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name")
    .max(256)
    .optional()
    .openapi({
      description:
        "Name of an environment variable of the server holding the key; stored as that name, read again at each start.",
    }),
  model: z.string().min(1).max(256).optional(),
  base_url: z
    .url({ protocol: /^https?$/ })
    .max(2048)
    .optional(),
  worker_id: z.string().min(1).max(256).optional(),
  rate_limit_per_minute: z.number().int().positive().optional(),
  cost_per_1k_tokens: z.number().nonnegative().optional(),
  quota_requests_per_day: z.number().int().positive().optional(),
  quota_tokens_per_day: z.number().int().positive().optional(),
  quota_cost_limit_per_day: z.number().positive().optional(),
})
  .superRefine((v, ctx) => {
    if ((v.api_key === undefined) === (v.api_key_env === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: ["api_key"],
        message: "give exactly one of api_key and api_key_env",
      });
    }
  })
  .openapi("LlmApiRegister");

/** Body of `POST /workers/remote/register`. */
export const RemoteRegisterSchema = strictObject({
  remote_url: z.url({ protocol: /^https?$/ }).max(2048),
  worker_id: z.string().min(1).max(256).optional(),
  auth_token: z.string().min(1).max(4096).optional().openapi({ description: "Never echoed back." }),
  auth_token_env: z
    .string()
    .regex(/^[A-Za-z_][A-Za-z0-9_]*$/, "expected an environment variable name")
    .max(256)
    .optional()
    .openapi({
      description:
        "Name of a server environment variable holding the token (instead of auth_token).",
    }),
  capabilities: z.array(z.string().min(1).max(256)).max(100).optional(),
  task_types: z.array(z.string().min(1).max(256)).min(1).max(100).optional().openapi({
    description: "Task types the remote runs (sent there as they are). Default `remote_compute`.",
  }),
  max_concurrent_tasks: z.number().int().positive().max(1000).optional(),
})
  .superRefine((v, ctx) => {
    if (v.auth_token !== undefined && v.auth_token_env !== undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["auth_token"],
        message: "give at most one of auth_token and auth_token_env",
      });
    }
  })
  .openapi("RemoteRegister");

export type TaskSubmitInput = z.infer<typeof TaskSubmitSchema>;
export type LlmRequestInput = z.infer<typeof LlmRequestSchema>;
export type ToolExecuteInput = z.infer<typeof ToolExecuteSchema>;
export type LlmApiRegisterInput = z.infer<typeof LlmApiRegisterSchema>;
export type RemoteRegisterInput = z.infer<typeof RemoteRegisterSchema>;

// Responses (documentation only).
const ErrorObject = z.object({ code: z.string(), message: z.string() });
/**
 * Body of every error answer: `{ error: { code, message }, detail }` (`detail` repeats the message).
 */
export const ErrorResponseSchema = z
  .object({ error: ErrorObject, detail: z.string() })
  .openapi("Error");

/**
 * Metrics in a response (per task, or of the whole orchestrator), keyed by name.
 */
export const MetricsObject = z.record(z.string(), z.unknown()).openapi("Metrics");

/**
 * Answer of `POST …/tasks/submit`: the new task's id, `status: "submitted"` and a message.
 */
export const SubmitResponseSchema = z
  .object({ task_id: z.string(), status: z.literal("submitted"), message: z.string() })
  .openapi("SubmitResponse");

/**
 * Answer of `POST …/tasks/execute` (submit and wait): the outcome, output and metrics.
 */
export const ExecuteResponseSchema = z
  .object({
    task_id: z.string(),
    status: z.string(),
    success: z.boolean(),
    data: z.unknown(),
    error: z.string().nullable(),
    error_code: z.string().nullable(),
    metrics: MetricsObject,
    execution_time_ms: z.number().nullable(),
    worker_id: z.string().nullable(),
  })
  .openapi("ExecuteResponse");

/**
 * A task as the API shows it (`GET …/tasks/:task_id`, history entries), in snake_case.
 */
export const TaskViewSchema = z
  .object({
    waiting_for: z
      .array(z.object({ kind: z.string(), message: z.string() }).loose())
      .optional()
      .openapi({
        description:
          "GET /tasks/{id} only: why the task is not running now (dependencies, approval, no worker, a rate limit, a budget, …); empty when it runs or ended.",
      }),
    task_id: z.string(),
    type: z.string(),
    status: z.string(),
    priority: z.number(),
    depends_on: z.array(z.string()),
    created_at: z.string(),
    started_at: z.string().nullable(),
    completed_at: z.string().nullable(),
    worker_id: z.string().nullable(),
    attempts: z.number(),
    success: z.boolean().nullable(),
    result: z.unknown(),
    error: z.string().nullable(),
    metadata: z.record(z.string(), z.unknown()),
    tenant: z.string().nullable(),
    api_key: z
      .string()
      .nullable()
      .openapi({ description: "The key that submitted it: key:<first 12 hex of its SHA-256>" }),
    rate_limit_keys: z.array(z.string()),
    approval: z
      .object({
        mode: z.enum(["before_run", "after_run"]),
        decision: z.enum(["approved", "rejected"]).nullable(),
        by: z.string().nullable(),
        comment: z.string().nullable(),
        decided_at: z.string().nullable(),
      })
      .nullable()
      .openapi({ description: "The approval the task requires and its decision (null: none)." }),
  })
  .openapi("Task");

/**
 * Answer of `GET …/tasks/history`: the matching tasks and their count.
 */
export const HistoryResponseSchema = z
  .object({ tasks: z.array(TaskViewSchema), count: z.number() })
  .openapi("TaskHistory");

/**
 * Answer of `POST …/llm/request`: the model's text (or the error) and metrics.
 */
export const LlmResponseSchema = z
  .object({
    task_id: z.string(),
    success: z.boolean(),
    response: z.string().nullable(),
    error: z.string().nullable(),
    error_code: z.string().nullable(),
    metrics: MetricsObject,
  })
  .openapi("LlmResponse");

/**
 * Answer of `POST …/tools/execute`: the tool's result (or the error) and metrics.
 */
export const ToolResponseSchema = z
  .object({
    task_id: z.string(),
    success: z.boolean(),
    result: z.unknown(),
    error: z.string().nullable(),
    error_code: z.string().nullable(),
    metrics: MetricsObject,
  })
  .openapi("ToolResponse");

/**
 * Answer of `POST …/workers/llm-api/register` and `…/workers/remote/register`.
 */
export const RegisteredResponseSchema = z
  .object({
    worker_id: z.string(),
    status: z.literal("registered"),
    message: z.string(),
    persisted: z.boolean().openapi({
      description:
        "Whether it is stored and registered again at the next start (see docs/server.md)",
    }),
  })
  .openapi("RegisteredResponse");

/** Answer of `DELETE …/workers/{id}`. */
export const UnregisteredResponseSchema = z
  .object({
    worker_id: z.string(),
    status: z.literal("unregistered"),
    forgotten: z.boolean().openapi({ description: "A stored registration was removed too" }),
  })
  .openapi("UnregisteredResponse");

/**
 * Answer of `GET /health` and `GET …/health`: `healthy` while running, and the version.
 */
export const HealthResponseSchema = z
  .object({ status: z.enum(["healthy", "stopped"]), version: z.string() })
  .openapi("Health");

/**
 * Answer of `GET …/status`: running state, uptime, metrics, workers and resources.
 */
export const StatusResponseSchema = z
  .object({
    is_running: z.boolean(),
    uptime_seconds: z.number(),
    metrics: MetricsObject,
    workers: z.record(z.string(), z.unknown()),
    resources: z.record(z.string(), z.unknown()),
  })
  .openapi("Status");

/**
 * Answer of `GET …/workers/list`: every worker and aggregate statistics.
 */
export const WorkerListResponseSchema = z
  .object({
    workers: z.array(z.record(z.string(), z.unknown())),
    statistics: z.record(z.string(), z.unknown()),
  })
  .openapi("WorkerList");

/**
 * Answer of `GET …/resources/stats`: the resource manager's `stats()` view.
 */
export const ResourceStatsSchema = z.record(z.string(), z.unknown()).openapi("ResourceStats");

/**
 * Body of `PUT …/resources/config` and answer of `GET …/resources/config`: the resource
 * policy, in the shape of the server config file's `resources` section (the core's
 * `ResourceConfig`) plus `tenantWeights`. Each part is checked by the engine, which names
 * the bad setting.
 */
export const ResourcePolicySchema = strictObject({
  timeZone: z
    .string()
    .optional()
    .openapi({ description: 'IANA zone of calendar budgets, e.g. "Europe/Berlin".' }),
  limits: z.record(z.string(), z.unknown()).optional().openapi({
    description: 'Rate limits per key, e.g. { "openai": ["500/min", "90000 tokens/min"] }.',
  }),
  budgets: z.array(z.unknown()).optional().openapi({
    description:
      'Budgets: { scope: "global"|"provider"|"tenant"|"worker"|"apiKey", key?, requests?, tokens?, costUsd?, reset?: "calendar"|"sliding", period?, timeZone?, policy?: "wait"|"fail", name? }.',
  }),
  prices: z.record(z.string(), z.unknown()).optional().openapi({
    description: "USD per million tokens: { provider: { model: { input, output } } }.",
  }),
  defaultPrices: z.boolean().optional(),
  tenantConcurrency: z
    .record(z.string(), z.unknown())
    .optional()
    .openapi({ description: 'Concurrency cap per tenant; "*" caps every other tenant.' }),
  admission: z.union([z.boolean(), z.record(z.string(), z.unknown())]).optional(),
  defaultTokens: z.number().optional(),
  limitMarginMs: z.union([z.literal("auto"), z.number()]).optional(),
  tenantWeights: z
    .record(z.string(), z.number().positive().finite())
    .optional()
    .openapi({ description: "Fair-share weight per tenant at equal priority (others: 1)." }),
}).openapi("ResourcePolicy");

/** A {@link ResourcePolicySchema} value. */
export type ResourcePolicy = z.infer<typeof ResourcePolicySchema>;

/** Answer of `PUT …/resources/config`. */
export const ResourcePolicyUpdateSchema = z
  .object({
    applied: z.literal(true),
    restart_required: z.array(z.string()).openapi({
      description:
        "Settings that differ but only take effect at the next start (kept as they were).",
    }),
    config: ResourcePolicySchema,
  })
  .openapi("ResourcePolicyUpdate");

const TelemetryFigures = {
  cpu_percent: z.number().optional().openapi({ description: "CPU use, % of one core" }),
  memory_mb: z.number().optional().openapi({ description: "Memory in use, MB (MiB)" }),
  memory_limit_mb: z.number().optional(),
  tool: z.string().optional().openapi({ description: "The tool being called" }),
  step: z.string().optional().openapi({ description: "The current step" }),
};

/** Answer of `GET …/tasks/{id}/telemetry`. */
export const TelemetryResponseSchema = z
  .object({
    task_id: z.string(),
    samples: z.array(
      z.object({
        at: z.string().openapi({ description: "ISO time" }),
        attempt: z.number().int(),
        kind: z.string().openapi({ description: "stats, tool, step, pull, progress, …" }),
        ...TelemetryFigures,
        data: z.unknown().optional().openapi({ description: "The report itself, when small" }),
      }),
    ),
    dropped: z.number().int().openapi({ description: "Older samples dropped to keep the bound" }),
    token_chunks: z.number().int(),
    output_chunks: z.number().int(),
    latest: z.object({ at: z.string().optional(), ...TelemetryFigures }),
  })
  .openapi("TaskTelemetry");

export { z };
