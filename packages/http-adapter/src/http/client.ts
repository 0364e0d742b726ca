import type { IncomingMessage } from "node:http";
import proxyaddr from "proxy-addr";

/**
 * Which proxies to believe: addresses, CIDR ranges and the names `loopback`, `linklocal` and
 * `uniquelocal` (as `proxy-addr` reads them), e.g. `["loopback", "10.0.0.0/8"]`.
 */
export type TrustedProxies = readonly string[];

/** The Node request behind a Hono context on `@hono/node-server`, if any. */
function incoming(env: unknown): IncomingMessage | undefined {
  const e = env as { incoming?: IncomingMessage } | undefined;
  return e?.incoming?.socket ? e.incoming : undefined;
}

const firstOf = (v: string | null | undefined) => v?.split(",")[0]?.trim() || undefined;

/**
 * Who the client is and where the server is, behind reverse proxies. Without trusted
 * proxies, the client is the connection's peer and URLs come from the request. With them, a
 * request whose peer is a trusted proxy is read through `X-Forwarded-For` (the nearest
 * address not itself trusted), `X-Forwarded-Proto`, `X-Forwarded-Host` and
 * `X-Forwarded-Prefix`; those headers from anyone else are ignored. A `publicUrl`, when set,
 * is the base of every URL handed out.
 *
 * @example
 * ```ts
 * const resolver = new ClientResolver({ trustProxy: ["loopback"] });
 * resolver.source(request, env); // "203.0.113.9" (from X-Forwarded-For, sent by a local proxy)
 * resolver.baseUrl(request, env, "/tasks/pending"); // "https://ops.example.com/fl"
 * ```
 */
export class ClientResolver {
  readonly #trust: ((addr: string, i: number) => boolean) | undefined;
  readonly #publicUrl: string | undefined;

  constructor(options: { trustProxy?: TrustedProxies; publicUrl?: string } = {}) {
    const list = options.trustProxy ?? [];
    this.#trust = list.length > 0 ? proxyaddr.compile([...list]) : undefined;
    if (options.publicUrl !== undefined) {
      let u: URL;
      try {
        u = new URL(options.publicUrl);
      } catch {
        throw new TypeError(
          `publicUrl: expected an absolute http(s) URL, got ${options.publicUrl}`,
        );
      }
      if (u.protocol !== "http:" && u.protocol !== "https:") {
        throw new TypeError(`publicUrl: expected an http or https URL, got ${options.publicUrl}`);
      }
      this.#publicUrl = options.publicUrl.replace(/\/+$/, "");
    }
  }

  /** Whether the request came through a trusted proxy. */
  #viaProxy(env: unknown): boolean {
    const req = incoming(env);
    const peer = req?.socket.remoteAddress;
    return !!(this.#trust && peer && this.#trust(peer, 0));
  }

  /**
   * The client's address: the peer's, or behind trusted proxies the nearest untrusted address
   * in `X-Forwarded-For`; `"unknown"` when the server is not Node's.
   *
   * @example
   * ```ts
   * resolver.source(c.req.raw, c.env); // "203.0.113.9"
   * ```
   */
  source(_request: Request, env: unknown): string {
    const req = incoming(env);
    if (!req) return "unknown";
    if (!this.#trust) return req.socket.remoteAddress ?? "unknown";
    return proxyaddr(req, this.#trust) || "unknown";
  }

  /**
   * The base URL to hand out for a request to `…<base><suffix>`: the public URL when set;
   * else, through a trusted proxy, the forwarded scheme, host and prefix; else the request's.
   *
   * @example
   * ```ts
   * resolver.baseUrl(c.req.raw, c.env, "/tasks/pending"); // "https://ops.example.com/fl"
   * ```
   */
  baseUrl(request: Request, env: unknown, suffix: string): string {
    if (this.#publicUrl) return this.#publicUrl;
    const url = new URL(request.url);
    const path = url.pathname.endsWith(suffix)
      ? url.pathname.slice(0, url.pathname.length - suffix.length)
      : "";
    if (!this.#viaProxy(env)) return `${url.origin}${path}`;
    const h = request.headers;
    const proto = firstOf(h.get("x-forwarded-proto"));
    const host = firstOf(h.get("x-forwarded-host")) ?? h.get("host") ?? url.host;
    const rawPrefix = firstOf(h.get("x-forwarded-prefix")) ?? "";
    // Only a plain path: no scheme, no `//`, no `..`.
    const prefix =
      /^(\/[A-Za-z0-9._~-]+)*\/?$/.test(rawPrefix) && !rawPrefix.includes("..")
        ? rawPrefix.replace(/\/+$/, "")
        : "";
    const scheme = proto === "https" || proto === "http" ? proto : url.protocol.slice(0, -1);
    const safeHost = /^[A-Za-z0-9.\-:[\]]+$/.test(host) ? host : url.host;
    return `${scheme}://${safeHost}${prefix}${path}`;
  }
}
