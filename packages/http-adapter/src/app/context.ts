import {
  OpenAPIRegistry,
  OpenApiGeneratorV31,
  type RouteConfig,
} from "@asteasolutions/zod-to-openapi";
import {
  BUILTIN_TASK_TYPES,
  type Clock,
  type EngineApi,
  FlotillaError,
  type Logger,
  silentLogger,
  systemClock,
  type TaskResult,
  type TaskSpec,
  type WorkerInfo,
} from "@flotilla/core";
import type { Context, Hono } from "hono";
import type { ZodType } from "zod";
import { hashApiKey, KeyVerifier, keyFromHeaders } from "../auth.js";
import { errorResponse, HttpError } from "../errors.js";
import { parseInput, readJson } from "../http/body.js";
import { ClientResolver } from "../http/client.js";
import { headersOf } from "../http/request.js";
import { AuthThrottle } from "../http/throttle.js";
import { ErrorResponseSchema, type TaskSubmitInput } from "../schemas.js";
import { TaskStreams } from "../sse.js";
import { jsonSafe, priorityValue, taskMetrics } from "../views.js";
import { type FlotillaAppOptions, VERA_TASK_TYPES } from "./options.js";

/** One route: its OpenAPI description and its handler (authenticated unless `auth: false`). */
export interface RouteDef {
  method: "get" | "post" | "put" | "delete";
  path: string;
  summary: string;
  tags: string[];
  auth?: boolean;
  body?: ZodType;
  query?: ZodType;
  params?: ZodType;
  response: ZodType;
  /** Media type of the 200 answer. @default "application/json" */
  responseType?: string;
  extraResponses?: Record<number, string>;
  handler: (c: Context) => Promise<Response> | Response;
}

const errResp = (description: string) => ({
  description,
  content: { "application/json": { schema: ErrorResponseSchema } },
});

/**
 * What every route family of the app shares: the engine, the options, the clock, the
 * logger, authentication, the OpenAPI registry, reading and validating input, and the
 * task-creating helpers. It keeps no copy of engine state (only a cache of which task types
 * have a worker, dropped whenever a worker comes or goes). @internal
 */
export class AppContext {
  readonly o: EngineApi;
  readonly options: FlotillaAppOptions;
  readonly prefix: string;
  readonly logger: Logger;
  readonly clock: Clock;
  readonly version: string;
  readonly verifier: KeyVerifier;
  readonly registry = new OpenAPIRegistry();
  /** `method path` of every route the app serves itself (mounted apps do not shadow them). */
  readonly registered = new Set<string>();
  shuttingDown = false;
  readonly #app: Hono;
  readonly #executeTimeoutMs: number;
  /** Registers the stored API registrations again (set by the worker routes). */
  restoreWorkers: () => Promise<Array<{ worker_id: string; ok: boolean; error?: string }>> =
    async () => [];
  /** Reads client addresses behind trusted proxies. */
  readonly client: ClientResolver;
  /** Slows down repeated wrong keys per source (undefined when turned off). */
  readonly throttle: AuthThrottle | undefined;
  /** The task event streams (SSE), with their bounded buffer of recent progress. */
  readonly sse: TaskStreams;
  #types: { allowed: string[]; claimed: Set<string>; wildcard: boolean } | undefined;
  #openapi: Record<string, unknown> | undefined;

  constructor(app: Hono, options: FlotillaAppOptions) {
    this.#app = app;
    this.o = options.orchestrator;
    this.options = options;
    this.prefix = (options.prefix ?? "/api/v2/orchestrator").replace(/\/+$/, "");
    this.logger = options.logger ?? silentLogger;
    this.clock = options.clock ?? systemClock;
    this.version = options.version ?? "0.1.0";
    this.verifier = new KeyVerifier(options.auth, this.logger);
    this.#executeTimeoutMs = options.executeTimeoutMs ?? 300_000;
    this.sse = new TaskStreams(
      this.o,
      options.sse ?? {},
      this.clock,
      this.logger,
      options.sharedEvents,
    );
    this.client = new ClientResolver({ trustProxy: options.trustProxy ?? [] });
    this.throttle =
      options.authThrottle === false
        ? undefined
        : options.authThrottle instanceof AuthThrottle
          ? options.authThrottle
          : new AuthThrottle(options.authThrottle ?? {}, {
              clock: this.clock,
              logger: this.logger,
            });
    this.registry.registerComponent("securitySchemes", "ApiKey", {
      type: "apiKey",
      in: "header",
      name: "X-API-Key",
    });
    this.registry.registerComponent("securitySchemes", "Bearer", {
      type: "http",
      scheme: "bearer",
    });
    this.registry.registerComponent("securitySchemes", "RegistrationToken", {
      type: "apiKey",
      in: "header",
      name: "X-Registration-Token",
    });
  }

  // ---- engine reads ------------------------------------------------------------------

  workers(): WorkerInfo[] {
    return this.o.listWorkers();
  }

  get engineRunning(): boolean {
    return this.o.state === "running" || this.o.state === "idle";
  }

  /** Task types of registered workers, cached until a worker comes or goes. */
  #typeInfo() {
    if (!this.#types) {
      const claimed = new Set<string>();
      let wildcard = false;
      for (const w of this.workers()) {
        for (const t of w.taskTypes) {
          if (t === "*") wildcard = true;
          else claimed.add(t);
        }
      }
      const all = new Set<string>([
        ...BUILTIN_TASK_TYPES,
        ...VERA_TASK_TYPES,
        ...(this.options.taskTypes ?? []),
        ...claimed,
      ]);
      this.#types = { allowed: [...all].sort(), claimed, wildcard };
    }
    return this.#types;
  }

  /** A worker came or went: the accepted task types are read again. */
  workersChanged(): void {
    this.#types = undefined;
  }

  allowedTypes(): string[] {
    return this.#typeInfo().allowed;
  }

  #remoteWorkerFor(type: string): boolean {
    return this.workers().some(
      (w) => !w.local && (w.taskTypes.includes(type) || w.taskTypes.includes("*")),
    );
  }

  anyWorkerFor(type: string): boolean {
    const t = this.#typeInfo();
    return t.wildcard || t.claimed.has(type);
  }

  // ---- input -------------------------------------------------------------------------

  /** The request's JSON body, validated (`VALIDATION` naming the field). */
  async body<T>(c: Context, schema: ZodType<T>): Promise<T> {
    return parseInput(schema, await readJson(c.req.raw), "body");
  }

  /** The request's query, validated. */
  query<T>(c: Context, schema: ZodType<T>): T {
    return parseInput(schema, c.req.query(), "query");
  }

  /** Refuses new work while shutting down. */
  notShuttingDown(): void {
    if (this.shuttingDown) throw new FlotillaError("SHUTTING_DOWN", "server is shutting down");
  }

  /**
   * Admits a new task of `type`: refused while shutting down, and with 503 + Retry-After
   * under red host pressure unless a remote worker (a fleet node, a push-mode remote) can
   * run it, since only local dispatch is held under pressure.
   */
  admit(type: string): void {
    this.notShuttingDown();
    const adm = this.options.resources?.admission;
    if (adm?.level === "red" && !this.#remoteWorkerFor(type)) {
      const secs = Math.max(1, Math.round(adm.retryAfterSeconds()));
      throw new HttpError(503, "OVERLOADED", `host under pressure (red): retry in ${secs} s`, {
        "retry-after": String(secs),
      });
    }
  }

  checkType(raw: string): string {
    const type = raw.trim().toLowerCase();
    const allowed = this.allowedTypes();
    if (!allowed.includes(type)) {
      throw new FlotillaError(
        "VALIDATION",
        `body.type: unknown task type "${raw.slice(0, 64)}": expected one of ${allowed.join(", ")}`,
        { details: { field: "type", allowed } },
      );
    }
    return type;
  }

  /** The request's `priority` and `timeout_seconds`, as every task-creating route reads them. */
  withPriorityAndTimeout(
    spec: TaskSpec,
    input: { priority?: string | number | undefined; timeout_seconds?: number | undefined },
  ): TaskSpec {
    const p = priorityValue(input.priority);
    if (p !== undefined) spec.priority = p;
    if (input.timeout_seconds) spec.timeoutMs = Math.ceil(input.timeout_seconds * 1000);
    return spec;
  }

  toSpec(input: TaskSubmitInput): TaskSpec {
    const spec: TaskSpec = { type: this.checkType(input.type) };
    if (input.payload !== undefined) spec.payload = input.payload;
    this.withPriorityAndTimeout(spec, input);
    if (input.max_retries !== undefined) spec.retry = { maxAttempts: input.max_retries + 1 };
    if (input.depends_on) spec.dependsOn = input.depends_on;
    if (input.metadata) spec.metadata = input.metadata;
    if (input.task_id) spec.id = input.task_id;
    if (input.idempotency_key) spec.idempotencyKey = input.idempotency_key;
    if (input.approval) spec.approval = input.approval;
    if (input.tenant) spec.tenant = input.tenant;
    if (input.rate_limit_key) spec.rateLimitKey = input.rate_limit_key;
    if (input.estimate) {
      const e = input.estimate;
      const estimate: NonNullable<TaskSpec["estimate"]> = {};
      if (e.input_tokens !== undefined) estimate.inputTokens = e.input_tokens;
      if (e.output_tokens !== undefined) estimate.outputTokens = e.output_tokens;
      if (e.tokens !== undefined) estimate.tokens = e.tokens;
      if (e.cost_usd !== undefined) estimate.costUsd = e.cost_usd;
      spec.estimate = estimate;
    }
    return spec;
  }

  requireWorkerFor(type: string): void {
    if (!this.anyWorkerFor(type)) {
      const served = [...this.#typeInfo().claimed].sort();
      throw new FlotillaError(
        "NO_ELIGIBLE_WORKER",
        served.length === 0
          ? `no registered worker runs "${type}" tasks (no worker is registered)`
          : `no registered worker runs "${type}" tasks (types with a worker: ${served.join(", ")})`,
        { details: { type, served } },
      );
    }
  }

  // ---- running tasks -----------------------------------------------------------------

  /** Submits and waits for the outcome, bounded by the task timeout (no polling). */
  async submitAndWait(
    c: Context,
    spec: TaskSpec,
  ): Promise<{ id: string; result: TaskResult } | Response> {
    this.admit(spec.type);
    const handle = await this.submitAs(c, spec);
    const attempts = spec.retry?.maxAttempts ?? 1;
    const bound = (spec.timeoutMs ?? this.#executeTimeoutMs) * attempts + 5_000;
    let timer: ReturnType<Clock["setTimeout"]> | undefined;
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = this.clock.setTimeout(() => resolve("timeout"), bound);
    });
    const aborted = new Promise<"aborted">((resolve) => {
      const s = c.req.raw.signal;
      if (s?.aborted) resolve("aborted");
      s?.addEventListener("abort", () => resolve("aborted"), { once: true });
    });
    try {
      const r = await Promise.race([handle.result(), timedOut, aborted]);
      if (r === "timeout" || r === "aborted") {
        const msg = `task ${handle.id} still running after ${bound} ms; poll ${this.prefix}/tasks/${encodeURIComponent(handle.id)}`;
        return c.json(
          { error: { code: "TIMEOUT", message: msg }, detail: msg, task_id: handle.id },
          504,
        );
      }
      return { id: handle.id, result: r };
    } finally {
      if (timer !== undefined) this.clock.clearTimeout(timer);
    }
  }

  /** Submits `spec` as the request's API key (`apiKey` budgets count it; see {@link AppContext.actor}). */
  submitAs(c: Context, spec: TaskSpec) {
    const actor = this.actor(c);
    if (actor !== "open") spec.apiKey = actor;
    return this.o.submit(spec);
  }

  /**
   * Runs `spec`, waits, and answers Vera's `{task_id, success, <field>, error, metrics}`:
   * `<field>` is `value(output)` when the task succeeded, else null.
   */
  async runAndAnswer(
    c: Context,
    spec: TaskSpec,
    field: "response" | "result",
    value: (output: unknown) => unknown,
  ): Promise<Response> {
    const r = await this.submitAndWait(c, spec);
    if (r instanceof Response) return r;
    const { body, refused } = this.callAnswer(r.id, r.result, field, value);
    // A call refused before any worker ran it (a quota or rate limit said no) is the error
    // table's status (429), not a 200 with `success: false`: a client's retry logic sees it.
    return c.json(body, refused ? 429 : 200);
  }

  /** The answer body of a finished call (`/llm/request`, `/tools/execute`), and whether a quota or rate limit refused it. */
  callAnswer(
    id: string,
    result: TaskResult,
    field: "response" | "result",
    value: (output: unknown) => unknown,
  ): { body: Record<string, unknown>; refused: boolean } {
    const ok = result.status === "succeeded";
    const code = result.error?.code;
    return {
      refused: !ok && (code === "QUOTA_EXCEEDED" || code === "RATE_LIMITED"),
      body: jsonSafe({
        task_id: id,
        success: ok,
        [field]: ok ? value(result.output) : null,
        error: ok ? null : (result.error?.message ?? result.status),
        error_code: code ?? null,
        metrics: { ...taskMetrics(undefined, result), worker_id: result.workerId ?? null },
      }) as Record<string, unknown>,
    };
  }

  // ---- routes ------------------------------------------------------------------------

  /** The client's address (the connection's peer, or behind a trusted proxy the forwarded one). */
  sourceOf(c: Context): string {
    return this.client.source(c.req.raw, c.env);
  }

  /**
   * A 401 answer when the request carries no valid key (and the server is not open); a
   * wrong key is answered after the throttle's delay, or 429 once its source is locked.
   */
  async denyWithoutKey(c: Context): Promise<Response | undefined> {
    if (this.verifier.open) return undefined;
    const key = keyFromHeaders(headersOf(c));
    const what = `${c.req.method} ${c.req.path}`;
    if (await this.verifier.check(key, what)) return undefined;
    if (key && this.throttle) {
      const verdict = this.throttle.fail(this.sourceOf(c), what, key);
      if (verdict.retryAfterMs !== undefined) {
        const secs = Math.ceil(verdict.retryAfterMs / 1000);
        return errorResponse(
          new HttpError(
            429,
            "TOO_MANY_FAILURES",
            `too many failed authentications from this address: retry in ${secs} s`,
            { "retry-after": String(secs) },
          ),
        );
      }
      await this.throttle.delay(verdict.delayMs);
    }
    return errorResponse(
      new FlotillaError(
        "UNAUTHORIZED",
        key ? "invalid API key" : "missing API key: send X-API-Key or Authorization: Bearer",
      ),
      { "www-authenticate": 'Bearer realm="flotilla"' },
    );
  }

  /**
   * Who makes a request, for records such as approvals: `key:` and the first 12 hex digits
   * of the SHA-256 of its API key (the start of the hash an operator configured), or
   * `open` when the server runs without authentication.
   */
  actor(c: Context): string {
    const key = keyFromHeaders(headersOf(c));
    if (!key) return "open";
    return `key:${hashApiKey(key).slice("sha256:".length, "sha256:".length + 12)}`;
  }

  /** Serves a route and describes it in the OpenAPI document. */
  define(d: RouteDef): void {
    const responses: RouteConfig["responses"] = {
      200: {
        description: "OK",
        content: { [d.responseType ?? "application/json"]: { schema: d.response } },
      },
    };
    if (d.body || d.query || d.params) responses[400] = errResp("Invalid input (names the field)");
    if (d.auth !== false) responses[401] = errResp("Missing or invalid API key");
    if (d.body) responses[413] = errResp("Body too large");
    for (const [code, text] of Object.entries(d.extraResponses ?? {})) {
      responses[Number(code)] = errResp(text);
    }
    const request: RouteConfig["request"] = {};
    if (d.body)
      request.body = { content: { "application/json": { schema: d.body } }, required: true };
    if (d.query) request.query = d.query as never;
    if (d.params) request.params = d.params as never;
    const path = d.path.replace(/:([A-Za-z_]+)/g, "{$1}");
    this.registered.add(`${d.method} ${path}`);
    this.registry.registerPath({
      method: d.method,
      path,
      summary: d.summary,
      tags: d.tags,
      ...(d.auth === false ? {} : { security: [{ ApiKey: [] }, { Bearer: [] }] }),
      request,
      responses,
    });
    this.#app.on(d.method.toUpperCase(), d.path, async (c: Context) => {
      if (d.auth !== false) {
        const denied = await this.denyWithoutKey(c);
        if (denied) return denied;
      }
      return d.handler(c);
    });
  }

  /** The OpenAPI 3.1 document (built once, on first use). */
  openapi(): Record<string, unknown> {
    this.#openapi ??= new OpenApiGeneratorV31(this.registry.definitions).generateDocument({
      openapi: "3.1.0",
      info: {
        title: "Flotilla orchestrator API",
        version: this.version,
        description:
          "Vera-compatible orchestration routes, fleet routes (when mounted), operations endpoints, and WebSockets " +
          `(${this.prefix}/ws/status, ${this.prefix}/ws/events, ${this.prefix}/ws/tasks/{id}).`,
      },
      servers: [{ url: "/" }],
    }) as unknown as Record<string, unknown>;
    return this.#openapi;
  }
}
