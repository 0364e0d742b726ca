import type { Clock, EngineApi, Logger, Store } from "@flotilla/core";
import type { ClientResolver } from "../http/client.js";
import type { AuthThrottle, AuthThrottleOptions } from "../http/throttle.js";

/** Limits how often one source may call `POST /register`. */
export interface RegistrationRateLimit {
  /** Registrations (successful or not) allowed per source per window. @default 10 */
  max: number;
  /** Window length in milliseconds. @default 60000 */
  windowMs: number;
}

/**
 * Options of {@link createFleetRoutes}.
 *
 * @example
 * ```ts
 * createFleetRoutes({
 *   orchestrator,
 *   store,
 *   registrationToken: process.env.FLOTILLA_REGISTRATION_TOKEN,
 *   adminKeys: [process.env.FLOTILLA_ADMIN_KEY!],
 *   leaseMs: 300_000,
 *   nodeTimeoutMs: 90_000,
 * });
 * ```
 */
export interface FleetRoutesOptions {
  /** The engine: an `Orchestrator` from `@flotilla/core` (it needs the lease API). */
  orchestrator: EngineApi;
  /** Where nodes, keys, files, logs and audit lines live (`SqliteStore` for a durable server). */
  store: Store;
  /** Token nodes present in `X-Registration-Token`. Without it `POST /register` answers 503. */
  registrationToken?: string;
  /** Lease given to a node per task; renewed by busy heartbeats and running/analyzing statuses. @default 300000 (5 min) */
  leaseMs?: number;
  /** A node silent for this long is shown offline (its tasks come back when their leases expire). @default 90000 */
  nodeTimeoutMs?: number;
  /**
   * A node silent for this long expires: it is hidden from `GET /nodes` and the stats and the
   * tasks it held are requeued. Its key stays valid; when it polls or heartbeats again it is
   * shown again. `0` never expires nodes; it must otherwise exceed `nodeTimeoutMs`.
   * @default 86400000 (24 h; never, when `nodeTimeoutMs` is 24 h or more)
   */
  nodeExpiryMs?: number;
  /** Admin keys from configuration: plain text or `sha256:<hex>`. Stored keys (`POST /keys`) work too. @default [] */
  adminKeys?: readonly string[];
  /** Serve admin routes without a key. Only for local use. @default false */
  openAdmin?: boolean;
  /** Largest accepted `POST /logs` body, in bytes. @default 33554432 (32 MiB) */
  maxLogBytes?: number;
  /** Largest accepted `POST /upload` file, in bytes. @default 104857600 (100 MiB) */
  maxUploadBytes?: number;
  /** Largest accepted JSON body on other routes, in bytes. @default 1048576 (1 MiB) */
  maxBodyBytes?: number;
  /** Keep uploaded files in this directory instead of the store. @default undefined (in the store) */
  uploadDir?: string;
  /**
   * Per-source limit of successful `POST /register` calls (answered 429 with `Retry-After`
   * beyond it). A wrong token is not counted here: it is slowed by `authThrottle`, never 429.
   * @default { max: 60, windowMs: 60000 }
   */
  registrationRateLimit?: RegistrationRateLimit;
  /**
   * Slows guessing of node keys, admin keys and the registration token per source (see
   * `AuthThrottle`); pass one instance to the fleet and `createFlotillaApp` to count a
   * source's failures on both. `false` turns it off. @default new AuthThrottle()
   */
  authThrottle?: AuthThrottle | AuthThrottleOptions | false;
  /** How long a node's former key keeps working after it registers again. @default 60000 */
  reregistrationGraceMs?: number;
  /** Attempts a fleet task gets (a lost node's expired lease counts as one). @default 3 */
  maxAttempts?: number;
  /** The URL nodes should use for `/files` (`orchestrator_url`). @default derived from each request */
  publicUrl?: string;
  /**
   * Proxies to believe (addresses, CIDRs, `loopback`, `linklocal`, `uniquelocal`): a request
   * from one of them is read through `X-Forwarded-For/Proto/Host/Prefix`, for the client's
   * address (throttles, audit) and the URLs handed to nodes. @default [] (none)
   */
  trustProxy?: readonly string[];
  /** How the caller's source address is found (for the registration limit). @default the socket's remote address */
  sourceOf?: (request: Request, env: unknown) => string;
  /** @default systemClock */
  clock?: Clock;
  /** @default silentLogger */
  logger?: Logger;
}

/** Options with defaults applied. */
export interface ResolvedFleetOptions {
  orchestrator: EngineApi;
  store: Store;
  registrationToken: string | undefined;
  leaseMs: number;
  nodeTimeoutMs: number;
  nodeExpiryMs: number;
  adminKeys: readonly string[];
  openAdmin: boolean;
  maxLogBytes: number;
  maxUploadBytes: number;
  maxBodyBytes: number;
  uploadDir: string | undefined;
  registrationRateLimit: RegistrationRateLimit;
  authThrottle: AuthThrottle | undefined;
  reregistrationGraceMs: number;
  maxAttempts: number;
  /** Reads client addresses and public URLs (trusted proxies, public URL). */
  client: ClientResolver;
  publicUrl: string | undefined;
  sourceOf: (request: Request, env: unknown) => string;
  clock: Clock;
  logger: Logger;
}
