/*
 * Fleet (Quarterback-compatible) routes: the protocol remote nodes speak to pull work.
 *
 * Mounting, for whoever composes the server (`flotilla serve`):
 *
 *   const fleet = createFleetRoutes({
 *     orchestrator,                       // the Orchestrator (needs its lease API)
 *     store,                              // the same SqliteStore the orchestrator uses
 *     registrationToken,                  // --registration-token   (none → POST /register is 503)
 *     leaseMs: leaseSeconds * 1000,       // --lease-seconds        (default 300)
 *     nodeTimeoutMs: nodeTimeoutSeconds * 1000, // --node-timeout-seconds (default 90)
 *     adminKeys: [adminKey],              // admin keys of the server (plain or sha256:<hex>)
 *     clock, logger,
 *     // optional: maxLogBytes, maxUploadBytes, uploadDir, registrationRateLimit, publicUrl
 *   });
 *   app.route("/", fleet);                // at the root (or under a prefix: app.route("/q", fleet))
 *   await fleet.ready;                    // nodes re-registered with the orchestrator, schedules armed
 *   ...
 *   await fleet.close();                  // on shutdown: stops its timers
 *
 * Paths served: POST /register, GET /tasks/pending, GET /files/{name}, POST /nodes/heartbeat,
 * POST /status, POST /logs, GET /health, GET|DELETE /nodes[/{id}], POST|GET /tasks,
 * GET|DELETE /tasks/{id}, POST /tasks/cleanup, POST /upload, GET /logs/{task_id},
 * POST|GET /keys, GET|DELETE /keys/{id}, POST /keys/{id}/rotate, POST /keys/{id}/revoke,
 * GET /keys/audit, GET /dashboard/stats. The /dashboard page itself is not served here.
 * Mount the fleet app before routes of your own that could shadow these paths.
 */
import type { RouteConfig } from "@asteasolutions/zod-to-openapi";
import { silentLogger, systemClock, type TransitionEvent } from "@flotilla/core";
import { Hono } from "hono";
import { ClientResolver } from "../http/client.js";
import { AuthThrottle } from "../http/throttle.js";
import { KeyService } from "./keys.js";
import { NodeService } from "./nodes.js";
import { fleetOpenApiRoutes } from "./openapi.js";
import type { FleetRoutesOptions, ResolvedFleetOptions } from "./options.js";
import { mountFleetRoutes } from "./routes.js";
import { FleetState } from "./state.js";
import { TaskService } from "./tasks.js";

export { KEY_SCOPES, type KeyScope } from "./keys.js";
export type { FleetRoutesOptions, RegistrationRateLimit } from "./options.js";
export { FLEET_TASK_TYPE } from "./tasks.js";

/** The fleet app: a Hono app plus its lifecycle. */
export type FleetApp = Hono & {
  /** Resolves once stored nodes are registered with the orchestrator and schedules are armed. */
  readonly ready: Promise<void>;
  /** Stops the fleet's timers (offline sweep, recurring tasks). Idempotent. */
  close(): Promise<void>;
  /**
   * Removes what the fleet keeps for tasks the store no longer has (their state and session
   * logs, once retention removed them) and audit lines older than `auditOlderThanMs`. Call
   * it after each retention run; resolves how many of each went.
   */
  prune(options?: { auditOlderThanMs?: number }): Promise<{ tasks: number; audit: number }>;
  /**
   * Whether `key` is a stored fleet key with the `admin` scope (created through `POST /keys`,
   * not revoked, not expired; a rotated-out secret only during its grace period). Node keys
   * never pass. Plug it into the Vera routes so one key store serves both surfaces:
   * `createFlotillaApp({ auth: { keyHashes, verify: (k, what) => fleet.verifyAdminKey(k, what) } })`.
   * Every call reads the store, so revocation and rotation take effect at once.
   */
  verifyAdminKey(key: string, what?: string): Promise<boolean>;
  /**
   * The fleet routes as OpenAPI operations (built from the zod schemas that validate them),
   * with paths under `base`. `createFlotillaApp({ mount: [{ app: fleet }] })` adds them to
   * its `/openapi.json` and `/docs`.
   */
  openapiRoutes(base?: string): RouteConfig[];
};

/**
 * `nodeExpiryMs`: 24 h by default (never, when the offline timeout is that long itself), 0
 * for never, otherwise longer than the offline timeout.
 */
function expiry(value: number | undefined, timeoutMs: number): number {
  if (value === undefined) return timeoutMs < 86_400_000 ? 86_400_000 : 0;
  if (value === 0) return 0;
  if (!Number.isFinite(value) || value <= timeoutMs) {
    throw new TypeError(
      `nodeExpiryMs: expected 0 (never) or more than nodeTimeoutMs (${timeoutMs}), got ${value}`,
    );
  }
  return value;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) {
    throw new TypeError(`${name}: expected a positive number, got ${value}`);
  }
  return value;
}

/**
 * Creates the fleet routes: the Quarterback-compatible protocol a Victoria Terminal remote
 * runner or `flotilla runner` speaks (register, poll, files, heartbeat, status, logs) and the
 * admin API around it (nodes, tasks, uploads, logs, keys, audit, stats). Nodes become
 * `remote-node` workers of the orchestrator; every poll is one free slot matched like a local
 * one; a handed-out task is leased and comes back to the queue when its lease expires.
 * Everything durable goes through `store`.
 *
 * @example
 * ```ts
 * import { serve } from "@hono/node-server";
 * import { Orchestrator } from "@flotilla/core";
 * import { SqliteStore } from "@flotilla/core/sqlite";
 * import { createFleetRoutes } from "@flotilla/http-adapter";
 *
 * const store = new SqliteStore({ path: "flotilla.db" });
 * const orchestrator = new Orchestrator({ store });
 * await orchestrator.start();
 * const fleet = createFleetRoutes({ orchestrator, store, registrationToken: "s3cret", adminKeys: ["admin-key"] });
 * serve({ fetch: fleet.fetch, port: 8080 });
 * ```
 */
export function createFleetRoutes(options: FleetRoutesOptions): FleetApp {
  if (!options?.orchestrator) throw new TypeError("orchestrator: required");
  if (!options.store) throw new TypeError("store: required");
  const client = new ClientResolver({
    trustProxy: options.trustProxy ?? [],
    ...(options.publicUrl ? { publicUrl: options.publicUrl } : {}),
  });
  const o: ResolvedFleetOptions = {
    orchestrator: options.orchestrator,
    store: options.store,
    registrationToken: options.registrationToken || undefined,
    leaseMs: positive("leaseMs", options.leaseMs, 300_000),
    nodeTimeoutMs: positive("nodeTimeoutMs", options.nodeTimeoutMs, 90_000),
    nodeExpiryMs: expiry(options.nodeExpiryMs, options.nodeTimeoutMs ?? 90_000),
    adminKeys: options.adminKeys ?? [],
    openAdmin: options.openAdmin ?? false,
    maxLogBytes: positive("maxLogBytes", options.maxLogBytes, 32 * 1024 * 1024),
    maxUploadBytes: positive("maxUploadBytes", options.maxUploadBytes, 100 * 1024 * 1024),
    maxBodyBytes: positive("maxBodyBytes", options.maxBodyBytes, 1024 * 1024),
    uploadDir: options.uploadDir,
    registrationRateLimit: {
      max: positive("registrationRateLimit.max", options.registrationRateLimit?.max, 60),
      windowMs: positive(
        "registrationRateLimit.windowMs",
        options.registrationRateLimit?.windowMs,
        60_000,
      ),
    },
    reregistrationGraceMs: options.reregistrationGraceMs ?? 60_000,
    authThrottle:
      options.authThrottle === false
        ? undefined
        : options.authThrottle instanceof AuthThrottle
          ? options.authThrottle
          : new AuthThrottle(options.authThrottle ?? {}, {
              clock: options.clock ?? systemClock,
              logger: options.logger ?? silentLogger,
            }),
    maxAttempts: positive("maxAttempts", options.maxAttempts, 3),
    publicUrl: options.publicUrl,
    client,
    sourceOf: options.sourceOf ?? ((req, env) => client.source(req, env)),
    clock: options.clock ?? systemClock,
    logger: options.logger ?? silentLogger,
  };
  const engine = o.orchestrator;
  const state = new FleetState(o.store);
  const keys = new KeyService(state, o.clock, o.logger, o.adminKeys, o.openAdmin, o.authThrottle);
  const nodes = new NodeService(o, state, keys, engine);
  const tasks = new TaskService(o, state, engine, keys);
  keys.warnIfOpen();

  // Approval decisions (from any route, or the library) go to the audit log with the approver.
  const onDecision = (ev: TransitionEvent) => {
    if (ev.from !== "awaiting_approval") return;
    const d = ev.task.approvalDecision;
    if (!d) return;
    const detail = `task ${ev.taskId} (${ev.task.type}, ${ev.task.approval})${d.comment ? `: ${d.comment}` : ""}`;
    void keys
      .audit(d.decision === "approved" ? "task_approved" : "task_rejected", null, {
        actor: d.by ?? null,
        detail,
      })
      .catch((err) => o.logger.error({ err: String(err) }, "fleet: could not audit a decision"));
  };
  engine.on("task:transition", onDecision);

  let closed = false;
  let sweepTimer: ReturnType<typeof o.clock.setTimeout> | undefined;
  const sweepEvery = Math.max(1_000, Math.min(30_000, Math.floor(o.nodeTimeoutMs / 3)));
  const armSweep = () => {
    if (closed) return;
    sweepTimer = o.clock.setTimeout(() => {
      void nodes
        .sweep()
        .catch((err) => o.logger.error({ err }, "fleet: offline sweep failed"))
        .finally(armSweep);
    }, sweepEvery);
  };

  const ready = (async () => {
    await nodes.restore();
    await tasks.restoreSchedules();
    armSweep();
  })();
  ready.catch((err) => o.logger.error({ err }, "fleet: start-up failed"));

  const app = new Hono();
  mountFleetRoutes(app, { options: o, state, keys, nodes, tasks, engine, ready: () => ready });

  return Object.assign(app, {
    ready,
    async close() {
      closed = true;
      engine.off("task:transition", onDecision);
      if (sweepTimer !== undefined) o.clock.clearTimeout(sweepTimer);
      tasks.close();
      await ready.catch(() => undefined);
    },
    openapiRoutes: fleetOpenApiRoutes,
    async prune(options: { auditOlderThanMs?: number } = {}) {
      await ready;
      let removedTasks = 0;
      for (const s of await state.listTaskStates()) {
        if (await o.store.getTask(s.task_id)) continue;
        tasks.deleted.add(s.task_id);
        await state.deleteTaskState(s.task_id);
        await state.deleteLogs(s.task_id);
        removedTasks++;
      }
      const audit =
        options.auditOlderThanMs === undefined
          ? 0
          : await state.pruneAudit(o.clock.now() - options.auditOlderThanMs);
      return { tasks: removedTasks, audit };
    },
    async verifyAdminKey(key: string, what = "vera route") {
      await ready;
      return keys.verifyAdmin(key, what, null);
    },
  });
}
