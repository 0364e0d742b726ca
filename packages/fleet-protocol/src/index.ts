/**
 * The fleet (node) protocol on the wire, as zod schemas: what a node sends to the server
 * (`POST /register`, `/nodes/heartbeat`, `/status`, `/logs`) and what it gets back
 * (`GET /tasks/pending`, the registration answer, error bodies). The server validates with
 * them and the node runner builds and checks its messages with them, so both sides speak
 * one definition. Objects are loose: fields a side does not know are kept, never refused
 * (unmodified Victoria runners send some).
 */
import { z } from "zod";

const name = z.string().min(1).max(256);
const id = z.string().min(1).max(256);
const stringMap = z.record(z.string().max(256), z.union([z.string(), z.number(), z.boolean()]));

/**
 * Statuses a node's heartbeat may carry.
 *
 * @example
 * ```ts
 * NODE_STATUSES.includes("busy"); // true
 * ```
 */
export const NODE_STATUSES = ["idle", "busy", "offline", "error"] as const;
/** One of {@link NODE_STATUSES}. */
export type NodeStatus = (typeof NODE_STATUSES)[number];

/**
 * Task statuses a node may report with `POST /status`.
 *
 * @example
 * ```ts
 * REPORTED_STATUSES.includes("success"); // true
 * ```
 */
export const REPORTED_STATUSES = ["running", "analyzing", "success", "error"] as const;
/** One of {@link REPORTED_STATUSES}. */
export type ReportedStatus = (typeof REPORTED_STATUSES)[number];

/**
 * `POST /register` (with `X-Registration-Token`): who the node is and what it offers.
 * `tags` is a map or a list of names (each becomes `name: "true"`).
 *
 * @example
 * ```ts
 * RegisterBodySchema.parse({ hostname: "gpu-box-1", name: "gpu-box-1", slots: 2 });
 * ```
 */
export const RegisterBodySchema = z
  .object({
    hostname: z.string().min(1).max(256),
    name: name.optional(),
    os_type: z.string().max(128).default("unknown"),
    capabilities: z.array(name).max(256).optional(),
    tags: z.union([stringMap, z.array(name).max(256)]).optional(),
    labels: z.record(z.string().max(256), z.string().max(256)).optional(),
    resources: z.record(z.string(), z.unknown()).optional(),
    task_types: z.array(name).min(1).max(64).optional(),
    slots: z.number().int().min(1).max(256).optional(),
  })
  .loose();
/** A parsed registration body. */
export type RegisterBody = z.infer<typeof RegisterBodySchema>;
/** A registration body as a node writes it. */
export type RegisterInput = z.input<typeof RegisterBodySchema>;

/**
 * The answer to `POST /register`: the node (its `id`) and its key (`api_key`), shown once.
 *
 * @example
 * ```ts
 * const { id, api_key } = RegistrationSchema.parse(await res.json());
 * ```
 */
export const RegistrationSchema = z.looseObject({
  id: z.string().min(1),
  api_key: z.string().min(1),
});
/** A registration answer. */
export type Registration = z.infer<typeof RegistrationSchema>;

/**
 * `POST /nodes/heartbeat`: the node's status and the task it is busy with.
 *
 * @example
 * ```ts
 * HeartbeatBodySchema.parse({ status: "busy", current_task_id: "7c0f…" });
 * ```
 */
export const HeartbeatBodySchema = z
  .object({
    node_id: id.optional(),
    status: z.enum(NODE_STATUSES),
    current_task_id: id.nullish(),
  })
  .loose();
/** A heartbeat body. */
export type HeartbeatBody = z.infer<typeof HeartbeatBodySchema>;

/**
 * `POST /status`: a task's progress or its end (`job_id` and `agent_session_id` are
 * accepted aliases of `task_id` and `crush_session_id`).
 *
 * @example
 * ```ts
 * StatusBodySchema.parse({ task_id: "7c0f…", status: "success", message: "done" });
 * ```
 */
export const StatusBodySchema = z
  .object({
    task_id: id.optional(),
    job_id: id.optional(),
    status: z.enum(REPORTED_STATUSES),
    timestamp: z.union([z.string(), z.number()]).nullish(),
    message: z.string().nullish(),
    progress: z.number().min(0).max(100).nullish(),
    crush_session_id: z.string().max(256).nullish(),
    agent_session_id: z.string().max(256).nullish(),
  })
  .loose()
  .refine((b) => b.task_id !== undefined || b.job_id !== undefined, {
    message: "task_id (or job_id) is required",
    path: ["task_id"],
  });
/** A status body. */
export type StatusBody = z.infer<typeof StatusBodySchema>;

/**
 * One message of an agent (Crush) session. `content` is a JSON-encoded string of parts.
 *
 * @example
 * ```ts
 * SessionMessageSchema.parse({ role: "assistant", content: '[{"type":"text","text":"hi"}]' });
 * ```
 */
export const SessionMessageSchema = z.looseObject({
  id: z.string().nullish(),
  role: z.string(),
  content: z.string().optional(),
  model: z.string().nullish(),
  provider: z.string().nullish(),
  created_at: z.number().int().nullish(),
  finished_at: z.number().int().nullish(),
});
/** A message of a session log. */
export type SessionMessage = z.infer<typeof SessionMessageSchema>;

/**
 * An agent (Crush) session with its token counts and cost, as `POST /logs` carries it.
 *
 * @example
 * ```ts
 * SessionLogSchema.parse({ id: "s1", title: "Fix the build", messages: [] });
 * ```
 */
export const SessionLogSchema = z.looseObject({
  id: z.string().nullish(),
  title: z.string().nullish(),
  prompt_tokens: z.number().nullish(),
  completion_tokens: z.number().nullish(),
  cost: z.number().nullish(),
  created_at: z.number().int().nullish(),
  updated_at: z.number().int().nullish(),
  messages: z.array(SessionMessageSchema).default([]),
});
/** A session log as a node writes it. */
export type SessionLog = z.input<typeof SessionLogSchema>;

/**
 * `POST /logs`: the session of a task (sent before its final `/status`).
 *
 * @example
 * ```ts
 * LogsBodySchema.parse({ task_id: "7c0f…", session: { id: "s1", messages: [] } });
 * ```
 */
export const LogsBodySchema = z
  .object({
    task_id: id.optional(),
    job_id: id.optional(),
    session: SessionLogSchema,
  })
  .loose()
  .refine((b) => b.task_id !== undefined || b.job_id !== undefined, {
    message: "task_id (or job_id) is required",
    path: ["task_id"],
  });
/** A logs body. */
export type LogsBody = z.infer<typeof LogsBodySchema>;

/**
 * A task handed to a node by `GET /tasks/pending`. `task_id`, `prompt` and
 * `orchestrator_url` are required (the Victoria runner drops a task without one); `files`
 * and `file_checksums` (lowercase hex SHA-256) go in the same order.
 *
 * @example
 * ```ts
 * const task = TaskAssignmentSchema.parse(await res.json());
 * ```
 */
export const TaskAssignmentSchema = z.looseObject({
  task_id: z.string().min(1),
  prompt: z.string(),
  orchestrator_url: z.string().min(1),
  timeout_seconds: z.number().positive().nullish(),
  files: z.array(z.string()).nullish(),
  file_checksums: z.array(z.string()).nullish(),
});
/** A task assignment as a node receives it. */
export type TaskAssignment = z.infer<typeof TaskAssignmentSchema>;

/**
 * The answer to `GET /tasks/pending`: an assignment, or `null` when there is no work.
 *
 * @example
 * ```ts
 * const task = PollResponseSchema.parse(await res.json()); // null: nothing to do
 * ```
 */
export const PollResponseSchema = TaskAssignmentSchema.nullable();

/**
 * The `{detail}` body of every error answer of the fleet routes.
 *
 * @example
 * ```ts
 * ErrorBodySchema.parse({ detail: "invalid API key" });
 * ```
 */
export const ErrorBodySchema = z.object({ detail: z.string() });
