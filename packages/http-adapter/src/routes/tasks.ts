import { FlotillaError, type TaskRecord, type TaskStatus, TERMINAL_STATUSES } from "@flotilla/core";
import type { Context } from "hono";
import type { AppContext } from "../app/context.js";
import { parseInput, readJson } from "../http/body.js";
import {
  ApprovalDecisionSchema,
  ExecuteResponseSchema,
  HistoryQuerySchema,
  HistoryResponseSchema,
  SubmitResponseSchema,
  TaskSubmitSchema,
  TaskViewSchema,
  TelemetryResponseSchema,
  z,
} from "../schemas.js";
import { parseEventId } from "../sse.js";
import { engineStatuses, executeView, taskView, telemetryView } from "../views.js";

/** A 200 answer whose JSON is already written out. */
const jsonText = (c: Context, text: string) =>
  c.body(text, 200, { "content-type": "application/json" });

const TaskIdParams = z.object({ task_id: z.string().min(1).max(256) });

/**
 * The task routes: `{prefix}/tasks/submit`, `/tasks/execute`, `/tasks/history`,
 * `/tasks/{id}` and `/tasks/{id}/cancel`. @internal
 */
export function taskRoutes(ctx: AppContext): void {
  const { o, prefix } = ctx;
  ctx.define({
    method: "post",
    path: `${prefix}/tasks/submit`,
    summary: "Submit a task (non-blocking)",
    tags: ["vera"],
    body: TaskSubmitSchema,
    response: SubmitResponseSchema,
    extraResponses: {
      409: "Duplicate id",
      503: "Shutting down, or host pressure red and no remote worker runs the type",
    },
    handler: async (c) => {
      const spec = ctx.toSpec(await ctx.body(c, TaskSubmitSchema));
      ctx.admit(spec.type);
      const handle = await ctx.submitAs(c, spec);
      const noWorker = !ctx.anyWorkerFor(spec.type);
      return c.json({
        task_id: handle.id,
        status: "submitted" as const,
        message: noWorker
          ? `task ${handle.id} submitted; no registered worker runs "${spec.type}" yet, it waits for one`
          : `task ${handle.id} submitted`,
      });
    },
  });
  ctx.define({
    method: "post",
    path: `${prefix}/tasks/execute`,
    summary: "Submit a task and wait for its result (bounded by its timeout)",
    tags: ["vera"],
    body: TaskSubmitSchema,
    response: ExecuteResponseSchema,
    extraResponses: { 422: "No worker runs this type", 504: "Still running when the wait ended" },
    handler: async (c) => {
      const spec = ctx.toSpec(await ctx.body(c, TaskSubmitSchema));
      ctx.requireWorkerFor(spec.type);
      const r = await ctx.submitAndWait(c, spec);
      if (r instanceof Response) return r;
      return c.json(executeView(r.id, r.result));
    },
  });
  ctx.define({
    method: "get",
    path: `${prefix}/tasks/history`,
    summary: "Recent tasks, newest first",
    tags: ["vera"],
    query: HistoryQuerySchema,
    response: HistoryResponseSchema,
    handler: async (c) => {
      const q = ctx.query(c, HistoryQuerySchema);
      let status: TaskStatus[] | undefined;
      if (q.status) {
        status = engineStatuses(q.status);
        if (!status) {
          throw new FlotillaError(
            "VALIDATION",
            `query.status: unknown status "${q.status}": expected one of pending, awaiting_approval, queued, leased, running, completed, succeeded, failed, cancelled, timed_out, rejected, skipped`,
          );
        }
      }
      const tasks = await o.list({
        ...(status ? { status } : {}),
        ...(q.type ? { type: q.type } : {}),
        limit: q.limit ?? 100,
        newestFirst: true,
      });
      const views = tasks.map(taskView);
      return c.json({ tasks: views, count: views.length });
    },
  });
  const taskOr404 = async (c: Context): Promise<{ id: string; rec: TaskRecord }> => {
    const id = c.req.param("task_id") ?? "";
    const rec = await o.get(id);
    if (!rec) throw new FlotillaError("NOT_FOUND", `task ${id} not found`);
    return { id, rec };
  };
  ctx.define({
    method: "get",
    path: `${prefix}/tasks/:task_id`,
    summary: "One task",
    tags: ["tasks"],
    params: TaskIdParams,
    response: TaskViewSchema,
    extraResponses: { 404: "Unknown task" },
    handler: async (c) => {
      const id = c.req.param("task_id") ?? "";
      // The answer is written out while the engine's record is at hand (no copy of it); a
      // finished task waits for nothing, so it is answered from that one read.
      const finished = await o.view(id, (rec) =>
        TERMINAL_STATUSES.has(rec.status)
          ? JSON.stringify({ ...taskView(rec), waiting_for: [] })
          : null,
      );
      if (finished) return jsonText(c, finished);
      const reasons = finished === null ? (await o.explain(id)).reasons : [];
      const text = await o.view(id, (rec) =>
        JSON.stringify({ ...taskView(rec), waiting_for: reasons }),
      );
      if (text === undefined) throw new FlotillaError("NOT_FOUND", `task ${id} not found`);
      return jsonText(c, text);
    },
  });
  ctx.define({
    method: "get",
    path: `${prefix}/tasks/:task_id/events`,
    summary:
      "The task's events as text/event-stream until it ends: lifecycle, streamed tokens, progress; resumes from Last-Event-ID",
    tags: ["tasks"],
    params: TaskIdParams,
    response: z.string().openapi({
      description:
        'Server-Sent Events: `event: task:<status>` (lifecycle), `token` ({text}), `task:progress`, `task:waiting`, `gap`; each `id: "<n>.<k>"` for Last-Event-ID',
    }),
    responseType: "text/event-stream",
    extraResponses: { 404: "Unknown task" },
    handler: async (c) => {
      const { id } = await taskOr404(c);
      const from = parseEventId(c.req.header("last-event-id") ?? c.req.query("last_event_id"));
      return ctx.sse.stream(c, id, from);
    },
  });
  ctx.define({
    method: "get",
    path: `${prefix}/tasks/:task_id/telemetry`,
    summary:
      "What the task's worker reported: CPU, memory (MB), current tool or step, token counts (newest samples, in memory)",
    tags: ["tasks"],
    params: TaskIdParams,
    response: TelemetryResponseSchema,
    extraResponses: { 404: "Unknown task" },
    handler: async (c) => {
      const { id } = await taskOr404(c);
      return c.json(telemetryView(id, o.telemetry(id)));
    },
  });
  ctx.define({
    method: "post",
    path: `${prefix}/tasks/:task_id/cancel`,
    summary: "Cancel a task",
    tags: ["tasks"],
    params: TaskIdParams,
    response: TaskViewSchema,
    extraResponses: { 404: "Unknown task", 409: "Already finished" },
    handler: async (c) => {
      const { id, rec } = await taskOr404(c);
      if (TERMINAL_STATUSES.has(rec.status)) {
        throw new FlotillaError("INVALID_STATE", `task ${id} already finished (${rec.status})`);
      }
      await o.cancel(id, "cancelled through the API");
      const after = await o.get(id);
      return c.json(taskView(after ?? rec));
    },
  });
  for (const decision of ["approve", "reject"] as const) {
    ctx.define({
      method: "post",
      path: `${prefix}/tasks/:task_id/${decision}`,
      summary:
        decision === "approve"
          ? "Approve a task awaiting approval (a before_run task is queued; an after_run result is accepted)"
          : "Reject a task awaiting approval (it ends rejected; its dependents are skipped)",
      tags: ["tasks"],
      params: TaskIdParams,
      body: ApprovalDecisionSchema,
      response: TaskViewSchema,
      extraResponses: { 404: "Unknown task", 409: "Not awaiting approval (names its state)" },
      handler: async (c) => {
        const { id } = await taskOr404(c);
        const input = parseInput(
          ApprovalDecisionSchema,
          await readJson(c.req.raw, { empty: {} }),
          "body",
        );
        const info: { by: string; comment?: string } = { by: ctx.actor(c) };
        if (input.comment !== undefined) info.comment = input.comment;
        const rec = await (decision === "approve" ? o.approve(id, info) : o.reject(id, info));
        return c.json(taskView(rec));
      },
    });
  }
}
