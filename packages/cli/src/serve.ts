import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  Orchestrator,
  ResourceManager,
  type Store,
  scheduleRetention,
  type Worker,
} from "@flotilla/core";
import { SqliteStore } from "@flotilla/core/sqlite";
import {
  AuthThrottle,
  applyResourcePolicy,
  createCredentialSealer,
  createFleetRoutes,
  createFlotillaApp,
  type FlotillaAppOptions,
  type FlotillaServer,
  type ResourcePolicy,
  serveFlotilla,
} from "@flotilla/http-adapter";
import { PostgresStore } from "@flotilla/store-postgres";
import { resolveAdminKey } from "./admin-key.js";
import type { ServeConfig } from "./config.js";
import { buildWorkerFactories } from "./factories.js";
import { createJsonLogger } from "./logger.js";
import { SHARED_PARTITIONS, type Sharing, shareSchema } from "./shared.js";
import { detectWorkers } from "./workers.js";

/** A running `flotilla serve`. */
export interface RunningServer {
  url: string;
  server: FlotillaServer;
  orchestrator: Orchestrator;
  /** Graceful stop: stop accepting, let running tasks finish (or hand them back), close the store. */
  stop(): Promise<void>;
  /**
   * Applies the resource policy (`resources`, `tenantWeights`) of a freshly loaded config
   * while running, keeping usage already counted (what SIGHUP does after re-reading the
   * file). Returns the settings that differ but only take effect at the next start; throws
   * naming the bad setting, and then changes nothing.
   */
  reload(next: ServeConfig): Promise<{ restartRequired: string[] }>;
  /**
   * Resolves, with the reason, when the server stopped on its own: on PostgreSQL, another
   * server took its schema (after this one lost its lock), so nothing it does could be
   * stored. By then it has stopped (running tasks aborted: the new holder retries them).
   */
  ended: Promise<string>;
}

/** Package version reported by `/health`. */
export const VERSION = "0.1.0";

/**
 * Starts the standalone server: the store (SQLite in `config.dataDir`, or PostgreSQL), the orchestrator, the
 * workers this environment allows, the HTTP/WebSocket API and the fleet routes. Prints the
 * URLs, the workers registered (and why others were not), and on first start the admin key.
 *
 * @example
 * ```ts
 * const running = await runServe(loadServeConfig({ port: "0", dataDir: "/tmp/f" }));
 * await running.stop();
 * ```
 */
export async function runServe(
  config: ServeConfig,
  env: Record<string, string | undefined> = process.env,
  print: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
): Promise<RunningServer> {
  const logger = createJsonLogger(config.logLevel);
  await mkdir(config.dataDir, { recursive: true });
  let store: Store;
  let storeNote: string;
  if (config.shared && config.standby) {
    throw new Error(
      "--shared and --standby do not go together: shared servers all serve, a standby waits",
    );
  }
  if (config.store === "sqlite") {
    if (config.standby || config.shared) {
      throw new Error(
        `${config.shared ? "--shared" : "--standby"} needs a postgres:// store (--store): a SQLite file has one server`,
      );
    }
    const dbPath = join(config.dataDir, "flotilla.db");
    store = new SqliteStore({ path: dbPath, logger });
    storeNote = dbPath;
  } else {
    const pgStore = new PostgresStore({
      connectionString: config.store,
      schema: config.storeSchema,
      logger,
      standby: config.standby,
      // Shared servers split the schema's work by partition leases, not by holding it whole.
      exclusive: !config.shared,
    });
    store = pgStore;
    storeNote = pgStore.where;
    if (config.standby) {
      print(`Standby: serving ${pgStore.where} once no other server holds it…`);
    }
  }
  // Opened before anything reads it (the fleet routes load nodes and keys at creation).
  await store.open();

  // Rate limits, budgets, cost ledger. Limits keyed `worker:<id>` apply to one worker
  // (set by `rate_limit_per_minute` when an LLM API is registered through the API).
  const resources = new ResourceManager({
    ...config.resources,
    logger,
    keys: (task, worker) => [...task.rateLimitKeys, `worker:${worker.id}`],
  });
  const orchestrator: Orchestrator = new Orchestrator({
    store,
    logger,
    gates: resources.gates,
    ...(config.tenantWeights ? { fairness: { weights: config.tenantWeights } } : {}),
    leaseMs: Math.round(config.leaseSeconds * 1000),
    ...(config.concurrency ? { concurrency: config.concurrency } : {}),
    ...(config.shared ? { partitions: { count: SHARED_PARTITIONS } } : {}),
  });

  const decisions = await detectWorkers(config, env, logger);
  for (const d of decisions) {
    if (d.registered && d.worker) {
      try {
        await orchestrator.register(d.worker as Worker);
      } catch (err) {
        d.registered = false;
        d.reason = `registration failed: ${(err as Error).message}`;
      }
    }
  }

  const admin = config.open
    ? undefined
    : await resolveAdminKey(
        config.dataDir,
        config.adminKey,
        store instanceof PostgresStore ? store : undefined,
      );
  const { factories, notes } = await buildWorkerFactories(resources);

  // One throttle for both surfaces: a source's wrong keys count together.
  const authThrottle = new AuthThrottle({ lockAfter: config.authLockAfter }, { logger });
  const mount: NonNullable<FlotillaAppOptions["mount"]> = [];
  let fleet: ReturnType<typeof createFleetRoutes> | undefined;
  let fleetNote: string;
  try {
    fleet = createFleetRoutes({
      orchestrator: orchestrator as unknown as Parameters<
        typeof createFleetRoutes
      >[0]["orchestrator"],
      store,
      ...(config.registrationToken ? { registrationToken: config.registrationToken } : {}),
      leaseMs: Math.round(config.leaseSeconds * 1000),
      nodeTimeoutMs: Math.round(config.nodeTimeoutSeconds * 1000),
      nodeExpiryMs: Math.round(config.nodeExpiryHours * 3_600_000),
      registrationRateLimit: { max: config.registrationLimitPerMinute, windowMs: 60_000 },
      authThrottle,
      trustProxy: config.trustProxy,
      ...(config.publicUrl ? { publicUrl: config.publicUrl } : {}),
      adminKeys: admin?.hashes ?? [],
      openAdmin: config.open,
      logger,
    });
    mount.push({ app: fleet });
    fleetNote = config.registrationToken
      ? `on (nodes register with X-Registration-Token; lease ${config.leaseSeconds} s, node timeout ${config.nodeTimeoutSeconds} s)`
      : "off (set --registration-token to let nodes register)";
  } catch (err) {
    fleetNote = `unavailable: ${(err as Error).message}`;
  }

  const app = createFlotillaApp({
    orchestrator,
    // One key store for both surfaces: fleet keys with the `admin` scope (POST /keys) work
    // on the Vera routes too; node keys never do. Read per request, so revocation and
    // rotation apply at once.
    auth: config.open
      ? { mode: "open" }
      : {
          keyHashes: admin?.hashes ?? [],
          ...(fleet
            ? { verify: (key: string, what: string) => fleet.verifyAdminKey(key, what) }
            : {}),
        },
    prefix: config.prefix,
    workerFactories: factories,
    authThrottle,
    trustProxy: config.trustProxy,
    // Workers registered through the API are kept in the store and registered again at start.
    workerStore: {
      store,
      env,
      ...(config.secretKey ? { sealer: createCredentialSealer(config.secretKey) } : {}),
    },
    bodyLimitBytes: config.bodyLimitBytes,
    logger,
    resources,
    version: VERSION,
    mount,
    ...(config.corsOrigin ? { cors: { origin: config.corsOrigin } } : {}),
    // Shared servers show their clients the tasks the others run too, and share the
    // resource policy set through any of them.
    ...(config.shared && store instanceof PostgresStore
      ? {
          sharedEvents: store,
          publishPolicy: (policy: ResourcePolicy) =>
            sharing ? sharing.publishPolicy(policy) : Promise.resolve(),
        }
      : {}),
  });

  resources.start();
  await orchestrator.start();
  let sharing: Sharing | undefined;
  if (config.shared && store instanceof PostgresStore) {
    sharing = await shareSchema(store, orchestrator, {
      ...(config.instanceId ? { instanceId: config.instanceId } : {}),
      leaseMs: Math.round(config.partitionLeaseSeconds * 1000),
      limiter: resources.limiter,
      budgets: resources.budgets,
      applyPolicy: (policy) => applyResourcePolicy(orchestrator, resources, policy),
      authThrottle,
      logger,
    });
  }
  // After start, so a restored worker's quota counts today's use once (from the ledger).
  let restored: Awaited<ReturnType<typeof app.flotilla.restoreWorkers>>;
  try {
    restored = await app.flotilla.restoreWorkers();
  } catch (err) {
    app.flotilla.close();
    await orchestrator.stop({ mode: "abort" }).catch(() => {});
    await sharing?.stop().catch(() => {});
    resources.stop();
    await fleet?.close().catch(() => {});
    await admin?.forget().catch(() => {});
    await store.close().catch(() => {});
    throw new Error(`cannot register the stored workers again: ${(err as Error).message}`);
  }
  if (fleet) await fleet.ready;
  // Bounded history: finished tasks by age and count, usage lines once no budget needs them.
  const retention =
    config.retentionDays > 0 || config.retentionMaxTasks > 0
      ? scheduleRetention(store, {
          ...(config.retentionDays > 0 ? { olderThan: config.retentionDays * 86_400_000 } : {}),
          ...(config.retentionMaxTasks > 0 ? { keep: config.retentionMaxTasks } : {}),
          usageOlderThan: Math.max(
            config.retentionDays * 86_400_000,
            resources.budgets.restoreSpanMs + 86_400_000,
          ),
          logger,
          onCleanup: (n) => {
            if (n > 0) logger.info({ deleted: n }, "retention removed finished tasks");
            // The fleet's rows of removed tasks, and audit lines as old as the retention.
            void fleet
              ?.prune(
                config.retentionDays > 0
                  ? { auditOlderThanMs: config.retentionDays * 86_400_000 }
                  : {},
              )
              .catch((err: unknown) => logger.warn({ err: String(err) }, "fleet prune failed"));
          },
        })
      : undefined;
  let server: FlotillaServer;
  try {
    server = await serveFlotilla(app, {
      host: config.host,
      port: config.port,
      limits: {
        headersTimeoutMs: Math.round(config.headersTimeoutSeconds * 1000),
        idleTimeoutMs: Math.round(config.idleTimeoutSeconds * 1000),
        minBodyBytesPerSecond: config.minBodyBytesPerSecond,
        maxConnectionsPerSource: config.maxConnectionsPerSource,
        trustProxy: config.trustProxy,
      },
    });
  } catch (err) {
    retention?.stop();
    await orchestrator.stop({ mode: "abort" }).catch(() => {});
    await sharing?.stop().catch(() => {});
    resources.stop();
    await fleet?.close().catch(() => {});
    // A key generated by this failed start was never shown: forget it so the next start prints one.
    await admin?.forget().catch(() => {});
    await store.close().catch(() => {});
    throw new Error(`cannot listen on ${config.host}:${config.port}: ${(err as Error).message}`);
  }
  const url = server.url;
  print(`Flotilla ${VERSION} listening on ${url}`);
  print(
    `  API:       ${url}${config.prefix}   (WebSocket ${url.replace(/^http/, "ws")}${config.prefix}/ws/events)`,
  );
  print(`  Dashboard: ${url}/dashboard`);
  print(`  Docs:      ${url}/docs   (OpenAPI ${url}/openapi.json)`);
  print(`  Metrics:   ${url}/metrics   Health: ${url}/health`);
  print(`  Data:      ${storeNote}`);
  if (sharing) {
    print(
      `  Shared:    one of the servers of this schema (instance ${sharing.leases.instanceId}; ${SHARED_PARTITIONS} partitions, ${sharing.leases.owned().size} held now; leases ${config.partitionLeaseSeconds} s)`,
    );
  }
  print("Workers:");
  for (const d of decisions) print(`  ${d.registered ? "+" : "-"} ${d.name}: ${d.reason}`);
  for (const r of restored) {
    print(
      `  ${r.ok ? "+" : "-"} ${r.worker_id}: ${r.ok ? "registered through the API earlier, registered again" : `stored, not registered again: ${r.error}`}`,
    );
  }
  print(`Fleet: ${fleetNote}`);
  for (const n of notes) print(`Note: ${n}`);
  if (config.open) {
    print("Auth: OPEN MODE, no API key required. Use only on a machine you trust.");
  } else if (admin?.generated) {
    print(`Admin key (shown once; stored hashed in ${admin.file}): ${admin.generated}`);
  } else if (admin?.source === "stored") {
    print(
      `Auth: admin key stored hashed in ${admin.file} (printed on first start; delete it to generate a new one)`,
    );
  } else {
    print("Auth: admin key from --admin-key / FLOTILLA_ADMIN_KEY");
  }

  let stopping: Promise<void> | undefined;
  const stop = (mode: "drain" | "abort" = "drain") => {
    stopping ??= (async () => {
      logger.info({}, "shutting down: refusing new work, draining running tasks");
      await server.close({ graceMs: 5000 });
      await fleet
        ?.close()
        .catch((err: unknown) => logger.warn({ err: String(err) }, "fleet close failed"));
      await orchestrator
        .stop({ mode, timeoutMs: Math.round(config.shutdownTimeoutSeconds * 1000) })
        .catch((err: unknown) => logger.error({ err: String(err) }, "orchestrator stop failed"));
      // Shared: what is left of this server's partitions goes to the others now.
      await sharing
        ?.stop()
        .catch((err: unknown) =>
          logger.error({ err: String(err) }, "handing partitions over failed"),
        );
      resources.stop();
      retention?.stop();
      await store
        .close()
        .catch((err: unknown) => logger.error({ err: String(err) }, "store close failed"));
      logger.info({}, "stopped");
    })();
    return stopping;
  };
  let current = config;
  const reload = async (next: ServeConfig) => {
    const policy = { ...(next.resources ?? {}), tenantWeights: next.tenantWeights ?? {} };
    const out = await applyResourcePolicy(orchestrator, resources, policy);
    // Shared servers: a reload of one is the policy of all.
    await sharing?.publishPolicy(policy);
    const restartRequired = [
      ...out.restartRequired.map((k) => `resources.${k}`),
      ...Object.keys(next).filter(
        (k) =>
          !["resources", "tenantWeights", "configFile"].includes(k) &&
          JSON.stringify(next[k as keyof ServeConfig]) !==
            JSON.stringify(current[k as keyof ServeConfig]),
      ),
    ];
    current = { ...current, ...next };
    logger.info({ restartRequired }, "resource policy reloaded");
    return { restartRequired };
  };
  const ended = new Promise<string>((resolve) => {
    if (!(store instanceof PostgresStore)) return;
    store.onFenced((err) => {
      logger.error(
        { database: store.where, err: err.message },
        "another server holds this server's schema now: stopping (start this one again, e.g. with --standby)",
      );
      void stop("abort").then(() => resolve(`another server took ${store.where}`));
    });
  });
  return { url, server, orchestrator, stop: () => stop(), reload, ended };
}
