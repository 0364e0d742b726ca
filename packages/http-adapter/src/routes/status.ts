import type { AppContext } from "../app/context.js";
import { applyResourcePolicy, currentResourcePolicy } from "../app/policy.js";
import { resourceStats, statusSnapshot } from "../app/status.js";
import { HttpError } from "../errors.js";
import {
  ResourcePolicySchema,
  ResourcePolicyUpdateSchema,
  ResourceStatsSchema,
  StatusResponseSchema,
} from "../schemas.js";

/** The status routes: `{prefix}/status`, `/resources/stats` and `/resources/config`. @internal */
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
  ctx.define({
    method: "get",
    path: `${ctx.prefix}/resources/config`,
    summary: "The resource policy in force: limits, budgets, prices, tenant caps and weights",
    tags: ["vera"],
    response: ResourcePolicySchema,
    handler: (c) => c.json(currentResourcePolicy(ctx.o, ctx.options.resources)),
  });
  ctx.define({
    method: "put",
    path: `${ctx.prefix}/resources/config`,
    summary:
      "Replace the resource policy while running; usage already counted is kept (see docs/server.md)",
    tags: ["vera"],
    body: ResourcePolicySchema,
    response: ResourcePolicyUpdateSchema,
    extraResponses: {
      501: "This server has no reconfigurable resource manager",
      503: "Applied on this server, but not shared with the servers sharing its store; send it again",
    },
    handler: async (c) => {
      const policy = await ctx.body(c, ResourcePolicySchema);
      const { restartRequired } = await applyResourcePolicy(ctx.o, ctx.options.resources, policy);
      ctx.logger.info({ by: ctx.actor(c), restartRequired }, "resource policy replaced");
      const publish = ctx.options.publishPolicy;
      if (publish) {
        await publish(policy).catch((err: unknown) => {
          throw new HttpError(
            503,
            "STORE_ERROR",
            `the policy is applied on this server but could not be shared with the others (${String(err)}); send it again`,
          );
        });
      }
      return c.json({
        applied: true as const,
        restart_required: restartRequired,
        config: currentResourcePolicy(ctx.o, ctx.options.resources),
      });
    },
  });
}
