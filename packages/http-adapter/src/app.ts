import {
  OpenAPIRegistry,
  OpenApiGeneratorV31,
  type RouteConfig,
} from "@asteasolutions/zod-to-openapi";
import type { EngineApi } from "@flotilla/core";
import {
  BUILTIN_TASK_TYPES,
  type Budgets,
  type Clock,
  FlotillaError,
  type Logger,
  PRIORITY_NAMES,
  PRIORITY_VALUES,
  silentLogger,
  systemClock,
  type TaskRecord,
  type TaskResult,
  type TaskSpec,
  type TaskStatus,
  TERMINAL_STATUSES,
  type Worker,
  type WorkerInfo,
} from "@flotilla/core";
import { type Context, Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import type { ZodType } from "zod";
import { type AuthOptions, KeyVerifier, keyFromHeaders } from "./auth.js";
import { dashboardHtml } from "./dashboard.js";
import { docsAsset, docsHtml } from "./docs.js";
import { RELAYED_EVENTS } from "./engine.js";
import { errorResponse, HttpError, validationError } from "./errors.js";
import { FlotillaMetrics, type MetricsSnapshot } from "./metrics.js";
import {
  ErrorResponseSchema,
  ExecuteResponseSchema,
  HealthResponseSchema,
  HistoryQuerySchema,
  HistoryResponseSchema,
  type LlmApiRegisterInput,
  LlmApiRegisterSchema,
  LlmRequestSchema,
  LlmResponseSchema,
  RegisteredResponseSchema,
  type RemoteRegisterInput,
  RemoteRegisterSchema,
  ResourceStatsSchema,
  StatusResponseSchema,
  SubmitResponseSchema,
  type TaskSubmitInput,
  TaskSubmitSchema,
  TaskViewSchema,
  ToolExecuteSchema,
  ToolResponseSchema,
  WorkerListResponseSchema,
  z,
} from "./schemas.js";
import {
  engineStatuses,
  executeView,
  jsonSafe,
  llmText,
  priorityValue,
  taskMetrics,
  taskView,
  workerView,
} from "./views.js";
import { EventHub, type WebSocketOptions } from "./ws.js";

/** Context handed to worker factories. */
export interface WorkerFactoryContext {
  orchestrator: EngineApi;
  resources?: ResourcesLike;
  logger: Logger;
}

/**
 * Builders for workers created at run time through the API. The composer (the CLI, or
 * your app) provides them, so the adapter depends on no worker package. A missing
 * factory makes its route answer 501.
 */
export interface WorkerFactories {
  /** `POST /workers/llm-api/register`. Configure rate limits/quotas from `input` here. */
  llmApi?(input: LlmApiRegisterInput, ctx: WorkerFactoryContext): Worker | Promise<Worker>;
  /** `POST /workers/remote/register`. */
  remote?(input: RemoteRegisterInput, ctx: WorkerFactoryContext): Worker | Promise<Worker>;
}

/** The resource manager, as far as the adapter reads it. */
export interface ResourcesLike {
  /**
   * The engine's budgets gate: the `quota_*_per_day` fields of
   * `POST /workers/llm-api/register` become a daily `worker` budget of the new worker
   * (removed when it is unregistered), shown in `/resources/stats` as `worker_quotas`.
   * Without it, a registration carrying quota fields answers 501 instead of ignoring them.
   */
  budgets?: Pick<Budgets, "add" | "remove" | "stats">;
  /** The `/resources/stats` view (`ResourceManager.stats()`). */
  stats?(): unknown;
  /** Host-pressure admission: at `red`, task-creating routes answer 503 with `Retry-After`. */
  admission?: { readonly level: string; retryAfterSeconds(): number } | undefined;
  /** Its `cost` and `pressure` events are relayed as `resource:cost` / `resource:pressure`. */
  // biome-ignore lint/suspicious/noExplicitAny: emitters type their listeners per event
  on?(event: any, listener: (...args: any[]) => void): unknown;
  // biome-ignore lint/suspicious/noExplicitAny: emitters type their listeners per event
  off?(event: any, listener: (...args: any[]) => void): unknown;
}

/** CORS settings. `false` (the default) sends no CORS headers. */
export type CorsOptions =
  | false
  | {
      /** Allowed origins (`"*"` for any). */
      origin: string | string[];
      /** @default false */
      credentials?: boolean;
      /** @default 600 */
      maxAge?: number;
    };

/** Options of {@link createFlotillaApp}. */
export interface FlotillaAppOptions {
  /** The engine. No global singleton: pass the instance. */
  orchestrator: EngineApi;
  /** Admin keys, or `{ mode: "open" }` for local use without authentication. */
  auth: AuthOptions;
  /** Where the Vera routes live. @default "/api/v2/orchestrator" */
  prefix?: string;
  /**
   * Builds workers for `POST …/workers/llm-api/register` and `…/workers/remote/register`;
   * a route without its factory answers 501. @default {} (both routes answer 501)
   */
  workerFactories?: WorkerFactories;
  /** @default false */
  cors?: CorsOptions;
  /** Largest request body accepted; larger ones get 413. @default 1048576 (1 MiB) */
  bodyLimitBytes?: number;
  /** pino-compatible logger. @default silent */
  logger?: Logger;
  /**
   * The resource manager: `/resources/stats`, host-pressure 503s and `resource:*` events.
   * @default undefined (empty stats, no admission control)
   */
  resources?: ResourcesLike;
  /**
   * WebSocket intervals and limits (see {@link WebSocketOptions}). @default {} (each field's own default)
   */
  websocket?: WebSocketOptions;
  /** How long `/tasks/execute` waits for a task that has no `timeout_seconds`. @default 300000 */
  executeTimeoutMs?: number;
  /** Reported by `/health`. @default "0.1.0" */
  version?: string;
  /**
   * Further apps mounted at the root (e.g. the fleet routes); mounted after the built-in
   * routes. An app with an `openapiRoutes(base)` method (the fleet app has one) has its
   * operations added to `/openapi.json` and `/docs`.
   */
  mount?: Array<{ path?: string; app: Hono & { openapiRoutes?(base: string): RouteConfig[] } }>;
  /** Extra task types accepted besides built-in ones and those claimed by registered workers. */
  taskTypes?: readonly string[];
  /** Drives WebSocket ping and status intervals, uptime and the day of usage figures. @default systemClock */
  clock?: Clock;
}

/** Runtime handles of an app made by {@link createFlotillaApp}. */
export interface FlotillaAppHandles {
  /** WebSocket hub: relays engine events; publish your own with `hub.publish`. */
  hub: EventHub;
  metrics: FlotillaMetrics;
  /** The OpenAPI 3.1 document. */
  openapi(): Record<string, unknown>;
  /** Starts refusing new work (503) and closes WebSockets; idempotent. */
  beginShutdown(): void;
  /** Unsubscribes from the engine and closes WebSockets. */
  close(): void;
  readonly prefix: string;
}

/** A Hono app with the Flotilla handles attached. `app.fetch(request)` answers any web-standard Request. */
export type FlotillaApp = Hono & { flotilla: FlotillaAppHandles };

/** Task types the Vera API knew, accepted besides Flotilla's built-in ones. */
export const VERA_TASK_TYPES = ["background_cognition", "parallel_batch"] as const;

const jsonBody = (schema: ZodType) => ({
  body: { content: { "application/json": { schema } }, required: true },
});
const ok = (schema: ZodType, description = "OK") => ({
  description,
  content: { "application/json": { schema } },
});
const errResp = (description: string) => ({
  description,
  content: { "application/json": { schema: ErrorResponseSchema } },
});

/**
 * Builds the HTTP app around an orchestrator: the Vera routes under `prefix`, `/health`,
 * `/metrics`, `/openapi.json`, `/docs`, `/dashboard`, and (through {@link serveFlotilla})
 * WebSockets. The app is web-standard: mount `app.fetch` in any server or framework.
 *
 * @example
 * ```ts
 * import { Orchestrator } from "@flotilla/core";
 * import { createFlotillaApp, serveFlotilla } from "@flotilla/http-adapter";
 *
 * const orchestrator = new Orchestrator();
 * await orchestrator.start();
 * const app = createFlotillaApp({ orchestrator, auth: { keys: [process.env.ADMIN_KEY!] } });
 * const server = await serveFlotilla(app, { port: 8000 });
 * ```
 */
export function createFlotillaApp(options: FlotillaAppOptions): FlotillaApp {
  const o = options.orchestrator;
  const prefix = (options.prefix ?? "/api/v2/orchestrator").replace(/\/+$/, "");
  const logger = options.logger ?? silentLogger;
  const verifier = new KeyVerifier(options.auth, logger);
  const bodyLimitBytes = options.bodyLimitBytes ?? 1_048_576;
  const executeTimeoutMs = options.executeTimeoutMs ?? 300_000;
  const version = options.version ?? "0.1.0";
  const clock = options.clock ?? systemClock;
  let shuttingDown = false;

  const app = new Hono() as FlotillaApp;
  const registry = new OpenAPIRegistry();
  registry.registerComponent("securitySchemes", "ApiKey", {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
  });
  registry.registerComponent("securitySchemes", "Bearer", { type: "http", scheme: "bearer" });
  registry.registerComponent("securitySchemes", "RegistrationToken", {
    type: "apiKey",
    in: "header",
    name: "X-Registration-Token",
  });

  // ---- engine reads ------------------------------------------------------------------
  const workers = (): WorkerInfo[] => o.listWorkers();

  // Task types of registered workers, cached between worker (un)registrations so that a
  // submit does not snapshot every worker.
  let typeCache: { allowed: string[]; claimed: Set<string>; wildcard: boolean } | undefined;
  const typeInfo = () => {
    if (!typeCache) {
      const claimed = new Set<string>();
      let wildcard = false;
      for (const w of workers()) {
        for (const t of w.taskTypes) {
          if (t === "*") wildcard = true;
          else claimed.add(t);
        }
      }
      const all = new Set<string>([
        ...BUILTIN_TASK_TYPES,
        ...VERA_TASK_TYPES,
        ...(options.taskTypes ?? []),
        ...claimed,
      ]);
      typeCache = { allowed: [...all].sort(), claimed, wildcard };
    }
    return typeCache;
  };
  const allowedTypes = (): string[] => typeInfo().allowed;
  const anyWorkerFor = (type: string): boolean => {
    const t = typeInfo();
    return t.wildcard || t.claimed.has(type);
  };

  const engineStatus = () => o.status();
  const engineRunning = () => o.state === "running" || o.state === "idle";
  const countBy = async (): Promise<Record<string, number>> => ({
    ...(engineStatus().counts ?? {}),
  });

  const metricsSnapshot = async (): Promise<MetricsSnapshot> => {
    const raw = engineStatus();
    const queueByPriority: Record<string, number> = {};
    for (const [k, v] of Object.entries(raw.queueDepth ?? {})) {
      const n = Number(k);
      const name = Number.isFinite(n)
        ? (PRIORITY_NAMES.find((p) => PRIORITY_VALUES[p] === n) ?? k)
        : k;
      queueByPriority[name] = (queueByPriority[name] ?? 0) + v;
    }
    for (const p of PRIORITY_NAMES) queueByPriority[p] ??= 0;
    return { tasksByState: await countBy(), queueByPriority, workers: workers() };
  };

  /** Today's (UTC) usage per worker, read from the engine's usage ledger. */
  const usageBlock = async () => {
    const now = clock.now();
    const day = new Date(now).toISOString().slice(0, 10);
    const byWorker: Record<
      string,
      { requests_today: number; tokens_today: number; cost_today: number }
    > = {};
    const totals = { requests_today: 0, tokens_today: 0, cost_today: 0 };
    for (const line of await o.usage({ since: Date.parse(`${day}T00:00:00Z`), until: now + 1 })) {
      const u = line.usage;
      const requests = u.requests ?? 1;
      const tokens = u.totalTokens ?? (u.inputTokens ?? 0) + (u.outputTokens ?? 0);
      const cost = u.costUsd ?? 0;
      const id = line.workerId ?? "unknown";
      const w = byWorker[id] ?? { requests_today: 0, tokens_today: 0, cost_today: 0 };
      byWorker[id] = w;
      w.requests_today += requests;
      w.tokens_today += tokens;
      w.cost_today += cost;
      totals.requests_today += requests;
      totals.tokens_today += tokens;
      totals.cost_today += cost;
    }
    return { workers: byWorker, totals, day };
  };

  const resourceStats = async () => ({
    ...(await managedStats()),
    ...(options.resources?.budgets
      ? { worker_quotas: workerQuotas(options.resources.budgets) }
      : {}),
  });
  const managedStats = async () => {
    let managed: Record<string, unknown> | undefined;
    try {
      const m = options.resources?.stats?.();
      if (m && typeof m === "object") managed = m as Record<string, unknown>;
    } catch (err) {
      logger.warn({ err: String(err) }, "resources.stats() failed");
    }
    if (managed) {
      // The resource manager's view, plus Vera's `llm_api_usage` block built from it.
      return jsonSafe({
        ...managed,
        llm_api_usage: { workers: managed.workers ?? {}, totals: managed.totals ?? {} },
      }) as Record<string, unknown>;
    }
    return jsonSafe({ llm_api_usage: await usageBlock() }) as Record<string, unknown>;
  };

  const workerStats = (list: WorkerInfo[]) => {
    const views = list.map(workerView);
    const byStatus: Record<string, number> = {};
    const byKind: Record<string, number> = {};
    const byCap: Record<string, number> = {};
    let capacity = 0;
    let inFlight = 0;
    for (const [i, w] of list.entries()) {
      const v = views[i] as { status: string; capabilities: string[] };
      byStatus[v.status] = (byStatus[v.status] ?? 0) + 1;
      byKind[w.kind] = (byKind[w.kind] ?? 0) + 1;
      for (const c of v.capabilities) byCap[c] = (byCap[c] ?? 0) + 1;
      capacity += w.maxConcurrency;
      inFlight += w.inFlight;
    }
    return {
      views,
      statistics: {
        total_workers: list.length,
        workers_by_status: byStatus,
        workers_by_kind: byKind,
        workers_by_capability: byCap,
        total_capacity: capacity,
        tasks_in_flight: inFlight,
        utilization: capacity > 0 ? inFlight / capacity : 0,
      },
    };
  };

  const statusSnapshot = async () => {
    const raw = engineStatus();
    const byState = { ...(raw.counts ?? {}) };
    const sum = (...k: TaskStatus[]) => k.reduce((a, s) => a + (byState[s] ?? 0), 0);
    const ws = workerStats(workers());
    return jsonSafe({
      is_running: !shuttingDown && engineRunning(),
      state: shuttingDown ? "stopping" : (raw.state ?? "running"),
      uptime_seconds: Math.round(raw.uptimeMs / 1000),
      metrics: {
        tasks_submitted: Object.values(byState).reduce((a, b) => a + b, 0),
        tasks_completed: sum("succeeded"),
        tasks_failed: sum("failed", "timed_out"),
        tasks_cancelled: sum("cancelled"),
        tasks_skipped: sum("skipped"),
        active_tasks: raw.inFlight ?? sum("leased", "running"),
        queued_tasks: raw.queued ?? sum("queued"),
        delayed_tasks: raw.delayed ?? 0,
        pending_tasks: sum("pending", "awaiting_approval"),
        avg_execution_time_ms: raw.avgExecutionMs,
        tasks_by_state: byState,
        queue_depth_by_priority: raw.queueDepth ?? {},
      },
      workers: { ...ws.statistics, list: ws.views },
      resources: await resourceStats(),
      engine: { ...raw, workers: undefined },
    }) as Record<string, unknown>;
  };

  // ---- events ------------------------------------------------------------------------
  const hub = new EventHub({
    prefix,
    verifier,
    logger,
    snapshot: statusSnapshot,
    taskState: async (id) => {
      const rec = await o.get(id);
      return rec ? { status: rec.status, view: taskView(rec) } : undefined;
    },
    options: options.websocket ?? {},
    ...(options.clock ? { clock: options.clock } : {}),
  });

  const metrics = new FlotillaMetrics(metricsSnapshot, {
    slowConsumers: () => hub.slowConsumerEvents,
    wsClients: () => hub.clientCount,
  });

  const listeners: Array<[(typeof RELAYED_EVENTS)[number], (payload: unknown) => void]> = [];
  const onFinished = (task: Readonly<TaskRecord>) => {
    const r = task.result;
    if (!r) return;
    metrics.observeResult(task.type, r);
  };
  for (const name of RELAYED_EVENTS) {
    const fn = (payload: unknown) => {
      if (name === "worker:registered" || name === "worker:unregistered") typeCache = undefined;
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
          if (TERMINAL_STATUSES.has(ev.to as TaskStatus)) onFinished(ev.task);
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

  // ---- middleware --------------------------------------------------------------------
  app.use("*", async (c, next) => {
    const t0 = performance.now();
    await next();
    metrics.observeHttp(c.req.method, c.res.status);
    const ms = Math.round((performance.now() - t0) * 10) / 10;
    const line = { method: c.req.method, path: c.req.path, status: c.res.status, ms };
    if (c.res.status >= 500) logger.error(line, "request failed");
    else logger.debug(line, "request");
  });
  if (options.cors) {
    app.use(
      "*",
      cors({
        origin: options.cors.origin,
        credentials: options.cors.credentials ?? false,
        maxAge: options.cors.maxAge ?? 600,
        allowHeaders: ["Content-Type", "Authorization", "X-API-Key"],
        allowMethods: ["GET", "POST", "DELETE", "OPTIONS"],
      }),
    );
  }
  const limit = bodyLimit({
    maxSize: bodyLimitBytes,
    onError: (c) => {
      // The unread rest of the body makes the connection unusable: have Node close it.
      const env = c.env as { outgoing?: { setHeader?(k: string, v: string): void } } | undefined;
      env?.outgoing?.setHeader?.("connection", "close");
      const message = `request body exceeds ${bodyLimitBytes} bytes`;
      return new Response(
        JSON.stringify({ error: { code: "PAYLOAD_TOO_LARGE", message }, detail: message }),
        { status: 413, headers: { "content-type": "application/json" } },
      );
    },
  });
  // Only the adapter's own routes: mounted apps (fleet uploads, logs) set their own limits.
  app.use(`${prefix}/*`, limit);

  const denyWithoutKey = async (c: Context): Promise<Response | undefined> => {
    if (!verifier.open) {
      const key = keyFromHeaders(c.req.raw.headers);
      if (!(await verifier.check(key, `${c.req.method} ${c.req.path}`))) {
        return errorResponse(
          new FlotillaError(
            "UNAUTHORIZED",
            key ? "invalid API key" : "missing API key: send X-API-Key or Authorization: Bearer",
          ),
          { "www-authenticate": 'Bearer realm="flotilla"' },
        );
      }
    }
    return undefined;
  };

  app.onError((err, c) => {
    const known = err instanceof FlotillaError || err instanceof HttpError;
    if (!known)
      logger.error(
        { err: String((err as Error)?.stack ?? err), path: c.req.path },
        "unhandled error",
      );
    return errorResponse(err);
  });
  app.notFound((c) =>
    errorResponse(new FlotillaError("NOT_FOUND", `no route ${c.req.method} ${c.req.path}`)),
  );

  // ---- helpers -----------------------------------------------------------------------
  const readJson = async (c: Context): Promise<unknown> => {
    const text = await c.req.text();
    if (!text.trim()) throw new FlotillaError("VALIDATION", "body: empty: expected a JSON object");
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new FlotillaError("VALIDATION", `body: malformed JSON (${(err as Error).message})`);
    }
  };
  const parse = <T>(schema: ZodType<T>, value: unknown, where: string): T => {
    const r = schema.safeParse(value);
    if (!r.success) throw validationError(r.error, where);
    return r.data;
  };
  const notShuttingDown = () => {
    if (shuttingDown) throw new FlotillaError("SHUTTING_DOWN", "server is shutting down");
    const adm = options.resources?.admission;
    if (adm?.level === "red") {
      const secs = Math.max(1, Math.round(adm.retryAfterSeconds()));
      throw new HttpError(503, "OVERLOADED", `host under pressure (red): retry in ${secs} s`, {
        "retry-after": String(secs),
      });
    }
  };
  const checkType = (raw: string): string => {
    const type = raw.trim().toLowerCase();
    const allowed = allowedTypes();
    if (!allowed.includes(type)) {
      throw new FlotillaError(
        "VALIDATION",
        `body.type: unknown task type "${raw.slice(0, 64)}": expected one of ${allowed.join(", ")}`,
        { details: { field: "type", allowed } },
      );
    }
    return type;
  };
  /** The request's `priority` and `timeout_seconds`, as every task-creating route reads them. */
  const withPriorityAndTimeout = (
    spec: TaskSpec,
    input: { priority?: string | number | undefined; timeout_seconds?: number | undefined },
  ): TaskSpec => {
    const p = priorityValue(input.priority);
    if (p !== undefined) spec.priority = p;
    if (input.timeout_seconds) spec.timeoutMs = Math.ceil(input.timeout_seconds * 1000);
    return spec;
  };
  const toSpec = (input: TaskSubmitInput): TaskSpec => {
    const spec: TaskSpec = { type: checkType(input.type) };
    if (input.payload !== undefined) spec.payload = input.payload;
    withPriorityAndTimeout(spec, input);
    if (input.max_retries !== undefined) spec.retry = { maxAttempts: input.max_retries + 1 };
    if (input.depends_on) spec.dependsOn = input.depends_on;
    if (input.metadata) spec.metadata = input.metadata;
    if (input.task_id) spec.id = input.task_id;
    if (input.idempotency_key) spec.idempotencyKey = input.idempotency_key;
    return spec;
  };
  const requireWorkerFor = (type: string) => {
    if (anyWorkerFor(type) === false) {
      throw new FlotillaError(
        "NO_ELIGIBLE_WORKER",
        `no registered worker runs "${type}" tasks (registered task types: ${allowedTypes().join(", ")})`,
      );
    }
  };

  /** Submits and waits for the outcome, bounded by the task timeout (no polling). */
  const submitAndWait = async (
    c: Context,
    spec: TaskSpec,
  ): Promise<{ id: string; result: TaskResult } | Response> => {
    notShuttingDown();
    const handle = await o.submit(spec);
    const attempts = spec.retry?.maxAttempts ?? 1;
    const bound = (spec.timeoutMs ?? executeTimeoutMs) * attempts + 5_000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), bound);
      timer.unref?.();
    });
    const aborted = new Promise<"aborted">((resolve) => {
      const s = c.req.raw.signal;
      if (s?.aborted) resolve("aborted");
      s?.addEventListener("abort", () => resolve("aborted"), { once: true });
    });
    try {
      const r = await Promise.race([handle.result(), timedOut, aborted]);
      if (r === "timeout" || r === "aborted") {
        const msg = `task ${handle.id} still running after ${bound} ms; poll ${prefix}/tasks/${encodeURIComponent(handle.id)}`;
        return c.json(
          { error: { code: "TIMEOUT", message: msg }, detail: msg, task_id: handle.id },
          504,
        );
      }
      return { id: handle.id, result: r };
    } finally {
      if (timer) clearTimeout(timer);
    }
  };

  /**
   * Runs `spec`, waits, and answers Vera's `{task_id, success, <field>, error, metrics}`:
   * `<field>` is `value(output)` when the task succeeded, else null.
   */
  const runAndAnswer = async (
    c: Context,
    spec: TaskSpec,
    field: "response" | "result",
    value: (output: unknown) => unknown,
  ): Promise<Response> => {
    const r = await submitAndWait(c, spec);
    if (r instanceof Response) return r;
    const ok = r.result.status === "succeeded";
    return c.json(
      jsonSafe({
        task_id: r.id,
        success: ok,
        [field]: ok ? value(r.result.output) : null,
        error: ok ? null : (r.result.error?.message ?? r.result.status),
        metrics: { ...taskMetrics(undefined, r.result), worker_id: r.result.workerId ?? null },
      }),
    );
  };

  type RouteDef = {
    method: "get" | "post";
    path: string;
    summary: string;
    tags: string[];
    auth?: boolean;
    body?: ZodType;
    query?: ZodType;
    params?: ZodType;
    response: ZodType;
    extraResponses?: Record<number, string>;
    handler: (c: Context) => Promise<Response> | Response;
  };
  const registered = new Set<string>();
  const openApiPath = (p: string) => p.replace(/:([A-Za-z_]+)/g, "{$1}");
  const define = (d: RouteDef) => {
    const responses: RouteConfig["responses"] = { 200: ok(d.response) };
    if (d.body || d.query || d.params) responses[400] = errResp("Invalid input (names the field)");
    if (d.auth !== false) responses[401] = errResp("Missing or invalid API key");
    if (d.body) responses[413] = errResp("Body too large");
    for (const [code, text] of Object.entries(d.extraResponses ?? {}))
      responses[Number(code)] = errResp(text);
    const request: RouteConfig["request"] = {};
    if (d.body) Object.assign(request, jsonBody(d.body));
    if (d.query) request.query = d.query as never;
    if (d.params) request.params = d.params as never;
    registered.add(`${d.method} ${openApiPath(d.path)}`);
    registry.registerPath({
      method: d.method,
      path: openApiPath(d.path),
      summary: d.summary,
      tags: d.tags,
      ...(d.auth === false ? {} : { security: [{ ApiKey: [] }, { Bearer: [] }] }),
      request,
      responses,
    });
    app.on(d.method.toUpperCase(), d.path, async (c: Context) => {
      if (d.auth !== false) {
        const denied = await denyWithoutKey(c);
        if (denied) return denied;
      }
      return d.handler(c);
    });
  };

  // ---- routes ------------------------------------------------------------------------
  const health = (c: Context) => {
    const running = !shuttingDown && engineRunning();
    return c.json({ status: running ? "healthy" : "stopped", version }, running ? 200 : 503);
  };
  for (const [path, summary, tag] of [
    ["/health", "Liveness (no authentication)", "operations"],
    [`${prefix}/health`, "Health check (no authentication)", "vera"],
  ] as const) {
    define({
      method: "get",
      path,
      summary,
      tags: [tag],
      auth: false,
      response: HealthResponseSchema,
      extraResponses: { 503: "Stopped or shutting down" },
      handler: health,
    });
  }
  define({
    method: "get",
    path: `${prefix}/status`,
    summary: "Status snapshot: tasks, workers, resources",
    tags: ["vera"],
    response: StatusResponseSchema,
    handler: async (c) => c.json(await statusSnapshot()),
  });
  define({
    method: "post",
    path: `${prefix}/tasks/submit`,
    summary: "Submit a task (non-blocking)",
    tags: ["vera"],
    body: TaskSubmitSchema,
    response: SubmitResponseSchema,
    extraResponses: { 409: "Duplicate id", 503: "Shutting down" },
    handler: async (c) => {
      const input = parse(TaskSubmitSchema, await readJson(c), "body");
      notShuttingDown();
      const spec = toSpec(input);
      const handle = await o.submit(spec);
      const noWorker = anyWorkerFor(spec.type) === false;
      return c.json({
        task_id: handle.id,
        status: "submitted" as const,
        message: noWorker
          ? `task ${handle.id} submitted; no registered worker runs "${spec.type}" yet, it waits for one`
          : `task ${handle.id} submitted`,
      });
    },
  });
  define({
    method: "post",
    path: `${prefix}/tasks/execute`,
    summary: "Submit a task and wait for its result (bounded by its timeout)",
    tags: ["vera"],
    body: TaskSubmitSchema,
    response: ExecuteResponseSchema,
    extraResponses: { 422: "No worker runs this type", 504: "Still running when the wait ended" },
    handler: async (c) => {
      const input = parse(TaskSubmitSchema, await readJson(c), "body");
      const spec = toSpec(input);
      requireWorkerFor(spec.type);
      const r = await submitAndWait(c, spec);
      if (r instanceof Response) return r;
      return c.json(executeView(r.id, r.result));
    },
  });
  define({
    method: "post",
    path: `${prefix}/llm/request`,
    summary: "Run an LLM request and wait for the answer",
    tags: ["vera"],
    body: LlmRequestSchema,
    response: LlmResponseSchema,
    extraResponses: { 422: "No LLM worker registered", 504: "Still running when the wait ended" },
    handler: async (c) => {
      const input = parse(LlmRequestSchema, await readJson(c), "body");
      const ws = workers();
      const ollama = ws.some((w) => w.taskTypes.includes("ollama_request"));
      const type = input.prefer_ollama && ollama ? "ollama_request" : "llm_request";
      requireWorkerFor(type);
      // The LLM workers' request shape: `prompt` is folded into `messages`, `system` sent as each provider expects.
      const payload: Record<string, unknown> = { prompt: input.prompt };
      if (input.system) payload.system = input.system;
      if (input.model) payload.model = input.model;
      if (input.temperature !== undefined) payload.temperature = input.temperature;
      if (input.max_tokens !== undefined) payload.maxTokens = input.max_tokens;
      const spec = withPriorityAndTimeout({ type, payload }, input);
      if (input.prefer_ollama) spec.metadata = { prefer_ollama: true };
      return runAndAnswer(c, spec, "response", llmText);
    },
  });
  define({
    method: "post",
    path: `${prefix}/tools/execute`,
    summary: "Run a tool call and wait for the result",
    tags: ["vera"],
    body: ToolExecuteSchema,
    response: ToolResponseSchema,
    extraResponses: { 422: "No tool worker registered", 504: "Still running when the wait ended" },
    handler: async (c) => {
      const input = parse(ToolExecuteSchema, await readJson(c), "body");
      requireWorkerFor("tool_call");
      const spec = withPriorityAndTimeout(
        {
          type: "tool_call",
          payload: { tool_name: input.tool_name, tool_input: input.tool_input ?? {} },
        },
        input,
      );
      return runAndAnswer(c, spec, "result", (output) => output ?? null);
    },
  });
  define({
    method: "get",
    path: `${prefix}/tasks/history`,
    summary: "Recent tasks, newest first",
    tags: ["vera"],
    query: HistoryQuerySchema,
    response: HistoryResponseSchema,
    handler: async (c) => {
      const q = parse(HistoryQuerySchema, c.req.query(), "query");
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
  const TaskIdParams = z.object({ task_id: z.string().min(1).max(256) });
  const taskOr404 = async (c: Context): Promise<{ id: string; rec: TaskRecord }> => {
    const id = c.req.param("task_id") ?? "";
    const rec = await o.get(id);
    if (!rec) throw new FlotillaError("NOT_FOUND", `task ${id} not found`);
    return { id, rec };
  };
  define({
    method: "get",
    path: `${prefix}/tasks/:task_id`,
    summary: "One task",
    tags: ["tasks"],
    params: TaskIdParams,
    response: TaskViewSchema,
    extraResponses: { 404: "Unknown task" },
    handler: async (c) => c.json(taskView((await taskOr404(c)).rec)),
  });
  define({
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

  const registerVia = async <T extends { worker_id?: string | undefined }>(
    c: Context,
    factory: ((input: T, ctx: WorkerFactoryContext) => Worker | Promise<Worker>) | undefined,
    input: T,
    what: string,
    beforeRegister?: (worker: Worker) => void | Promise<void>,
  ) => {
    notShuttingDown();
    if (!factory) {
      throw new HttpError(
        501,
        "NOT_IMPLEMENTED",
        `this server cannot create ${what} workers: no factory was configured for it`,
      );
    }
    if (input.worker_id && workers().some((w) => w.id === input.worker_id)) {
      throw new FlotillaError(
        "CONFLICT",
        `a worker with id ${input.worker_id} is already registered`,
      );
    }
    let worker: Worker;
    try {
      const ctx: WorkerFactoryContext = { orchestrator: o, logger };
      if (options.resources) ctx.resources = options.resources;
      worker = await factory(input, ctx);
    } catch (err) {
      if (err instanceof FlotillaError) throw err;
      // Factory errors are about the input (unknown api_type, bad URL); never echo secrets.
      throw new FlotillaError(
        "VALIDATION",
        `cannot create ${what} worker: ${(err as Error).message}`,
      );
    }
    await beforeRegister?.(worker);
    await o.register(worker);
    typeCache = undefined;
    logger.info({ workerId: worker.id, kind: worker.kind }, `${what} worker registered`);
    return c.json({
      worker_id: worker.id,
      status: "registered" as const,
      message: `${what} worker ${worker.id} (${worker.kind}) registered`,
    });
  };
  /** A run-time worker registration route: validate, build with the factory, register. */
  const defineRegistration = <T extends { worker_id?: string | undefined }>(d: {
    path: string;
    summary: string;
    body: ZodType<T>;
    factory: keyof WorkerFactories;
    what: string;
    notImplemented: string;
    /** Checks the input further; may return what to do with the worker before it registers. */
    prepare?: (input: T) => ((worker: Worker) => void | Promise<void>) | undefined;
  }) =>
    define({
      method: "post",
      path: `${prefix}${d.path}`,
      summary: d.summary,
      tags: ["vera"],
      body: d.body,
      response: RegisteredResponseSchema,
      extraResponses: { 409: "Worker id taken", 501: d.notImplemented },
      handler: async (c) => {
        const input = parse(d.body, await readJson(c), "body");
        const before = d.prepare?.(input);
        const factory = options.workerFactories?.[d.factory] as
          | ((input: T, ctx: WorkerFactoryContext) => Worker | Promise<Worker>)
          | undefined;
        return registerVia(c, factory?.bind(options.workerFactories), input, d.what, before);
      },
    });
  defineRegistration({
    path: "/workers/llm-api/register",
    summary: "Register a cloud LLM API worker (the key is never echoed)",
    body: LlmApiRegisterSchema,
    factory: "llmApi",
    what: "LLM API",
    notImplemented: "No LLM worker factory configured, or quota fields without budgets",
    prepare: (input) => {
      const limits = {
        ...(input.quota_requests_per_day ? { requests: input.quota_requests_per_day } : {}),
        ...(input.quota_tokens_per_day ? { tokens: input.quota_tokens_per_day } : {}),
        ...(input.quota_cost_limit_per_day ? { costUsd: input.quota_cost_limit_per_day } : {}),
      };
      if (Object.keys(limits).length === 0) return undefined;
      const budgets = options.resources?.budgets;
      if (!budgets) {
        throw new HttpError(
          501,
          "NOT_IMPLEMENTED",
          "this server does not enforce per-worker quotas (no resource manager with budgets): register without quota_* fields",
        );
      }
      // The worker's daily budget exists before it can take a task, and counts what a worker
      // of the same id already used today.
      return async (w) => {
        const history = await o.usage({ since: clock.now() - 2 * 86_400_000 });
        budgets.add(
          { name: workerBudget(w.id), scope: "worker", key: w.id, policy: "fail", ...limits },
          history,
        );
      };
    },
  });
  defineRegistration({
    path: "/workers/remote/register",
    summary: "Register a remote (push-mode) worker (the token is never echoed)",
    body: RemoteRegisterSchema,
    factory: "remote",
    what: "remote",
    notImplemented: "No remote worker factory configured",
  });
  define({
    method: "get",
    path: `${prefix}/workers/list`,
    summary: "Registered workers and statistics",
    tags: ["vera"],
    response: WorkerListResponseSchema,
    handler: (c) => {
      const ws = workerStats(workers());
      return c.json({ workers: ws.views, statistics: ws.statistics });
    },
  });
  define({
    method: "get",
    path: `${prefix}/resources/stats`,
    summary: "Rate limits, quotas, usage and cost",
    tags: ["vera"],
    response: ResourceStatsSchema,
    handler: async (c) => c.json(await resourceStats()),
  });
  define({
    method: "get",
    path: "/metrics",
    summary: "Prometheus metrics (text exposition format)",
    tags: ["operations"],
    response: z.string(),
    handler: async (c) => {
      const text = await metrics.text();
      return c.body(text, 200, { "content-type": metrics.contentType });
    },
  });

  // OpenAPI, docs, dashboard: public (they carry no data).
  let openapiDoc: Record<string, unknown> | undefined;
  const openapi = () => {
    openapiDoc ??= new OpenApiGeneratorV31(registry.definitions).generateDocument({
      openapi: "3.1.0",
      info: {
        title: "Flotilla orchestrator API",
        version,
        description:
          "Vera-compatible orchestration routes, fleet routes (when mounted), operations endpoints, and WebSockets " +
          `(${prefix}/ws/status, ${prefix}/ws/events, ${prefix}/ws/tasks/{id}).`,
      },
      servers: [{ url: "/" }],
    }) as unknown as Record<string, unknown>;
    return openapiDoc;
  };
  app.get("/openapi.json", (c) => c.json(openapi()));
  app.get("/docs", (c) => c.html(docsHtml()));
  app.get("/docs/", (c) => c.redirect("/docs"));
  app.get("/docs/assets/:file", async (c) => {
    const asset = await docsAsset(c.req.param("file"));
    if (!asset) throw new FlotillaError("NOT_FOUND", "no such asset");
    return c.body(asset.body, 200, {
      "content-type": asset.type,
      "cache-control": "public, max-age=86400",
    });
  });
  app.get("/dashboard", (c) => c.html(dashboardHtml(prefix)));
  app.get(`${prefix}/ws/*`, (c) => {
    const message = `${c.req.path} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket)`;
    return c.json({ error: { code: "UPGRADE_REQUIRED", message }, detail: message }, 426, {
      upgrade: "websocket",
    });
  });

  for (const m of options.mount ?? []) {
    app.route(m.path ?? "/", m.app);
    const base = (m.path ?? "").replace(/\/+$/, "");
    for (const route of m.app.openapiRoutes?.(base) ?? []) {
      // A path the adapter serves itself (e.g. `/health`) shadows the mounted one.
      if (registered.has(`${route.method} ${route.path}`)) continue;
      registry.registerPath(route);
    }
  }

  let closed = false;
  app.flotilla = {
    hub,
    metrics,
    openapi,
    prefix,
    beginShutdown() {
      if (shuttingDown) return;
      shuttingDown = true;
      hub.close();
    },
    close() {
      if (closed) return;
      closed = true;
      shuttingDown = true;
      hub.close();
      for (const [name, fn] of listeners) o.off(name, fn);
      for (const [name, fn] of resourceListeners) res?.off?.(name, fn);
    },
  };
  return app;
}

/** The name of the daily budget a worker's registration quota becomes. */
function workerBudget(workerId: string): string {
  return `worker:${workerId}/day`;
}

/** Per-worker quotas and today's use, as `/resources/stats` shows them (`worker_quotas`). */
function workerQuotas(budgets: Pick<Budgets, "stats">): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const b of budgets.stats()) {
    if (b.scope !== "worker" || b.name !== workerBudget(b.subject)) continue;
    out[b.subject] = {
      quota_requests_per_day: b.limit.requests ?? null,
      quota_tokens_per_day: b.limit.tokens ?? null,
      quota_cost_limit_per_day: b.limit.costUsd ?? null,
      requests_today: b.used.requests,
      tokens_today: b.used.tokens,
      cost_today: b.used.costUsd,
      resets_at: b.windowEnd === undefined ? null : new Date(b.windowEnd).toISOString(),
      exceeded: Object.values(b.remaining).some((r) => r !== undefined && r <= 0),
    };
  }
  return out;
}
