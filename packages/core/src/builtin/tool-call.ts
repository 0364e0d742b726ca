import { z } from "zod";
import { UnrecoverableError } from "../errors.js";
import type { Logger } from "../logger.js";
import { BaseWorker } from "../worker/base.js";
import type { ExecutionContext, WorkerResult, WorkerTask } from "../worker/types.js";
import { formatIssues } from "../worker/validate.js";
import { type HttpPolicy, policyFetch } from "./http.js";
import { evaluateMath } from "./math.js";

/** What a tool function receives besides its input. */
export interface ToolContext {
  signal: AbortSignal;
  progress(data: unknown): void;
  logger: Logger;
  /** The worker's outbound HTTP policy (allow-list, timeout, size cap). */
  http: HttpPolicy;
}

/** A registered tool. */
export interface ToolDefinition<TInput = unknown> {
  name: string;
  description: string;
  schema: z.ZodType<TInput>;
  fn: (input: TInput, ctx: ToolContext) => unknown | Promise<unknown>;
}

/** Payload of a `tool_call` task (Vera's field names; `tool`/`input` also accepted). */
export const ToolCallPayloadSchema = z
  .object({
    tool_name: z.string().min(1).max(256).optional(),
    tool: z.string().min(1).max(256).optional(),
    tool_input: z.unknown().optional(),
    input: z.unknown().optional(),
  })
  .refine((p) => p.tool_name ?? p.tool, { message: "expected tool_name (the tool to call)" });

/**
 * Reads a dotted/bracketed path (`a.b[0].c`) out of a value; `undefined` when absent.
 *
 * @example
 * ```ts
 * pickPath({ a: { b: [5, 6] } }, "a.b[1]"); // 6
 * ```
 */
export function pickPath(value: unknown, path: string): unknown {
  if (path === "" || path === ".") return value;
  const parts = path
    .replace(/^\./, "")
    .replace(/\[(\d+)\]/g, ".$1")
    .split(".")
    .filter(Boolean);
  let cur: unknown = value;
  for (const part of parts) {
    if (cur === null || typeof cur !== "object") return undefined;
    if (part === "__proto__" || part === "constructor" || part === "prototype") return undefined;
    cur = Object.hasOwn(cur, part) ? (cur as Record<string, unknown>)[part] : undefined;
  }
  return cur;
}

const abortableSleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const t = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(signal.reason);
    };
    signal.addEventListener("abort", onAbort, { once: true });
  });

/**
 * The tools every {@link ToolCallWorker} starts with: echo, json_transform, sleep, math, http_get.
 *
 * @example
 * ```ts
 * builtinTools().map((t) => t.name); // ["echo", "json_transform", "sleep", "math", "http_get"]
 * ```
 */
export function builtinTools(): ToolDefinition[] {
  const tools: ToolDefinition[] = [
    {
      name: "echo",
      description: "Returns its input unchanged.",
      schema: z.unknown(),
      fn: (input) => input,
    },
    {
      name: "json_transform",
      description:
        "Picks values out of JSON: {data, pick: 'a.b[0]'} returns one value; {data, fields: {name: 'path'}} returns an object.",
      schema: z
        .object({
          data: z.unknown(),
          pick: z.string().max(1024).optional(),
          fields: z.record(z.string(), z.string().max(1024)).optional(),
        })
        .refine((v) => v.pick !== undefined || v.fields !== undefined, {
          message: "expected pick or fields",
        }),
      fn: (input) => {
        const v = input as { data: unknown; pick?: string; fields?: Record<string, string> };
        if (v.pick !== undefined) return pickPath(v.data, v.pick) ?? null;
        const out: Record<string, unknown> = {};
        for (const [k, p] of Object.entries(v.fields ?? {})) out[k] = pickPath(v.data, p) ?? null;
        return out;
      },
    },
    {
      name: "sleep",
      description: "Waits ms milliseconds (at most 60000), then returns {slept_ms}.",
      schema: z.object({ ms: z.number().int().min(0).max(60_000) }),
      fn: async (input, ctx) => {
        const { ms } = input as { ms: number };
        await abortableSleep(ms, ctx.signal);
        return { slept_ms: ms };
      },
    },
    {
      name: "math",
      description: "Evaluates an arithmetic expression safely (no eval): {expression, variables?}.",
      schema: z.object({
        expression: z.string().min(1).max(10_000),
        variables: z.record(z.string(), z.number()).optional(),
      }),
      fn: (input) => {
        const { expression, variables } = input as {
          expression: string;
          variables?: Record<string, number>;
        };
        const result = evaluateMath(expression, variables);
        if (!Number.isFinite(result)) throw new UnrecoverableError(`math: result is ${result}`);
        return { result };
      },
    },
    {
      name: "http_get",
      description:
        "GETs a URL on the operator's allow-list: {url, headers?}. Returns {status, headers, body}.",
      schema: z.object({
        url: z.string().min(1).max(8192),
        headers: z.record(z.string(), z.string()).optional(),
      }),
      fn: async (input, ctx) => {
        const { url, headers } = input as { url: string; headers?: Record<string, string> };
        const res = await policyFetch(headers ? { url, headers } : { url }, ctx.http, ctx.signal);
        return { status: res.status, headers: res.headers, body: res.body };
      },
    },
  ];
  return tools;
}

/** Options of {@link ToolCallWorker}. */
export interface ToolCallWorkerOptions {
  /** @default "tool-call" */
  id?: string;
  /** @default 16 */
  maxConcurrency?: number;
  /** Outbound HTTP policy of `http_get` (deny all hosts by default). */
  http?: HttpPolicy;
  /** Start with the built-in tools (echo, json_transform, sleep, math, http_get). @default true */
  builtins?: boolean;
}

/**
 * Executes `tool_call` tasks (`{tool_name, tool_input}`) with built-in tools plus any the
 * embedding app registers with {@link ToolCallWorker.registerTool}. Input is validated
 * with the tool's zod schema; a bad input or an unknown tool fails the task at once.
 *
 * @example
 * ```ts
 * const tools = new ToolCallWorker();
 * tools.registerTool("greet", z.object({ name: z.string() }), ({ name }) => `hello ${name}`);
 * await orchestrator.register(tools);
 * await orchestrator.submit({ type: "tool_call", payload: { tool_name: "greet", tool_input: { name: "Ada" } } });
 * ```
 */
export class ToolCallWorker extends BaseWorker {
  readonly kind = "tool-call";
  readonly #tools = new Map<string, ToolDefinition>();
  readonly #http: HttpPolicy;

  constructor(options: ToolCallWorkerOptions = {}) {
    super(
      {
        id: options.id ?? "tool-call",
        taskTypes: ["tool_call"],
        maxConcurrency: options.maxConcurrency ?? 16,
        capabilities: ["tools"],
      },
      "tool-call",
    );
    this.#http = { allowedHosts: [], ...(options.http ?? {}) };
    if (options.builtins !== false) for (const t of builtinTools()) this.#tools.set(t.name, t);
  }

  /**
   * Adds (or replaces) a tool. `schema` validates the input before `fn` runs.
   *
   * @example
   * ```ts
   * worker.registerTool("add", z.object({ a: z.number(), b: z.number() }), ({ a, b }) => a + b, "Adds two numbers");
   * ```
   */
  registerTool<TInput>(
    name: string,
    schema: z.ZodType<TInput>,
    fn: (input: TInput, ctx: ToolContext) => unknown | Promise<unknown>,
    description = "",
  ): this {
    if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(name)) {
      throw new UnrecoverableError(`tool name "${name}" must be 1-128 letters, digits, _ . : -`);
    }
    this.#tools.set(name, { name, description, schema, fn } as ToolDefinition);
    return this;
  }

  /**
   * Names and descriptions of the tools it knows.
   *
   * @example
   * ```ts
   * for (const { name, description } of new ToolCallWorker().listTools()) console.log(name, description);
   * ```
   */
  listTools(): Array<{ name: string; description: string }> {
    return [...this.#tools.values()].map((t) => ({ name: t.name, description: t.description }));
  }

  async execute(task: WorkerTask, ctx: ExecutionContext): Promise<WorkerResult> {
    const parsed = ToolCallPayloadSchema.safeParse(task.payload);
    if (!parsed.success) throw new UnrecoverableError(formatIssues(parsed.error, "payload"));
    const name = (parsed.data.tool_name ?? parsed.data.tool)!;
    const tool = this.#tools.get(name);
    if (!tool) {
      throw new UnrecoverableError(
        `unknown tool "${name}": expected one of ${[...this.#tools.keys()].sort().join(", ")}`,
      );
    }
    const rawInput = parsed.data.tool_input ?? parsed.data.input ?? {};
    const input = tool.schema.safeParse(rawInput);
    if (!input.success)
      throw new UnrecoverableError(`${name}: ${formatIssues(input.error, "tool_input")}`);
    ctx.signal.throwIfAborted();
    const output = await tool.fn(input.data, {
      signal: ctx.signal,
      progress: ctx.progress,
      logger: ctx.logger,
      http: this.#http,
    });
    // No tokens, no cost: said explicitly so that budgets do not fall back to estimates.
    return {
      output: output === undefined ? null : output,
      usage: { requests: 1, totalTokens: 0, costUsd: 0 },
    };
  }
}
