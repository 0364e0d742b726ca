import { FlotillaError, type Worker } from "@flotilla/core";
import type { Context } from "hono";
import type { ZodType } from "zod";
import type { AppContext } from "../app/context.js";
import type { WorkerFactoryContext } from "../app/options.js";
import { workerBudget, workerStats } from "../app/status.js";
import { HttpError } from "../errors.js";
import {
  type LlmApiRegisterInput,
  LlmApiRegisterSchema,
  RegisteredResponseSchema,
  RemoteRegisterSchema,
  UnregisteredResponseSchema,
  WorkerListResponseSchema,
  z,
} from "../schemas.js";

/** Collection of the key-value store holding API registrations. */
const WORKERS = "workers";

type Kind = "llmApi" | "remote";

/** A registration as stored: its input without the secret, and the secret sealed or named. */
interface StoredWorker {
  kind: Kind;
  input: Record<string, unknown>;
  secret?: { field: string; sealed?: string; env?: string };
  registered_at: string;
}

const KINDS = {
  llmApi: {
    path: "/workers/llm-api/register",
    summary: "Register a cloud LLM API worker (the key is never echoed)",
    body: LlmApiRegisterSchema,
    what: "LLM API",
    field: "api_key",
    env: "api_key_env",
    notImplemented: "No LLM worker factory configured, or quota fields without budgets",
  },
  remote: {
    path: "/workers/remote/register",
    summary: "Register a remote (push-mode) worker (the token is never echoed)",
    body: RemoteRegisterSchema,
    what: "remote",
    field: "auth_token",
    env: "auth_token_env",
    notImplemented: "No remote worker factory configured",
  },
} as const;

const WorkerIdParams = z.object({ worker_id: z.string().min(1).max(256) });
const UnregisterQuerySchema = z
  .object({
    mode: z.enum(["drain", "handback"]).optional(),
    timeout_seconds: z.coerce.number().min(0).max(3600).optional(),
  })
  .strict();

/**
 * The worker routes: `{prefix}/workers/list`, and the run-time registrations
 * `/workers/llm-api/register` and `/workers/remote/register` (through the composer's worker
 * factories; registration quotas become the worker's daily budget). @internal
 */
export function workerRoutes(ctx: AppContext): void {
  const { o, options } = ctx;
  const stored = options.workerStore;
  const env = () => stored?.env ?? process.env;

  /** Builds a worker with its factory, runs `prepare`'s step, registers it. */
  const build = async (kind: Kind, input: Record<string, unknown>): Promise<Worker> => {
    const spec = KINDS[kind];
    ctx.notShuttingDown();
    const factory = options.workerFactories?.[kind] as
      | ((input: unknown, ctx: WorkerFactoryContext) => Worker | Promise<Worker>)
      | undefined;
    if (!factory) {
      throw new HttpError(
        501,
        "NOT_IMPLEMENTED",
        `this server cannot create ${spec.what} workers: no factory was configured for it`,
      );
    }
    const id = input.worker_id;
    if (typeof id === "string" && ctx.workers().some((w) => w.id === id)) {
      throw new FlotillaError("CONFLICT", `a worker with id ${id} is already registered`);
    }
    // A secret named by an environment variable is read from the server's environment.
    const resolved = { ...input };
    const envName = input[spec.env];
    if (typeof envName === "string") {
      const value = env()[envName];
      if (!value) {
        throw new FlotillaError(
          "VALIDATION",
          `body.${spec.env}: the environment variable ${envName} is not set on the server`,
        );
      }
      resolved[spec.field] = value;
    }
    const before = kind === "llmApi" ? quotaStep(resolved as LlmApiRegisterInput) : undefined;
    let worker: Worker;
    try {
      const made: WorkerFactoryContext = { orchestrator: o, logger: ctx.logger };
      if (options.resources) made.resources = options.resources;
      worker = await factory.call(options.workerFactories, resolved, made);
    } catch (err) {
      if (err instanceof FlotillaError) throw err;
      // Factory errors are about the input (unknown api_type, bad URL); never echo secrets.
      throw new FlotillaError(
        "VALIDATION",
        `cannot create ${spec.what} worker: ${(err as Error).message}`,
      );
    }
    await before?.(worker);
    await o.register(worker);
    ctx.workersChanged();
    ctx.logger.info({ workerId: worker.id, kind: worker.kind }, `${spec.what} worker registered`);
    return worker;
  };

  /** Stores a registration (its secret sealed, or as an environment variable's name); false when it cannot be kept. */
  const persist = async (kind: Kind, input: Record<string, unknown>, workerId: string) => {
    if (!stored) return false;
    const spec = KINDS[kind];
    const { [spec.field]: secret, [spec.env]: envName, ...rest } = input;
    const record: StoredWorker = {
      kind,
      input: { ...rest, worker_id: workerId },
      registered_at: new Date(ctx.clock.now()).toISOString(),
    };
    if (typeof envName === "string") record.secret = { field: spec.field, env: envName };
    else if (typeof secret === "string") {
      // Never a plaintext write: without a sealer, a literal secret is not stored.
      if (!stored.sealer) return false;
      record.secret = { field: spec.field, sealed: stored.sealer.seal(secret, workerId) };
    }
    await stored.store.kvPut(WORKERS, workerId, record);
    return true;
  };

  /** The quota fields of an LLM API registration become its daily budget (before it takes a task). */
  const quotaStep = (input: LlmApiRegisterInput) => {
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
    // Counts what a worker of the same id already used today.
    return async (w: Worker) => {
      const history = await o.usage({ since: ctx.clock.now() - 2 * 86_400_000 });
      budgets.add(
        { name: workerBudget(w.id), scope: "worker", key: w.id, policy: "fail", ...limits },
        history,
      );
    };
  };

  for (const kind of ["llmApi", "remote"] as const) {
    const spec = KINDS[kind];
    ctx.define({
      method: "post",
      path: `${ctx.prefix}${spec.path}`,
      summary: spec.summary,
      tags: ["vera"],
      body: spec.body,
      response: RegisteredResponseSchema,
      extraResponses: { 409: "Worker id taken", 501: spec.notImplemented },
      handler: async (c: Context) => {
        const input = (await ctx.body(c, spec.body as ZodType)) as Record<string, unknown>;
        const worker = await build(kind, input);
        let persisted = false;
        try {
          persisted = await persist(kind, input, worker.id);
        } catch (err) {
          ctx.logger.error(
            { workerId: worker.id, err: String(err) },
            "could not store a worker registration",
          );
        }
        const note = persisted
          ? ""
          : stored
            ? `; not kept across restarts: this server has no secret key to store its ${spec.field} encrypted (set one, or register with ${spec.env})`
            : "";
        return c.json({
          worker_id: worker.id,
          status: "registered" as const,
          message: `${spec.what} worker ${worker.id} (${worker.kind}) registered${note}`,
          persisted,
        });
      },
    });
  }

  ctx.define({
    method: "delete",
    path: `${ctx.prefix}/workers/:worker_id`,
    summary:
      "Unregister a worker (its running tasks finish, or go back to the queue) and forget its stored registration",
    tags: ["vera"],
    params: WorkerIdParams,
    query: UnregisterQuerySchema,
    response: UnregisteredResponseSchema,
    extraResponses: { 404: "Unknown worker" },
    handler: async (c) => {
      const id = c.req.param("worker_id") ?? "";
      const q = ctx.query(c, UnregisterQuerySchema);
      const forgotten = (await stored?.store.kvDelete(WORKERS, id)) ?? false;
      const known = await o.unregister(id, {
        mode: q.mode ?? "drain",
        timeoutMs: Math.round((q.timeout_seconds ?? 30) * 1000),
      });
      if (!known && !forgotten) throw new FlotillaError("NOT_FOUND", `worker ${id} not found`);
      ctx.workersChanged();
      return c.json({ worker_id: id, status: "unregistered" as const, forgotten });
    },
  });

  ctx.restoreWorkers = async () => {
    if (!stored) return [];
    const rows = await stored.store.kvList<StoredWorker>(WORKERS);
    // Credentials that cannot be opened stop the start: nothing is registered half-way.
    const locked = rows.filter((r) => r.value.secret?.sealed !== undefined);
    if (locked.length > 0 && !stored.sealer) {
      throw new FlotillaError(
        "VALIDATION",
        `stored workers ${locked.map((r) => r.key).join(", ")} have encrypted credentials, and no secret key was given to open them: start with the secret key they were stored with`,
      );
    }
    const ready: Array<{ key: string; kind: Kind; input: Record<string, unknown> }> = [];
    for (const { key, value } of rows) {
      const input: Record<string, unknown> = { ...value.input, worker_id: key };
      const secret = value.secret;
      if (secret?.sealed !== undefined) {
        try {
          input[secret.field] = stored.sealer!.open(secret.sealed, key);
        } catch (err) {
          throw new FlotillaError("VALIDATION", `stored worker ${key}: ${(err as Error).message}`);
        }
      } else if (secret?.env !== undefined) {
        input[KINDS[value.kind].env] = secret.env;
      }
      ready.push({ key, kind: value.kind, input });
    }
    const out: Array<{ worker_id: string; ok: boolean; error?: string }> = [];
    for (const r of ready) {
      try {
        if (!(r.kind in KINDS)) throw new Error(`unknown kind ${String(r.kind)}`);
        await build(r.kind, r.input);
        out.push({ worker_id: r.key, ok: true });
      } catch (err) {
        out.push({ worker_id: r.key, ok: false, error: (err as Error).message });
        ctx.logger.warn(
          { workerId: r.key, err: String(err) },
          "stored worker not registered again",
        );
      }
    }
    return out;
  };

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
