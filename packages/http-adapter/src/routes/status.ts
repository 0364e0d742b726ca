import type { AppContext } from "../app/context.js";
import { resourceStats, statusSnapshot } from "../app/status.js";
import { ResourceStatsSchema, StatusResponseSchema } from "../schemas.js";

/** The status routes: `{prefix}/status` and `/resources/stats`. @internal */
export function statusRoutes(ctx: AppContext): void {
  ctx.define({
    method: "get",
    path: `${ctx.prefix}/status`,
    summary: "Status snapshot: tasks, workers, resources",
    tags: ["vera"],
    response: StatusResponseSchema,
    handler: async (c) => c.json(await statusSnapshot(ctx)),
  });
  ctx.define({
    method: "get",
    path: `${ctx.prefix}/resources/stats`,
    summary: "Rate limits, quotas, usage and cost",
    tags: ["vera"],
    response: ResourceStatsSchema,
    handler: async (c) => c.json(await resourceStats(ctx)),
  });
}
