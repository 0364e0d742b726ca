import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import proxyaddr from "proxy-addr";
import { hasBody } from "./body.js";

/** How long slow or idle clients may hold a connection (see {@link guardConnections}). */
export interface ConnectionLimits {
  /** Time a client has to send a request's headers. @default 10000 */
  headersTimeoutMs?: number;
  /**
   * A request body arriving slower than this (bytes per second, over `bodyRateWindowMs`) is
   * cut. A slow but moving upload goes on. 0 turns the check off. @default 512
   */
  minBodyBytesPerSecond?: number;
  /** The window the body rate is measured over. @default 10000 */
  bodyRateWindowMs?: number;
  /**
   * A connection with no request in flight (before its first one, or between keep-alive
   * requests) is closed after this long. Requests in flight are never cut by it: SSE,
   * WebSockets, a long `/tasks/execute` have their own deadlines. @default 30000
   */
  idleTimeoutMs?: number;
  /**
   * Open connections per client address; more are closed at once. Trusted proxies
   * (`trustProxy`) are not capped. 0: no cap. @default 512
   */
  maxConnectionsPerSource?: number;
  /** Peers not capped per source (a reverse proxy carries every client). @default [] */
  trustProxy?: readonly string[];
}

/** The limits with their defaults filled in. */
export interface ResolvedLimits {
  headersTimeoutMs: number;
  minBodyBytesPerSecond: number;
  bodyRateWindowMs: number;
  idleTimeoutMs: number;
  maxConnectionsPerSource: number;
}

/**
 * Fills in the defaults of {@link ConnectionLimits} and checks them.
 *
 * @example
 * ```ts
 * resolveLimits({ idleTimeoutMs: 5000 }).headersTimeoutMs; // 10000
 * ```
 */
export function resolveLimits(limits: ConnectionLimits = {}): ResolvedLimits {
  const pick = (name: keyof ResolvedLimits, dflt: number, min: number) => {
    const v = limits[name] ?? dflt;
    if (!Number.isFinite(v) || v < min) {
      throw new TypeError(`${name}: expected a number >= ${min}, got ${String(limits[name])}`);
    }
    return v;
  };
  return {
    headersTimeoutMs: pick("headersTimeoutMs", 10_000, 100),
    minBodyBytesPerSecond: pick("minBodyBytesPerSecond", 512, 0),
    bodyRateWindowMs: pick("bodyRateWindowMs", 10_000, 100),
    idleTimeoutMs: pick("idleTimeoutMs", 30_000, 100),
    maxConnectionsPerSource: pick("maxConnectionsPerSource", 512, 0),
  };
}

/**
 * `createServer` options that carry the header deadline (checked every quarter of it, at
 * most every second) and no whole-request deadline (the body rate bounds uploads).
 *
 * @example
 * ```ts
 * const server = createServer(serverTimeouts(resolveLimits()), handler);
 * ```
 */
export function serverTimeouts(l: ResolvedLimits) {
  return {
    headersTimeout: l.headersTimeoutMs,
    // A whole-request deadline would cut a large upload on a slow link: the body rate does it.
    requestTimeout: 0,
    keepAliveTimeout: l.idleTimeoutMs,
    connectionsCheckingInterval: Math.max(50, Math.min(1000, Math.floor(l.headersTimeoutMs / 4))),
  };
}

/** Marks listeners that only watch upgrades (they answer none). @internal */
export const WATCHER = Symbol.for("flotilla.upgrade-watcher");

interface Tracked {
  inFlight: number;
  /** Closes the connection when it fires with no request in flight; restarted after each. */
  idle: ReturnType<typeof setTimeout>;
}

/**
 * Keeps slow and idle clients from holding a Node server's connections: closes connections
 * idle for `idleTimeoutMs` (no request in flight), cuts request bodies slower than
 * `minBodyBytesPerSecond` (measured on the socket, so the body stream is untouched), and caps
 * open connections per client address. Header deadlines come from {@link serverTimeouts}
 * (pass them to `createServer`). WebSocket upgrades leave the guard (they have pings).
 * Returns a function that removes it.
 *
 * @example
 * ```ts
 * const limits = resolveLimits({ idleTimeoutMs: 10_000 });
 * const server = createServer(serverTimeouts(limits), handler);
 * guardConnections(server, limits);
 * ```
 */
export function guardConnections(
  server: Server,
  l: ResolvedLimits,
  trustProxy: readonly string[] = [],
): () => void {
  const trusted = trustProxy.length > 0 ? proxyaddr.compile([...trustProxy]) : () => false;
  const perSource = new Map<string, number>();
  const tracked = new Map<Socket, Tracked>();
  const timers = new Set<ReturnType<typeof setInterval>>();

  const onConnection = (socket: Socket) => {
    const source = socket.remoteAddress ?? "unknown";
    const capped = l.maxConnectionsPerSource > 0 && !trusted(source, 0);
    if (capped) {
      const n = (perSource.get(source) ?? 0) + 1;
      if (n > l.maxConnectionsPerSource) {
        socket.destroy();
        return;
      }
      perSource.set(source, n);
    }
    const t: Tracked = {
      inFlight: 0,
      idle: setTimeout(() => {
        if (t.inFlight === 0) socket.destroy();
      }, l.idleTimeoutMs),
    };
    t.idle.unref?.();
    tracked.set(socket, t);
    socket.once("close", () => {
      clearTimeout(t.idle);
      tracked.delete(socket);
      if (capped) {
        const n = (perSource.get(source) ?? 1) - 1;
        if (n <= 0) perSource.delete(source);
        else perSource.set(source, n);
      }
    });
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const t = tracked.get(socket);
    if (t) {
      t.inFlight++;
      // One timer per connection, restarted when it goes idle (not one per request); a
      // response emits "close" once, when it ends or its connection does.
      res.once("close", () => {
        t.inFlight--;
        if (t.inFlight === 0 && !socket.destroyed) t.idle.refresh();
      });
    }
    if (!hasBody(req) || l.minBodyBytesPerSecond <= 0) return;
    // The body's progress, read from the socket's byte count (the stream itself is untouched).
    let last = socket.bytesRead;
    const need = (l.minBodyBytesPerSecond * l.bodyRateWindowMs) / 1000;
    // Stopped when the response ends or the connection closes, whichever is first: a
    // keep-alive connection carries many requests, and must not gather one listener each.
    const stop = () => {
      clearInterval(check);
      timers.delete(check);
      res.removeListener("close", stop);
      socket.removeListener("close", stop);
    };
    const check = setInterval(() => {
      if (req.complete || socket.destroyed) {
        stop();
        return;
      }
      const now = socket.bytesRead;
      if (now - last < need) {
        stop();
        socket.destroy();
        return;
      }
      last = now;
    }, l.bodyRateWindowMs);
    check.unref?.();
    timers.add(check);
    res.once("close", stop);
    socket.once("close", stop);
  };

  const onUpgrade = (_req: IncomingMessage, socket: Socket) => {
    const t = tracked.get(socket);
    if (t?.idle) clearTimeout(t.idle);
    tracked.delete(socket);
  };

  (onUpgrade as unknown as Record<symbol, boolean>)[WATCHER] = true;
  server.on("connection", onConnection);
  server.on("request", onRequest);
  server.prependListener("upgrade", onUpgrade);
  return () => {
    server.off("connection", onConnection);
    server.off("request", onRequest);
    server.off("upgrade", onUpgrade);
    for (const t of tracked.values()) clearTimeout(t.idle);
    for (const c of timers) clearInterval(c);
  };
}
