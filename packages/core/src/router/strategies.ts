import { FlotillaError } from "../errors.js";
import type { WorkerEntry } from "../registry/types.js";
import type { TaskRecord } from "../task/types.js";
import type { WorkerTask } from "../worker/types.js";
import type { RoutingStrategy } from "./types.js";

// Every strategy receives candidates that are already eligible, healthy enough and have a
// free slot (see WorkerRegistry.available); strategies only choose among them.

/** Share of a worker's slots in use, in [0, 1]. */
function load(entry: WorkerEntry): number {
  const max = entry.worker.maxConcurrency;
  return max > 0 ? entry.inFlight / max : 1;
}

const healthRank = (entry: WorkerEntry): number => (entry.health === "healthy" ? 0 : 1);

/**
 * Orders two candidates by load, then health (healthy before degraded), then free slots
 * (more first). Negative when `a` is the better choice.
 */
function compareLoad(a: WorkerEntry, b: WorkerEntry): number {
  return (
    load(a) - load(b) ||
    healthRank(a) - healthRank(b) ||
    b.worker.maxConcurrency - b.inFlight - (a.worker.maxConcurrency - a.inFlight)
  );
}

/** The first best candidate by `compare` (stable: ties keep candidate order). */
function minBy(
  candidates: readonly WorkerEntry[],
  compare: (a: WorkerEntry, b: WorkerEntry) => number,
): WorkerEntry | undefined {
  let best = candidates[0];
  for (let i = 1; i < candidates.length; i++) {
    const c = candidates[i]!;
    if (compare(c, best!) < 0) best = c;
  }
  return best;
}

/**
 * Picks the candidate with the smallest share of its slots in use
 * (`inFlight / maxConcurrency`); ties go to healthy over degraded, then to more free slots,
 * then to the earlier candidate.
 *
 * @example
 * ```ts
 * const orchestrator = new Orchestrator({ routing: leastLoaded() });
 * ```
 */
export function leastLoaded(): RoutingStrategy {
  return { name: "least-loaded", pick: (_task, candidates) => minBy(candidates, compareLoad) };
}

/**
 * Takes turns: picks the candidate that this strategy picked least recently (never-picked
 * workers first, in candidate order). Fair even when the candidate set changes between
 * calls, because it remembers workers by id rather than by position.
 *
 * @example
 * ```ts
 * const rr = roundRobin();
 * rr.pick(task, [a, b]); // a
 * rr.pick(task, [a, b]); // b
 * ```
 */
export function roundRobin(): RoutingStrategy {
  let turn = 0;
  const lastPicked = new Map<string, number>();
  return {
    name: "round-robin",
    pick(_task, candidates) {
      const chosen = minBy(
        candidates,
        (a, b) => (lastPicked.get(a.id) ?? -1) - (lastPicked.get(b.id) ?? -1),
      );
      if (chosen === undefined) return undefined;
      lastPicked.set(chosen.id, turn++);
      // Forget workers seen long ago so the map cannot grow without bound as fleets churn.
      if (lastPicked.size > 4 * candidates.length + 1024) {
        const cutoff = turn - 2 * candidates.length - 512;
        for (const [id, t] of lastPicked) if (t < cutoff) lastPicked.delete(id);
      }
      return chosen;
    },
  };
}

/** Options of {@link powerOfTwoChoices}. */
export interface PowerOfTwoOptions {
  /** A source of uniform numbers in [0, 1). Inject a seeded one for reproducible tests. @default Math.random */
  random?: () => number;
}

/**
 * Power of two choices: samples two distinct candidates at random and keeps the less loaded
 * one. Nearly as good as least-loaded at spreading load, without herding every scheduler onto
 * the same worker, and O(1) per pick.
 *
 * @example
 * ```ts
 * const p2c = powerOfTwoChoices({ random: seededRandom(42) });
 * ```
 */
export function powerOfTwoChoices(options: PowerOfTwoOptions = {}): RoutingStrategy {
  const random = options.random ?? Math.random;
  const index = (n: number) => Math.min(n - 1, Math.max(0, Math.floor(random() * n)));
  return {
    name: "power-of-two",
    pick(_task, candidates) {
      const n = candidates.length;
      if (n <= 1) return candidates[0];
      const i = index(n);
      let j = index(n - 1);
      if (j >= i) j++;
      const a = candidates[i]!;
      const b = candidates[j]!;
      return compareLoad(b, a) < 0 ? b : a;
    },
  };
}

/**
 * The view of a task record a worker's `estimateCost` receives while routing (no resolved
 * dependencies or inputs yet; `attempt` is the attempt about to start).
 *
 * @example
 * ```ts
 * const cost = entry.worker.estimateCost?.(routingView(task));
 * ```
 */
export function routingView(task: TaskRecord): WorkerTask {
  const view: WorkerTask = {
    id: task.id,
    type: task.type,
    payload: task.payload,
    priority: task.priority,
    attempt: task.attempt + 1,
    metadata: task.metadata,
    dependencies: {},
    inputs: {},
  };
  if (task.timeoutMs !== undefined) view.timeoutMs = task.timeoutMs;
  if (task.estimate !== undefined) view.estimate = task.estimate;
  if (task.tenant !== undefined) view.tenant = task.tenant;
  return view;
}

function costOf(entry: WorkerEntry, view: WorkerTask): number {
  const estimate = entry.worker.estimateCost;
  if (estimate === undefined) return Number.POSITIVE_INFINITY;
  try {
    const cost = estimate.call(entry.worker, view);
    return typeof cost === "number" && Number.isFinite(cost) && cost >= 0
      ? cost
      : Number.POSITIVE_INFINITY;
  } catch {
    return Number.POSITIVE_INFINITY;
  }
}

/**
 * Picks the candidate whose `estimateCost(task)` is lowest. Workers without an estimate (no
 * `estimateCost`, or one that returns `undefined`, a non-finite or negative number, or
 * throws) come last; ties go to the less loaded.
 *
 * @example
 * ```ts
 * const orchestrator = new Orchestrator({ routing: cheapest() });
 * ```
 */
export function cheapest(): RoutingStrategy {
  return {
    name: "cheapest",
    pick(task, candidates) {
      if (candidates.length <= 1) return candidates[0];
      const view = routingView(task);
      const costs = new Map<WorkerEntry, number>();
      for (const c of candidates) costs.set(c, costOf(c, view));
      return minBy(candidates, (a, b) => {
        const ca = costs.get(a)!;
        const cb = costs.get(b)!;
        if (ca !== cb) return ca < cb ? -1 : 1;
        return compareLoad(a, b);
      });
    },
  };
}

/** Options of {@link preferLocal}. */
export interface PreferLocalOptions {
  /**
   * Which workers are preferred. Takes precedence over `kind` and `labels`.
   * @default workers with `local !== false` (or matching `kind` / `labels` when given)
   */
  prefer?: (entry: WorkerEntry) => boolean;
  /** Prefer workers of this kind (or kinds), e.g. `"ollama"`. */
  kind?: string | readonly string[];
  /** Prefer workers carrying all these labels. */
  labels?: Readonly<Record<string, string>>;
  /** Chooses within the preferred group, or among all when none is preferred. @default leastLoaded() */
  within?: RoutingStrategy;
}

/**
 * Sends work to preferred workers first — local ones by default, or those matching a kind
 * (e.g. `"ollama"`) or labels — and falls back to the others (cloud APIs) only when no
 * preferred worker is among the candidates (all busy, unhealthy or ineligible).
 *
 * @example
 * ```ts
 * // Local Ollama first; OpenAI only when every Ollama slot is taken or down.
 * const orchestrator = new Orchestrator({ routing: preferLocal({ kind: "ollama" }) });
 * ```
 */
export function preferLocal(options: PreferLocalOptions = {}): RoutingStrategy {
  const kinds =
    options.kind === undefined
      ? undefined
      : new Set(typeof options.kind === "string" ? [options.kind] : options.kind);
  const labels = options.labels;
  const prefer =
    options.prefer ??
    ((entry: WorkerEntry) => {
      if (kinds === undefined && labels === undefined) return entry.worker.local !== false;
      if (kinds !== undefined && !kinds.has(entry.worker.kind)) return false;
      if (labels !== undefined) {
        for (const key in labels) if (entry.worker.labels?.[key] !== labels[key]) return false;
      }
      return true;
    });
  const within = options.within ?? leastLoaded();
  return {
    name: "prefer-local",
    pick(task, candidates) {
      const preferred = candidates.filter(prefer);
      return within.pick(task, preferred.length > 0 ? preferred : candidates);
    },
  };
}

/**
 * Picks the candidate with the lowest average execution time (the registry's EWMA,
 * `stats.avgExecutionMs`). Workers with no finished execution yet go first, so that each
 * gets measured; ties go to the less loaded.
 *
 * @example
 * ```ts
 * const orchestrator = new Orchestrator({ routing: lowestLatency() });
 * ```
 */
export function lowestLatency(): RoutingStrategy {
  const latency = (e: WorkerEntry) =>
    e.stats.tasksCompleted + e.stats.tasksFailed === 0 ? -1 : e.stats.avgExecutionMs;
  return {
    name: "lowest-latency",
    pick: (_task, candidates) =>
      minBy(candidates, (a, b) => latency(a) - latency(b) || compareLoad(a, b)),
  };
}

/**
 * Built-in strategy names accepted by {@link createRouter} (camelCase factory names work too).
 *
 * @example
 * ```ts
 * for (const name of ROUTING_STRATEGY_NAMES) createRouter(name);
 * ```
 */
export const ROUTING_STRATEGY_NAMES = [
  "least-loaded",
  "round-robin",
  "power-of-two",
  "cheapest",
  "prefer-local",
  "lowest-latency",
] as const;

/** A built-in strategy name (kebab-case, or the camelCase factory name). */
export type RoutingStrategyName =
  | (typeof ROUTING_STRATEGY_NAMES)[number]
  | "leastLoaded"
  | "roundRobin"
  | "powerOfTwoChoices"
  | "preferLocal"
  | "lowestLatency";

const FACTORIES: Record<string, () => RoutingStrategy> = {
  "least-loaded": leastLoaded,
  leastLoaded,
  "round-robin": roundRobin,
  roundRobin,
  "power-of-two": () => powerOfTwoChoices(),
  "power-of-two-choices": () => powerOfTwoChoices(),
  powerOfTwoChoices: () => powerOfTwoChoices(),
  cheapest,
  "prefer-local": () => preferLocal(),
  preferLocal: () => preferLocal(),
  "lowest-latency": lowestLatency,
  lowestLatency,
};

/**
 * Returns a routing strategy: a fresh built-in one by name, or the given strategy after
 * checking its shape. Throws `VALIDATION` for an unknown name or a malformed strategy.
 *
 * @param nameOrStrategy a built-in name or a strategy. @default "least-loaded"
 * @example
 * ```ts
 * createRouter("round-robin").pick(task, registry.available(task));
 * createRouter({ name: "first", pick: (_t, c) => c[0] });
 * ```
 */
export function createRouter(
  nameOrStrategy: RoutingStrategyName | RoutingStrategy = "least-loaded",
): RoutingStrategy {
  if (typeof nameOrStrategy === "string") {
    const factory = Object.hasOwn(FACTORIES, nameOrStrategy)
      ? FACTORIES[nameOrStrategy]
      : undefined;
    if (factory === undefined) {
      throw new FlotillaError(
        "VALIDATION",
        `routing: unknown strategy "${nameOrStrategy}", expected one of ${ROUTING_STRATEGY_NAMES.join(", ")} or an object with name and pick`,
      );
    }
    return factory();
  }
  if (
    typeof nameOrStrategy !== "object" ||
    nameOrStrategy === null ||
    typeof nameOrStrategy.pick !== "function" ||
    typeof nameOrStrategy.name !== "string"
  ) {
    throw new FlotillaError(
      "VALIDATION",
      "routing: expected a strategy name or an object with `name` (string) and `pick` (function)",
    );
  }
  return nameOrStrategy;
}
