import { createHash } from "node:crypto";
import { type ErrorCode, FlotillaError } from "@flotilla/core";
import type { z } from "zod";
import {
  ErrorBodySchema,
  type NodeStatus,
  PollResponseSchema,
  type Registration,
  RegistrationSchema,
  type ReportedStatus,
  type SessionLog,
  type TaskAssignment,
} from "./schemas.js";

/** Options of {@link FleetClient}. */
export interface FleetClientOptions {
  /** The orchestrator's base URL; may carry a path prefix (`https://host/fleet`). */
  baseUrl: string;
  /** The node API key, when already registered. `register()` sets it. */
  apiKey?: string;
  /** The node id, when already registered. `register()` sets it. */
  nodeId?: string;
  /** The registration token `register()` sends as `X-Registration-Token`. */
  registrationToken?: string;
  /** Per-request timeout in milliseconds. @default 30000 */
  timeoutMs?: number;
  /** The `fetch` to use (tests, proxies). @default globalThis.fetch */
  fetch?: typeof fetch;
}

/** The body of `POST /register`. */
export interface RegisterInput {
  /** Unique node name, matched by target globs such as `client-acme-*`. */
  name: string;
  /** @default os.hostname() of the caller's choosing */
  hostname: string;
  os_type: string;
  capabilities?: string[];
  tags?: Record<string, string>;
  labels?: Record<string, string>;
  resources?: Record<string, unknown>;
  /** Task types the node runs. @default server decides (`agent_run`, `remote_compute`) */
  task_types?: string[];
  /** Free slots the node offers. @default 1 */
  slots?: number;
}

/** Options of a single request. */
export interface RequestOptions {
  /** Aborts the request. */
  signal?: AbortSignal;
}

/** The status update of {@link FleetClient.reportStatus}. */
export interface StatusUpdate {
  taskId: string;
  status: ReportedStatus;
  /** Becomes the task's result (success) or error message (error). */
  message?: string;
  /** 0–100. */
  progress?: number;
  /** The agent's session id (`crush_session_id`). */
  sessionId?: string;
}

const HTTP_CODES: Record<number, ErrorCode> = {
  400: "VALIDATION",
  401: "UNAUTHORIZED",
  403: "FORBIDDEN",
  404: "NOT_FOUND",
  409: "CONFLICT",
  413: "VALIDATION",
  429: "RATE_LIMITED",
  503: "SHUTTING_DOWN",
};

/**
 * The HTTP status of a `FlotillaError` thrown by {@link FleetClient}, if it came from a response.
 *
 * @example
 * ```ts
 * try {
 *   await client.heartbeat("idle");
 * } catch (err) {
 *   if (fleetErrorStatus(err) === 401) await client.register({ name: "edge-1", hostname: "edge-1.lan", os_type: "linux" });
 * }
 * ```
 */
export function fleetErrorStatus(err: unknown): number | undefined {
  if (!(err instanceof FlotillaError)) return undefined;
  const d = err.details as { status?: unknown } | undefined;
  return typeof d?.status === "number" ? d.status : undefined;
}

/**
 * Lowercase hex SHA-256 of some bytes, as the fleet protocol's `file_checksums` carry it.
 *
 * @example
 * ```ts
 * sha256Hex(new TextEncoder().encode("abc")); // "ba7816bf8f01cfea…"
 * ```
 */
export function sha256Hex(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * A client for Flotilla's fleet API (the Quarterback-compatible protocol that remote
 * nodes speak): register, poll, heartbeat, report status, upload logs, download task files.
 * Responses are validated; errors are `FlotillaError`s whose `details.status` is the HTTP
 * status, and never contain the API key or registration token.
 *
 * @example
 * ```ts
 * const client = new FleetClient({ baseUrl: "http://127.0.0.1:8080", registrationToken: "s3cret" });
 * await client.register({ name: "edge-1", hostname: "edge-1.lan", os_type: "linux" });
 * const task = await client.pollTask();
 * if (task) {
 *   await client.reportStatus({ taskId: task.task_id, status: "running" });
 *   await client.reportStatus({ taskId: task.task_id, status: "success", message: "done" });
 * }
 * ```
 */
export class FleetClient {
  readonly #baseUrl: string;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;
  #apiKey: string | undefined;
  #registrationToken: string | undefined;
  #nodeId: string | undefined;

  constructor(options: FleetClientOptions) {
    let url: URL;
    try {
      url = new URL(options.baseUrl);
    } catch {
      throw new FlotillaError("VALIDATION", "baseUrl: expected an absolute http(s) URL");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new FlotillaError("VALIDATION", "baseUrl: expected an http or https URL");
    }
    this.#baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.#timeoutMs = options.timeoutMs ?? 30_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
    this.#apiKey = options.apiKey;
    this.#registrationToken = options.registrationToken;
    this.#nodeId = options.nodeId;
  }

  /** The node id, once registered (or given). */
  get nodeId(): string | undefined {
    return this.#nodeId;
  }

  /** Whether the client holds a node API key. */
  get hasApiKey(): boolean {
    return this.#apiKey !== undefined;
  }

  /** The base URL the client talks to. */
  get baseUrl(): string {
    return this.#baseUrl;
  }

  /** Safe to log: never includes secrets. */
  toJSON(): { baseUrl: string; nodeId?: string } {
    return this.#nodeId === undefined
      ? { baseUrl: this.#baseUrl }
      : { baseUrl: this.#baseUrl, nodeId: this.#nodeId };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `FleetClient ${JSON.stringify(this.toJSON())}`;
  }

  /**
   * Registers this node (`POST /register`) and keeps the issued id and key for later calls.
   * Registering again under the same name issues a fresh key for the same node.
   *
   * @example
   * ```ts
   * const reg = await client.register({ name: "edge-1", hostname: "edge-1.lan", os_type: "linux" });
   * console.log(client.nodeId === reg.id); // true: later calls use this id and key
   * ```
   */
  async register(input: RegisterInput, options: RequestOptions = {}): Promise<Registration> {
    if (!this.#registrationToken) {
      throw new FlotillaError("VALIDATION", "registrationToken: required to register");
    }
    const reg = await this.#request(
      "POST",
      "/register",
      { "X-Registration-Token": this.#registrationToken },
      input,
      RegistrationSchema,
      options,
    );
    this.#apiKey = reg.api_key;
    this.#nodeId = reg.id;
    return reg;
  }

  /**
   * Asks for work for one free slot (`GET /tasks/pending`): an assignment or `null`.
   *
   * @example
   * ```ts
   * const task = await client.pollTask();
   * if (task) console.log(task.task_id, task.files);
   * ```
   */
  async pollTask(options: RequestOptions = {}): Promise<TaskAssignment | null> {
    return this.#request(
      "GET",
      "/tasks/pending",
      this.#nodeAuth(),
      undefined,
      PollResponseSchema,
      options,
    );
  }

  /**
   * Sends a heartbeat; `busy` with `currentTaskId` renews that task's lease.
   *
   * @example
   * ```ts
   * await client.heartbeat("busy", assignment.task_id); // keeps the lease of the running task
   * await client.heartbeat("idle");
   * ```
   */
  async heartbeat(
    status: NodeStatus,
    currentTaskId: string | null = null,
    options: RequestOptions = {},
  ): Promise<Record<string, unknown>> {
    if (!this.#nodeId) throw new FlotillaError("VALIDATION", "nodeId: register first");
    return this.#request(
      "POST",
      "/nodes/heartbeat",
      this.#nodeAuth(),
      { node_id: this.#nodeId, status, current_task_id: currentTaskId },
      undefined,
      options,
    );
  }

  /**
   * Reports a task's status (`POST /status`); answers the task as the server sees it.
   *
   * @example
   * ```ts
   * await client.reportStatus({ taskId: assignment.task_id, status: "running" });
   * await client.reportStatus({ taskId: assignment.task_id, status: "success", message: "done" });
   * ```
   */
  async reportStatus(
    update: StatusUpdate,
    options: RequestOptions = {},
  ): Promise<Record<string, unknown>> {
    const body: Record<string, unknown> = {
      task_id: update.taskId,
      status: update.status,
      timestamp: new Date().toISOString(),
    };
    if (update.message !== undefined) body.message = update.message;
    if (update.progress !== undefined) body.progress = update.progress;
    if (update.sessionId !== undefined) body.crush_session_id = update.sessionId;
    return this.#request("POST", "/status", this.#nodeAuth(), body, undefined, options);
  }

  /**
   * Uploads a task's session log (`POST /logs`); send it before the final status.
   *
   * @example
   * ```ts
   * await client.uploadLogs(assignment.task_id, { title: "run", messages: [] });
   * ```
   */
  async uploadLogs(
    taskId: string,
    session: SessionLog,
    options: RequestOptions = {},
  ): Promise<Record<string, unknown>> {
    return this.#request(
      "POST",
      "/logs",
      this.#nodeAuth(),
      { task_id: taskId, session },
      undefined,
      options,
    );
  }

  /**
   * Downloads one of a task's files from the task's `orchestrator_url` and verifies its
   * SHA-256 when `expectedSha256` is given (a mismatch throws `VALIDATION`). The name is
   * reduced to its basename and percent-encoded, as the protocol requires.
   *
   * @example
   * ```ts
   * for (const [i, name] of (assignment.files ?? []).entries()) {
   *   const bytes = await client.downloadFile(assignment, name, assignment.file_checksums?.[i] ?? undefined);
   *   await writeFile(join(workDir, basename(name)), bytes);
   * }
   * ```
   */
  async downloadFile(
    assignment: Pick<TaskAssignment, "orchestrator_url">,
    name: string,
    expectedSha256?: string,
    options: RequestOptions = {},
  ): Promise<Uint8Array> {
    const base = basename(name);
    if (!base) throw new FlotillaError("VALIDATION", `file name "${name}" has no basename`);
    const root = assignment.orchestrator_url.replace(/\/+$/, "");
    const res = await this.#send(
      "GET",
      `${root}/files/${encodeURIComponent(base)}`,
      `/files/${base}`,
      this.#nodeAuth(),
      undefined,
      options,
    );
    const bytes = new Uint8Array(await res.arrayBuffer());
    if (expectedSha256 !== undefined && sha256Hex(bytes) !== expectedSha256.toLowerCase()) {
      throw new FlotillaError("VALIDATION", `checksum mismatch for file "${base}"`, {
        details: { file: base },
      });
    }
    return bytes;
  }

  #nodeAuth(): Record<string, string> {
    if (!this.#apiKey) throw new FlotillaError("UNAUTHORIZED", "apiKey: register first");
    return { "X-API-Key": this.#apiKey };
  }

  async #request<T>(
    method: string,
    path: string,
    headers: Record<string, string>,
    body: unknown,
    schema: z.ZodType<T> | undefined,
    options: RequestOptions,
  ): Promise<T> {
    const res = await this.#send(method, this.#baseUrl + path, path, headers, body, options);
    const text = await res.text();
    let json: unknown;
    try {
      json = text === "" ? undefined : JSON.parse(text);
    } catch {
      throw new FlotillaError("WORKER_ERROR", `${method} ${path}: response is not JSON`, {
        details: { status: res.status },
      });
    }
    if (!schema) return (json ?? {}) as T;
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const where = issue?.path.length ? issue.path.join(".") : "body";
      throw new FlotillaError(
        "WORKER_ERROR",
        `${method} ${path}: unexpected response (${where}: ${issue?.message ?? "invalid"})`,
        { details: { status: res.status } },
      );
    }
    return parsed.data;
  }

  async #send(
    method: string,
    url: string,
    label: string,
    headers: Record<string, string>,
    body: unknown,
    options: RequestOptions,
  ): Promise<Response> {
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    const init: RequestInit = {
      method,
      headers: {
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      signal,
      redirect: "manual",
    };
    if (body !== undefined) init.body = JSON.stringify(body);
    let res: Response;
    try {
      res = await this.#fetch(url, init);
    } catch (err) {
      if (options.signal?.aborted) {
        throw new FlotillaError("CANCELLED", `${method} ${label}: aborted`);
      }
      if (timeout.aborted) {
        throw new FlotillaError(
          "TIMEOUT",
          `${method} ${label}: no answer in ${this.#timeoutMs} ms`,
          {
            retryable: true,
          },
        );
      }
      const reason = err instanceof Error ? (err.cause as Error | undefined)?.message : undefined;
      throw new FlotillaError(
        "WORKER_ERROR",
        `${method} ${label}: request failed${reason ? ` (${reason})` : ""}`,
        { retryable: true },
      );
    }
    if (res.status < 200 || res.status > 299) {
      let detail = res.statusText;
      try {
        const parsed = ErrorBodySchema.safeParse(JSON.parse(await res.text()));
        if (parsed.success) detail = parsed.data.detail;
      } catch {
        // not a JSON error body: keep the status text
      }
      throw new FlotillaError(
        HTTP_CODES[res.status] ?? "WORKER_ERROR",
        `${method} ${label}: ${res.status} ${detail}`,
        {
          details: { status: res.status, detail },
          retryable: res.status >= 500 || res.status === 429,
        },
      );
    }
    return res;
  }
}

function basename(name: string): string {
  const parts = name.split(/[\\/]/);
  return parts[parts.length - 1] ?? "";
}
