import { FlotillaError } from "@flotilla/core";
import { Hono } from "hono";
import { cors } from "hono/cors";
import { AppContext } from "./app/context.js";
import type { FlotillaApp, FlotillaAppOptions } from "./app/options.js";
import { relayEvents, relaySharedEvents } from "./app/relay.js";
import { metricsSnapshot, statusSnapshot } from "./app/status.js";
import { errorResponse, HttpError } from "./errors.js";
import { jsonLimit } from "./http/body.js";
import { FlotillaMetrics } from "./metrics.js";
import { callRoutes } from "./routes/calls.js";
import { operationsRoutes } from "./routes/operations.js";
import { statusRoutes } from "./routes/status.js";
import { taskRoutes } from "./routes/tasks.js";
import { workerRoutes } from "./routes/workers.js";
import { taskView } from "./views.js";
import { EventHub } from "./ws.js";

export type {
  CorsOptions,
  FlotillaApp,
  FlotillaAppHandles,
  FlotillaAppOptions,
  ResourcesLike,
  WorkerFactories,
  WorkerFactoryContext,
} from "./app/options.js";
export { VERA_TASK_TYPES } from "./app/options.js";

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
  const app = new Hono() as FlotillaApp;
  const ctx = new AppContext(app, options);
  const { o, prefix, logger } = ctx;

  const hub = new EventHub({
    prefix,
    verifier: ctx.verifier,
    logger,
    snapshot: () => statusSnapshot(ctx),
    taskState: async (id) => {
      const rec = await o.get(id);
      return rec ? { status: rec.status, view: taskView(rec) } : undefined;
    },
    options: options.websocket ?? {},
    clock: ctx.clock,
    occupied: (on) => shared.occupied(on),
  });
  const shared = relaySharedEvents(ctx, hub);
  const metrics = new FlotillaMetrics(async () => metricsSnapshot(ctx), {
    slowConsumers: () => hub.slowConsumerEvents,
    wsClients: () => hub.clientCount,
  });
  const stopRelay = relayEvents(ctx, hub, metrics);

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
        allowHeaders: ["Content-Type", "Authorization", "X-API-Key", "Last-Event-ID"],
        allowMethods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
      }),
    );
  }
  // Only the adapter's own routes: mounted apps (fleet uploads, logs) set their own limits.
  app.use(
    `${prefix}/*`,
    jsonLimit(options.bodyLimitBytes ?? 1_048_576, (message) =>
      Response.json(
        { error: { code: "PAYLOAD_TOO_LARGE", message }, detail: message },
        { status: 413 },
      ),
    ),
  );
  app.onError((err, c) => {
    if (!(err instanceof FlotillaError || err instanceof HttpError)) {
      logger.error(
        { err: String((err as Error)?.stack ?? err), path: c.req.path },
        "unhandled error",
      );
    }
    return errorResponse(err);
  });
  app.notFound((c) =>
    errorResponse(new FlotillaError("NOT_FOUND", `no route ${c.req.method} ${c.req.path}`)),
  );

  // ---- routes, one module per family -------------------------------------------------
  operationsRoutes(ctx, app, metrics);
  statusRoutes(ctx);
  taskRoutes(ctx);
  callRoutes(ctx);
  workerRoutes(ctx);

  for (const m of options.mount ?? []) {
    app.route(m.path ?? "/", m.app);
    const base = (m.path ?? "").replace(/\/+$/, "");
    for (const route of m.app.openapiRoutes?.(base) ?? []) {
      // A path the adapter serves itself (e.g. `/health`) shadows the mounted one.
      if (ctx.registered.has(`${route.method} ${route.path}`)) continue;
      ctx.registry.registerPath(route);
    }
  }

  let closed = false;
  app.flotilla = {
    hub,
    metrics,
    openapi: () => ctx.openapi(),
    prefix,
    beginShutdown() {
      if (ctx.shuttingDown) return;
      ctx.shuttingDown = true;
      hub.close();
      ctx.sse.close();
    },
    restoreWorkers: () => ctx.restoreWorkers(),
    close() {
      if (closed) return;
      closed = true;
      ctx.shuttingDown = true;
      hub.close();
      ctx.sse.close();
      stopRelay();
      shared.stop();
    },
  };
  return app;
}
