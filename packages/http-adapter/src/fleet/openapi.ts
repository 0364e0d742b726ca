import type { RouteConfig } from "@asteasolutions/zod-to-openapi";
import type { ZodType } from "zod";
import { z } from "zod";
import { KEY_SCOPES } from "./keys.js";
import {
  AuditQuerySchema,
  CleanupQuerySchema,
  CreateKeyBodySchema,
  CreateTaskBodySchema,
  FileNameParamsSchema,
  HeartbeatBodySchema,
  IdParamsSchema,
  ListTasksQuerySchema,
  LogsBodySchema,
  RegisterBodySchema,
  RotateQuerySchema,
  StatusBodySchema,
  TaskIdParamsSchema,
} from "./schemas.js";

// Answers: the fields clients rely on; every object may carry more.
const Detail = z.object({ detail: z.string() }).openapi("FleetError");
const NodeView = z
  .object({
    id: z.string(),
    name: z.string(),
    hostname: z.string(),
    os_type: z.string(),
    status: z.string(),
    capabilities: z.array(z.string()),
    labels: z.record(z.string(), z.string()),
    current_task_id: z.string().nullable(),
  })
  .loose()
  .openapi("FleetNode");
const Registered = NodeView.extend({
  api_key: z.string().openapi({ description: "The node's key, shown once." }),
  reregistered: z.boolean(),
}).openapi("FleetRegistered");
const Assignment = z
  .object({
    task_id: z.string(),
    prompt: z.string(),
    orchestrator_url: z.string(),
    files: z.array(z.string()),
    timeout_seconds: z.number(),
  })
  .loose()
  .openapi("FleetAssignment", { description: "A leased task; `null` when there is nothing." });
const TaskView = z
  .object({ id: z.string(), status: z.string(), prompt: z.string().nullable() })
  .loose()
  .openapi("FleetTask");
const KeyView = z
  .object({
    id: z.string(),
    name: z.string(),
    kind: z.enum(["admin", "scoped", "node"]),
    prefix: z.string(),
    scopes: z.array(z.string()),
    allowed_targets: z.array(z.string()).nullable(),
    status: z.enum(["active", "revoked", "expired"]),
  })
  .loose()
  .openapi("FleetKey");
const KeyWithSecret = KeyView.extend({
  api_key: z.string().openapi({ description: "The secret, shown once; only its hash is stored." }),
}).openapi("FleetKeyWithSecret");
const AnyObject = z.object({}).loose();

type Security = "node" | "admin" | "registration" | "none";
interface FleetRouteDoc {
  method: "get" | "post" | "delete";
  path: string;
  summary: string;
  security: Security;
  /** Scope a stored admin key needs. */
  scope?: string;
  body?: ZodType;
  query?: ZodType;
  params?: ZodType;
  response: ZodType;
  status?: number;
  errors?: Record<number, string>;
}

const ROUTES: FleetRouteDoc[] = [
  {
    method: "post",
    path: "/register",
    summary: "Register a node (X-Registration-Token); answers its key once",
    security: "registration",
    body: RegisterBodySchema,
    response: Registered,
    errors: { 429: "Too many registrations from this source", 503: "Registration is off" },
  },
  {
    method: "get",
    path: "/tasks/pending",
    summary: "Poll for work: one free slot; a leased task, or null",
    security: "node",
    response: Assignment.nullable(),
  },
  {
    method: "get",
    path: "/files/{name}",
    summary: "Download a file of the task this node holds (by decoded basename)",
    security: "node",
    params: FileNameParamsSchema,
    response: z.string().openapi({ format: "binary" }),
    errors: { 403: "The node holds no task with this file", 404: "Unknown file" },
  },
  {
    method: "post",
    path: "/nodes/heartbeat",
    summary: "Heartbeat; a busy one renews the lease of the current task",
    security: "node",
    body: HeartbeatBodySchema,
    response: NodeView.extend({
      node_id: z.string(),
      lease_renewed: z.string().nullable(),
      cancelled_task_ids: z.array(z.string()),
    }),
  },
  {
    method: "post",
    path: "/status",
    summary: "Report progress or the outcome of a held task (job_id / agent_session_id aliases)",
    security: "node",
    body: StatusBodySchema,
    response: TaskView,
    errors: { 403: "The node does not hold this task", 404: "Unknown task" },
  },
  {
    method: "post",
    path: "/logs",
    summary: "Store a held task's session log (large bodies accepted)",
    security: "node",
    body: LogsBodySchema,
    response: z.object({ task_id: z.string(), message_count: z.number(), log_count: z.number() }),
    errors: { 403: "The node does not hold this task" },
  },
  {
    method: "get",
    path: "/nodes",
    summary: "Registered nodes",
    security: "admin",
    scope: "nodes:read",
    response: z.object({ nodes: z.array(NodeView), count: z.number() }),
  },
  {
    method: "get",
    path: "/nodes/{id}",
    summary: "One node",
    security: "admin",
    scope: "nodes:read",
    params: IdParamsSchema,
    response: NodeView,
    errors: { 404: "Unknown node" },
  },
  {
    method: "delete",
    path: "/nodes/{id}",
    summary: "Remove a node (its key stops working; its tasks are requeued)",
    security: "admin",
    scope: "nodes:write",
    params: IdParamsSchema,
    response: z.object({
      status: z.string(),
      id: z.string(),
      requeued_task_ids: z.array(z.string()),
    }),
    errors: { 404: "Unknown node" },
  },
  {
    method: "post",
    path: "/tasks",
    summary: "Create a fleet task (targeting, priority, timeout, files, schedule, recurrence)",
    security: "admin",
    scope: "tasks:create",
    body: CreateTaskBodySchema,
    response: TaskView,
    status: 201,
    errors: { 403: "Target outside the key's allowed targets" },
  },
  {
    method: "get",
    path: "/tasks",
    summary: "Fleet tasks, newest first",
    security: "admin",
    scope: "tasks:read",
    query: ListTasksQuerySchema,
    response: z.object({
      tasks: z.array(TaskView),
      total: z.number(),
      limit: z.number(),
      offset: z.number(),
    }),
  },
  {
    method: "post",
    path: "/tasks/cleanup",
    summary: "Delete finished tasks (and their logs) older than `days`",
    security: "admin",
    scope: "admin",
    query: CleanupQuerySchema,
    response: z.object({ deleted: z.number(), days: z.number() }),
  },
  {
    method: "get",
    path: "/tasks/{id}",
    summary: "One fleet task",
    security: "admin",
    scope: "tasks:read",
    params: IdParamsSchema,
    response: TaskView,
    errors: { 404: "Unknown task" },
  },
  {
    method: "delete",
    path: "/tasks/{id}",
    summary: "Cancel a fleet task",
    security: "admin",
    scope: "tasks:cancel",
    params: IdParamsSchema,
    response: TaskView,
    errors: { 404: "Unknown task" },
  },
  {
    method: "post",
    path: "/upload",
    summary: "Upload a file for tasks (multipart/form-data, field `file`)",
    security: "admin",
    scope: "files:upload",
    response: z.object({
      filename: z.string(),
      original_name: z.string(),
      checksum: z.string(),
      size: z.number(),
    }),
    status: 201,
  },
  {
    method: "get",
    path: "/logs/{task_id}",
    summary: "Session logs a task's node sent",
    security: "admin",
    scope: "logs:read",
    params: TaskIdParamsSchema,
    response: z.object({ task_id: z.string(), logs: z.array(AnyObject), count: z.number() }),
    errors: { 404: "Unknown task" },
  },
  {
    method: "post",
    path: "/keys",
    summary: `Create an admin or scoped key (scopes: ${KEY_SCOPES.join(", ")}); the secret is shown once`,
    security: "admin",
    scope: "admin",
    body: CreateKeyBodySchema,
    response: KeyWithSecret,
    status: 201,
  },
  {
    method: "get",
    path: "/keys",
    summary: "Keys (never a secret or its hash)",
    security: "admin",
    scope: "admin",
    response: z.object({ keys: z.array(KeyView), count: z.number() }),
  },
  {
    method: "get",
    path: "/keys/audit",
    summary: "Audit log of key creation, use, rotation, revocation, deletion and refusals",
    security: "admin",
    scope: "admin",
    query: AuditQuerySchema,
    response: z.object({ entries: z.array(AnyObject), count: z.number(), total: z.number() }),
  },
  {
    method: "get",
    path: "/keys/{id}",
    summary: "One key",
    security: "admin",
    scope: "admin",
    params: IdParamsSchema,
    response: KeyView,
    errors: { 404: "Unknown key" },
  },
  {
    method: "delete",
    path: "/keys/{id}",
    summary: "Delete a key (every secret of it stops working)",
    security: "admin",
    scope: "admin",
    params: IdParamsSchema,
    response: z.object({ status: z.string(), id: z.string() }),
    errors: { 404: "Unknown key" },
  },
  {
    method: "post",
    path: "/keys/{id}/rotate",
    summary: "Issue a new secret; the old one works for the grace period",
    security: "admin",
    scope: "admin",
    params: IdParamsSchema,
    query: RotateQuerySchema,
    response: KeyWithSecret.extend({ grace_period_hours: z.number() }),
    errors: { 404: "Unknown key", 409: "Key revoked" },
  },
  {
    method: "post",
    path: "/keys/{id}/revoke",
    summary: "Revoke a key at once",
    security: "admin",
    scope: "admin",
    params: IdParamsSchema,
    response: KeyView,
    errors: { 404: "Unknown key" },
  },
  {
    method: "get",
    path: "/dashboard/stats",
    summary: "Fleet figures: nodes, tasks, keys",
    security: "admin",
    scope: "stats:read",
    response: AnyObject,
  },
];

const json = (schema: ZodType) => ({ "application/json": { schema } });

/**
 * The fleet routes as OpenAPI operations, built from the zod schemas that validate their
 * requests. `base` is where the fleet app is mounted (`""` at the root).
 *
 * @example
 * ```ts
 * import { OpenAPIRegistry } from "@asteasolutions/zod-to-openapi";
 *
 * const openapi = new OpenAPIRegistry();
 * for (const route of fleetOpenApiRoutes("")) openapi.registerPath(route);
 * ```
 */
export function fleetOpenApiRoutes(base = ""): RouteConfig[] {
  const root = base.replace(/\/+$/, "");
  return ROUTES.map((r) => {
    const responses: RouteConfig["responses"] = {
      [r.status ?? 200]: { description: "OK", content: json(r.response) },
    };
    if (r.path === "/files/{name}") {
      responses[200] = {
        description: "The file's bytes",
        content: { "application/octet-stream": { schema: r.response } },
      };
    }
    const err = (description: string) => ({ description, content: json(Detail) });
    if (r.body || r.query || r.params) responses[400] = err("Invalid input (names the field)");
    if (r.security !== "none") responses[401] = err("Missing, unknown or revoked key or token");
    if (r.scope) responses[403] = err(`The key lacks the "${r.scope}" scope`);
    if (r.body) responses[413] = err("Body too large");
    for (const [code, text] of Object.entries(r.errors ?? {})) responses[Number(code)] = err(text);
    const request: NonNullable<RouteConfig["request"]> = {};
    if (r.body) request.body = { content: json(r.body), required: true };
    if (r.path === "/upload") {
      request.body = {
        required: true,
        content: {
          "multipart/form-data": {
            schema: z.object({ file: z.string().openapi({ format: "binary" }) }),
          },
        },
      };
    }
    if (r.query) request.query = r.query as never;
    if (r.params) request.params = r.params as never;
    const security =
      r.security === "registration"
        ? [{ RegistrationToken: [] }]
        : r.security === "none"
          ? []
          : [{ ApiKey: [] }, { Bearer: [] }];
    return {
      method: r.method,
      path: `${root}${r.path}`,
      summary: r.summary,
      description:
        r.security === "node"
          ? "Node endpoint: the node key issued at registration."
          : r.scope
            ? `Admin endpoint: an admin key or a stored key with the "${r.scope}" scope.`
            : undefined,
      tags: [r.security === "admin" ? "fleet admin" : "fleet nodes"],
      security,
      request,
      responses,
    } as RouteConfig;
  });
}
