/**
 * What a provider said about its limits in the headers of one response. Feed it to a
 * limiter (`onRateLimit` option of every LLM worker).
 */
export interface RateLimitInfo {
  /** `openai`, `anthropic`, `ollama`, or the preset of an OpenAI-compatible endpoint. */
  provider: string;
  workerId: string;
  model?: string;
  /** HTTP status of the response the headers came with. */
  status?: number;
  limitRequests?: number;
  remainingRequests?: number;
  /** Milliseconds until the request allowance resets. */
  resetRequestsMs?: number;
  limitTokens?: number;
  remainingTokens?: number;
  /** Milliseconds until the token allowance resets. */
  resetTokensMs?: number;
  /** Anthropic's separate input/output token allowances. */
  remainingInputTokens?: number;
  remainingOutputTokens?: number;
  /** From `retry-after-ms` or `retry-after` (seconds or HTTP date). */
  retryAfterMs?: number;
  /** The rate-limit headers as received (lower-case names). */
  headers: Record<string, string>;
}

/** A listener for rate-limit information. */
export type RateLimitListener = (info: RateLimitInfo) => void;

type HeaderSource = Headers | Record<string, string | string[] | undefined> | undefined | null;

function get(headers: HeaderSource, name: string): string | undefined {
  if (!headers) return undefined;
  if (typeof (headers as Headers).get === "function")
    return (headers as Headers).get(name) ?? undefined;
  const v = (headers as Record<string, string | string[] | undefined>)[name];
  return Array.isArray(v) ? v[0] : v;
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v.trim() === "") return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

/**
 * Parses OpenAI-style durations (`1s`, `6m0s`, `20ms`, `1h2m3.5s`) to milliseconds.
 *
 * @example
 * ```ts
 * parseDurationMs("6m0s"); // 360000
 * ```
 */
export function parseDurationMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const s = value.trim();
  if (s === "") return undefined;
  if (/^\d+(\.\d+)?$/.test(s)) return Math.round(Number(s) * 1000);
  const re = /(\d+(?:\.\d+)?)(ms|h|m|s)/g;
  let total = 0;
  let consumed = 0;
  for (const m of s.matchAll(re)) {
    const n = Number(m[1]);
    const unit = m[2];
    total +=
      unit === "ms" ? n : unit === "s" ? n * 1000 : unit === "m" ? n * 60_000 : n * 3_600_000;
    consumed += m[0].length;
  }
  return consumed === s.length ? Math.round(total) : undefined;
}

/** Milliseconds from `now` until an RFC 3339 / HTTP date, or undefined. */
function untilDate(value: string | undefined, now: number): number | undefined {
  if (!value) return undefined;
  const t = Date.parse(value);
  return Number.isNaN(t) ? undefined : Math.max(0, t - now);
}

/**
 * The delay a response asks for: `retry-after-ms`, else `retry-after` (seconds or an HTTP
 * date), else undefined.
 *
 * @example
 * ```ts
 * retryAfterMs(new Headers({ "retry-after": "2" }), Date.now()); // 2000
 * ```
 */
export function retryAfterMs(headers: HeaderSource, now: number): number | undefined {
  const ms = num(get(headers, "retry-after-ms"));
  if (ms !== undefined && ms >= 0) return Math.round(ms);
  const ra = get(headers, "retry-after");
  if (ra === undefined) return undefined;
  const secs = num(ra);
  if (secs !== undefined) return secs >= 0 ? Math.round(secs * 1000) : undefined;
  return untilDate(ra, now);
}

/**
 * Reads OpenAI (`x-ratelimit-*`), Anthropic (`anthropic-ratelimit-*`) and `retry-after`
 * headers. Returns undefined when the response carries none of them.
 *
 * @example
 * ```ts
 * const info = parseRateLimitHeaders(res.headers, Date.now(), { provider: "openai", workerId: "w" });
 * if (info?.remainingTokens === 0) pause(info.resetTokensMs);
 * ```
 */
export function parseRateLimitHeaders(
  headers: HeaderSource,
  now: number,
  base: Pick<RateLimitInfo, "provider" | "workerId" | "model" | "status">,
): RateLimitInfo | undefined {
  if (!headers) return undefined;
  const raw: Record<string, string> = {};
  const entries: [string, string][] =
    typeof (headers as Headers).forEach === "function" &&
    typeof (headers as Headers).get === "function"
      ? [...(headers as Headers).entries()]
      : Object.entries(headers as Record<string, string | string[] | undefined>).flatMap(
          ([k, v]) =>
            v === undefined ? [] : [[k, Array.isArray(v) ? v.join(", ") : v] as [string, string]],
        );
  for (const [k, v] of entries) {
    const key = k.toLowerCase();
    if (
      key.startsWith("x-ratelimit-") ||
      key.startsWith("anthropic-ratelimit-") ||
      key.startsWith("retry-after")
    ) {
      raw[key] = v;
    }
  }
  if (Object.keys(raw).length === 0) return undefined;
  const info: RateLimitInfo = { ...base, headers: raw };
  const set = <K extends keyof RateLimitInfo>(key: K, value: RateLimitInfo[K] | undefined) => {
    if (value !== undefined) info[key] = value;
  };
  // OpenAI and most OpenAI-compatible servers.
  set("limitRequests", num(raw["x-ratelimit-limit-requests"]));
  set("remainingRequests", num(raw["x-ratelimit-remaining-requests"]));
  set("resetRequestsMs", parseDurationMs(raw["x-ratelimit-reset-requests"]));
  set("limitTokens", num(raw["x-ratelimit-limit-tokens"]));
  set("remainingTokens", num(raw["x-ratelimit-remaining-tokens"]));
  set("resetTokensMs", parseDurationMs(raw["x-ratelimit-reset-tokens"]));
  // Anthropic: counts plus RFC 3339 reset times.
  set("limitRequests", num(raw["anthropic-ratelimit-requests-limit"]) ?? info.limitRequests);
  set(
    "remainingRequests",
    num(raw["anthropic-ratelimit-requests-remaining"]) ?? info.remainingRequests,
  );
  set(
    "resetRequestsMs",
    untilDate(raw["anthropic-ratelimit-requests-reset"], now) ?? info.resetRequestsMs,
  );
  set("limitTokens", num(raw["anthropic-ratelimit-tokens-limit"]) ?? info.limitTokens);
  set("remainingTokens", num(raw["anthropic-ratelimit-tokens-remaining"]) ?? info.remainingTokens);
  set(
    "resetTokensMs",
    untilDate(raw["anthropic-ratelimit-tokens-reset"], now) ?? info.resetTokensMs,
  );
  set("remainingInputTokens", num(raw["anthropic-ratelimit-input-tokens-remaining"]));
  set("remainingOutputTokens", num(raw["anthropic-ratelimit-output-tokens-remaining"]));
  set("retryAfterMs", retryAfterMs(raw, now));
  return info;
}

/** Anything that can hold a rate-limit key until a time: core's `RateLimiter` (or `ResourceManager.limiter`). */
export interface PausableLimiter {
  pause(key: string, untilMs: number): void;
}

/** Options of {@link pauseLimiterOnExhaustion}. */
export interface LimiterHookOptions {
  /** The limiter key for a response. @default info.provider */
  key?: (info: RateLimitInfo) => string;
  /** Milliseconds since the epoch. @default Date.now */
  now?: () => number;
}

/**
 * Builds an `onRateLimit` listener that feeds core's keyed limiter: when the provider says no
 * requests or tokens remain, the key is paused until the announced reset; a `retry-after`
 * pauses it for that long. Tasks on that key then wait in the queue (keeping their place)
 * instead of running into 429s.
 *
 * @example
 * ```ts
 * const resources = new ResourceManager({ limits: { openai: ["500/min"] } });
 * const worker = new OpenAIWorker({ onRateLimit: pauseLimiterOnExhaustion(resources.limiter) });
 * ```
 */
export function pauseLimiterOnExhaustion(
  limiter: PausableLimiter,
  options: LimiterHookOptions = {},
): RateLimitListener {
  const keyOf = options.key ?? ((info: RateLimitInfo) => info.provider);
  const now = options.now ?? Date.now;
  return (info) => {
    const waits: number[] = [];
    if (info.retryAfterMs !== undefined) waits.push(info.retryAfterMs);
    if (info.remainingRequests === 0 && info.resetRequestsMs !== undefined)
      waits.push(info.resetRequestsMs);
    if (info.remainingTokens === 0 && info.resetTokensMs !== undefined)
      waits.push(info.resetTokensMs);
    if (waits.length === 0) return;
    limiter.pause(keyOf(info), now() + Math.max(...waits));
  };
}
