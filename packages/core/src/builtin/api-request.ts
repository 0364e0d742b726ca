import { z } from "zod";
import { UnrecoverableError } from "../errors.js";
import { BaseWorker } from "../worker/base.js";
import type { ExecutionContext, HealthReport, WorkerResult, WorkerTask } from "../worker/types.js";
import { formatIssues } from "../worker/validate.js";
import { type HttpPolicy, type HttpResponseData, policyFetch } from "./http.js";

/** Payload of an `api_request` task. */
export const ApiRequestPayloadSchema = z.object({
  url: z.string().min(1).max(8192),
  method: z.string().min(1).max(16).optional(),
  headers: z.record(z.string(), z.string()).optional(),
  /** A string is sent as is; anything else as JSON. */
  body: z.unknown().optional(),
  /** Capped by the worker's `timeoutMs`. */
  timeout_ms: z.number().int().positive().optional(),
  response_type: z.enum(["auto", "json", "text"]).optional(),
  /** Return non-2xx answers as output instead of failing the task. @default false */
  accept_any_status: z.boolean().optional(),
});
export type ApiRequestPayload = z.infer<typeof ApiRequestPayloadSchema>;

/** Options of {@link ApiRequestWorker}. */
export interface ApiRequestWorkerOptions extends HttpPolicy {
  /** @default "api-request" */
  id?: string;
  /** @default 8 */
  maxConcurrency?: number;
}

/**
 * Executes `api_request` tasks: one HTTP call with a timeout, a response-size cap, and an
 * operator allow-list of hosts (deny by default). Output: `{status, ok, url, headers, body, bytes}`.
 * 429 is retried after `Retry-After`; other 4xx fail at once; 5xx and network errors are retryable.
 *
 * @example
 * ```ts
 * await orchestrator.register(new ApiRequestWorker({ allowedHosts: ["api.github.com"] }));
 * await orchestrator.submit({ type: "api_request", payload: { url: "https://api.github.com/zen" } });
 * ```
 */
export class ApiRequestWorker extends BaseWorker {
  readonly kind = "api-request";
  readonly #policy: HttpPolicy;

  constructor(options: ApiRequestWorkerOptions = {}) {
    super(
      {
        id: options.id ?? "api-request",
        taskTypes: ["api_request"],
        maxConcurrency: options.maxConcurrency ?? 8,
        capabilities: ["http"],
      },
      "api-request",
    );
    this.#policy = {
      allowedHosts: [...(options.allowedHosts ?? [])],
      timeoutMs: options.timeoutMs ?? 30_000,
      maxResponseBytes: options.maxResponseBytes ?? 5_242_880,
      maxRedirects: options.maxRedirects ?? 5,
    };
  }

  /** The hosts this worker may call. */
  get allowedHosts(): readonly string[] {
    return this.#policy.allowedHosts ?? [];
  }

  async execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult<HttpResponseData>> {
    const parsed = ApiRequestPayloadSchema.safeParse(task.payload);
    if (!parsed.success) throw new UnrecoverableError(formatIssues(parsed.error, "payload"));
    const p = parsed.data;
    const spec: Parameters<typeof policyFetch>[0] = { url: p.url };
    if (p.method) spec.method = p.method;
    if (p.headers) spec.headers = p.headers;
    if (p.body !== undefined) spec.body = p.body;
    if (p.timeout_ms) spec.timeoutMs = p.timeout_ms;
    if (p.response_type) spec.responseType = p.response_type;
    const out = await policyFetch(spec, this.#policy, ctx.signal, p.accept_any_status ?? false);
    return { output: out, usage: { requests: 1, totalTokens: 0, costUsd: 0 } };
  }

  override async healthCheck(): Promise<HealthReport> {
    return {
      status: "healthy",
      details: { allowedHosts: this.allowedHosts.length },
      ...(this.allowedHosts.length === 0
        ? { message: "no host allowed: every request is refused" }
        : {}),
    };
  }
}
