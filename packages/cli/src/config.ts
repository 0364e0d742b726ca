import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { type ResourceConfig, ResourceManager } from "@flotilla/core";
import { ClientResolver } from "@flotilla/http-adapter";
import { z } from "zod";
import { LOG_LEVELS, type LogLevel } from "./logger.js";

/** Settings of `flotilla serve`, after flags, environment and config file are merged. */
export interface ServeConfig {
  host: string;
  port: number;
  dataDir: string;
  /** Where tasks are kept: `"sqlite"` (the file in `dataDir`) or a `postgres://` URL. */
  store: string;
  /** The PostgreSQL schema of a `postgres://` store. */
  storeSchema: string;
  /** With a `postgres://` store: wait for the instance holding the schema to let go, then serve. */
  standby: boolean;
  /** With a `postgres://` store: serve the schema together with the other shared servers on it. */
  shared: boolean;
  /** This server's name among the shared servers of a schema (unique per live server). */
  instanceId?: string;
  /** How long a shared server's partition leases last without renewal. */
  partitionLeaseSeconds: number;
  adminKey?: string;
  registrationToken?: string;
  leaseSeconds: number;
  nodeTimeoutSeconds: number;
  /** Hours of silence after which a node is hidden and its tasks requeued (0: never). */
  nodeExpiryHours: number;
  logLevel: LogLevel;
  open: boolean;
  prefix: string;
  allowHosts: string[];
  corsOrigin?: string[];
  bodyLimitBytes: number;
  concurrency?: number;
  shutdownTimeoutSeconds: number;
  ollamaUrl: string;
  detectWorkers: boolean;
  /** Failed authentications from one address (in 10 min) after which it gets 429 (0: never). */
  authLockAfter: number;
  /** Successful node registrations per minute from one address. */
  registrationLimitPerMinute: number;
  /** Finished tasks older than this many days are removed (0: kept by age). */
  retentionDays: number;
  /** At most this many finished tasks are kept (0: no count limit). */
  retentionMaxTasks: number;
  /** Seconds a client has to send a request's headers. */
  headersTimeoutSeconds: number;
  /** Seconds a connection with no request in flight stays open. */
  idleTimeoutSeconds: number;
  /** Slowest accepted request body (bytes per second; 0: no check). */
  minBodyBytesPerSecond: number;
  /** Open connections per client address (0: no cap; trusted proxies are not capped). */
  maxConnectionsPerSource: number;
  /** Proxies whose X-Forwarded-* headers are believed (addresses, CIDRs, loopback, …). */
  trustProxy: string[];
  /** The URL the server is reached at, for the URLs it hands out (fleet nodes' orchestrator_url). */
  publicUrl?: string;
  /** Encrypts the credentials of workers registered through the API, so they are kept across restarts. */
  secretKey?: string;
  /** The config file's `resources` section: limits, budgets, prices, tenant caps, admission. */
  resources?: ResourceConfig;
  /** The config file's `tenantWeights`: fair-share weight per tenant (others: 1). */
  tenantWeights?: Record<string, number>;
  /** The config file read, if any (re-read on SIGHUP). */
  configFile?: string;
}

/**
 * Settings only a config file holds (structured, no flag or environment variable): the
 * resource policy. Both can be changed while the server runs (SIGHUP re-reads the file, or
 * `PUT {prefix}/resources/config`).
 */
export const FILE_ONLY_SETTINGS = ["resources", "tenantWeights"] as const;

/** One option of `flotilla serve`: its flag, environment variable, config-file key and default. */
export interface OptionSpec {
  key: keyof ServeConfig;
  flag: string;
  env: string;
  description: string;
  default?: string;
}

/** Every option of `flotilla serve` (the help text and docs/cli.md are built from it). */
export const SERVE_OPTIONS: readonly OptionSpec[] = [
  {
    key: "host",
    flag: "--host <host>",
    env: "FLOTILLA_HOST",
    description: "interface to listen on",
    default: "127.0.0.1",
  },
  {
    key: "port",
    flag: "--port <port>",
    env: "FLOTILLA_PORT",
    description: "TCP port (0 picks a free one)",
    default: "8000",
  },
  {
    key: "dataDir",
    flag: "--data-dir <dir>",
    env: "FLOTILLA_DATA_DIR",
    description: "where the SQLite database and the hashed admin key live",
    default: ".flotilla",
  },
  {
    key: "store",
    flag: "--store <store>",
    env: "FLOTILLA_STORE",
    description:
      "where tasks are kept: sqlite (a file in --data-dir) or a postgres://user:password@host:port/database URL",
    default: "sqlite",
  },
  {
    key: "storeSchema",
    flag: "--store-schema <name>",
    env: "FLOTILLA_STORE_SCHEMA",
    description: "the PostgreSQL schema that holds the tables (one server per schema)",
    default: "flotilla",
  },
  {
    key: "standby",
    flag: "--standby",
    env: "FLOTILLA_STANDBY",
    description:
      "with a postgres:// store: wait until the server holding the schema stops or is lost, then take over and serve",
    default: "false",
  },
  {
    key: "shared",
    flag: "--shared",
    env: "FLOTILLA_SHARED",
    description:
      "with a postgres:// store: serve the schema together with the other --shared servers on it (its work split into 64 partitions leased between them)",
    default: "false",
  },
  {
    key: "instanceId",
    flag: "--instance-id <name>",
    env: "FLOTILLA_INSTANCE_ID",
    description:
      "this server's name among the --shared servers of a schema (default: host name and process id)",
  },
  {
    key: "partitionLeaseSeconds",
    flag: "--partition-lease-seconds <n>",
    env: "FLOTILLA_PARTITION_LEASE_SECONDS",
    description:
      "with --shared: how long a server's partitions stay leased to it without renewal (a lost server's work moves on after this long)",
    default: "15",
  },
  {
    key: "adminKey",
    flag: "--admin-key <key>",
    env: "FLOTILLA_ADMIN_KEY",
    description:
      "admin API key (otherwise one is generated on first start, printed once and stored hashed in the data dir)",
  },
  {
    key: "registrationToken",
    flag: "--registration-token <token>",
    env: "FLOTILLA_REGISTRATION_TOKEN",
    description: "token fleet nodes present to register (fleet registration is off when unset)",
  },
  {
    key: "retentionDays",
    flag: "--retention-days <n>",
    env: "FLOTILLA_RETENTION_DAYS",
    description:
      "finished tasks older than this are removed with their events and attempts, hourly, in small batches (0: never by age)",
    default: "30",
  },
  {
    key: "retentionMaxTasks",
    flag: "--retention-max-tasks <n>",
    env: "FLOTILLA_RETENTION_MAX_TASKS",
    description: "at most this many finished tasks are kept, the newest (0: no count limit)",
    default: "100000",
  },
  {
    key: "headersTimeoutSeconds",
    flag: "--headers-timeout-seconds <n>",
    env: "FLOTILLA_HEADERS_TIMEOUT_SECONDS",
    description: "a client that has not sent a request's headers by then is disconnected",
    default: "10",
  },
  {
    key: "idleTimeoutSeconds",
    flag: "--idle-timeout-seconds <n>",
    env: "FLOTILLA_IDLE_TIMEOUT_SECONDS",
    description:
      "a connection with no request in flight is closed after this long (requests in flight, SSE and WebSockets are never cut by it)",
    default: "30",
  },
  {
    key: "minBodyBytesPerSecond",
    flag: "--min-body-bytes-per-second <n>",
    env: "FLOTILLA_MIN_BODY_BYTES_PER_SECOND",
    description: "a request body arriving slower than this (over 10 s) is cut; 0: never",
    default: "512",
  },
  {
    key: "maxConnectionsPerSource",
    flag: "--max-connections-per-source <n>",
    env: "FLOTILLA_MAX_CONNECTIONS_PER_SOURCE",
    description:
      "open connections one client address may hold (more are closed at once; trusted proxies are not capped); 0: no cap",
    default: "512",
  },
  {
    key: "trustProxy",
    flag: "--trust-proxy <list>",
    env: "FLOTILLA_TRUST_PROXY",
    description:
      "comma-separated proxies whose X-Forwarded-For/Proto/Host/Prefix are believed (addresses, CIDRs, loopback, linklocal, uniquelocal); the client address and the URLs handed to nodes come from them",
    default: "none",
  },
  {
    key: "publicUrl",
    flag: "--public-url <url>",
    env: "FLOTILLA_PUBLIC_URL",
    description:
      "the URL clients reach the server at (e.g. https://ops.example.com/fl); the base of the URLs handed to fleet nodes",
  },
  {
    key: "authLockAfter",
    flag: "--auth-lock-after <n>",
    env: "FLOTILLA_AUTH_LOCK_AFTER",
    description:
      "wrong keys from one address (in 10 min) after which it gets 429 with Retry-After; before that, after 5, answers are delayed (0: never 429)",
    default: "30",
  },
  {
    key: "registrationLimitPerMinute",
    flag: "--registration-limit-per-minute <n>",
    env: "FLOTILLA_REGISTRATION_LIMIT_PER_MINUTE",
    description:
      "node registrations with the right token per minute from one address (a wrong token is slowed down, never counted here)",
    default: "60",
  },
  {
    key: "secretKey",
    flag: "--secret-key <secret>",
    env: "FLOTILLA_SECRET_KEY",
    description:
      "secret (16+ characters) that encrypts the API keys and tokens of workers registered through the API, so they are registered again after a restart",
  },
  {
    key: "leaseSeconds",
    flag: "--lease-seconds <n>",
    env: "FLOTILLA_LEASE_SECONDS",
    description: "lease a fleet node gets per task, renewed by heartbeats",
    default: "300",
  },
  {
    key: "nodeTimeoutSeconds",
    flag: "--node-timeout-seconds <n>",
    env: "FLOTILLA_NODE_TIMEOUT_SECONDS",
    description: "a node silent this long is shown offline",
    default: "90",
  },
  {
    key: "nodeExpiryHours",
    flag: "--node-expiry-hours <n>",
    env: "FLOTILLA_NODE_EXPIRY_HOURS",
    description:
      "a node silent this long is hidden from lists and its tasks requeued (0: never); its key stays valid",
    default: "24",
  },
  {
    key: "logLevel",
    flag: "--log-level <level>",
    env: "FLOTILLA_LOG_LEVEL",
    description: "trace, debug, info, warn, error or silent (JSON lines on stderr)",
    default: "info",
  },
  {
    key: "open",
    flag: "--open",
    env: "FLOTILLA_OPEN",
    description: "no authentication at all (local use only; logged loudly)",
    default: "false",
  },
  {
    key: "prefix",
    flag: "--prefix <path>",
    env: "FLOTILLA_PREFIX",
    description: "path of the Vera-compatible routes",
    default: "/api/v2/orchestrator",
  },
  {
    key: "allowHosts",
    flag: "--allow-hosts <hosts>",
    env: "FLOTILLA_ALLOW_HOSTS",
    description:
      "comma-separated hosts the built-in api_request worker and http_get tool may call (host, host:port, *.domain)",
    default: "none",
  },
  {
    key: "corsOrigin",
    flag: "--cors-origin <origins>",
    env: "FLOTILLA_CORS_ORIGIN",
    description: "comma-separated origins allowed by CORS (* for any); no CORS headers when unset",
  },
  {
    key: "bodyLimitBytes",
    flag: "--body-limit-bytes <n>",
    env: "FLOTILLA_BODY_LIMIT_BYTES",
    description: "largest request body of the API routes",
    default: "1048576",
  },
  {
    key: "concurrency",
    flag: "--concurrency <n>",
    env: "FLOTILLA_CONCURRENCY",
    description: "tasks running at once across all workers",
    default: "unlimited (each worker's slots)",
  },
  {
    key: "shutdownTimeoutSeconds",
    flag: "--shutdown-timeout-seconds <n>",
    env: "FLOTILLA_SHUTDOWN_TIMEOUT_SECONDS",
    description:
      "on SIGINT/SIGTERM, how long running tasks may finish before they are handed back to the queue",
    default: "30",
  },
  {
    key: "ollamaUrl",
    flag: "--ollama-url <url>",
    env: "OLLAMA_HOST",
    description: "where to look for Ollama",
    default: "http://127.0.0.1:11434",
  },
  {
    key: "detectWorkers",
    flag: "--no-detect-workers",
    env: "FLOTILLA_DETECT_WORKERS",
    description: "do not probe Docker/Ollama nor read provider keys (built-in workers only)",
    default: "true",
  },
];

const bool = z
  .union([z.boolean(), z.enum(["1", "0", "true", "false", "yes", "no"])])
  .transform((v) => (typeof v === "boolean" ? v : ["1", "true", "yes"].includes(v)));
const num = (min: number, int = true) =>
  z.coerce
    .number({ error: `expected ${int ? "an integer" : "a number"} >= ${min}` })
    .refine((n) => Number.isFinite(n) && n >= min && (!int || Number.isInteger(n)), {
      message: `expected ${int ? "an integer" : "a number"} >= ${min}`,
    });
const list = z
  .union([z.array(z.string()), z.string()])
  .transform((v) =>
    (Array.isArray(v) ? v : v.split(",")).map((s) => s.trim()).filter((s) => s && s !== "none"),
  );

const ConfigSchema = z.object({
  host: z.string().min(1).default("127.0.0.1"),
  port: num(0)
    .refine((n) => n <= 65535, { message: "expected a port 0-65535" })
    .default(8000),
  dataDir: z.string().min(1).default(".flotilla"),
  store: z
    .string()
    .refine((v) => v === "sqlite" || /^postgres(ql)?:\/\/[^/]/.test(v), {
      message: "expected sqlite or a postgres://user:password@host:port/database URL",
    })
    .default("sqlite"),
  storeSchema: z
    .string()
    .regex(/^[a-z_][a-z0-9_]{0,62}$/, "expected a lower-case identifier (letters, digits, _)")
    .default("flotilla"),
  standby: bool.default(false),
  shared: bool.default(false),
  instanceId: z.string().min(1).max(200).optional(),
  partitionLeaseSeconds: num(1, false).default(15),
  adminKey: z.string().min(8, "expected at least 8 characters").optional(),
  registrationToken: z.string().min(1).optional(),
  secretKey: z.string().min(16, "expected at least 16 characters").optional(),
  authLockAfter: num(0).default(30),
  trustProxy: list.default([]),
  headersTimeoutSeconds: num(0.1, false).default(10),
  retentionDays: num(0, false).default(30),
  retentionMaxTasks: num(0).default(100_000),
  idleTimeoutSeconds: num(0.1, false).default(30),
  minBodyBytesPerSecond: num(0).default(512),
  maxConnectionsPerSource: num(0).default(512),
  publicUrl: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }).optional(),
  registrationLimitPerMinute: num(1).default(60),
  leaseSeconds: num(1, false).default(300),
  nodeTimeoutSeconds: num(1, false).default(90),
  nodeExpiryHours: num(0, false).default(24),
  logLevel: z
    .enum(Object.keys(LOG_LEVELS) as [LogLevel, ...LogLevel[]], {
      error: `expected one of ${Object.keys(LOG_LEVELS).join(", ")}`,
    })
    .default("info"),
  open: bool.default(false),
  prefix: z
    .string()
    .regex(/^\/[A-Za-z0-9_\-/.]*$/, "expected a path starting with /")
    .default("/api/v2/orchestrator"),
  allowHosts: list.default([]),
  corsOrigin: list.optional(),
  bodyLimitBytes: num(1024).default(1_048_576),
  concurrency: num(1).optional(),
  shutdownTimeoutSeconds: num(0, false).default(30),
  ollamaUrl: z
    .preprocess(
      (v) => (typeof v === "string" && !/^[a-z]+:\/\//i.test(v) ? `http://${v}` : v),
      z.url({ protocol: /^https?$/ }),
    )
    .default("http://127.0.0.1:11434"),
  detectWorkers: bool.default(true),
});

/**
 * Merges `flotilla serve` settings: command-line flags win over environment variables
 * (`FLOTILLA_*`), which win over the JSON config file (`--config` / `FLOTILLA_CONFIG`),
 * which wins over defaults. Throws an `Error` naming the bad setting and where it came from.
 *
 * @example
 * ```ts
 * const config = loadServeConfig({ port: "9000" }, process.env);
 * ```
 */
export function loadServeConfig(
  flags: Record<string, unknown>,
  env: Record<string, string | undefined> = process.env,
): ServeConfig {
  const merged: Record<string, unknown> = {};
  const source: Record<string, string> = {};
  const configPath = (flags.config as string | undefined) ?? env.FLOTILLA_CONFIG;
  if (configPath) {
    let file: unknown;
    try {
      file = JSON.parse(readFileSync(resolve(configPath), "utf8"));
    } catch (err) {
      throw new Error(`config file ${configPath}: ${(err as Error).message}`);
    }
    if (!file || typeof file !== "object" || Array.isArray(file)) {
      throw new Error(`config file ${configPath}: expected a JSON object`);
    }
    const known = new Set([...SERVE_OPTIONS.map((o) => o.key as string), ...FILE_ONLY_SETTINGS]);
    for (const [k, v] of Object.entries(file)) {
      if (!known.has(k)) {
        throw new Error(
          `config file ${configPath}: unknown setting "${k}" (known: ${[...known].join(", ")})`,
        );
      }
      merged[k] = v;
      source[k] = `config file ${configPath}`;
    }
  }
  for (const o of SERVE_OPTIONS) {
    const v = env[o.env];
    if (v !== undefined && v !== "") {
      merged[o.key] = v;
      source[o.key] = `environment ${o.env}`;
    }
  }
  for (const o of SERVE_OPTIONS) {
    const v = flags[o.key];
    if (v !== undefined) {
      merged[o.key] = v;
      source[o.key] = `flag ${o.flag.split(" ")[0]}`;
    }
  }
  const r = ConfigSchema.safeParse(merged);
  if (!r.success) {
    const msgs = r.error.issues.map((i) => {
      const k = String(i.path[0] ?? "");
      return `${source[k] ?? k}: ${i.message}`;
    });
    throw new Error(`invalid configuration: ${msgs.join("; ")}`);
  }
  const c = r.data;
  if (c.nodeExpiryHours > 0 && c.nodeExpiryHours * 3600 <= c.nodeTimeoutSeconds) {
    throw new Error(
      `invalid configuration: ${source.nodeExpiryHours ?? "nodeExpiryHours"}: ${c.nodeExpiryHours} h is not longer than the node timeout (${c.nodeTimeoutSeconds} s); use 0 to never expire nodes`,
    );
  }
  const out: ServeConfig = {
    host: c.host,
    port: c.port,
    dataDir: resolve(c.dataDir),
    store: c.store,
    storeSchema: c.storeSchema,
    standby: c.standby,
    shared: c.shared,
    ...(c.instanceId ? { instanceId: c.instanceId } : {}),
    partitionLeaseSeconds: c.partitionLeaseSeconds,
    leaseSeconds: c.leaseSeconds,
    nodeTimeoutSeconds: c.nodeTimeoutSeconds,
    nodeExpiryHours: c.nodeExpiryHours,
    authLockAfter: c.authLockAfter,
    trustProxy: c.trustProxy,
    headersTimeoutSeconds: c.headersTimeoutSeconds,
    retentionDays: c.retentionDays,
    retentionMaxTasks: c.retentionMaxTasks,
    idleTimeoutSeconds: c.idleTimeoutSeconds,
    minBodyBytesPerSecond: c.minBodyBytesPerSecond,
    maxConnectionsPerSource: c.maxConnectionsPerSource,
    registrationLimitPerMinute: c.registrationLimitPerMinute,
    logLevel: c.logLevel,
    open: c.open,
    prefix: c.prefix.replace(/\/+$/, "") || "/",
    allowHosts: c.allowHosts,
    bodyLimitBytes: c.bodyLimitBytes,
    shutdownTimeoutSeconds: c.shutdownTimeoutSeconds,
    ollamaUrl: c.ollamaUrl,
    detectWorkers: c.detectWorkers,
  };
  if (c.adminKey) out.adminKey = c.adminKey;
  if (c.registrationToken) out.registrationToken = c.registrationToken;
  if (c.secretKey) out.secretKey = c.secretKey;
  if (c.publicUrl) out.publicUrl = c.publicUrl;
  if (c.corsOrigin?.length) out.corsOrigin = c.corsOrigin;
  if (c.concurrency !== undefined) out.concurrency = c.concurrency;
  if (c.trustProxy.length > 0) {
    try {
      new ClientResolver({ trustProxy: c.trustProxy });
    } catch (err) {
      throw new Error(
        `invalid configuration: ${source.trustProxy ?? "trustProxy"}: ${(err as Error).message} (expected addresses, CIDRs, loopback, linklocal or uniquelocal)`,
      );
    }
  }
  if (configPath) out.configFile = resolve(configPath);
  if (merged.resources !== undefined) {
    out.resources = checkResources(merged.resources, `config file ${configPath}`);
  }
  if (merged.tenantWeights !== undefined) {
    const w = z
      .record(z.string().min(1), z.number().positive().finite(), {
        error: "expected { tenant: weight > 0 }",
      })
      .safeParse(merged.tenantWeights);
    if (!w.success) {
      const i = w.error.issues[0]!;
      const at = ["tenantWeights", ...i.path.map(String)].join(".");
      throw new Error(`invalid configuration: config file ${configPath}: ${at}: ${i.message}`);
    }
    out.tenantWeights = w.data;
  }
  return out;
}

/**
 * Checks a `resources` section exactly as the engine will read it (the same validation as
 * `new ResourceManager(...)`), so a nonsensical limit or budget stops the start naming the
 * setting and where it came from.
 */
function checkResources(value: unknown, where: string): ResourceConfig {
  if (!value || typeof value !== "object" || Array.isArray(value)) {
    throw new Error(`invalid configuration: ${where}: resources: expected an object`);
  }
  try {
    new ResourceManager(value as ResourceConfig).stop();
  } catch (err) {
    const msg = (err as Error).message.replace(/^invalid config: /, "");
    throw new Error(
      `invalid configuration: ${where}: ${msg.startsWith("resources") ? "" : "resources."}${msg}`,
    );
  }
  return value as ResourceConfig;
}
