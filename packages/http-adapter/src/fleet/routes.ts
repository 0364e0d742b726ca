import type { EngineApi, TaskRecord, TaskStatus } from "@flotilla/core";
import { TERMINAL_STATUSES, UnrecoverableError } from "@flotilla/core";
import type { Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ZodType } from "zod";
import { KEY_SCOPES, type KeyScope, type KeyService } from "./keys.js";
import type { NodeService } from "./nodes.js";
import type { ResolvedFleetOptions } from "./options.js";
import {
  AuditQuerySchema,
  CleanupQuerySchema,
  CreateKeyBodySchema,
  CreateTaskBodySchema,
  HeartbeatBodySchema,
  ListTasksQuerySchema,
  LogsBodySchema,
  RegisterBodySchema,
  RotateQuerySchema,
  StatusBodySchema,
} from "./schemas.js";
import type { FleetState, NodeRecord } from "./state.js";
import { statusFilter, type TaskService } from "./tasks.js";
import { FleetHttpError, iso, toHttpError, validationError } from "./util.js";

/** Everything the route handlers use. */
export interface FleetParts {
  options: ResolvedFleetOptions;
  state: FleetState;
  keys: KeyService;
  nodes: NodeService;
  tasks: TaskService;
  engine: EngineApi;
  ready: () => Promise<void>;
}

type Handler = (c: Context) => Promise<Response>;

function presentedKey(c: Context): string | undefined {
  const x = c.req.header("x-api-key");
  if (x?.trim()) return x.trim();
  const m = /^Bearer\s+(.+)$/i.exec(c.req.header("authorization")?.trim() ?? "");
  return m?.[1]?.trim() || undefined;
}

function fail(c: Context, err: unknown, logger: ResolvedFleetOptions["logger"]): Response {
  const e = toHttpError(err);
  if (e.status >= 500) logger.error({ err, path: c.req.path }, "fleet route failed");
  return c.json({ detail: e.detail }, e.status as 400, e.headers);
}

async function jsonBody<T>(c: Context, schema: ZodType<T>): Promise<T> {
  let raw: unknown;
  try {
    const text = await c.req.text();
    raw = text.trim() === "" ? {} : JSON.parse(text);
  } catch (err) {
    if (err instanceof FleetHttpError) throw err;
    throw new FleetHttpError(400, "body: expected a JSON document");
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw validationError(parsed.error);
  return parsed.data;
}

function queryOf<T>(c: Context, schema: ZodType<T>): T {
  const parsed = schema.safeParse(c.req.query());
  if (!parsed.success) throw validationError(parsed.error, "query");
  return parsed.data;
}

/** Mounts every fleet route on `app`. */
export function mountFleetRoutes(app: Hono, parts: FleetParts): void {
  const { options: o, state, keys, nodes, tasks, engine } = parts;
  const sourceOf = (c: Context) => {
    try {
      return o.sourceOf(c.req.raw, c.env);
    } catch {
      return "unknown";
    }
  };
  const h =
    (fn: Handler): Handler =>
    async (c) => {
      try {
        await parts.ready();
        return await fn(c);
      } catch (err) {
        return fail(c, err, o.logger);
      }
    };
  const limit = (bytes: number) =>
    bodyLimit({
      maxSize: bytes,
      onError: (c) => c.json({ detail: `request body larger than ${bytes} bytes` }, 413),
    });
  const jsonLimit = limit(o.maxBodyBytes);
  const node = (c: Context, what: string) => nodes.authenticate(presentedKey(c), what, sourceOf(c));
  const admin = async (c: Context, scope: KeyScope) => {
    const p = await keys.authenticateAdmin(
      presentedKey(c),
      `${c.req.method} ${c.req.path}`,
      sourceOf(c),
    );
    keys.require(p, scope);
    return p;
  };
  const baseUrl = (c: Context, suffix: string) => {
    if (o.publicUrl) return o.publicUrl.replace(/\/+$/, "");
    const url = new URL(c.req.url);
    const path = url.pathname.endsWith(suffix)
      ? url.pathname.slice(0, url.pathname.length - suffix.length)
      : "";
    return `${url.origin}${path}`;
  };

  // ---- node endpoints ---------------------------------------------------------------------

  app.post(
    "/register",
    jsonLimit,
    h(async (c) => {
      const source = sourceOf(c);
      const token = c.req.header("x-registration-token");
      nodes.admit(token, source);
      const body = await jsonBody(c, RegisterBodySchema);
      const { node, apiKey, reregistered } = await nodes.register(body, source);
      return c.json({ ...(await nodes.view(node)), api_key: apiKey, reregistered }, 200);
    }),
  );

  app.get(
    "/tasks/pending",
    h(async (c) => {
      const n = await node(c, "poll");
      const claimed = await nodes.mutex.run(n.id, async () => {
        const fresh = (await state.getNode(n.id)) ?? n;
        const got = await engine.claim(
          {
            holderId: fresh.id,
            taskTypes: fresh.task_types,
            capabilities: fresh.capabilities,
            labels: fresh.labels,
            name: fresh.name,
          },
          { leaseMs: o.leaseMs },
        );
        fresh.last_seen_at = o.clock.now();
        if (fresh.status === "offline") fresh.status = "idle";
        await state.putNode(fresh);
        return got;
      });
      if (!claimed) return c.json(null, 200);
      const st = await state.getTaskState(claimed.record.id);
      if (st) {
        st.last_node_id = n.id;
        await state.putTaskState(st);
      }
      o.logger.info({ task: claimed.record.id, node: n.id }, "fleet task leased");
      return c.json(
        tasks.assignment(claimed.record, baseUrl(c, "/tasks/pending"), claimed.lease.expiresAt),
        200,
      );
    }),
  );

  app.get(
    "/files/:name",
    h(async (c) => {
      const n = await node(c, "file");
      // Hono hands the parameter over percent-decoded.
      const name = c.req.param("name") ?? "";
      const { bytes } = await tasks.fileFor(await nodes.holding(n.id), name);
      return new Response(bytes as unknown as BodyInit, {
        status: 200,
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(bytes.byteLength),
        },
      });
    }),
  );

  app.post(
    "/nodes/heartbeat",
    jsonLimit,
    h(async (c) => {
      const n = await node(c, "heartbeat");
      const body = await jsonBody(c, HeartbeatBodySchema);
      if (body.node_id && body.node_id !== n.id) {
        const other = await state.getNode(body.node_id);
        if (!other) throw new FleetHttpError(404, `node ${body.node_id} not found`);
        throw new FleetHttpError(403, "this key belongs to another node");
      }
      let renewed: string | null = null;
      const current = body.current_task_id ?? null;
      if (body.status === "busy" && current) {
        const t = await engine.get(current);
        if (t?.lease && t.lease.holder === n.id && !TERMINAL_STATUSES.has(t.status)) {
          // Busy with it: the task is running there (the Victoria runner sends no "running").
          await engine.reportProgress(current, t.lease.id);
          renewed = current;
        }
      }
      const updated = await nodes.touch(n.id, (rec: NodeRecord) => {
        rec.status = body.status;
        rec.current_task_id = current;
        rec.last_heartbeat_at = o.clock.now();
      });
      // The task the node is busy with, when it should stop: cancelled, or no longer its own.
      const cancelled: string[] = [];
      if (body.status === "busy" && current) {
        const t = await engine.get(current);
        if (t && (t.status === "cancelled" || (t.lease && t.lease.holder !== n.id))) {
          cancelled.push(current);
        }
      }
      // The node as it now stands (the protocol's Node), plus what the node may act on.
      return c.json({
        ...(await nodes.view(updated)),
        node_id: n.id,
        lease_renewed: renewed,
        cancelled_task_ids: cancelled,
      });
    }),
  );

  app.post(
    "/status",
    limit(Math.max(o.maxBodyBytes, Math.min(o.maxLogBytes, 16 * 1024 * 1024))),
    h(async (c) => {
      const n = await node(c, "status");
      const body = await jsonBody(c, StatusBodySchema);
      const taskId = (body.task_id ?? body.job_id) as string;
      const sessionId = body.crush_session_id ?? body.agent_session_id ?? null;
      const held = await nodes.held(n, taskId);
      if (held.finished || !held.lease) {
        return c.json(await tasks.viewById(taskId), 200);
      }
      const leaseId = held.lease.id;
      const st = (await state.getTaskState(taskId)) ?? {
        task_id: taskId,
        message: null,
        progress: null,
        session_id: null,
        last_status: null,
        last_report_at: null,
        last_node_id: null,
        log_count: 0,
        created_by: null,
        schedule_id: null,
      };
      if (body.message !== undefined && body.message !== null) st.message = body.message;
      if (body.progress !== undefined && body.progress !== null) st.progress = body.progress;
      if (sessionId) st.session_id = sessionId;
      st.last_status = body.status;
      st.last_report_at = o.clock.now();
      st.last_node_id = n.id;
      await state.putTaskState(st);
      if (body.status === "running" || body.status === "analyzing") {
        const data: Record<string, unknown> = { status: body.status };
        if (body.message != null) data.message = body.message;
        if (body.progress != null) data.progress = body.progress;
        await engine.reportProgress(taskId, leaseId, data);
      } else if (body.status === "success") {
        await engine.completeLease(taskId, leaseId, {
          output: body.message ?? "",
          raw: { status: body.status, session_id: sessionId, node_id: n.id },
        });
      } else {
        // The task failed on the node (its program's fault, not the node's): not retried,
        // and not counted against the node's circuit breaker.
        await engine.failLease(
          taskId,
          leaseId,
          new UnrecoverableError(body.message || "the node reported an error"),
        );
      }
      if (body.status === "success" || body.status === "error") {
        await nodes.touch(n.id, (rec) => {
          if (rec.current_task_id === taskId) rec.current_task_id = null;
        });
        o.logger.info({ task: taskId, node: n.id, status: body.status }, "fleet task reported");
      }
      return c.json(await tasks.viewById(taskId), 200);
    }),
  );

  app.post(
    "/logs",
    limit(o.maxLogBytes),
    h(async (c) => {
      const n = await node(c, "logs");
      const body = await jsonBody(c, LogsBodySchema);
      const taskId = (body.task_id ?? body.job_id) as string;
      await nodes.held(n, taskId);
      const count = await tasks.mutex.run(`logs:${taskId}`, async () => {
        const stored = await state.appendLog(taskId, {
          received_at: iso(o.clock.now()),
          node_id: n.id,
          session: body.session,
        });
        const st = await state.getTaskState(taskId);
        if (st) {
          st.log_count = stored;
          if (!st.session_id && typeof body.session.id === "string")
            st.session_id = body.session.id;
          await state.putTaskState(st);
        }
        return stored;
      });
      // The stored session (the protocol's LogSession) without its messages, which can be
      // megabytes: the caller has them.
      const { messages, ...session } = body.session;
      return c.json(
        { ...session, task_id: taskId, message_count: messages.length, log_count: count },
        200,
      );
    }),
  );

  // ---- admin endpoints --------------------------------------------------------------------

  app.get("/health", (c) => c.json({ status: "healthy", time: iso(o.clock.now()) }));

  app.get(
    "/nodes",
    h(async (c) => {
      await admin(c, "nodes:read");
      const list = await nodes.views(await state.listNodes());
      return c.json({ nodes: list, count: list.length });
    }),
  );

  app.get(
    "/nodes/:id",
    h(async (c) => {
      await admin(c, "nodes:read");
      const n = await state.getNode(c.req.param("id") ?? "");
      if (!n) throw new FleetHttpError(404, `node ${c.req.param("id")} not found`);
      return c.json(await nodes.view(n));
    }),
  );

  app.delete(
    "/nodes/:id",
    h(async (c) => {
      const p = await admin(c, "nodes:write");
      const id = c.req.param("id") ?? "";
      const requeued = await nodes.remove(id, p.label);
      return c.json({ status: "deleted", id, requeued_task_ids: requeued });
    }),
  );

  app.post(
    "/tasks",
    jsonLimit,
    h(async (c) => {
      const p = await admin(c, "tasks:create");
      const body = await jsonBody(c, CreateTaskBodySchema);
      return c.json(await tasks.create(p, body), 201);
    }),
  );

  app.get(
    "/tasks",
    h(async (c) => {
      const p = await admin(c, "tasks:read");
      const q = ListTasksQuerySchema.safeParse(c.req.query());
      if (!q.success) throw validationError(q.error, "query");
      let statuses: TaskStatus[] | undefined;
      if (q.data.status) {
        statuses = statusFilter(q.data.status);
        if (!statuses)
          throw new FleetHttpError(400, `query.status: unknown status "${q.data.status}"`);
      }
      const query = {
        ...(statuses ? { status: statuses } : {}),
        ...(q.data.node_id ? { workerId: q.data.node_id } : {}),
      };
      const { limit, offset } = q.data;
      const restricted = !keys.mayTarget(p, undefined);
      let rows: TaskRecord[];
      let total: number;
      if (restricted) {
        // A key with allowed targets sees only tasks inside them.
        const all = (await o.store.listTasks({ ...query, newestFirst: true })).filter((t) =>
          keys.mayTarget(p, t.target?.name),
        );
        total = all.length;
        rows = all.slice(offset, offset + limit);
      } else {
        [rows, total] = await Promise.all([
          o.store.listTasks({ ...query, limit, offset, newestFirst: true }),
          o.store.countTasks(query),
        ]);
      }
      const views = [];
      for (const t of rows) views.push(tasks.view(t, await state.getTaskState(t.id)));
      return c.json({ tasks: views, total, limit, offset });
    }),
  );

  app.post(
    "/tasks/cleanup",
    h(async (c) => {
      await admin(c, "admin");
      const { days } = queryOf(c, CleanupQuerySchema);
      const cutoff = o.clock.now() - days * 86_400_000;
      const finished = await o.store.listTasks({ status: [...TERMINAL_STATUSES] });
      const candidates = finished.filter((t) => t.updatedAt < cutoff).map((t) => t.id);
      const deleted = await o.store.deleteFinished({ olderThan: days * 86_400_000 });
      for (const id of candidates) {
        if (!(await o.store.getTask(id))) {
          tasks.deleted.add(id);
          await state.deleteTaskState(id);
          await state.deleteLogs(id);
        }
      }
      return c.json({ deleted, days });
    }),
  );

  app.get(
    "/tasks/:id",
    h(async (c) => {
      const p = await admin(c, "tasks:read");
      const view = await tasks.viewById(c.req.param("id") ?? "");
      if (!keys.mayTarget(p, (view.target_node_name as string | null) ?? undefined)) {
        throw new FleetHttpError(403, "this key may not read this task");
      }
      return c.json(view);
    }),
  );

  app.delete(
    "/tasks/:id",
    h(async (c) => {
      const p = await admin(c, "tasks:cancel");
      const id = c.req.param("id") ?? "";
      const view = await tasks.viewById(id);
      if (!keys.mayTarget(p, (view.target_node_name as string | null) ?? undefined)) {
        throw new FleetHttpError(403, "this key may not cancel this task");
      }
      const st = await state.getTaskState(id);
      if (st?.schedule_id) await tasks.stopSchedule(st.schedule_id);
      const task = await engine.get(id);
      if (task && !TERMINAL_STATUSES.has(task.status)) await engine.cancel(id, "cancelled by API");
      return c.json(await tasks.viewById(id));
    }),
  );

  app.post(
    "/upload",
    limit(o.maxUploadBytes + 64 * 1024),
    h(async (c) => {
      const p = await admin(c, "files:upload");
      let form: Record<string, unknown>;
      try {
        form = await c.req.parseBody();
      } catch {
        throw new FleetHttpError(400, "body: expected multipart/form-data with a file field");
      }
      const file = Object.values(form).find((v): v is File => v instanceof File);
      if (!file) throw new FleetHttpError(400, 'body: no file part (field "file")');
      if (file.size > o.maxUploadBytes) {
        throw new FleetHttpError(413, `file larger than ${o.maxUploadBytes} bytes`);
      }
      const bytes = new Uint8Array(await file.arrayBuffer());
      const rec = await tasks.upload(file.name || "file", bytes, file.type || null, p.label);
      return c.json(
        {
          filename: rec.filename,
          original_name: rec.original_name,
          checksum: rec.checksum,
          size: rec.size,
        },
        201,
      );
    }),
  );

  app.get(
    "/logs/:task_id",
    h(async (c) => {
      await admin(c, "logs:read");
      const id = c.req.param("task_id") ?? "";
      const task = tasks.deleted.has(id) ? undefined : await engine.get(id);
      if (!task) throw new FleetHttpError(404, `task ${id} not found`);
      const logs = await state.readLogs(id);
      return c.json({ task_id: id, logs, count: logs.length });
    }),
  );

  // ---- keys --------------------------------------------------------------------------------

  app.post(
    "/keys",
    jsonLimit,
    h(async (c) => {
      const p = await admin(c, "admin");
      const body = await jsonBody(c, CreateKeyBodySchema);
      const bad = body.scopes.filter((s) => !(KEY_SCOPES as readonly string[]).includes(s));
      if (bad.length) {
        throw new FleetHttpError(
          400,
          `body.scopes: unknown scope ${bad.map((s) => `"${s}"`).join(", ")} (allowed: ${KEY_SCOPES.join(", ")})`,
        );
      }
      const now = o.clock.now();
      const expiresAt =
        body.expires_at ?? (body.expires_in_days ? now + body.expires_in_days * 86_400_000 : null);
      const isAdmin = body.scopes.includes("admin") && !body.allowed_targets?.length;
      const { key, secret } = await keys.create({
        name: body.name,
        kind: isAdmin ? "admin" : "scoped",
        scopes: body.scopes,
        allowedTargets: body.allowed_targets ?? null,
        expiresAt,
        actor: p.label,
        source: sourceOf(c),
      });
      return c.json({ ...keys.view(key), api_key: secret }, 201);
    }),
  );

  app.get(
    "/keys",
    h(async (c) => {
      await admin(c, "admin");
      const list = (await state.listKeys()).map((k) => keys.view(k));
      return c.json({ keys: list, count: list.length });
    }),
  );

  app.get(
    "/keys/audit",
    h(async (c) => {
      await admin(c, "admin");
      const { key_id: keyId, limit: lim } = queryOf(c, AuditQuerySchema);
      let entries = await state.listAudit();
      if (keyId) entries = entries.filter((e) => e.key_id === keyId);
      const slice = entries.slice(-lim).map((e) => ({ ...e, at: iso(e.at) }));
      return c.json({ entries: slice, count: slice.length, total: entries.length });
    }),
  );

  app.get(
    "/keys/:id",
    h(async (c) => {
      await admin(c, "admin");
      const key = await state.getKey(c.req.param("id") ?? "");
      if (!key) throw new FleetHttpError(404, `key ${c.req.param("id")} not found`);
      return c.json(keys.view(key));
    }),
  );

  app.delete(
    "/keys/:id",
    h(async (c) => {
      const p = await admin(c, "admin");
      const id = c.req.param("id") ?? "";
      await keys.delete(id, p.label, sourceOf(c));
      return c.json({ status: "deleted", id });
    }),
  );

  app.post(
    "/keys/:id/rotate",
    h(async (c) => {
      const p = await admin(c, "admin");
      const { grace_period_hours: hours } = queryOf(c, RotateQuerySchema);
      const { key, secret } = await keys.rotate(
        c.req.param("id") ?? "",
        hours * 3_600_000,
        p.label,
        sourceOf(c),
      );
      return c.json({ ...keys.view(key), api_key: secret, grace_period_hours: hours });
    }),
  );

  app.post(
    "/keys/:id/revoke",
    h(async (c) => {
      const p = await admin(c, "admin");
      const key = await keys.revoke(c.req.param("id") ?? "", p.label, sourceOf(c));
      return c.json(keys.view(key));
    }),
  );

  app.get(
    "/dashboard/stats",
    h(async (c) => {
      await admin(c, "stats:read");
      const nodeList = await state.listNodes();
      const byNode: Record<string, number> = { idle: 0, busy: 0, offline: 0, error: 0 };
      for (const n of nodeList) {
        const s = nodes.liveStatus(n);
        byNode[s] = (byNode[s] ?? 0) + 1;
      }
      const count = (status: TaskStatus[]) => o.store.countTasks({ status });
      const [pending, assigned, running, completed, failed, cancelled, total] = await Promise.all([
        count(["pending", "queued", "awaiting_approval"]),
        count(["leased"]),
        count(["running"]),
        count(["succeeded"]),
        count(["failed", "timed_out"]),
        count(["cancelled", "rejected", "skipped"]),
        o.store.countTasks({}),
      ]);
      return c.json({
        nodes: { total: nodeList.length, ...byNode },
        tasks: { total, pending, assigned, running, completed, failed, cancelled },
        keys: { total: (await state.listKeys()).filter((k) => k.kind !== "node").length },
      });
    }),
  );
}
