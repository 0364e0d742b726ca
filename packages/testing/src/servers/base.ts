import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/** One request as a protocol server saw it. */
export interface RecordedRequest {
  method: string;
  /** Path without the query string, e.g. `/v1/chat/completions`. */
  path: string;
  headers: Record<string, string | string[] | undefined>;
  /** Parsed JSON body (`undefined` when the body was empty or not JSON). */
  body: any;
  /** When the request arrived (ms since the epoch). */
  receivedAt: number;
  /** Set once the client went away before the response was complete. */
  aborted: boolean;
  /** Resolves when the exchange ends: `"finished"` (response sent) or `"aborted"` (client closed the socket first). */
  done: Promise<"finished" | "aborted">;
}

/** Options every reply understands, whatever the provider. */
export interface ReplyControl {
  /** HTTP status. @default 200 */
  status?: number;
  /** Extra response headers (rate-limit headers, `retry-after`, ...). */
  headers?: Record<string, string>;
  /** Wait this long before sending anything. @default 0 */
  delayMs?: number;
  /** Wait this long between streamed chunks. @default 0 */
  chunkDelayMs?: number;
  /** Destroy the socket after this many streamed chunks (0: before any byte of the body). */
  dropAfterChunks?: number;
  /** Send this string as the body, verbatim (malformed JSON, wrong shapes). */
  rawBody?: string;
  /** Send this JSON as the body, verbatim, instead of the generated one. */
  body?: unknown;
}

/** A planned response: a JSON body or a list of stream chunks. */
export interface PlannedResponse extends ReplyControl {
  contentType?: string;
  chunks?: string[];
}

/** The parts of a protocol server shared by every provider shape. */
export interface ProtocolServer extends AsyncDisposable {
  /** `http://127.0.0.1:<port>` */
  readonly url: string;
  readonly port: number;
  /** Every request received, oldest first. */
  readonly requests: RecordedRequest[];
  /** Stops the server and destroys open connections. Idempotent. */
  close(): Promise<void>;
}

export type RouteHandler = (
  req: RecordedRequest,
  raw: IncomingMessage,
) => PlannedResponse | Promise<PlannedResponse>;

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (ms <= 0 || signal.aborted) return resolve();
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

async function readBody(req: IncomingMessage): Promise<unknown> {
  const parts: Buffer[] = [];
  for await (const part of req) parts.push(part as Buffer);
  const text = Buffer.concat(parts).toString("utf8");
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Starts an HTTP server on 127.0.0.1 (port 0) that answers with `handler`. */
export async function startProtocolServer(handler: RouteHandler): Promise<ProtocolServer> {
  const requests: RecordedRequest[] = [];
  const sockets = new Set<Socket>();
  const server: Server = createServer((req, res) => {
    void serve(req, res);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });

  async function serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const gone = new AbortController();
    let resolveDone!: (v: "finished" | "aborted") => void;
    const record: RecordedRequest = {
      method: req.method ?? "GET",
      path: (req.url ?? "/").split("?")[0] ?? "/",
      headers: { ...req.headers },
      body: undefined,
      receivedAt: Date.now(),
      aborted: false,
      done: new Promise((r) => {
        resolveDone = r;
      }),
    };
    res.on("close", () => {
      if (!res.writableFinished) {
        record.aborted = true;
        gone.abort();
        resolveDone("aborted");
      } else resolveDone("finished");
    });
    try {
      record.body = await readBody(req);
      requests.push(record);
      const plan = await handler(record, req);
      await send(res, plan, gone.signal);
    } catch (err) {
      if (!res.headersSent) {
        res.writeHead(500, { "content-type": "application/json" });
        res.end(JSON.stringify({ error: { message: String(err) } }));
      } else res.destroy();
    }
  }

  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  let closing: Promise<void> | undefined;
  const close = () => {
    closing ??= new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
    return closing;
  };
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    requests,
    close,
    [Symbol.asyncDispose]: close,
  };
}

async function send(res: ServerResponse, plan: PlannedResponse, gone: AbortSignal): Promise<void> {
  await sleep(plan.delayMs ?? 0, gone);
  if (gone.aborted) return;
  const headers: Record<string, string> = { ...(plan.headers ?? {}) };
  if (plan.dropAfterChunks === 0 && !plan.chunks) {
    res.socket?.destroy();
    return;
  }
  if (plan.rawBody !== undefined || plan.body !== undefined || !plan.chunks) {
    const text = plan.rawBody ?? JSON.stringify(plan.body === undefined ? {} : plan.body);
    res.writeHead(plan.status ?? 200, {
      "content-type": plan.contentType ?? "application/json",
      "content-length": Buffer.byteLength(text),
      ...headers,
    });
    res.end(text);
    return;
  }
  res.writeHead(plan.status ?? 200, {
    "content-type": plan.contentType ?? "text/event-stream",
    "cache-control": "no-cache",
    ...headers,
  });
  res.flushHeaders();
  let sent = 0;
  for (const chunk of plan.chunks) {
    if (plan.dropAfterChunks !== undefined && sent >= plan.dropAfterChunks) {
      // Let what was written reach the client, then cut the connection without finishing the body.
      await sleep(20, gone);
      res.socket?.destroy();
      return;
    }
    if (sent > 0) await sleep(plan.chunkDelayMs ?? 0, gone);
    if (gone.aborted) return;
    await new Promise<void>((resolve) => res.write(chunk, () => resolve()));
    sent++;
  }
  res.end();
}

/** A reply queue: scripted replies are served in order, then the default. */
export class ReplyQueue<TReply> {
  #queue: TReply[] = [];
  #default: TReply;

  constructor(initial: TReply) {
    this.#default = initial;
  }

  push(...replies: TReply[]): void {
    this.#queue.push(...replies);
  }

  setDefault(reply: TReply): void {
    this.#default = reply;
  }

  next(): TReply {
    return this.#queue.length > 0 ? (this.#queue.shift() as TReply) : this.#default;
  }
}

/** A rough, deterministic token count (about four characters per token). */
export function roughTokens(text: string): number {
  return text.length === 0 ? 0 : Math.max(1, Math.ceil(text.length / 4));
}

/** Splits text into streaming pieces (words with their following space). */
export function splitTokens(text: string): string[] {
  const parts = text.match(/\S+\s*|\s+/g);
  return parts && parts.length > 0 ? parts : [text];
}

/** Collects every string in a JSON value, used to estimate input tokens. */
export function textOf(value: unknown): string {
  if (typeof value === "string") return value;
  if (Array.isArray(value)) return value.map(textOf).join(" ");
  if (value && typeof value === "object") {
    return Object.values(value as Record<string, unknown>)
      .map(textOf)
      .join(" ");
  }
  return "";
}

/** A reply that is a value or a function of the request. */
export type Scripted<T> = T | ((req: RecordedRequest) => T | Promise<T>);

export async function resolveScripted<T extends object>(
  reply: Scripted<T>,
  req: RecordedRequest,
): Promise<T> {
  return typeof reply === "function" ? await (reply as (r: RecordedRequest) => T)(req) : reply;
}

/** Copies the control fields of a reply onto a plan. */
export function control(reply: ReplyControl, plan: PlannedResponse): PlannedResponse {
  const out: PlannedResponse = { ...plan };
  if (reply.delayMs !== undefined) out.delayMs = reply.delayMs;
  if (reply.chunkDelayMs !== undefined) out.chunkDelayMs = reply.chunkDelayMs;
  if (reply.dropAfterChunks !== undefined) out.dropAfterChunks = reply.dropAfterChunks;
  if (reply.rawBody !== undefined) out.rawBody = reply.rawBody;
  if (reply.body !== undefined) out.body = reply.body;
  out.headers = { ...(plan.headers ?? {}), ...(reply.headers ?? {}) };
  return out;
}

/** A tool call the server answers with. */
export interface ScriptedToolCall {
  id?: string;
  name: string;
  arguments: Record<string, unknown>;
}

/** A provider-shaped error the server answers with. */
export interface ScriptedError {
  /** HTTP status. */
  status: number;
  message: string;
  /** Provider error type (e.g. `invalid_request_error`); derived from the status when absent. */
  type?: string;
  code?: string;
  param?: string;
  /** Adds a `retry-after` header (seconds). */
  retryAfterSeconds?: number;
  /** Adds a `retry-after-ms` header. */
  retryAfterMs?: number;
}

/** What a chat-style server answers with. Every field is optional. */
export interface ChatReply extends ReplyControl {
  /** Assistant text. @default "Hello from the test server." */
  text?: string;
  toolCalls?: ScriptedToolCall[];
  /** @default "stop" ("tool_calls" when there are tool calls) */
  finishReason?: string;
  /** Token counts; estimated from the request and the text when absent. */
  usage?: { inputTokens?: number; outputTokens?: number };
  /** Answer with this error instead. */
  error?: ScriptedError;
}

const DEFAULT_TEXT = "Hello from the test server.";

/** A reply's assistant text: its `text`, else `""` when it has tool calls, else the default text. */
export function replyText(reply: ChatReply): string {
  return reply.text ?? (reply.toolCalls ? "" : DEFAULT_TEXT);
}

/** The `retry-after` / `retry-after-ms` headers a scripted error asks for. */
export function retryHeaders(err: ScriptedError): Record<string, string> {
  const headers: Record<string, string> = {};
  if (err.retryAfterSeconds !== undefined) headers["retry-after"] = String(err.retryAfterSeconds);
  if (err.retryAfterMs !== undefined) headers["retry-after-ms"] = String(err.retryAfterMs);
  return headers;
}

let seq = 0;
/** A unique provider-looking id, `<prefix><separator><time><counter>` (e.g. `msg_lx2k1`). */
export function nextId(prefix: string, separator: string): string {
  return `${prefix}${separator}${Date.now().toString(36)}${(++seq).toString(36)}`;
}

/** Options every chat-style server takes. */
export interface ChatServerOptions<TReply> {
  /** Replies served in order before `defaultReply`. */
  replies?: Scripted<TReply>[];
  /** The reply once the queue is empty. @default { text: "Hello from the test server." } */
  defaultReply?: Scripted<TReply>;
  /** Headers added to every response (e.g. rate-limit headers). */
  headers?: Record<string, string>;
}

/** A chat-style protocol server: scripted replies, served in order, then the default. */
export interface ChatServer<TReply> extends ProtocolServer {
  /** Queues replies, served in order. */
  reply(...replies: Scripted<TReply>[]): void;
  setDefaultReply(reply: Scripted<TReply>): void;
  /** Requests to the completion endpoints only. */
  completionRequests(): RecordedRequest[];
}

/**
 * Starts a chat-style protocol server: `route` answers each request and takes the next
 * scripted reply with `nextReply()`; `options.headers` are added to every response, and
 * `completionRequests()` keeps the requests whose path `isCompletion` accepts.
 */
export async function startChatServer<TReply extends ChatReply>(
  options: ChatServerOptions<TReply>,
  isCompletion: (path: string) => boolean,
  route: (req: RecordedRequest, nextReply: () => Promise<TReply>) => Promise<PlannedResponse>,
): Promise<ChatServer<TReply>> {
  const queue = new ReplyQueue<Scripted<TReply>>(
    options.defaultReply ?? ({ text: DEFAULT_TEXT } as TReply),
  );
  if (options.replies) queue.push(...options.replies);
  const common = options.headers ?? {};
  const base = await startProtocolServer(async (req) => {
    const plan = await route(req, () => resolveScripted(queue.next(), req));
    plan.headers = { ...common, ...(plan.headers ?? {}) };
    return plan;
  });
  return Object.assign(base, {
    reply: (...replies: Scripted<TReply>[]) => queue.push(...replies),
    setDefaultReply: (reply: Scripted<TReply>) => queue.setDefault(reply),
    completionRequests: () => base.requests.filter((r) => isCompletion(r.path)),
  });
}
