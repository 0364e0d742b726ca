import type { IncomingMessage, Server } from "node:http";
import type { AddressInfo } from "node:net";
import type { Duplex } from "node:stream";
import { serve } from "@hono/node-server";
import type { FlotillaApp } from "./app.js";
import {
  type ConnectionLimits,
  guardConnections,
  resolveLimits,
  serverTimeouts,
  WATCHER,
} from "./http/connections.js";

/** Options of {@link serveFlotilla}. */
export interface ServeOptions {
  /** @default "127.0.0.1" */
  host?: string;
  /** 0 picks a free port. @default 8000 */
  port?: number;
  /**
   * How long slow or idle clients may hold connections, and how many one address may open
   * (see {@link ConnectionLimits}). @default {} (each field's own default)
   */
  limits?: ConnectionLimits;
}

/** A running server. */
export interface FlotillaServer {
  /** e.g. `http://127.0.0.1:8000` */
  readonly url: string;
  readonly port: number;
  readonly server: Server;
  /**
   * Graceful stop: refuses new work, closes WebSockets (1001), stops accepting
   * connections and waits for open requests up to `graceMs`, then drops the rest.
   * Stopping the orchestrator (drain or hand back running tasks) is the composer's job,
   * after this resolves.
   */
  close(options?: { graceMs?: number }): Promise<void>;
}

/**
 * Attaches the app's WebSocket routes to an existing Node HTTP server (use this when you
 * mount `app.fetch` in your own server).
 *
 * @example
 * ```ts
 * const server = serve({ fetch: app.fetch, port: 3000 });
 * attachWebSockets(server as Server, app);
 * ```
 */
export function attachWebSockets(server: Server, app: FlotillaApp): void {
  const onUpgrade = (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    if (!app.flotilla.hub.handleUpgrade(req, socket, head)) {
      // Not ours: leave it to other upgrade listeners, or refuse when there are none
      // (listeners that only watch upgrades do not count).
      const others = server
        .listeners("upgrade")
        .filter((l) => l !== onUpgrade && !(l as unknown as Record<symbol, boolean>)[WATCHER]);
      if (others.length === 0) {
        socket.end("HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
      }
    }
  };
  server.on("upgrade", onUpgrade);
}

/**
 * Serves the app on Node (`@hono/node-server`) with WebSocket upgrades (`ws`).
 *
 * @example
 * ```ts
 * const server = await serveFlotilla(app, { host: "127.0.0.1", port: 8000 });
 * console.log(server.url);
 * process.on("SIGTERM", async () => { await server.close(); await orchestrator.stop(); });
 * ```
 */
export function serveFlotilla(
  app: FlotillaApp,
  options: ServeOptions = {},
): Promise<FlotillaServer> {
  const host = options.host ?? "127.0.0.1";
  const limits = resolveLimits(options.limits);
  return new Promise((resolve, reject) => {
    const server = serve(
      {
        fetch: app.fetch,
        hostname: host,
        port: options.port ?? 8000,
        serverOptions: serverTimeouts(limits),
      },
      (info: AddressInfo) => {
        const h = host.includes(":") ? `[${host}]` : host;
        const url = `http://${h === "0.0.0.0" || h === "[::]" ? "127.0.0.1" : h}:${info.port}`;
        let closing: Promise<void> | undefined;
        resolve({
          url,
          port: info.port,
          server: server as Server,
          close({ graceMs = 5000 } = {}) {
            closing ??= new Promise<void>((done) => {
              app.flotilla.beginShutdown();
              const s = server as Server;
              const t = setTimeout(() => {
                s.closeAllConnections?.();
              }, graceMs);
              t.unref?.();
              s.close(() => {
                clearTimeout(t);
                unguard();
                app.flotilla.close();
                done();
              });
              s.closeIdleConnections?.();
            });
            return closing;
          },
        });
      },
    ) as Server;
    server.once("error", reject);
    const unguard = guardConnections(server as Server, limits, options.limits?.trustProxy);
    attachWebSockets(server, app);
  });
}
