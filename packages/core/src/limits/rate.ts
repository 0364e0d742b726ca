import { z } from "zod";

/** What a limit counts: calls, or tokens (weighted by each task's estimate, reconciled with actual usage). */
export type LimitUnit = "requests" | "tokens";

/** A limit after validation: at most `limit` units in any window of `windowMs`, at most `burst` at once. */
export interface RateLimit {
  /** Label used in reasons and stats, e.g. `tokens/min`. */
  name: string;
  unit: LimitUnit;
  /** Units allowed per window. */
  limit: number;
  windowMs: number;
  /** Units that may go at once (bucket capacity). @default limit */
  burst: number;
}

const UNIT_MS: Record<string, number> = {
  ms: 1,
  millisecond: 1,
  s: 1000,
  sec: 1000,
  second: 1000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  h: 3_600_000,
  hr: 3_600_000,
  hour: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
};
const UNIT_HINT =
  "ms, s, sec, second, min, minute, h, hour, d, day (optionally with a count: 10s, 100ms)";
const SHORT: Record<number, string> = {
  1000: "s",
  60000: "min",
  3600000: "hour",
  86400000: "day",
};

/**
 * Parses a window such as `minute`, `min`, `10s`, `100ms` or a number of ms; returns an error
 * message on failure.
 *
 * @example
 * ```ts
 * parseWindow("10s"); // 10000
 * parseWindow("fortnight"); // 'unknown time unit "fortnight" (expected …)'
 * ```
 */
export function parseWindow(per: string | number): number | string {
  if (typeof per === "number") {
    if (!Number.isFinite(per) || per <= 0)
      return `window must be a positive number of ms, got ${per}`;
    return per;
  }
  const m = /^\s*(-?\d+(?:\.\d+)?)?\s*([a-zA-Z]+)\s*$/.exec(per);
  const word = m?.[2]?.toLowerCase() ?? "";
  const ms = UNIT_MS[word] ?? (word.endsWith("s") ? UNIT_MS[word.slice(0, -1)] : undefined);
  if (!m || ms === undefined) return `unknown time unit "${per}" (expected ${UNIT_HINT})`;
  return parseWindowCount(m[1], ms, per);
}

function parseWindowCount(count: string | undefined, unitMs: number, raw: string): number | string {
  const n = count === undefined ? 1 : Number(count);
  const ms = n * unitMs;
  if (!(ms > 0)) return `window "${raw}" must be longer than zero`;
  return ms;
}

function windowLabel(ms: number): string {
  return SHORT[ms] ?? `${ms}ms`;
}

const COUNT_SUFFIX: Record<string, number> = { k: 1e3, K: 1e3, M: 1e6, m: 1e6 };

/** `"500/min"`, `"500 requests/min"`, `"90k tokens/minute"`, `"10000 requests/day"`, `"5 per 100ms"`. */
const RATE_RE =
  /^\s*(-?\d+(?:\.\d+)?)\s*([kKmM](?![a-z]))?\s*(requests?|reqs?|tokens?|tok)?\s*(?:\/|\bper\b)\s*(.+?)\s*$/;

const LimitObjectSchema = z
  .object({
    requests: z.number().optional(),
    tokens: z.number().optional(),
    per: z.union([z.string(), z.number()]),
    burst: z.number().optional(),
    name: z.string().min(1).optional(),
  })
  .strict();

/**
 * A limit as configured: a string such as `"500/min"` or `"90k tokens/min"`, or an object.
 *
 * @example
 * ```ts
 * LimitInputSchema.parse({ requests: 500, per: "minute", burst: 50 });
 * ```
 */
export const LimitInputSchema = z.union([z.string(), LimitObjectSchema]);
/** Input form of a limit. */
export type LimitInput = z.input<typeof LimitInputSchema>;

/**
 * Turns a configured limit into a {@link RateLimit}, or returns an error message.
 *
 * @example
 * ```ts
 * toRateLimit("90k tokens/min"); // { unit: "tokens", limit: 90000, windowMs: 60000, burst: 90000, name: "tokens/min" }
 * toRateLimit({ requests: 500, per: "minute", burst: 50 });
 * ```
 */
export function toRateLimit(input: LimitInput): RateLimit | string {
  let unit: LimitUnit;
  let limit: number;
  let per: string | number;
  let burst: number | undefined;
  let name: string | undefined;
  if (typeof input === "string") {
    const m = RATE_RE.exec(input);
    if (!m) {
      return `cannot read limit "${input}" (expected forms like "500/min", "90k tokens/minute", "10000 requests/day")`;
    }
    limit = Number(m[1]) * (m[2] ? (COUNT_SUFFIX[m[2]] ?? 1) : 1);
    unit = m[3]?.toLowerCase().startsWith("tok") ? "tokens" : "requests";
    per = m[4]!;
  } else {
    if ((input.requests === undefined) === (input.tokens === undefined)) {
      return "give exactly one of `requests` or `tokens`";
    }
    unit = input.requests !== undefined ? "requests" : "tokens";
    limit = (input.requests ?? input.tokens)!;
    per = input.per;
    burst = input.burst;
    name = input.name;
  }
  if (!Number.isFinite(limit) || limit <= 0)
    return `${unit} must be a positive number, got ${limit}`;
  const windowMs = parseWindow(per);
  if (typeof windowMs === "string") return windowMs;
  if (burst !== undefined && (!Number.isFinite(burst) || burst <= 0 || burst > limit)) {
    return `burst must be a positive number no larger than the limit (${limit}), got ${burst}`;
  }
  return {
    name: name ?? `${unit}/${windowLabel(windowMs)}`,
    unit,
    limit,
    windowMs,
    burst: burst ?? limit,
  };
}

/**
 * One limit or several for one key, validated and normalised (see {@link toRateLimit}).
 *
 * @example
 * ```ts
 * KeyLimitsSchema.parse("500/min"); // [{ unit: "requests", limit: 500, windowMs: 60000, ... }]
 * ```
 */
export const KeyLimitsSchema = z.unknown().transform((value, ctx): RateLimit[] => {
  const list = Array.isArray(value) ? value : [value];
  const out: RateLimit[] = [];
  list.forEach((item, i) => {
    const path = Array.isArray(value) ? [i] : [];
    if (typeof item !== "string") {
      const obj = LimitObjectSchema.safeParse(item);
      if (!obj.success) {
        for (const issue of obj.error.issues) {
          ctx.addIssue({
            code: "custom",
            message:
              typeof item === "object" && item !== null
                ? issue.message
                : `expected a limit such as "500/min" or { requests: 500, per: "minute" }, got ${JSON.stringify(item)}`,
            path: [...path, ...issue.path.map((p) => (typeof p === "symbol" ? String(p) : p))],
          });
        }
        return;
      }
    }
    const limit = toRateLimit(item as LimitInput);
    if (typeof limit === "string") ctx.addIssue({ code: "custom", message: limit, path });
    else out.push(limit);
  });
  return out;
});

/**
 * `{ [key]: limit | limit[] }`.
 *
 * @example
 * ```ts
 * parseConfig(RateLimitsConfigSchema, { openai: ["500/min", "90k tokens/min"] }, "limits");
 * ```
 */
export const RateLimitsConfigSchema = z.record(z.string().min(1), KeyLimitsSchema);
/** Input form of {@link RateLimitsConfigSchema}. */
export type RateLimitsConfig = z.input<typeof RateLimitsConfigSchema>;
