import {
  type BudgetConfig,
  budgetHistorySpanMs,
  type EngineApi,
  FlotillaError,
  type ResourceConfig,
} from "@flotilla/core";
import { HttpError } from "../errors.js";
import type { ResourcePolicy } from "../schemas.js";
import type { ResourcesLike } from "./options.js";

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
 * rate limits, budgets, prices and tenant caps through `resources.configure` (given the usage
 * ledger as far back as the policy's budgets need, so a new budget counts its period's spend
 * so far), then the tenants' weights. A bad policy throws `VALIDATION` naming the setting and changes nothing. Returns
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
  // Enough of the usage ledger for a new budget to count its period so far (a month for a monthly one).
  const span = budgetHistorySpanMs((config.budgets ?? []) as BudgetConfig[]);
  const history = await engine.usage({ since: Date.now() - span });
  const out = resources.configure(config as ResourceConfig, history);
  engine.setTenantWeights(tenantWeights ?? {});
  return out;
}
