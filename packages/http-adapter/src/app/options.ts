import type { RouteConfig } from "@asteasolutions/zod-to-openapi";
import type {
  Budgets,
  Clock,
  EngineApi,
  EventFeed,
  Logger,
  ResourceConfig,
  Store,
  UsageEntry,
  Worker,
} from "@flotilla/core";
import type { Hono } from "hono";
import type { AuthOptions } from "../auth.js";
import type { AuthThrottle, AuthThrottleOptions } from "../http/throttle.js";
import type { FlotillaMetrics } from "../metrics.js";
import type { LlmApiRegisterInput, RemoteRegisterInput, ResourcePolicy } from "../schemas.js";
import type { SseOptions } from "../sse.js";
import type { EventHub, WebSocketOptions } from "../ws.js";
import type { CredentialSealer } from "./credentials.js";

/** Context handed to worker factories. */
export interface WorkerFactoryContext {
  orchestrator: EngineApi;
  resources?: ResourcesLike;
  logger: Logger;
}

/**
 * Builders for workers created at run time through the API. The composer (the CLI, or
 * your app) provides them, so the adapter depends on no worker package. A missing
 * factory makes its route answer 501.
 */
export interface WorkerFactories {
  /** `POST /workers/llm-api/register`. Configure rate limits/quotas from `input` here. */
  llmApi?(input: LlmApiRegisterInput, ctx: WorkerFactoryContext): Worker | Promise<Worker>;
  /** `POST /workers/remote/register`. */
  remote?(input: RemoteRegisterInput, ctx: WorkerFactoryContext): Worker | Promise<Worker>;
}

/**
 * Where workers registered through the API are kept, so they are registered again at the
 * next start (`app.flotilla.restoreWorkers()`).
 */
export interface WorkerStoreOptions {
  /** The store's key-value space (collection `workers`). */
  store: Pick<Store, "kvPut" | "kvDelete" | "kvList">;
  /**
   * Seals provider keys and remote tokens before they are stored (`createCredentialSealer`
   * with the operator's secret). Without it a registration carrying a literal secret is
   * not stored (its answer says `persisted: false`); one naming an environment variable
   * (`api_key_env`, `auth_token_env`) is.
   */
  sealer?: CredentialSealer;
  /** Where `api_key_env` / `auth_token_env` are looked up. @default process.env */
  env?: Record<string, string | undefined>;
}

/** The resource manager, as far as the adapter reads it. */
export interface ResourcesLike {
  /**
   * The engine's budgets gate: the `quota_*_per_day` fields of
   * `POST /workers/llm-api/register` become a daily `worker` budget of the new worker
   * (removed when it is unregistered), shown in `/resources/stats` as `worker_quotas`.
   * Without it, a registration carrying quota fields answers 501 instead of ignoring them.
   */
  budgets?: Pick<Budgets, "add" | "remove" | "stats">;
  /** The `/resources/stats` view (`ResourceManager.stats()`). */
  stats?(): unknown;
  /** The resource config in force (`ResourceManager.config()`), for `GET …/resources/config`. */
  config?(): ResourceConfig;
  /**
   * Applies a new resource config keeping counted usage (`ResourceManager.configure`), for
   * `PUT …/resources/config`. Without it that route answers 501.
   */
  configure?(config: ResourceConfig, history: UsageEntry[]): { restartRequired: string[] };
  /** Host-pressure admission: at `red`, task-creating routes answer 503 with `Retry-After`. */
  admission?: { readonly level: string; retryAfterSeconds(): number } | undefined;
  /** Its `cost` and `pressure` events are relayed as `resource:cost` / `resource:pressure`. */
  // biome-ignore lint/suspicious/noExplicitAny: emitters type their listeners per event
  on?(event: any, listener: (...args: any[]) => void): unknown;
  // biome-ignore lint/suspicious/noExplicitAny: emitters type their listeners per event
  off?(event: any, listener: (...args: any[]) => void): unknown;
}

/** CORS settings. `false` (the default) sends no CORS headers. */
export type CorsOptions =
  | false
  | {
      /** Allowed origins (`"*"` for any). */
      origin: string | string[];
      /** @default false */
      credentials?: boolean;
      /** @default 600 */
      maxAge?: number;
    };

/** Options of {@link createFlotillaApp}. */
export interface FlotillaAppOptions {
  /** The engine. No global singleton: pass the instance. */
  orchestrator: EngineApi;
  /** Admin keys, or `{ mode: "open" }` for local use without authentication. */
  auth: AuthOptions;
  /** Where the Vera routes live. @default "/api/v2/orchestrator" */
  prefix?: string;
  /**
   * Builds workers for `POST …/workers/llm-api/register` and `…/workers/remote/register`;
   * a route without its factory answers 501. @default {} (both routes answer 501)
   */
  workerFactories?: WorkerFactories;
  /** @default false */
  cors?: CorsOptions;
  /** Largest request body accepted; larger ones get 413. @default 1048576 (1 MiB) */
  bodyLimitBytes?: number;
  /** pino-compatible logger. @default silent */
  logger?: Logger;
  /**
   * The resource manager: `/resources/stats`, host-pressure 503s and `resource:*` events.
   * @default undefined (empty stats, no admission control)
   */
  resources?: ResourcesLike;
  /**
   * WebSocket intervals and limits (see {@link WebSocketOptions}). @default {} (each field's own default)
   */
  websocket?: WebSocketOptions;
  /**
   * Slows guessing of API keys per client address (see `AuthThrottle`): after a few wrong
   * keys answers are delayed, then 429 with `Retry-After`. Share one instance with the fleet
   * routes to count both. `false` turns it off. @default new AuthThrottle()
   */
  authThrottle?: AuthThrottle | AuthThrottleOptions | false;
  /**
   * Proxies to believe (addresses, CIDRs, `loopback`, `linklocal`, `uniquelocal`): behind
   * them the client's address comes from `X-Forwarded-For` (throttles, logs). @default []
   */
  trustProxy?: readonly string[];
  /**
   * Keep workers registered through the API across restarts (see {@link WorkerStoreOptions}).
   * @default undefined (they last until the process ends)
   */
  workerStore?: WorkerStoreOptions;
  /**
   * Server-Sent Events (`GET {prefix}/tasks/{id}/events`, `/llm/request` with `stream`):
   * keep-alive interval and the recent progress kept for resuming (see {@link SseOptions}).
   * @default {} (each field's own default)
   */
  sse?: SseOptions;
  /**
   * Events committed by the other servers sharing the store (a `PostgresStore` shared with
   * `flotilla serve --shared`): task lifecycle events of tasks run elsewhere reach this
   * server's WebSocket and SSE clients too. Read only while such a client is connected.
   */
  sharedEvents?: EventFeed;
  /**
   * Called with a policy `PUT …/resources/config` has just applied, before it answers: servers
   * sharing a store publish it to the others with it. A throw answers `503` (applied on this
   * server only; try again).
   */
  publishPolicy?: (policy: ResourcePolicy) => Promise<void>;
  /** How long `/tasks/execute` waits for a task that has no `timeout_seconds`. @default 300000 */
  executeTimeoutMs?: number;
  /** Reported by `/health`. @default "0.1.0" */
  version?: string;
  /**
   * Further apps mounted at the root (e.g. the fleet routes); mounted after the built-in
   * routes. An app with an `openapiRoutes(base)` method (the fleet app has one) has its
   * operations added to `/openapi.json` and `/docs`.
   */
  mount?: Array<{ path?: string; app: Hono & { openapiRoutes?(base: string): RouteConfig[] } }>;
  /** Extra task types accepted besides built-in ones and those claimed by registered workers. */
  taskTypes?: readonly string[];
  /** Drives WebSocket ping and status intervals, uptime and the day of usage figures. @default systemClock */
  clock?: Clock;
}

/** Runtime handles of an app made by {@link createFlotillaApp}. */
export interface FlotillaAppHandles {
  /** WebSocket hub: relays engine events; publish your own with `hub.publish`. */
  hub: EventHub;
  metrics: FlotillaMetrics;
  /** The OpenAPI 3.1 document. */
  openapi(): Record<string, unknown>;
  /** Starts refusing new work (503) and closes WebSockets; idempotent. */
  beginShutdown(): void;
  /** Unsubscribes from the engine and closes WebSockets. */
  close(): void;
  /**
   * Registers again the workers stored by earlier API registrations (`workerStore`), one
   * result per worker. Rejects (a start error) when stored credentials cannot be opened: no
   * `sealer`, or a different secret.
   */
  restoreWorkers(): Promise<Array<{ worker_id: string; ok: boolean; error?: string }>>;
  readonly prefix: string;
}

/** A Hono app with the Flotilla handles attached. `app.fetch(request)` answers any web-standard Request. */
export type FlotillaApp = Hono & { flotilla: FlotillaAppHandles };

/** Task types the Vera API knew, accepted besides Flotilla's built-in ones. */
export const VERA_TASK_TYPES = ["background_cognition", "parallel_batch"] as const;
