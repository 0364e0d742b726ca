import { FlotillaError } from "../errors.js";

/**
 * Weighted fair sharing between tenants (start-time fair queueing). Each tenant has a
 * virtual time that advances by `1 / weight` per dispatched task; among tasks of equal
 * priority the tenant with the smallest virtual time goes first. A tenant that becomes
 * active again starts at the current system virtual time, so idling earns no credit and a
 * newcomer cannot monopolise the fleet either.
 *
 * @example
 * ```ts
 * const fair = new FairShare({ weights: { acme: 3, beta: 1 } });
 * fair.charge("acme");
 * fair.vt("acme"); // 0.333…
 * ```
 */
export class FairShare {
  readonly #vt = new Map<string, number>();
  readonly #weights = new Map<string, number>();
  readonly #defaultWeight: number;
  #systemVt = 0;

  constructor(options: { weights?: Record<string, number>; defaultWeight?: number } = {}) {
    this.#defaultWeight = checkWeight(options.defaultWeight ?? 1, "defaultWeight");
    for (const [tenant, w] of Object.entries(options.weights ?? {})) this.setWeight(tenant, w);
  }

  /**
   * Sets a tenant's weight (> 0) at run time.
   *
   * @example
   * ```ts
   * fair.setWeight("acme", 4); // acme now gets 4 dispatches for every 1 of a weight-1 tenant
   * ```
   */
  setWeight(tenant: string, weight: number): void {
    this.#weights.set(tenant, checkWeight(weight, `weights.${tenant}`));
  }

  /**
   * Replaces every weight at once (e.g. from a reloaded config): tenants not named go back
   * to the default weight. Virtual times are kept, so no tenant gains or loses its place.
   * Throws `VALIDATION` for a weight that is not > 0, and then changes nothing.
   *
   * @example
   * ```ts
   * fair.setWeights({ acme: 3, beta: 1 });
   * ```
   */
  setWeights(weights: Record<string, number>): void {
    const next = new Map<string, number>();
    for (const [tenant, w] of Object.entries(weights)) {
      next.set(tenant, checkWeight(w, `weights.${tenant}`));
    }
    this.#weights.clear();
    for (const [t, w] of next) this.#weights.set(t, w);
  }

  /** The weights set (tenants not listed have the default weight). @example fair.weights() // { acme: 3 } */
  weights(): Record<string, number> {
    return Object.fromEntries(this.#weights);
  }

  /**
   * A tenant's weight (the default weight when none was set).
   *
   * @example
   * ```ts
   * fair.weight("unknown-tenant"); // 1
   * ```
   */
  weight(tenant: string): number {
    return this.#weights.get(tenant) ?? this.#defaultWeight;
  }

  /**
   * The tenant's virtual time.
   *
   * @example
   * ```ts
   * fair.charge("acme");
   * fair.vt("acme"); // 1 / weight of acme
   * ```
   */
  vt(tenant: string): number {
    return this.#vt.get(tenant) ?? this.#systemVt;
  }

  /**
   * Called when a tenant goes from no queued work to some: it starts at the system virtual time.
   *
   * @example
   * ```ts
   * fair.activate("beta"); // beta had nothing queued and now has work
   * ```
   */
  activate(tenant: string): void {
    const cur = this.#vt.get(tenant);
    if (cur === undefined || cur < this.#systemVt) this.#vt.set(tenant, this.#systemVt);
  }

  /**
   * Charges one dispatched task to `tenant`.
   *
   * @example
   * ```ts
   * fair.charge("acme"); // one task
   * fair.charge("beta", 2); // a task that counts double
   * ```
   */
  charge(tenant: string, cost = 1): void {
    const start = this.vt(tenant);
    if (start > this.#systemVt) this.#systemVt = start;
    this.#vt.set(tenant, start + cost / this.weight(tenant));
  }
}

function checkWeight(w: number, field: string): number {
  if (!(typeof w === "number" && Number.isFinite(w) && w > 0)) {
    throw new FlotillaError(
      "VALIDATION",
      `${field}: expected a finite number > 0, got ${String(w)}`,
    );
  }
  return w;
}
