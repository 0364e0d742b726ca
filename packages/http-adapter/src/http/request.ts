import type { IncomingMessage } from "node:http";
import type { Context } from "hono";

/**
 * One request header by its lower-case name. On Node it is read from the headers Node
 * parsed (through `c.req.header()` the first read builds a web `Headers` of all of them,
 * which costs more than the rest of a small request); elsewhere from the web request.
 * Repeated headers are joined with `, `, as `Headers.get` does.
 *
 * @example
 * ```ts
 * const type = header(c, "content-type") ?? "";
 * ```
 */
export function header(c: Context, name: string): string | undefined {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming?.headers) {
    const v = incoming.headers[name];
    return Array.isArray(v) ? v.join(", ") : v;
  }
  return c.req.header(name);
}

/**
 * The request's headers as `keyFromHeaders` and the like read them (`get` by name), read
 * through {@link header}.
 *
 * @example
 * ```ts
 * const key = keyFromHeaders(headersOf(c));
 * ```
 */
export function headersOf(c: Context): { get(name: string): string | undefined } {
  return { get: (name) => header(c, name.toLowerCase()) };
}
