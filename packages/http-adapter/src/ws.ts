import type { IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { type Clock, type Logger, systemClock, type TimerHandle } from "@flotilla/core";
import { WebSocket, WebSocketServer } from "ws";
import type { KeyVerifier } from "./auth.js";
import { keyFromHeaders } from "./auth.js";
import { jsonSafe } from "./views.js";

/** A versioned WebSocket message: `{v: 1, type, ts, data}`. */
export interface EventEnvelope {
  v: 1;
  /** `task:queued`, `task:succeeded`, `worker:registered`, `status`, `hello`, ... */
  type: string;
  /** ISO timestamp. */
  ts: string;
  /** Task id when the event concerns one task. */
  task_id?: string;
  data: unknown;
}

/** WebSocket options of {@link createFlotillaApp}. */
export interface WebSocketOptions {
  /** Interval of status snapshots on `/ws/status`. @default 2000 */
  statusIntervalMs?: number;
  /** The server pings every client this often; a client that has not answered the previous ping is dropped. @default 30000 */
  pingIntervalMs?: number;
  /** A client whose unsent data exceeds this many bytes is a slow consumer. @default 1048576 (1 MiB) */
  maxBufferedBytes?: number;
  /** What happens to a slow consumer: `"disconnect"` (close 1013 and drop the socket) or `"drop"` (skip messages until it catches up). @default "disconnect" */
  slowConsumer?: "disconnect" | "drop";
  /** Largest message a client may send (clients only send pings/filters). @default 65536 */
  maxPayloadBytes?: number;
}

type Kind = "status" | "events" | "task";

interface Client {
  ws: WebSocket;
  kind: Kind;
  taskId?: string;
  types?: string[];
  alive: boolean;
  dropped: number;
}

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out", "rejected", "skipped"]);

/** Whether `type` passes a filter list (`task`, `task:*`, `task:succeeded`). */
function typeMatches(type: string, filters: string[] | undefined): boolean {
  if (!filters || filters.length === 0) return true;
  return filters.some((f) => {
    if (f === "*" || f === type) return true;
    if (f.endsWith("*")) return type.startsWith(f.slice(0, -1));
    return type.startsWith(`${f}:`);
  });
}

/** Options the hub needs from the app. */
export interface HubDeps {
  prefix: string;
  verifier: KeyVerifier;
  logger: Logger;
  snapshot: () => Promise<unknown>;
  /** Current state of a task, or undefined when unknown. */
  taskState: (id: string) => Promise<{ status: string; view: unknown } | undefined>;
  options: WebSocketOptions;
  /** Drives the ping and status intervals. @default systemClock */
  clock?: Clock;
  /** Told when the first client connects (`true`) and when the last one leaves (`false`). */
  occupied?: (occupied: boolean) => void;
}

/**
 * Fans engine events out to WebSocket clients: `/ws/status` (snapshots + events),
 * `/ws/events` (events, filterable with `?task_id=` and `?types=`), `/ws/tasks/{id}`
 * (one task's events; closes with 1000 when the task ends).
 *
 * @example
 * ```ts
 * const app = createFlotillaApp({ orchestrator, auth: { mode: "open" } });
 * const hub = app.flotilla.hub; // created by the app; serveFlotilla wires its upgrades
 * server.on("upgrade", (req, socket, head) => {
 *   if (!hub.handleUpgrade(req, socket, head)) socket.destroy();
 * });
 * ```
 */
export class EventHub {
  readonly #deps: HubDeps;
  readonly #clients = new Set<Client>();
  readonly #wss: WebSocketServer;
  readonly #clock: Clock;
  #statusTimer: TimerHandle | undefined;
  #pingTimer: TimerHandle | undefined;
  #closed = false;
  /** Messages skipped or clients dropped because they read too slowly. */
  slowConsumerEvents = 0;

  constructor(deps: HubDeps) {
    this.#deps = deps;
    this.#clock = deps.clock ?? systemClock;
    this.#wss = new WebSocketServer({
      noServer: true,
      maxPayload: deps.options.maxPayloadBytes ?? 65_536,
      handleProtocols: (protocols) => (protocols.has("flotilla.v1") ? "flotilla.v1" : false),
    });
  }

  get clientCount(): number {
    return this.#clients.size;
  }

  #remove(c: Client): void {
    if (this.#clients.delete(c) && this.#clients.size === 0) this.#deps.occupied?.(false);
  }

  // Intervals are re-armed one-shot clock timers, so a fake clock drives them exactly.
  // They run only while clients are connected.
  #ensureTimers(): void {
    if (this.#closed) return;
    if (!this.#pingTimer) {
      const tick = () => {
        this.#pingTimer = undefined;
        this.#pingAll();
        if (this.#clients.size > 0) this.#ensureTimers();
      };
      this.#pingTimer = this.#clock.setTimeout(tick, this.#deps.options.pingIntervalMs ?? 30_000);
    }
    if (!this.#statusTimer) {
      const tick = () => {
        this.#statusTimer = undefined;
        void this.#sendSnapshots();
        if (this.#clients.size > 0) this.#ensureTimers();
      };
      this.#statusTimer = this.#clock.setTimeout(tick, this.#deps.options.statusIntervalMs ?? 2000);
    }
  }

  #pingAll(): void {
    for (const c of this.#clients) {
      if (!c.alive) {
        this.#deps.logger.debug({ kind: c.kind }, "websocket client missed a pong; dropping it");
        c.ws.terminate();
        this.#remove(c);
        continue;
      }
      c.alive = false;
      try {
        c.ws.ping();
      } catch {
        // socket already closing
      }
    }
  }

  async #sendSnapshots(): Promise<void> {
    const statusClients = [...this.#clients].filter((c) => c.kind === "status");
    if (statusClients.length === 0) return;
    let data: unknown;
    try {
      data = await this.#deps.snapshot();
    } catch (err) {
      this.#deps.logger.warn({ err: String(err) }, "status snapshot failed");
      return;
    }
    const msg = JSON.stringify(this.#envelope("status", data));
    for (const c of statusClients) this.#send(c, msg);
  }

  #envelope(type: string, data: unknown, taskId?: string): EventEnvelope {
    const env: EventEnvelope = { v: 1, type, ts: new Date().toISOString(), data: jsonSafe(data) };
    if (taskId) env.task_id = taskId;
    return env;
  }

  #send(c: Client, msg: string): boolean {
    if (c.ws.readyState !== WebSocket.OPEN) return false;
    const cap = this.#deps.options.maxBufferedBytes ?? 1_048_576;
    if (c.ws.bufferedAmount > cap) {
      this.slowConsumerEvents++;
      if ((this.#deps.options.slowConsumer ?? "disconnect") === "drop") {
        c.dropped++;
        return false;
      }
      this.#deps.logger.warn(
        { kind: c.kind, bufferedAmount: c.ws.bufferedAmount, cap },
        "websocket client too slow; disconnecting it",
      );
      this.#remove(c);
      c.ws.terminate();
      return false;
    }
    if (c.dropped > 0) {
      const note = JSON.stringify(this.#envelope("dropped", { count: c.dropped }));
      c.dropped = 0;
      c.ws.send(note);
    }
    c.ws.send(msg);
    return true;
  }

  /**
   * Sends an event to every matching client. The app calls it for engine events; an
   * embedding app may publish its own types too.
   *
   * @example
   * ```ts
   * app.flotilla.hub.publish("deploy:done", { version: "1.2.3" });
   * ```
   */
  publish(type: string, data: unknown, taskId?: string): void {
    if (this.#clients.size === 0) return;
    const env = this.#envelope(type, data, taskId);
    let msg: string | undefined;
    // Only the task's own terminal transition ends its stream (not, say, a cost entry
    // that carries the finished status and arrives just before it).
    const ends = type.startsWith("task:") && TERMINAL.has(type.slice(5));
    for (const c of [...this.#clients]) {
      if (c.kind === "task") {
        if (!taskId || c.taskId !== taskId) continue;
      } else {
        if (c.taskId && c.taskId !== taskId) continue;
        if (!typeMatches(type, c.types)) continue;
      }
      msg ??= JSON.stringify(env);
      this.#send(c, msg);
      if (c.kind === "task" && ends) {
        this.#remove(c);
        c.ws.close(1000, "task finished");
      }
    }
  }

  /**
   * Whether `pathname` is one of the hub's WebSocket routes.
   *
   * @example
   * ```ts
   * hub.matches("/api/v2/orchestrator/ws/events"); // true with the default prefix
   * ```
   */
  matches(pathname: string): boolean {
    return this.#route(pathname) !== undefined;
  }

  #route(pathname: string): { kind: Kind; taskId?: string } | undefined {
    const p = this.#deps.prefix;
    if (pathname === `${p}/ws/status`) return { kind: "status" };
    if (pathname === `${p}/ws/events`) return { kind: "events" };
    const m = pathname.startsWith(`${p}/ws/tasks/`) ? pathname.slice(`${p}/ws/tasks/`.length) : "";
    if (m && !m.includes("/")) {
      try {
        return { kind: "task", taskId: decodeURIComponent(m) };
      } catch {
        return undefined;
      }
    }
    return undefined;
  }

  /**
   * Handles an HTTP `upgrade` from a Node server. Returns false when the path is not a
   * WebSocket route of this app (so another handler may take it).
   *
   * @example
   * ```ts
   * server.on("upgrade", (req, socket, head) => {
   *   if (!hub.handleUpgrade(req, socket, head)) socket.destroy(); // not a WebSocket route of ours
   * });
   * ```
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const url = new URL(req.url ?? "/", "http://localhost");
    const route = this.#route(url.pathname);
    if (!route) return false;
    // A client that resets during the key check must not become an unhandled 'error'.
    const onSocketError = () => socket.destroy();
    socket.on("error", onSocketError);
    const reject = (status: number, code: string, message: string) => {
      const body = JSON.stringify({ error: { code, message }, detail: message });
      socket.end(
        `HTTP/1.1 ${status} ${status === 401 ? "Unauthorized" : status === 503 ? "Service Unavailable" : "Bad Request"}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    if (this.#closed) {
      reject(503, "SHUTTING_DOWN", "server is shutting down");
      return true;
    }
    const headers = { get: (n: string) => (req.headers[n] as string | undefined) ?? null };
    let key = keyFromHeaders(headers) ?? url.searchParams.get("api_key") ?? undefined;
    const protocols = String(req.headers["sec-websocket-protocol"] ?? "")
      .split(",")
      .map((s) => s.trim());
    const keyProto = protocols.find((p) => p.startsWith("flotilla-key."));
    if (!key && keyProto) key = keyProto.slice("flotilla-key.".length);
    void this.#deps.verifier.check(key, `WEBSOCKET ${url.pathname}`).then(
      (ok) => {
        if (!ok) {
          reject(401, "UNAUTHORIZED", "missing or invalid API key");
          return;
        }
        if (socket.destroyed) return;
        socket.off("error", onSocketError);
        this.#wss.handleUpgrade(req, socket, head, (ws) => this.#accept(ws, route, url));
      },
      (err: unknown) => {
        this.#deps.logger.error({ err: String(err) }, "websocket key check failed");
        reject(401, "UNAUTHORIZED", "missing or invalid API key");
      },
    );
    return true;
  }

  #accept(ws: WebSocket, route: { kind: Kind; taskId?: string }, url: URL): void {
    const c: Client = { ws, kind: route.kind, alive: true, dropped: 0 };
    const taskId = route.taskId ?? url.searchParams.get("task_id") ?? undefined;
    if (taskId) c.taskId = taskId;
    const types = url.searchParams.get("types") ?? url.searchParams.get("type");
    if (types) {
      c.types = types
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean);
    }
    this.#clients.add(c);
    if (this.#clients.size === 1) this.#deps.occupied?.(true);
    this.#ensureTimers();
    ws.on("pong", () => {
      c.alive = true;
    });
    ws.on("message", (raw) => {
      // Clients may send {"type":"ping"}; anything else is ignored.
      const text = raw.toString();
      if (text.length < 256 && text.includes('"ping"')) {
        this.#send(c, JSON.stringify(this.#envelope("pong", {})));
      }
    });
    ws.on("close", () => this.#remove(c));
    ws.on("error", () => this.#remove(c));
    this.#send(
      c,
      JSON.stringify(
        this.#envelope("hello", {
          stream: c.kind,
          task_id: c.taskId ?? null,
          types: c.types ?? null,
          status_interval_ms: this.#deps.options.statusIntervalMs ?? 2000,
          ping_interval_ms: this.#deps.options.pingIntervalMs ?? 30_000,
        }),
      ),
    );
    if (c.kind === "status") {
      void this.#deps.snapshot().then(
        (data) => this.#send(c, JSON.stringify(this.#envelope("status", data))),
        () => {},
      );
    }
    if (c.kind === "task" && c.taskId) {
      const id = c.taskId;
      void this.#deps.taskState(id).then(
        (state) => {
          if (!state) {
            this.#remove(c);
            ws.close(4404, "unknown task");
            return;
          }
          this.#send(c, JSON.stringify(this.#envelope("task:snapshot", state.view, id)));
          if (TERMINAL.has(state.status)) {
            this.#remove(c);
            ws.close(1000, "task finished");
          }
        },
        (err: unknown) => {
          this.#deps.logger.error({ err: String(err), taskId: id }, "task lookup failed");
          this.#remove(c);
          ws.close(1011, "task lookup failed");
        },
      );
    }
  }

  /**
   * Closes every socket (1001 going away) and stops the timers.
   *
   * @example
   * ```ts
   * hub.close(); // on shutdown, before closing the HTTP server
   * ```
   */
  close(): void {
    this.#closed = true;
    if (this.#pingTimer) this.#clock.clearTimeout(this.#pingTimer);
    if (this.#statusTimer) this.#clock.clearTimeout(this.#statusTimer);
    this.#pingTimer = this.#statusTimer = undefined;
    for (const c of this.#clients) {
      try {
        c.ws.close(1001, "server shutting down");
      } catch {
        c.ws.terminate();
      }
    }
    const had = this.#clients.size > 0;
    this.#clients.clear();
    if (had) this.#deps.occupied?.(false);
    this.#wss.close();
  }
}
