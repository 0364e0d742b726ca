import { TERMINAL_STATUSES, UnrecoverableError } from "@flotilla/core";
import type { Hono } from "hono";
import type { FleetKit } from "../routes.js";
import {
  HeartbeatBodySchema,
  LogsBodySchema,
  RegisterBodySchema,
  StatusBodySchema,
} from "../schemas.js";
import type { NodeRecord } from "../state.js";
import { FleetHttpError, iso } from "../util.js";

/** The node protocol: register, poll, files, heartbeat, status, logs. @internal */
export function nodeRoutes(app: Hono, k: FleetKit): void {
  const { o, state, nodes, tasks, engine, h, limit, jsonLimit, node, baseUrl, sourceOf, jsonBody } =
    k;
  // ---- node endpoints ---------------------------------------------------------------------

  app.post(
    "/register",
    jsonLimit,
    h(async (c) => {
      const source = sourceOf(c);
      const token = c.req.header("x-registration-token");
      await nodes.admit(token, source);
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
        fresh.expired_at = null;
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
      const { size, body } = await tasks.fileFor(await nodes.holding(n.id), name);
      return new Response(body, {
        status: 200,
        headers: {
          "content-type": "application/octet-stream",
          "content-length": String(size),
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
}
