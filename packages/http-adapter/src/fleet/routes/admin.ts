import { Readable } from "node:stream";
import type { TaskRecord, TaskStatus } from "@flotilla/core";
import { TERMINAL_STATUSES } from "@flotilla/core";
import busboy, { type Busboy } from "busboy";
import type { Hono } from "hono";
import { validationError } from "../../errors.js";
import type { FleetKit } from "../routes.js";
import { CleanupQuerySchema, CreateTaskBodySchema, ListTasksQuerySchema } from "../schemas.js";
import type { FileRecord } from "../state.js";
import { statusFilter } from "../tasks.js";
import { FleetHttpError, iso } from "../util.js";

/** The admin API: health, nodes, tasks, stats, cleanup, uploads. @internal */
export function adminRoutes(app: Hono, k: FleetKit): void {
  const { o, state, keys, nodes, tasks, engine, h, limit, jsonLimit, admin, jsonBody, queryOf } = k;
  // ---- admin endpoints --------------------------------------------------------------------

  app.get("/health", (c) => c.json({ status: "healthy", time: iso(o.clock.now()) }));

  app.get(
    "/nodes",
    h(async (c) => {
      await admin(c, "nodes:read");
      // Expired nodes (offline for nodeExpiryMs) are hidden; GET /nodes/{id} still finds them.
      const listed = (await state.listNodes()).filter((n) => !n.expired_at);
      const list = await nodes.views(listed);
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
      const type = c.req.header("content-type") ?? "";
      const body = c.req.raw.body;
      if (!/^multipart\/form-data/i.test(type) || !body) {
        throw new FleetHttpError(400, "body: expected multipart/form-data with a file field");
      }
      let parser: Busboy;
      try {
        parser = busboy({
          headers: { "content-type": type },
          limits: { files: 1, fileSize: o.maxUploadBytes, fields: 20, fieldSize: 64 * 1024 },
          // The name as sent: it is checked (and cut to its last segment) by the upload itself.
          preservePath: true,
          defParamCharset: "utf8",
        });
      } catch {
        throw new FleetHttpError(400, "body: expected multipart/form-data with a file field");
      }
      // The file is stored as it streams in: never whole in memory.
      const stored = new Promise<FileRecord>((resolve, reject) => {
        let seen = false;
        parser.on("file", (_field, stream, info) => {
          if (seen) {
            stream.resume();
            return;
          }
          seen = true;
          let truncated = false;
          stream.on("limit", () => {
            truncated = true;
          });
          tasks
            .uploadStream(
              info.filename ?? "file",
              stream,
              info.mimeType || null,
              p.label,
              () => truncated,
            )
            .then(resolve, (err: unknown) => {
              stream.resume(); // read the rest, so the answer can be sent
              reject(err);
            });
        });
        parser.on("error", () =>
          reject(new FleetHttpError(400, "body: malformed multipart/form-data")),
        );
        parser.on("close", () => {
          if (!seen) reject(new FleetHttpError(400, 'body: no file part (field "file")'));
        });
      });
      const input = Readable.fromWeb(body as import("node:stream/web").ReadableStream);
      input.on("error", (err) => parser.destroy(err));
      input.pipe(parser);
      const rec = await stored;
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
}
