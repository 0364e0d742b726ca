import {
  callSignal,
  type ExecutionContext,
  estimateInputTokens,
  FlotillaError,
  type HealthReport,
  hasImages,
  type LlmRequest,
  LlmRequestSchema,
  type LlmResponse,
  type PriceBook,
  parseLlmRequest,
  redact,
  type Usage,
  type Worker,
  type WorkerResult,
  type WorkerTask,
} from "@flotilla/core";
import { mapProviderError } from "./errors.js";
import { type ModelInfo, normaliseModels } from "./models.js";
import { type PricesOption, resolvePrices } from "./pricing.js";
import { parseRateLimitHeaders, type RateLimitInfo, type RateLimitListener } from "./rate-limit.js";

/** Options every LLM worker takes. */
export interface LlmWorkerOptions {
  /** Unique worker id. @default `<kind>-<n>` */
  id?: string;
  /** Name matched by target globs. @default id */
  name?: string;
  /** API key. Never logged, never serialised. */
  apiKey?: string;
  /** Endpoint base URL. @default the provider's public endpoint */
  baseURL?: string;
  /** Model used when a payload names none. */
  defaultModel?: string;
  /** Models this worker serves (names or `{ name, capabilities }`); they become capabilities. @default [defaultModel] */
  models?: (string | ModelInfo)[];
  /** Tasks run at once. @default 4 */
  maxConcurrency?: number;
  /** Per-request timeout in milliseconds. @default 600000 */
  timeoutMs?: number;
  /** Per-model prices for this worker's provider (`{ "my-model": { input, output } }`, USD per million tokens) that extend core's defaults and `LLM_PRICES`, or a whole `PriceBook`. */
  prices?: PricesOption;
  /** Labels for routing (`requirements.labels`, `target.tags`). */
  labels?: Record<string, string>;
  /** Task types claimed. @default ["llm_request"] */
  taskTypes?: string[];
  /** Called with the provider's rate-limit headers after every response that has some (429s included). */
  onRateLimit?: RateLimitListener;
  /** Extra HTTP headers sent with every request. */
  headers?: Record<string, string>;
  /** Whether the endpoint runs on this host (admission control applies). @default false for APIs */
  local?: boolean;
}

/** What a provider call returns to the shared code. */
export interface ProviderCall {
  response: Omit<LlmResponse, "usage"> & {
    usage: { inputTokens?: number; outputTokens?: number };
  };
}

/** What a provider implementation gets for one call. */
export interface CallContext {
  model: string;
  signal: AbortSignal;
  ctx: ExecutionContext;
  /** Report response headers (feeds `onRateLimit`). */
  headers(headers: Headers | undefined, status: number): void;
  /** Report usage known mid-stream, so a cut or cancelled stream still accounts for what it spent. */
  usage(usage: { inputTokens?: number; outputTokens?: number }): void;
}

let counter = 0;

/**
 * The shared part of every LLM worker: payload validation, usage and cost, rate-limit
 * headers, error mapping, secret hygiene, capabilities and cost estimates.
 *
 * @example
 * ```ts
 * // a provider of your own: implement `call` and `listModels`, the base does the rest
 * class EchoLlmWorker extends LlmWorker {
 *   constructor(options: LlmWorkerOptions = {}) {
 *     super("echo-llm", { ...options, defaultModel: "echo-1", baseURL: "http://127.0.0.1:9" }, []);
 *   }
 *   protected async call(req: LlmRequest, call: CallContext): Promise<ProviderCall> {
 *     const text = contentText(req.messages.at(-1)?.content ?? "");
 *     const usage = { inputTokens: estimateInputTokens(req), outputTokens: 1 };
 *     return { response: { text, model: call.model, finishReason: "stop", toolCalls: [], raw: null, usage } };
 *   }
 *   protected async listModels(): Promise<string[]> {
 *     return ["echo-1"];
 *   }
 * }
 * ```
 */
export abstract class LlmWorker implements Worker {
  readonly id: string;
  readonly kind: string;
  readonly name: string;
  readonly taskTypes: readonly string[];
  readonly capabilities: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly maxConcurrency: number;
  readonly local: boolean;
  readonly defaultModel: string;
  readonly models: readonly Required<ModelInfo>[];
  readonly baseURL: string;
  readonly timeoutMs: number;
  /** The last rate-limit information a response carried. */
  lastRateLimit: RateLimitInfo | undefined;
  protected readonly prices: PriceBook;
  readonly #secrets: string[];
  readonly #listeners = new Set<RateLimitListener>();

  protected constructor(
    kind: string,
    options: LlmWorkerOptions & { defaultModel: string; baseURL: string },
    secrets: string[],
  ) {
    this.kind = kind;
    this.id = options.id ?? `${kind}-${++counter}`;
    this.name = options.name ?? this.id;
    this.taskTypes = options.taskTypes ?? ["llm_request"];
    this.maxConcurrency = options.maxConcurrency ?? 4;
    if (!Number.isInteger(this.maxConcurrency) || this.maxConcurrency < 1) {
      throw new FlotillaError("VALIDATION", "maxConcurrency: expected a positive integer");
    }
    this.local = options.local ?? false;
    this.defaultModel = options.defaultModel;
    this.baseURL = options.baseURL;
    this.timeoutMs = options.timeoutMs ?? 600_000;
    this.models = normaliseModels(options.models ?? [options.defaultModel]);
    if (!this.models.some((m) => m.name === this.defaultModel)) {
      this.models = [...normaliseModels([this.defaultModel]), ...this.models];
    }
    const caps = new Set<string>(["llm", kind]);
    for (const m of this.models) {
      caps.add(m.name);
      for (const c of m.capabilities) caps.add(c);
    }
    this.capabilities = [...caps];
    this.labels = { provider: kind, ...(options.labels ?? {}) };
    this.prices = resolvePrices(this.labels.provider ?? kind, options.prices);
    this.#secrets = secrets.filter((s) => s.length > 0);
    if (options.onRateLimit) this.#listeners.add(options.onRateLimit);
  }

  /** Provider-specific checks after the shared schema (e.g. Anthropic's temperature range). */
  protected validate(_req: LlmRequest, _model: string): void {}

  /** Performs the call. Implementations stream tokens via `ctx.progress` when `req.stream`. */
  protected abstract call(req: LlmRequest, call: CallContext): Promise<ProviderCall>;

  /** Lists model ids (a free call). */
  protected abstract listModels(signal: AbortSignal): Promise<string[]>;

  /** Provider name used in messages and rate-limit info. */
  protected get provider(): string {
    return this.kind;
  }

  /**
   * Subscribes to rate-limit information from response headers.
   *
   * @example
   * ```ts
   * const off = worker.onRateLimit((info) => {
   *   if (info.retryAfterMs) limiter.pause(info.provider, Date.now() + info.retryAfterMs);
   * });
   * ```
   * @returns an unsubscribe function
   */
  onRateLimit(listener: RateLimitListener): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Executes an `llm_request` task. */
  async execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult<LlmResponse>> {
    const req = parseLlmRequest(task.payload);
    const model = req.model ?? this.defaultModel;
    if (hasImages(req) && !this.#modelCaps(model).includes("vision")) {
      throw new FlotillaError(
        "VALIDATION",
        `payload.messages: model ${model} does not accept images`,
      );
    }
    this.validate(req, model);
    // One signal for the whole exchange, streamed body included: the caller's (cancellation,
    // task timeout) or our own `timeoutMs` (the SDKs' timeouts stop at the response headers).
    const deadline = callSignal(ctx.signal, { clock: ctx.clock, ms: this.timeoutMs });
    const signal = deadline.signal;
    const log = ctx.logger.child({ workerId: this.id, provider: this.provider, model });
    log.debug({ stream: req.stream === true, messages: req.messages.length }, "llm request");
    const started = ctx.clock.now();
    let result: ProviderCall;
    try {
      result = await this.call(req, {
        model,
        signal,
        ctx,
        headers: (headers, status) => this.#rateLimit(headers, status, model, ctx.clock.now()),
        usage: (u) => {
          const inputTokens = u.inputTokens ?? 0;
          const outputTokens = u.outputTokens ?? 0;
          const partial: Usage = {
            inputTokens,
            outputTokens,
            totalTokens: inputTokens + outputTokens,
            requests: 1,
          };
          const cost = this.costUsd(model, inputTokens, outputTokens);
          if (cost !== undefined) partial.costUsd = cost;
          ctx.reportUsage(partial);
        },
      });
    } catch (err) {
      const errHeaders = (err as { headers?: Headers }).headers;
      const status = (err as { status?: number }).status;
      if (errHeaders && typeof status === "number")
        this.#rateLimit(errHeaders, status, model, ctx.clock.now());
      const mapped = deadline.timedOut
        ? new FlotillaError(
            "TIMEOUT",
            `${this.provider} request timed out after ${this.timeoutMs} ms`,
            {
              retryable: true,
            },
          )
        : mapProviderError(err, {
            provider: this.provider,
            secrets: this.#secrets,
            signal,
            now: ctx.clock.now(),
          });
      log.debug({ error: mapped.message }, "llm request failed");
      throw mapped;
    } finally {
      deadline.dispose();
    }
    const r = result.response;
    const inputTokens = r.usage.inputTokens ?? estimateInputTokens(req);
    const outputTokens = r.usage.outputTokens ?? Math.ceil(r.text.length / 4);
    const usage: LlmResponse["usage"] = {
      inputTokens,
      outputTokens,
      totalTokens: inputTokens + outputTokens,
      requests: 1,
    };
    const cost =
      this.costUsd(r.model || model, inputTokens, outputTokens) ??
      this.costUsd(model, inputTokens, outputTokens);
    if (cost !== undefined) usage.costUsd = cost;
    log.debug(
      { ms: ctx.clock.now() - started, usage, finishReason: r.finishReason },
      "llm response",
    );
    const output: LlmResponse = { ...r, usage };
    return { output, usage, raw: r.raw };
  }

  /**
   * Lists the provider's models (never a completion): `healthy` when it answers and knows
   * the default model, `degraded` when the default model is missing, `unhealthy` on error.
   */
  async healthCheck(signal: AbortSignal): Promise<HealthReport> {
    try {
      const ids = await this.listModels(signal);
      // Gemini lists `models/<id>`, Ollama's /v1 lists `<id>:latest`.
      const bare = (id: string) => id.replace(/^models\//, "").replace(/:latest$/, "");
      if (!ids.some((id) => bare(id) === bare(this.defaultModel))) {
        return {
          status: "degraded",
          message: `model ${this.defaultModel} is not listed by ${this.provider}`,
          details: { models: ids.length },
        };
      }
      return { status: "healthy", details: { models: ids.length } };
    } catch (err) {
      const mapped = mapProviderError(err, {
        provider: this.provider,
        secrets: this.#secrets,
        signal,
        now: Date.now(),
      });
      return { status: "unhealthy", message: mapped.message };
    }
  }

  /**
   * Estimated cost in USD of a task (input from its text, output from `maxTokens`,
   * `estimate.outputTokens`, or 256), or undefined when the model has no price.
   */
  estimateCost(task: WorkerTask): number | undefined {
    const parsed = LlmRequestSchema.safeParse(task.payload);
    if (!parsed.success) return undefined;
    const req = parsed.data;
    const model = req.model ?? this.defaultModel;
    const inputTokens =
      task.estimate?.inputTokens ??
      estimateInputTokens(req) + Math.ceil((req.prompt?.length ?? 0) / 4);
    const outputTokens = task.estimate?.outputTokens ?? req.maxTokens ?? 256;
    return this.costUsd(model, inputTokens, outputTokens);
  }

  /** The worker as JSON: configuration without secrets. */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      kind: this.kind,
      name: this.name,
      baseURL: this.baseURL,
      defaultModel: this.defaultModel,
      models: this.models,
      capabilities: this.capabilities,
      labels: this.labels,
      maxConcurrency: this.maxConcurrency,
      apiKey: this.#secrets.length > 0 ? "[redacted]" : undefined,
    };
  }

  [Symbol.for("nodejs.util.inspect.custom")](): Record<string, unknown> {
    return this.toJSON();
  }

  /** Cost in USD of tokens on `model` (core's `PriceBook`, keyed by this worker's provider label). */
  protected costUsd(model: string, inputTokens: number, outputTokens: number): number | undefined {
    const price = this.prices.price(this.labels.provider ?? this.kind, model);
    if (!price) return undefined;
    return Math.round((inputTokens * price.input + outputTokens * price.output) * 1e4) / 1e10;
  }

  /** Scrubs this worker's secrets out of a string. */
  protected redact(text: string): string {
    return redact(text, this.#secrets);
  }

  #modelCaps(model: string): readonly string[] {
    return (
      this.models.find((m) => m.name === model)?.capabilities ??
      normaliseModels([model])[0]!.capabilities
    );
  }

  #rateLimit(headers: Headers | undefined, status: number, model: string, now: number): void {
    const info = parseRateLimitHeaders(headers, now, {
      provider: this.provider,
      workerId: this.id,
      model,
      status,
    });
    if (!info) return;
    this.lastRateLimit = info;
    for (const l of this.#listeners) {
      try {
        l(info);
      } catch {
        // a listener's failure must not fail the task
      }
    }
  }
}
