import { extendZodWithOpenApi } from "@asteasolutions/zod-to-openapi";
import { PRIORITY_NAMES, strictObject } from "@flotilla/core";
import { z } from "zod";

extendZodWithOpenApi(z);

const name = z.string().min(1).max(256);

// The node protocol (register, heartbeat, status, logs) is defined once, in
// @flotilla/fleet-protocol; the admin routes' bodies and queries are the server's own.
export {
  HeartbeatBodySchema,
  LogsBodySchema,
  NODE_STATUSES,
  REPORTED_STATUSES,
  type RegisterBody,
  RegisterBodySchema,
  StatusBodySchema,
} from "@flotilla/fleet-protocol";

const priority = z.union([
  z.number().finite(),
  z
    .string()
    .transform((s) => s.toLowerCase())
    .pipe(z.enum(PRIORITY_NAMES)),
]);

const time = z.union([
  z.number().int().nonnegative(),
  z
    .string()
    .refine((s) => !Number.isNaN(Date.parse(s)), "expected an ISO 8601 date-time")
    .transform((s) => Date.parse(s)),
]);

/** `POST /tasks`. */
export const CreateTaskBodySchema = strictObject({
  prompt: z.string().min(1).max(1_000_000),
  type: name.optional(),
  payload: z.record(z.string(), z.unknown()).optional(),
  target_node_id: name.nullish(),
  target_node_name: name.nullish(),
  target_tags: z
    .record(z.string().max(256), z.union([z.string(), z.number(), z.boolean()]))
    .nullish(),
  priority: priority.nullish(),
  timeout_seconds: z
    .number()
    .int()
    .min(1)
    .max(7 * 24 * 3600)
    .default(3600),
  files: z.array(name).max(100).default([]),
  scheduled_for: time.nullish(),
  recurrence: z.string().min(1).max(256).nullish(),
  timezone: z.string().max(64).nullish(),
  max_attempts: z.number().int().min(1).max(100).optional(),
  capabilities: z.array(name).max(64).optional(),
  idempotency_key: name.optional(),
  tenant: name.optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  /** `before_run`: no node gets it until approved (`POST {prefix}/tasks/{id}/approve`). */
  approval: z.enum(["none", "before_run", "after_run"]).optional(),
});
export type CreateTaskBody = z.infer<typeof CreateTaskBodySchema>;

/** `POST /keys`. */
export const CreateKeyBodySchema = z.object({
  name: z.string().min(1).max(256),
  scopes: z.array(z.string()).min(1).max(16).default(["admin"]),
  allowed_targets: z.array(name).max(64).nullish(),
  expires_at: time.nullish(),
  expires_in_days: z.number().positive().max(3650).nullish(),
});

/** `?limit=&offset=` and friends. */
export const ListTasksQuerySchema = z.object({
  status: z.string().max(64).optional(),
  node_id: z.string().max(256).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  offset: z.coerce.number().int().min(0).default(0),
});

/** `POST /tasks/cleanup?days=`. */
export const CleanupQuerySchema = z.object({
  days: z.coerce
    .number()
    .min(0)
    .default(30)
    .openapi({ description: "Delete finished tasks older than this many days. Default 30." }),
});

/** `GET /keys/audit?key_id=&limit=`. */
export const AuditQuerySchema = z.object({
  key_id: z.string().max(256).optional(),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(10_000)
    .default(1000)
    .openapi({ description: "Newest entries to return. Default 1000." }),
});

/** `POST /keys/{id}/rotate?grace_period_hours=`. */
export const RotateQuerySchema = z.object({
  grace_period_hours: z.coerce
    .number()
    .min(0)
    .max(24 * 365)
    .default(24)
    .openapi({ description: "How long the old secret keeps working. Default 24; 0 for none." }),
});

/** `{id}` of the node, task and key routes. */
export const IdParamsSchema = z.object({ id: z.string().min(1).max(256) });
/** `{task_id}` of `GET /logs/{task_id}`. */
export const TaskIdParamsSchema = z.object({ task_id: z.string().min(1).max(256) });
/** `{name}` of `GET /files/{name}` (percent-encoded basename). */
export const FileNameParamsSchema = z.object({ name: z.string().min(1).max(256) });
