import { RetryAfterError, UnrecoverableError } from "../errors.js";

/** Operator settings for outbound HTTP from built-in workers. */
export interface HttpPolicy {
  /**
   * Hosts requests may go to: `example.com`, `example.com:8443`, `*.example.com` (any
   * subdomain), or `*` (anything — only for trusted setups). Everything else is refused.
   * @default [] (deny all)
   */
  allowedHosts?: readonly string[];
  /** Per-request timeout. @default 30000 */
  timeoutMs?: number;
  /** Largest response body read; larger responses fail the task. @default 5242880 (5 MiB) */
  maxResponseBytes?: number;
  /** Redirects followed (each target checked against the allow-list). @default 5 */
  maxRedirects?: number;
}

/** A request as a built-in worker makes it. */
export interface HttpRequestSpec {
  url: string;
  method?: string;
  headers?: Record<string, string>;
  /** Raw body (string) or JSON (anything else, sent as `application/json`). */
  body?: unknown;
  timeoutMs?: number;
  /** `"auto"` parses JSON when the content type says so. @default "auto" */
  responseType?: "auto" | "json" | "text";
}

/** The outcome of a request. */
export interface HttpResponseData {
  status: number;
  ok: boolean;
  url: string;
  headers: Record<string, string>;
  body: unknown;
  bytes: number;
}

/**
 * Whether `url`'s host is on the allow-list (`host`, `host:port`, `*.domain`, or `*`).
 *
 * @example
 * ```ts
 * hostAllowed(new URL("https://api.example.com/x"), ["*.example.com"]); // true
 * ```
 */
export function hostAllowed(url: URL, allowedHosts: readonly string[]): boolean {
  const host = url.hostname.toLowerCase().replace(/^\[|\]$/g, "");
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  return allowedHosts.some((raw) => {
    const entry = raw.trim().toLowerCase();
    if (entry === "*") return true;
    let h = entry;
    let p: string | undefined;
    const m = /^(\[[^\]]+\]|[^:]+)(?::(\d+))?$/.exec(entry);
    if (m) {
      h = m[1]!.replace(/^\[|\]$/g, "");
      p = m[2];
    }
    if (p && p !== port) return false;
    if (h.startsWith("*.")) return host.endsWith(h.slice(1)) && host.length > h.length - 1;
    return host === h;
  });
}

/**
 * Makes one HTTP request under an operator policy: allow-listed hosts only (redirects
 * re-checked), a timeout, and a response-size cap. 429 becomes `RetryAfterError`, other
 * 4xx `UnrecoverableError`, 5xx a retryable error — unless `acceptAnyStatus`.
 *
 * @example
 * ```ts
 * const res = await policyFetch({ url: "http://127.0.0.1:8080/x" }, { allowedHosts: ["127.0.0.1"] }, signal);
 * ```
 */
export async function policyFetch(
  spec: HttpRequestSpec,
  policy: HttpPolicy,
  signal: AbortSignal,
  acceptAnyStatus = false,
): Promise<HttpResponseData> {
  const allowed = policy.allowedHosts ?? [];
  const maxBytes = policy.maxResponseBytes ?? 5_242_880;
  const timeoutMs = Math.min(
    spec.timeoutMs ?? policy.timeoutMs ?? 30_000,
    policy.timeoutMs ?? 30_000,
  );
  const method = (spec.method ?? "GET").toUpperCase();
  if (!/^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$/.test(method)) {
    throw new UnrecoverableError(`payload.method: unsupported method "${method}"`);
  }
  let url: URL;
  try {
    url = new URL(spec.url);
  } catch {
    throw new UnrecoverableError(
      `payload.url: not a valid URL: "${String(spec.url).slice(0, 200)}"`,
    );
  }
  const headers: Record<string, string> = { ...(spec.headers ?? {}) };
  let body: string | undefined;
  if (spec.body !== undefined && method !== "GET" && method !== "HEAD") {
    if (typeof spec.body === "string") body = spec.body;
    else {
      body = JSON.stringify(spec.body);
      if (!Object.keys(headers).some((k) => k.toLowerCase() === "content-type")) {
        headers["content-type"] = "application/json";
      }
    }
  }
  const timeout = AbortSignal.timeout(timeoutMs);
  const combined = AbortSignal.any([signal, timeout]);
  let res: Response | undefined;
  for (let hop = 0; ; hop++) {
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new UnrecoverableError(`only http and https URLs are allowed, got ${url.protocol}`);
    }
    if (!hostAllowed(url, allowed)) {
      throw new UnrecoverableError(
        `host ${url.host} is not on the operator's allow-list (${allowed.length ? allowed.join(", ") : "empty: every host is refused"})`,
      );
    }
    try {
      const init: RequestInit = { method, headers, redirect: "manual", signal: combined };
      if (body !== undefined) init.body = body;
      res = await fetch(url, init);
    } catch (err) {
      if (timeout.aborted && !signal.aborted) {
        throw new Error(`request to ${url.host} timed out after ${timeoutMs} ms`);
      }
      if (signal.aborted) throw signal.reason ?? err;
      throw new Error(`request to ${url.host} failed: ${(err as Error).message}`);
    }
    const loc = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && loc) {
      await res.body?.cancel();
      if (hop >= (policy.maxRedirects ?? 5))
        throw new UnrecoverableError(`too many redirects from ${spec.url}`);
      url = new URL(loc, url);
      continue;
    }
    break;
  }
  const declared = Number(res.headers.get("content-length"));
  if (Number.isFinite(declared) && declared > maxBytes) {
    await res.body?.cancel();
    throw new UnrecoverableError(`response of ${declared} bytes exceeds the ${maxBytes}-byte cap`);
  }
  const chunks: Uint8Array[] = [];
  let bytes = 0;
  if (res.body) {
    const reader = res.body.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        bytes += value.byteLength;
        if (bytes > maxBytes) {
          await reader.cancel();
          throw new UnrecoverableError(`response exceeds the ${maxBytes}-byte cap`);
        }
        chunks.push(value);
      }
    } catch (err) {
      if (err instanceof UnrecoverableError) throw err;
      if (timeout.aborted && !signal.aborted)
        throw new Error(`reading ${url.host} timed out after ${timeoutMs} ms`);
      throw err;
    }
  }
  const text = new TextDecoder().decode(Buffer.concat(chunks));
  const type = res.headers.get("content-type") ?? "";
  let parsed: unknown = text;
  const wantJson =
    spec.responseType === "json" ||
    ((spec.responseType ?? "auto") === "auto" && /json/i.test(type));
  if (wantJson && text.length > 0) {
    try {
      parsed = JSON.parse(text);
    } catch {
      if (spec.responseType === "json")
        throw new UnrecoverableError(`response from ${url.host} is not valid JSON`);
    }
  }
  const out: HttpResponseData = {
    status: res.status,
    ok: res.ok,
    url: url.toString(),
    headers: Object.fromEntries(res.headers),
    body: parsed,
    bytes,
  };
  if (!acceptAnyStatus && !res.ok) {
    const msg = `${method} ${url.host}${url.pathname} answered ${res.status}`;
    if (res.status === 429) {
      const ra = Number(res.headers.get("retry-after"));
      throw new RetryAfterError(Number.isFinite(ra) ? ra * 1000 : 1000, msg);
    }
    if (res.status >= 400 && res.status < 500) throw new UnrecoverableError(msg);
    throw new Error(msg);
  }
  return out;
}
