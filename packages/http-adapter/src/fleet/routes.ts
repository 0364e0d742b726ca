import type { EngineApi } from "@flotilla/core";
import type { Context, Hono } from "hono";
import type { ZodType } from "zod";
import { jsonLimit as bodyLimit, parseInput, readJson } from "../http/body.js";
import type { KeyScope, KeyService } from "./keys.js";
import type { NodeService } from "./nodes.js";
import type { ResolvedFleetOptions } from "./options.js";
import { adminRoutes } from "./routes/admin.js";
import { keyRoutes } from "./routes/keys.js";
import { nodeRoutes } from "./routes/nodes.js";
import type { FleetState, NodeRecord } from "./state.js";
import type { TaskService } from "./tasks.js";
import { toHttpError } from "./util.js";
/** Everything the route handlers use. */
export interface FleetParts {
  options: ResolvedFleetOptions;
  state: FleetState;
  keys: KeyService;
  nodes: NodeService;
  tasks: TaskService;
  engine: EngineApi;
  ready: () => Promise<void>;
}

type Handler = (c: Context) => Promise<Response>;

function presentedKey(c: Context): string | undefined {
  const x = c.req.header("x-api-key");
  if (x?.trim()) return x.trim();
  const m = /^Bearer\s+(.+)$/i.exec(c.req.header("authorization")?.trim() ?? "");
  return m?.[1]?.trim() || undefined;
}

function fail(c: Context, err: unknown, logger: ResolvedFleetOptions["logger"]): Response {
  const e = toHttpError(err);
  if (e.status >= 500) logger.error({ err, path: c.req.path }, "fleet route failed");
  return c.json({ detail: e.detail }, e.status as 400, e.headers);
}

/** A node or admin request's JSON body (an empty body reads as `{}`), validated. */
async function jsonBody<T>(c: Context, schema: ZodType<T>): Promise<T> {
  return parseInput(schema, await readJson(c.req.raw, { empty: {} }), "body");
}

function queryOf<T>(c: Context, schema: ZodType<T>): T {
  return parseInput(schema, c.req.query(), "query");
}

/** What the fleet route families share: the parts, and request helpers bound to them. */
export interface FleetKit extends FleetParts {
  o: ResolvedFleetOptions;
  /** Wraps a handler: waits until the fleet is ready, answers errors as `{detail}`. */
  h: (fn: Handler) => Handler;
  /** The body limit of a route (over it: 413 `{detail}`). */
  limit: (bytes: number) => ReturnType<typeof bodyLimit>;
  /** The body limit of the JSON routes. */
  jsonLimit: ReturnType<typeof bodyLimit>;
  /** The node a request's key belongs to (401 otherwise). */
  node: (c: Context, what: string) => Promise<NodeRecord>;
  /** The admin principal of a request's key, with `scope` (401/403 otherwise). */
  admin: (c: Context, scope: KeyScope) => ReturnType<KeyService["authenticateAdmin"]>;
  /** The base URL the server hands out (the public URL, else derived from the request). */
  baseUrl: (c: Context, suffix: string) => string;
  /** Where a request comes from (for throttles and the audit log). */
  sourceOf: (c: Context) => string;
  jsonBody: <T>(c: Context, schema: ZodType<T>) => Promise<T>;
  queryOf: <T>(c: Context, schema: ZodType<T>) => T;
}

/** Mounts every fleet route on `app`: the node protocol, the admin API and the key API. */
export function mountFleetRoutes(app: Hono, parts: FleetParts): void {
  const { options: o, keys, nodes } = parts;
  const sourceOf = (c: Context) => {
    try {
      return o.sourceOf(c.req.raw, c.env);
    } catch {
      return "unknown";
    }
  };
  const h =
    (fn: Handler): Handler =>
    async (c) => {
      try {
        await parts.ready();
        return await fn(c);
      } catch (err) {
        return fail(c, err, o.logger);
      }
    };
  const limit = (bytes: number) =>
    bodyLimit(bytes, (message, c) => c.json({ detail: message }, 413));
  const jsonLimit = limit(o.maxBodyBytes);
  const node = (c: Context, what: string) => nodes.authenticate(presentedKey(c), what, sourceOf(c));
  const admin = (c: Context, scope: KeyScope) =>
    keys.authenticateAdmin(presentedKey(c), `${c.req.method} ${c.req.path}`, sourceOf(c), scope);
  const baseUrl = (c: Context, suffix: string) => o.client.baseUrl(c.req.raw, c.env, suffix);

  const kit: FleetKit = {
    ...parts,
    o,
    h,
    limit,
    jsonLimit,
    node,
    admin,
    baseUrl,
    sourceOf,
    jsonBody,
    queryOf,
  };
  nodeRoutes(app, kit);
  adminRoutes(app, kit);
  keyRoutes(app, kit);
}
