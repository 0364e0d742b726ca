import { FlotillaError, type Worker } from "@flotilla/core";
import type { Context } from "hono";
import type { ZodType } from "zod";
import type { AppContext } from "../app/context.js";
import type { WorkerFactories, WorkerFactoryContext } from "../app/options.js";
import { workerBudget, workerStats } from "../app/status.js";
import { HttpError } from "../errors.js";
import {
  LlmApiRegisterSchema,
  RegisteredResponseSchema,
  RemoteRegisterSchema,
  WorkerListResponseSchema,
} from "../schemas.js";

/**
 * The worker routes: `{prefix}/workers/list`, and the run-time registrations
 * `/workers/llm-api/register` and `/workers/remote/register` (through the composer's worker
 * factories; registration quotas become the worker's daily budget). @internal
 */
export function workerRoutes(ctx: AppContext): void {
  const { o, options } = ctx;
  const registerVia = async <T extends { worker_id?: string | undefined }>(
    c: Context,
    factory: ((input: T, ctx: WorkerFactoryContext) => Worker | Promise<Worker>) | undefined,
    input: T,
    what: string,
    beforeRegister?: (worker: Worker) => void | Promise<void>,
  ) => {
    ctx.notShuttingDown();
    if (!factory) {
      throw new HttpError(
        501,
        "NOT_IMPLEMENTED",
        `this server cannot create ${what} workers: no factory was configured for it`,
      );
    }
    if (input.worker_id && ctx.workers().some((w) => w.id === input.worker_id)) {
      throw new FlotillaError(
        "CONFLICT",
        `a worker with id ${input.worker_id} is already registered`,
      );
    }
    let worker: Worker;
    try {
      const made: WorkerFactoryContext = { orchestrator: o, logger: ctx.logger };
      if (options.resources) made.resources = options.resources;
      worker = await factory(input, made);
    } catch (err) {
      if (err instanceof FlotillaError) throw err;
      // Factory errors are about the input (unknown api_type, bad URL); never echo secrets.
      throw new FlotillaError(
        "VALIDATION",
        `cannot create ${what} worker: ${(err as Error).message}`,
      );
    }
    await beforeRegister?.(worker);
    await o.register(worker);
    ctx.workersChanged();
    ctx.logger.info({ workerId: worker.id, kind: worker.kind }, `${what} worker registered`);
    return c.json({
      worker_id: worker.id,
      status: "registered" as const,
      message: `${what} worker ${worker.id} (${worker.kind}) registered`,
    });
  };
  /** A run-time worker registration route: validate, build with the factory, register. */
  const defineRegistration = <T extends { worker_id?: string | undefined }>(d: {
    path: string;
    summary: string;
    body: ZodType<T>;
    factory: keyof WorkerFactories;
    what: string;
    notImplemented: string;
    /** Checks the input further; may return what to do with the worker before it registers. */
    prepare?: (input: T) => ((worker: Worker) => void | Promise<void>) | undefined;
  }) =>
    ctx.define({
      method: "post",
      path: `${ctx.prefix}${d.path}`,
      summary: d.summary,
      tags: ["vera"],
      body: d.body,
      response: RegisteredResponseSchema,
      extraResponses: { 409: "Worker id taken", 501: d.notImplemented },
      handler: async (c) => {
        const input = await ctx.body(c, d.body);
        const before = d.prepare?.(input);
        const factory = options.workerFactories?.[d.factory] as
          | ((input: T, ctx: WorkerFactoryContext) => Worker | Promise<Worker>)
          | undefined;
        return registerVia(c, factory?.bind(options.workerFactories), input, d.what, before);
      },
    });
  defineRegistration({
    path: "/workers/llm-api/register",
    summary: "Register a cloud LLM API worker (the key is never echoed)",
    body: LlmApiRegisterSchema,
    factory: "llmApi",
    what: "LLM API",
    notImplemented: "No LLM worker factory configured, or quota fields without budgets",
    prepare: (input) => {
      const limits = {
        ...(input.quota_requests_per_day ? { requests: input.quota_requests_per_day } : {}),
        ...(input.quota_tokens_per_day ? { tokens: input.quota_tokens_per_day } : {}),
        ...(input.quota_cost_limit_per_day ? { costUsd: input.quota_cost_limit_per_day } : {}),
      };
      if (Object.keys(limits).length === 0) return undefined;
      const budgets = options.resources?.budgets;
      if (!budgets) {
        throw new HttpError(
          501,
          "NOT_IMPLEMENTED",
          "this server does not enforce per-worker quotas (no resource manager with budgets): register without quota_* fields",
        );
      }
      // The worker's daily budget exists before it can take a task, and counts what a worker
      // of the same id already used today.
      return async (w) => {
        const history = await o.usage({ since: ctx.clock.now() - 2 * 86_400_000 });
        budgets.add(
          { name: workerBudget(w.id), scope: "worker", key: w.id, policy: "fail", ...limits },
          history,
        );
      };
    },
  });
  defineRegistration({
    path: "/workers/remote/register",
    summary: "Register a remote (push-mode) worker (the token is never echoed)",
    body: RemoteRegisterSchema,
    factory: "remote",
    what: "remote",
    notImplemented: "No remote worker factory configured",
  });
  ctx.define({
    method: "get",
    path: `${ctx.prefix}/workers/list`,
    summary: "Registered workers and statistics",
    tags: ["vera"],
    response: WorkerListResponseSchema,
    handler: (c) => {
      const ws = workerStats(ctx.workers());
      return c.json({ workers: ws.views, statistics: ws.statistics });
    },
  });
}
