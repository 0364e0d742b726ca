import type { RetryPolicy } from "../task/schema.js";

/**
 * The delay before the retry that follows failed attempt `attempt` (1-based): exponential,
 * capped at `maxDelayMs`, with `jitter` of it randomised downwards (`random` is injectable
 * for exact tests).
 *
 * @example
 * ```ts
 * backoffDelay({ maxAttempts: 5, initialDelayMs: 100, maxDelayMs: 1000, factor: 2, jitter: 0 }, 3); // 400
 * ```
 */
export function backoffDelay(
  policy: RetryPolicy,
  attempt: number,
  random: () => number = Math.random,
): number {
  const base = Math.min(
    policy.maxDelayMs,
    policy.initialDelayMs * policy.factor ** Math.max(0, attempt - 1),
  );
  const r = Math.min(1, Math.max(0, random()));
  return Math.round(base * (1 - policy.jitter * r));
}
