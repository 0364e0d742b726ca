import { FlotillaError } from "@flotilla/core";
import type { Context, Hono } from "hono";
import type { AppContext } from "../app/context.js";
import { dashboardHtml } from "../dashboard.js";
import { docsAsset, docsHtml } from "../docs.js";
import type { FlotillaMetrics } from "../metrics.js";
import { HealthResponseSchema, z } from "../schemas.js";

/**
 * The operations routes: `/health` (and `{prefix}/health`), `/metrics`, and the public
 * `/openapi.json`, `/docs`, `/dashboard`, plus a 426 for plain GETs of the WebSocket paths.
 * @internal
 */
export function operationsRoutes(ctx: AppContext, app: Hono, metrics: FlotillaMetrics): void {
  const { prefix } = ctx;
  const health = (c: Context) => {
    const running = !ctx.shuttingDown && ctx.engineRunning;
    return c.json(
      { status: running ? "healthy" : "stopped", version: ctx.version },
      running ? 200 : 503,
    );
  };
  for (const [path, summary, tag] of [
    ["/health", "Liveness (no authentication)", "operations"],
    [`${prefix}/health`, "Health check (no authentication)", "vera"],
  ] as const) {
    ctx.define({
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
  ctx.define({
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
  app.get("/openapi.json", (c) => c.json(ctx.openapi()));
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
}
