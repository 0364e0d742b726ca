import { randomUUID } from "node:crypto";
import {
  type ExecutionContext,
  FlotillaError,
  type HealthReport,
  RetryAfterError,
  UnrecoverableError,
  type Usage,
  type Worker,
  type WorkerResult,
  type WorkerTask,
} from "@flotilla/core";

/** Options of {@link RemoteWorker}. */
export interface RemoteWorkerOptions {
  /** The remote's API base, e.g. `http://10.0.0.7:8000/api/v2/orchestrator`. */
  url?: string;
  /** Alias of `url` (the Vera registration field). */
  remoteUrl?: string;
  /** Sent as `Authorization: Bearer <token>`. Never logged or serialised. */
  authToken?: string;
  /** @default `remote-<8 hex>` */
  id?: string;
  /** @default id */
  name?: string;
  /** Task types it takes. @default ["remote_compute"] */
  taskTypes?: string[];
  /**
   * Capabilities it offers, matched by `requirements.capabilities`. @default []
   */
  capabilities?: string[];
  /**
   * Labels matched by `requirements.labels` and `target.tags`. @default {}
   */
  labels?: Record<string, string>;
  /** Tasks sent at once. @default 4 */
  maxConcurrency?: number;
  /** Wait for an answer when the task has no timeout. @default 300000 */
  requestTimeoutMs?: number;
  /** @default globalThis.fetch */
  fetch?: typeof fetch;
}

/** Seconds the remote's timeout is given beyond the task's own (see `execute`). */
const REMOTE_TIMEOUT_GRACE_S = 5;

/** The id an attempt gets on the remote: the task's id and attempt (unique per attempt). */
function remoteTaskId(task: WorkerTask): string {
  return `${task.id.slice(0, 240)}-a${task.attempt}`;
}

const NUMBER = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);

/**
 * A push-mode remote worker: runs each task on another Flotilla (or Vera-compatible)
 * server by `POST <url>/tasks/execute` with a bearer token, and answers the remote's result.
 * Each attempt runs on the remote as task `<task id>-a<attempt>`; when the attempt ends
 * here first (cancelled, timed out, orchestrator stopping), it is cancelled there too
 * (`POST <url>/tasks/<id>/cancel`). A task's timeout is sent 5 s longer, so the remote
 * stops the task by itself only when that cancel never arrives.
 * Health is `GET <url>/status` with the token (free; a refused token is unhealthy), or
 * `GET <url>/health` without one. A 400-class answer fails the task at once, a 429/503
 * waits for `Retry-After`, a 5xx or a network failure is retryable.
 *
 * @example
 * ```ts
 * await orchestrator.register(
 *   new RemoteWorker({ url: "http://10.0.0.7:8000/api/v2/orchestrator", authToken: process.env.REMOTE_KEY }),
 * );
 * await orchestrator.submit({ type: "remote_compute", payload: { job: "render", frames: 120 } });
 * ```
 */
export class RemoteWorker implements Worker {
  readonly id: string;
  readonly kind = "remote-http";
  readonly name: string;
  readonly taskTypes: readonly string[];
  readonly capabilities: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly maxConcurrency: number;
  readonly local = false;
  readonly #url: string;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;
  readonly #fetch: typeof fetch;

  constructor(options: RemoteWorkerOptions) {
    const raw = options?.url ?? options?.remoteUrl;
    let parsed: URL;
    try {
      parsed = new URL(String(raw));
    } catch {
      throw new FlotillaError("VALIDATION", "url: expected an absolute http(s) URL of the remote");
    }
    if (parsed.protocol !== "http:" && parsed.protocol !== "https:") {
      throw new FlotillaError("VALIDATION", "url: expected an http or https URL");
    }
    const max = options.maxConcurrency ?? 4;
    if (!Number.isInteger(max) || max < 1) {
      throw new FlotillaError("VALIDATION", "maxConcurrency: expected an integer >= 1");
    }
    this.#url = String(raw).replace(/\/+$/, "");
    this.#token = options.authToken || undefined;
    this.id = options.id ?? `remote-${randomUUID().slice(0, 8)}`;
    this.name = options.name ?? this.id;
    this.taskTypes = options.taskTypes ?? ["remote_compute"];
    this.capabilities = options.capabilities ?? [];
    this.labels = options.labels ?? {};
    this.maxConcurrency = max;
    this.#timeoutMs = options.requestTimeoutMs ?? 300_000;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** Safe to log: never includes the token. */
  toJSON(): Record<string, unknown> {
    return { id: this.id, kind: this.kind, url: this.#url, taskTypes: this.taskTypes };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): string {
    return `RemoteWorker ${JSON.stringify(this.toJSON())}`;
  }

  #headers(json: boolean): Record<string, string> {
    const h: Record<string, string> = { Accept: "application/json" };
    if (json) h["Content-Type"] = "application/json";
    if (this.#token) h.Authorization = `Bearer ${this.#token}`;
    return h;
  }

  async execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult> {
    const body: Record<string, unknown> = {
      type: task.type,
      payload:
        task.payload && typeof task.payload === "object" && !Array.isArray(task.payload)
          ? task.payload
          : { value: task.payload ?? null },
      priority: task.priority,
      metadata: { ...task.metadata, origin_task_id: task.id, origin_attempt: task.attempt },
      // Named here, so this attempt can be cancelled on the remote when it ends here first.
      task_id: remoteTaskId(task),
    };
    // The timeout here governs (it cancels the remote task); the remote's own, a little
    // longer, only stops the task there if that cancel never arrives.
    if (task.timeoutMs) {
      body.timeout_seconds = Math.ceil(task.timeoutMs / 1000) + REMOTE_TIMEOUT_GRACE_S;
    }
    const waitMs = task.timeoutMs ? task.timeoutMs + 5_000 : this.#timeoutMs;
    const signal = AbortSignal.any([ctx.signal, AbortSignal.timeout(waitMs)]);
    let res: Response;
    try {
      res = await this.#fetch(`${this.#url}/tasks/execute`, {
        method: "POST",
        headers: this.#headers(true),
        body: JSON.stringify(body),
        signal,
        redirect: "manual",
      });
    } catch (err) {
      if (signal.aborted) await this.#cancelRemote(remoteTaskId(task), ctx);
      if (ctx.signal.aborted) throw ctx.signal.reason ?? new FlotillaError("CANCELLED", "aborted");
      if (signal.aborted) {
        throw new FlotillaError("TIMEOUT", `remote ${this.id}: no answer in ${waitMs} ms`, {
          retryable: true,
        });
      }
      const cause = (err as Error)?.cause as Error | undefined;
      throw new FlotillaError(
        "WORKER_ERROR",
        `remote ${this.id}: request failed${cause?.message ? ` (${cause.message})` : ""}`,
        { retryable: true },
      );
    }
    const text = await res.text();
    let json: Record<string, unknown> | undefined;
    try {
      json = text ? (JSON.parse(text) as Record<string, unknown>) : undefined;
    } catch {
      json = undefined;
    }
    const errorField = json?.error as { message?: unknown } | string | null | undefined;
    const nested =
      errorField && typeof errorField === "object" && typeof errorField.message === "string"
        ? errorField.message
        : undefined;
    const detail = (typeof json?.detail === "string" && json.detail) || nested || res.statusText;
    if (res.status === 429 || res.status === 503) {
      const after = Number(res.headers.get("retry-after"));
      throw new RetryAfterError(
        Number.isFinite(after) && after > 0 ? after * 1000 : 1_000,
        `remote ${this.id}: ${res.status} ${detail}`,
      );
    }
    if (res.status >= 400 && res.status < 500) {
      throw new UnrecoverableError(`remote ${this.id}: ${res.status} ${detail}`);
    }
    // The remote gave up waiting but the task still runs there: end it, this attempt is over.
    if (res.status === 504) await this.#cancelRemote(remoteTaskId(task), ctx);
    if (res.status < 200 || res.status > 299 || !json) {
      throw new FlotillaError(
        res.status === 504 ? "TIMEOUT" : "WORKER_ERROR",
        `remote ${this.id}: ${res.status} ${json ? detail : "answer is not JSON"}`,
        { retryable: true },
      );
    }
    if (json.success !== true) {
      const message = typeof json.error === "string" ? json.error : detail || "remote task failed";
      throw new UnrecoverableError(`remote ${this.id}: ${message}`);
    }
    const result: WorkerResult = { output: json.data ?? null, raw: json };
    const metrics = (json.metrics ?? {}) as Record<string, unknown>;
    const usage: Usage = {};
    const inT = NUMBER(metrics.input_tokens ?? metrics.tokens_in);
    const outT = NUMBER(metrics.output_tokens ?? metrics.tokens_out);
    const total = NUMBER(metrics.total_tokens ?? metrics.tokens);
    const cost = NUMBER(metrics.cost_usd ?? metrics.cost);
    if (inT !== undefined) usage.inputTokens = inT;
    if (outT !== undefined) usage.outputTokens = outT;
    if (total !== undefined) usage.totalTokens = total;
    if (cost !== undefined) usage.costUsd = cost;
    if (Object.keys(usage).length > 0) result.usage = usage;
    return result;
  }

  /**
   * The attempt ended here (cancelled, timed out, or the wait gave up): cancel it on the
   * remote too, so it does not run on unseen. Best effort: a remote that already finished
   * it, or is gone, is logged and ignored.
   */
  async #cancelRemote(remoteId: string, ctx: ExecutionContext): Promise<void> {
    try {
      const res = await this.#fetch(`${this.#url}/tasks/${encodeURIComponent(remoteId)}/cancel`, {
        method: "POST",
        headers: this.#headers(false),
        signal: AbortSignal.timeout(5_000),
        redirect: "manual",
      });
      await res.body?.cancel();
      ctx.logger.debug({ remoteTaskId: remoteId, status: res.status }, "remote task cancelled");
    } catch (err) {
      ctx.logger.warn(
        { remoteTaskId: remoteId, err: String(err) },
        "could not cancel the remote task",
      );
    }
  }

  async healthCheck(signal: AbortSignal): Promise<HealthReport> {
    try {
      // With a token, ask the authenticated `/status`: a wrong or revoked token shows the
      // worker unhealthy before any task is sent, rather than healthy and failing every task.
      const path = this.#token ? "/status" : "/health";
      const res = await this.#fetch(`${this.#url}${path}`, {
        headers: this.#headers(false),
        signal,
        redirect: "manual",
      });
      const json = (await res.json().catch(() => undefined)) as
        | { status?: unknown; is_running?: unknown }
        | undefined;
      if (res.status === 401 || res.status === 403) {
        return { status: "unhealthy", message: `the remote refused the token (${res.status})` };
      }
      if (!res.ok) return { status: "unhealthy", message: `${path} answered ${res.status}` };
      if (json?.status === "healthy" || json?.is_running === true) return { status: "healthy" };
      return {
        status: "degraded",
        message: `remote status: ${String(json?.status ?? (json?.is_running === false ? "stopped" : "unknown"))}`,
      };
    } catch (err) {
      return { status: "unhealthy", message: `unreachable: ${(err as Error)?.message ?? err}` };
    }
  }
}
