import { randomUUID } from "node:crypto";
import { z } from "zod";
import type { Clock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { ExecutionContext, HealthReport, Worker, WorkerResult, WorkerTask } from "./types.js";
import { formatIssues } from "./validate.js";

/** Options every {@link BaseWorker} takes. */
export interface BaseWorkerOptions {
  /** Unique id. @default `${kind}-` followed by 8 random hex characters */
  id?: string;
  /** Name matched by target globs (`client-acme-*`). @default id */
  name?: string;
  /** Task types it executes; `"*"` for any. At least one. */
  taskTypes: readonly string[];
  /** Tasks it runs at once (slots), an integer >= 1. @default 1 */
  maxConcurrency?: number;
  /** Capabilities a task may require. @default [] */
  capabilities?: readonly string[];
  /** Labels matched by `requirements.labels` and `target.tags`. @default {} */
  labels?: Readonly<Record<string, string>>;
  /** Runs on this host (admission control and `preferLocal` routing apply). @default true */
  local?: boolean;
}

const nonEmpty = z.string().min(1, "expected a non-empty string");
const BaseWorkerOptionsSchema = z.object(
  {
    id: nonEmpty.max(256, "expected at most 256 characters").optional(),
    name: nonEmpty.max(256, "expected at most 256 characters").optional(),
    taskTypes: z
      .array(nonEmpty, { error: "expected an array of task types" })
      .min(1, "expected at least one task type"),
    maxConcurrency: z
      .number({ error: "expected an integer >= 1" })
      .int("expected an integer >= 1")
      .min(1, "expected an integer >= 1")
      .optional(),
    capabilities: z.array(nonEmpty, { error: "expected an array of strings" }).optional(),
    labels: z
      .record(z.string(), z.string({ error: "expected a string label value" }), {
        error: "expected an object of string labels",
      })
      .optional(),
    local: z.boolean({ error: "expected a boolean" }).optional(),
  },
  { error: "expected an options object" },
);

/**
 * Validates worker options with zod and throws `FlotillaError` `VALIDATION` naming each
 * wrong field (`options.maxConcurrency: expected an integer >= 1`).
 */
function checkOptions(kind: string, options: unknown): void {
  const parsed = BaseWorkerOptionsSchema.safeParse(options);
  if (!parsed.success) {
    throw new FlotillaError(
      "VALIDATION",
      `invalid ${kind} worker options: ${formatIssues(parsed.error, "options")}`,
    );
  }
}

/**
 * A base class for worker authors: generates an id, validates options, makes `start` and
 * `stop` idempotent and safe to call concurrently (override `onStart` / `onStop`), and
 * answers health checks (`healthy` unless stopped; override `healthCheck` for a real probe
 * that costs nothing, such as listing models).
 *
 * @example
 * ```ts
 * class EchoWorker extends BaseWorker {
 *   readonly kind = "echo";
 *   constructor() {
 *     super({ taskTypes: ["echo"], maxConcurrency: 8 });
 *   }
 *   async execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult> {
 *     ctx.signal.throwIfAborted();
 *     return { output: task.payload };
 *   }
 * }
 * ```
 */
export abstract class BaseWorker implements Worker {
  abstract readonly kind: string;
  readonly id: string;
  readonly name: string;
  readonly taskTypes: readonly string[];
  readonly maxConcurrency: number;
  readonly capabilities: readonly string[];
  readonly labels: Readonly<Record<string, string>>;
  readonly local: boolean;

  #state: "idle" | "running" | "stopped" = "idle";
  #transition: Promise<void> = Promise.resolve();

  /**
   * @param options validated; `VALIDATION` error naming the field when wrong.
   * @param idPrefix prefix of the generated id. @default "worker"
   */
  constructor(options: BaseWorkerOptions, idPrefix = "worker") {
    checkOptions(idPrefix, options);
    this.id = options.id ?? `${idPrefix}-${randomUUID().slice(0, 8)}`;
    this.name = options.name ?? this.id;
    this.taskTypes = Object.freeze([...options.taskTypes]);
    this.maxConcurrency = options.maxConcurrency ?? 1;
    this.capabilities = Object.freeze([...(options.capabilities ?? [])]);
    this.labels = Object.freeze({ ...(options.labels ?? {}) });
    this.local = options.local ?? true;
  }

  /**
   * Whether `start()` has completed and `stop()` has not been called since.
   *
   * @example
   * ```ts
   * await worker.start();
   * worker.running; // true
   * ```
   */
  get running(): boolean {
    return this.#state === "running";
  }

  /**
   * Starts the worker (runs `onStart` once). Calling it again, even concurrently, waits for
   * the same start. After `stop()`, it starts again.
   *
   * @example
   * ```ts
   * await worker.start();
   * await worker.start(); // no-op
   * ```
   */
  start(): Promise<void> {
    this.#transition = this.#transition
      .catch(() => {})
      .then(async () => {
        if (this.#state === "running") return;
        await this.onStart();
        this.#state = "running";
      });
    return this.#transition;
  }

  /**
   * Stops the worker (runs `onStop` once, only if it was started). Idempotent.
   *
   * @example
   * ```ts
   * await worker.stop();
   * await worker.stop(); // no-op
   * ```
   */
  stop(): Promise<void> {
    this.#transition = this.#transition
      .catch(() => {})
      .then(async () => {
        if (this.#state !== "running") {
          this.#state = "stopped";
          return;
        }
        this.#state = "stopped";
        await this.onStop();
      });
    return this.#transition;
  }

  /** Runs once per start. Override to open connections, pull images, warm models. */
  protected async onStart(): Promise<void> {}

  /** Runs once per stop of a started worker. Override to release what `onStart` took. */
  protected async onStop(): Promise<void> {}

  /**
   * Default health check: `unhealthy` after `stop()`, `healthy` otherwise. Override with a
   * check that costs nothing and honours `signal`.
   *
   * @example
   * ```ts
   * override async healthCheck(signal: AbortSignal) {
   *   const res = await fetch(`${this.baseUrl}/api/tags`, { signal });
   *   return { status: res.ok ? "healthy" : "unhealthy", message: `HTTP ${res.status}` };
   * }
   * ```
   */
  async healthCheck(_signal: AbortSignal): Promise<HealthReport> {
    if (this.#state === "stopped") return { status: "unhealthy", message: "worker is stopped" };
    return { status: "healthy" };
  }

  abstract execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult>;
}

/** The function a {@link FunctionWorker} runs. Its return value becomes the task's `output`. */
export type WorkerFunction<TPayload = unknown, TOutput = unknown> = (
  payload: TPayload,
  ctx: ExecutionContext,
  task: WorkerTask<TPayload>,
) => Promise<TOutput> | TOutput;

/** Options of {@link FunctionWorker}. */
export interface FunctionWorkerOptions<TPayload = unknown, TOutput = unknown>
  extends BaseWorkerOptions {
  /** The work. Receives the payload, the context (with `signal`) and the task. */
  fn: WorkerFunction<TPayload, TOutput>;
  /**
   * A health probe that costs nothing (a ping, a model list), bounded by the registry's
   * timeout through `signal`. @default healthy while started
   */
  healthCheck?: (signal: AbortSignal) => Promise<HealthReport> | HealthReport;
}

/**
 * The error an aborted execution rejects with: the signal's reason when it is an `Error`,
 * else a `FlotillaError` `CANCELLED` (carrying a string reason as its message).
 *
 * @example
 * ```ts
 * if (ctx.signal.aborted) throw abortReason(ctx.signal);
 * ```
 */
export function abortReason(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  if (reason instanceof Error) return reason;
  return new FlotillaError("CANCELLED", typeof reason === "string" ? reason : "execution aborted");
}

/**
 * Replaces every secret (of 4 characters or more) in `text` with `[redacted]`, for error
 * messages and logs that may quote a provider's answer.
 *
 * @example
 * ```ts
 * redact("bad key sk-test-1234", ["sk-test-1234"]); // "bad key [redacted]"
 * ```
 */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const s of secrets) {
    if (s && s.length >= 4) out = out.split(s).join("[redacted]");
  }
  return out;
}

/** The abort signal of one outgoing call; see {@link callSignal}. */
export interface CallSignal {
  /** Aborts with the parent's reason when the parent aborts, or with `Error("timeout")` on timeout. */
  readonly signal: AbortSignal;
  /** Whether the timeout (not the parent) aborted the call. */
  readonly timedOut: boolean;
  /** Stops following the parent and clears the timer. Call it once the call is over. */
  dispose(): void;
}

/**
 * One signal for a whole outgoing call (a streamed body included): it follows `parent`
 * (cancellation, the task's timeout) and, when `timeout` is given, aborts after `timeout.ms`
 * on `timeout.clock`, setting `timedOut`. Without `timeout` it only follows `parent`.
 *
 * @example
 * ```ts
 * const call = callSignal(ctx.signal, { clock: ctx.clock, ms: 60_000 });
 * try {
 *   return await fetch(url, { signal: call.signal });
 * } catch (err) {
 *   if (call.timedOut) throw new FlotillaError("TIMEOUT", "no answer in 60000 ms", { retryable: true });
 *   throw err;
 * } finally {
 *   call.dispose();
 * }
 * ```
 */
export function callSignal(
  parent: AbortSignal | undefined,
  timeout?: { clock: Clock; ms: number },
): CallSignal {
  const controller = new AbortController();
  let timedOut = false;
  const onAbort = () => controller.abort(parent?.reason);
  if (parent?.aborted) onAbort();
  else parent?.addEventListener("abort", onAbort, { once: true });
  const timer = timeout?.clock.setTimeout(() => {
    timedOut = true;
    controller.abort(new Error("timeout"));
  }, timeout.ms);
  return {
    signal: controller.signal,
    get timedOut() {
      return timedOut;
    },
    dispose() {
      parent?.removeEventListener("abort", onAbort);
      if (timer !== undefined) timeout?.clock.clearTimeout(timer);
    },
  };
}

/**
 * Turns a plain (async) function into a worker: `execute` resolves to `{ output: await
 * fn(payload, ctx, task) }`. Abort is honoured even when `fn` ignores `ctx.signal`:
 * `execute` rejects as soon as the signal aborts (with the signal's reason), though `fn`
 * itself can only stop if it watches the signal.
 *
 * Defaults: `kind` "function", id `function-xxxxxxxx`, `maxConcurrency` 1, no
 * capabilities or labels, `local` true.
 *
 * @example
 * ```ts
 * const summarize = new FunctionWorker({
 *   id: "summarizer",
 *   taskTypes: ["summarize"],
 *   maxConcurrency: 4,
 *   fn: async (payload: { text: string }, ctx) => {
 *     ctx.progress("summarizing");
 *     return payload.text.slice(0, 100);
 *   },
 * });
 * ```
 */
export class FunctionWorker<TPayload = unknown, TOutput = unknown> extends BaseWorker {
  readonly kind: string = "function";
  readonly #fn: WorkerFunction<TPayload, TOutput>;
  readonly #probe: FunctionWorkerOptions["healthCheck"];

  constructor(options: FunctionWorkerOptions<TPayload, TOutput>) {
    super(options, "function");
    if (typeof options.fn !== "function") {
      throw new FlotillaError(
        "VALIDATION",
        "invalid function worker options: options.fn: expected a function",
      );
    }
    if (options.healthCheck !== undefined && typeof options.healthCheck !== "function") {
      throw new FlotillaError(
        "VALIDATION",
        "invalid function worker options: options.healthCheck: expected a function",
      );
    }
    this.#fn = options.fn;
    this.#probe = options.healthCheck;
  }

  /**
   * The `healthCheck` given in the options, else the base answer (healthy while started).
   *
   * @example
   * ```ts
   * const report = await worker.healthCheck(AbortSignal.timeout(2_000));
   * ```
   */
  override async healthCheck(signal: AbortSignal): Promise<HealthReport> {
    return this.#probe ? this.#probe(signal) : super.healthCheck(signal);
  }

  /**
   * Runs the function. Rejects at once when `ctx.signal` is (or becomes) aborted.
   *
   * @example
   * ```ts
   * const { output } = await worker.execute(task, ctx);
   * ```
   */
  execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult> {
    const signal = ctx.signal;
    if (signal.aborted) return Promise.reject(abortReason(signal));
    return new Promise<WorkerResult>((resolve, reject) => {
      const onAbort = () => reject(abortReason(signal));
      signal.addEventListener("abort", onAbort, { once: true });
      const typed = task as WorkerTask<TPayload>;
      // Called inside a promise chain so that a synchronous throw becomes a rejection.
      Promise.resolve()
        .then(() => this.#fn(typed.payload, ctx, typed))
        .then(
          (output) => resolve({ output }),
          (err: unknown) =>
            reject(err instanceof Error ? err : new FlotillaError("WORKER_ERROR", String(err))),
        )
        .finally(() => signal.removeEventListener("abort", onAbort));
    });
  }
}
