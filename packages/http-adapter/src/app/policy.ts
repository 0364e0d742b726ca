import { type EngineApi, FlotillaError, type ResourceConfig } from "@flotilla/core";
import { HttpError } from "../errors.js";
import type { ResourcePolicy } from "../schemas.js";
import type { ResourcesLike } from "./options.js";

/** How far back the usage ledger is read so a new budget counts today's spend. */
const HISTORY_MS = 48 * 3_600_000;

/**
 * The resource policy in force: the resource manager's config and the engine's tenant
 * weights (both read from their owners, never copied).
 *
 * @example
 * ```ts
 * const policy = currentResourcePolicy(orchestrator, resources);
 * policy.limits; // { openai: ["500/min"] }
 * ```
 */
export function currentResourcePolicy(
  engine: EngineApi,
  resources: ResourcesLike | undefined,
): ResourcePolicy {
  const policy: ResourcePolicy = { ...((resources?.config?.() ?? {}) as ResourcePolicy) };
  const weights = engine.tenantWeights();
  if (Object.keys(weights).length > 0) policy.tenantWeights = weights;
  return policy;
}

/**
 * Applies a whole resource policy while the server runs, keeping usage already counted:
 * rate limits, budgets, prices and tenant caps through `resources.configure` (given the last
 * 48 hours of the usage ledger, so a new budget counts today's spend), then the tenants'
 * weights. A bad policy throws `VALIDATION` naming the setting and changes nothing. Returns
 * the settings that only take effect at the next start. `PUT …/resources/config` and the
 * CLI's `SIGHUP` reload both call it.
 *
 * @example
 * ```ts
 * const { restartRequired } = await applyResourcePolicy(orchestrator, resources, {
 *   limits: { openai: ["1000/min"] },
 *   budgets: [{ scope: "global", costUsd: 80 }],
 *   tenantWeights: { acme: 3 },
 * });
 * ```
 */
export async function applyResourcePolicy(
  engine: EngineApi,
  resources: ResourcesLike | undefined,
  policy: ResourcePolicy,
): Promise<{ restartRequired: string[] }> {
  if (!resources?.configure) {
    throw new HttpError(
      501,
      "NOT_IMPLEMENTED",
      "this server has no resource manager that can be reconfigured",
    );
  }
  const { tenantWeights, ...config } = policy;
  for (const [tenant, w] of Object.entries(tenantWeights ?? {})) {
    if (!(typeof w === "number" && Number.isFinite(w) && w > 0)) {
      throw new FlotillaError(
        "VALIDATION",
        `tenantWeights.${tenant}: expected a finite number > 0, got ${String(w)}`,
      );
    }
  }
  const history = await engine.usage({ since: Date.now() - HISTORY_MS });
  const out = resources.configure(config as ResourceConfig, history);
  engine.setTenantWeights(tenantWeights ?? {});
  return out;
}
