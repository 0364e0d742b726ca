import {
  type EventFollow,
  type StoredEvent,
  type TaskRecord,
  type TaskStatus,
  TERMINAL_STATUSES,
  type WaitingEvent,
  type WorkerInfo,
} from "@flotilla/core";
import { RELAYED_EVENTS } from "../engine.js";
import type { FlotillaMetrics } from "../metrics.js";
import { storedTransitionData } from "../sse.js";
import { taskView, workerView } from "../views.js";
import type { EventHub } from "../ws.js";
import type { AppContext } from "./context.js";
import { workerBudget } from "./status.js";

/**
 * Relays the engine's events (and the resource manager's cost and pressure events) to the
 * WebSocket hub, feeds finished tasks to the metrics, drops the task-type cache and a
 * worker's quota when workers come and go. Returns what stops it. @internal
 */
export function relayEvents(ctx: AppContext, hub: EventHub, metrics: FlotillaMetrics): () => void {
  const { o, logger, options } = ctx;
  const listeners: Array<[(typeof RELAYED_EVENTS)[number], (payload: unknown) => void]> = [];
  for (const name of RELAYED_EVENTS) {
    const fn = (payload: unknown) => {
      if (name === "worker:registered" || name === "worker:unregistered") ctx.workersChanged();
      if (name === "worker:unregistered") {
        const id = (payload as { id?: unknown } | undefined)?.id;
        if (typeof id === "string") options.resources?.budgets?.remove(workerBudget(id));
      }
      try {
        if (name === "task:transition") {
          const ev = payload as {
            taskId: string;
            from: string | null;
            to: string;
            attempt: number;
            reason?: string;
            error?: unknown;
            workerId?: string;
            task: Readonly<TaskRecord>;
          };
          if (TERMINAL_STATUSES.has(ev.to as TaskStatus) && ev.task.result) {
            metrics.observeResult(ev.task.type, ev.task.result);
          }
          if (hub.clientCount === 0) return; // nobody listening: skip building the view
          hub.publish(
            `task:${ev.to}`,
            {
              task_id: ev.taskId,
              from: ev.from,
              status: ev.to,
              attempt: ev.attempt,
              reason: ev.reason ?? null,
              error: ev.error ?? null,
              worker_id: ev.workerId ?? null,
              task: taskView(ev.task as TaskRecord),
            },
            ev.taskId,
          );
          return;
        }
        if (name === "task:progress") {
          const ev = payload as { taskId: string; attempt: number; data: unknown };
          hub.publish(
            "task:progress",
            { task_id: ev.taskId, attempt: ev.attempt, progress: ev.data },
            ev.taskId,
          );
          return;
        }
        if (name === "task:waiting") {
          const ev = payload as WaitingEvent;
          hub.publish(
            "task:waiting",
            {
              task_id: ev.taskId,
              kind: ev.kind,
              gate: ev.gate ?? null,
              key: ev.key ?? null,
              reason: ev.reason ?? null,
              until: ev.until === undefined ? null : new Date(ev.until).toISOString(),
            },
            ev.taskId,
          );
          return;
        }
        if (
          name.startsWith("worker:") &&
          payload &&
          typeof payload === "object" &&
          "kind" in payload
        ) {
          hub.publish(name, workerView(payload as WorkerInfo));
          return;
        }
        hub.publish(name, payload);
      } catch (err) {
        logger.warn({ err: String(err), event: name }, "failed to relay an engine event");
      }
    };
    o.on(name, fn);
    listeners.push([name, fn]);
  }

  const res = options.resources;
  const resourceListeners: Array<[string, (...args: unknown[]) => void]> = [];
  if (res && typeof res.on === "function") {
    const onCost = (entry: { taskId?: string }) => {
      if (hub.clientCount > 0) hub.publish("resource:cost", entry, entry?.taskId);
    };
    const onPressure = (level: unknown, previous: unknown, sample: unknown) =>
      hub.publish("resource:pressure", { level, previous, sample });
    res.on("cost", onCost);
    res.on("pressure", onPressure);
    resourceListeners.push(
      ["cost", onCost as (...args: unknown[]) => void],
      ["pressure", onPressure as (...args: unknown[]) => void],
    );
  }
  return () => {
    for (const [name, fn] of listeners) o.off(name, fn);
    for (const [name, fn] of resourceListeners) res?.off?.(name, fn);
  };
}

/**
 * Relays the lifecycle events of tasks that other servers sharing the store run (read from
 * the store's event log, `sharedEvents`) to the WebSocket hub, in the shape of this server's
 * own, each with the task as read when it is relayed. It follows the log only while the hub
 * has clients: `occupied` is the hub's hook. @internal
 */
export function relaySharedEvents(
  ctx: AppContext,
  hub: EventHub,
): { occupied(on: boolean): void; stop(): void } {
  const feed = ctx.options.sharedEvents;
  let follow: EventFollow | undefined;
  // One run at a time, so the events go out in the order they were committed.
  let chain = Promise.resolve();
  const relay = async (events: readonly StoredEvent[]) => {
    const views = new Map<string, unknown>();
    for (const ev of events) {
      const id = ev.taskId;
      if (!id || !ev.type.startsWith("task:")) continue;
      if (!views.has(id)) views.set(id, (await ctx.o.view(id, taskView)) ?? null);
      const status = ev.type.slice("task:".length);
      hub.publish(ev.type, { ...storedTransitionData(id, ev, status), task: views.get(id) }, id);
    }
  };
  const onEvents = (events: readonly StoredEvent[]) => {
    chain = chain
      .then(() => relay(events))
      .catch((err: unknown) =>
        ctx.logger.warn({ err: String(err) }, "failed to relay another server's events"),
      );
  };
  return {
    occupied(on) {
      if (!feed) return;
      if (on && !follow) follow = feed.followEvents(onEvents);
      if (!on && follow) {
        follow.close();
        follow = undefined;
      }
    },
    stop() {
      follow?.close();
      follow = undefined;
    },
  };
}
