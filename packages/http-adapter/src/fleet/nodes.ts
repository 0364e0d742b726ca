import { createHash, timingSafeEqual } from "node:crypto";
import type { EngineApi, HealthReport, Lease, TaskQuery, TaskRecord, Worker } from "@flotilla/core";
import { FlotillaError, TERMINAL_STATUSES } from "@flotilla/core";
import type { KeyService } from "./keys.js";
import type { ResolvedFleetOptions } from "./options.js";
import type { RegisterBody } from "./schemas.js";
import type { FleetState, NodeRecord, NodeState } from "./state.js";
import { FleetHttpError, iso, KeyedMutex, uuid } from "./util.js";

/** Task types a node runs when it does not say. */
export const DEFAULT_NODE_TASK_TYPES = ["agent_run"];

/** The fleet's node registry: registration, authentication, liveness, leases held. */
export class NodeService {
  readonly #o: ResolvedFleetOptions;
  readonly #state: FleetState;
  readonly #keys: KeyService;
  readonly #engine: EngineApi;
  readonly mutex = new KeyedMutex();
  readonly #registrations = new Map<string, number[]>();
  /** Last-seen times kept in memory between persisted heartbeats. */
  readonly #seen = new Map<string, number>();

  constructor(
    options: ResolvedFleetOptions,
    state: FleetState,
    keys: KeyService,
    engine: EngineApi,
  ) {
    this.#o = options;
    this.#state = state;
    this.#keys = keys;
    this.#engine = engine;
  }

  /** Registers every stored node with the orchestrator (after a restart). */
  async restore(): Promise<void> {
    for (const node of await this.#state.listNodes()) {
      try {
        await this.#engine.register(this.worker(node));
      } catch (err) {
        // Already registered by whoever composed the server, or refused: the node still
        // polls (a poll is matched by its own declaration), so carry on.
        this.#o.logger.warn({ err, node: node.id }, "fleet: could not register a stored node");
      }
    }
  }

  /** The registry worker standing for a node: it pulls work, so `execute` is never used. */
  worker(node: NodeRecord): Worker {
    const id = node.id;
    return {
      id,
      kind: "remote-node",
      name: node.name,
      taskTypes: node.task_types,
      capabilities: node.capabilities,
      labels: node.labels,
      maxConcurrency: node.slots,
      local: false,
      execute: async () => {
        throw new FlotillaError(
          "INVALID_STATE",
          `node ${node.name} pulls its work (GET /tasks/pending); it cannot be pushed to`,
        );
      },
      healthCheck: async (): Promise<HealthReport> => {
        const current = await this.#state.getNode(id);
        if (!current) return { status: "unhealthy", message: "node unregistered" };
        return this.#health(this.liveStatus(current));
      },
    };
  }

  /**
   * The engine's health of a node in `status`. Degraded, never unhealthy: a silent node gets
   * nothing anyway (it does not poll), and it must get work again on its first poll when it
   * comes back. `details.status` carries the node's status to the worker views.
   */
  #health(status: NodeState): HealthReport {
    if (status === "offline") {
      return { status: "degraded", message: "offline: no heartbeat", details: { status } };
    }
    if (status === "error") {
      return { status: "degraded", message: "the node reports an error", details: { status } };
    }
    return { status: "healthy", details: { status } };
  }

  /** Tells the engine a node's liveness changed, at once (not at its next health round). */
  #reportLiveness(node: NodeRecord): void {
    try {
      this.#engine.reportHealth(node.id, this.#health(this.liveStatus(node)));
    } catch (err) {
      this.#o.logger.warn({ err, node: node.id }, "fleet: could not report a node's health");
    }
  }

  /**
   * The tasks a node holds now, read from the engine (leased or running under its lease).
   * With no id: every node's, by node id.
   */
  async holding(nodeId: string): Promise<TaskRecord[]> {
    return (await this.#holdingAll(nodeId)).get(nodeId) ?? [];
  }

  async #holdingAll(nodeId?: string): Promise<Map<string, TaskRecord[]>> {
    const query: TaskQuery = { status: ["leased", "running"], newestFirst: false };
    if (nodeId !== undefined) query.workerId = nodeId;
    const out = new Map<string, TaskRecord[]>();
    for (const task of await this.#engine.list(query)) {
      const holder = task.lease?.holder;
      if (holder === undefined || (nodeId !== undefined && holder !== nodeId)) continue;
      let list = out.get(holder);
      if (!list) {
        list = [];
        out.set(holder, list);
      }
      list.push(task);
    }
    return out;
  }

  /** When `node` last showed a sign of life (stored, or seen since and not yet written). */
  #lastSeen(node: NodeRecord): number {
    return Math.max(node.last_seen_at, this.#seen.get(node.id) ?? 0);
  }

  /** Whether `node` has been silent for `nodeExpiryMs` and is not marked expired yet. */
  #expiring(node: NodeRecord): boolean {
    if (this.#o.nodeExpiryMs === 0 || node.expired_at) return false;
    const seen = this.#lastSeen(node);
    return this.#o.clock.now() - seen >= this.#o.nodeExpiryMs;
  }

  /** The node's status, `offline` once it has been silent for `nodeTimeoutMs`. */
  liveStatus(node: NodeRecord): NodeState {
    const seen = this.#lastSeen(node);
    if (this.#o.clock.now() - seen >= this.#o.nodeTimeoutMs) return "offline";
    return node.status;
  }

  #checkRate(source: string): void {
    const { max, windowMs } = this.#o.registrationRateLimit;
    const now = this.#o.clock.now();
    const hits = (this.#registrations.get(source) ?? []).filter((t) => t > now - windowMs);
    if (hits.length >= max) {
      const retry = Math.max(1, Math.ceil(((hits[0] ?? now) + windowMs - now) / 1000));
      this.#registrations.set(source, hits);
      throw new FleetHttpError(429, "too many registrations from this source; try again later", {
        "retry-after": String(retry),
      });
    }
    hits.push(now);
    this.#registrations.set(source, hits);
    if (this.#registrations.size > 10_000) {
      for (const [k, v] of this.#registrations) {
        if ((v[v.length - 1] ?? 0) <= now - windowMs) this.#registrations.delete(k);
      }
    }
  }

  #checkToken(token: string | undefined): boolean {
    const expected = this.#o.registrationToken;
    if (!expected) {
      throw new FleetHttpError(
        503,
        "registration is disabled: the server has no registration token",
      );
    }
    const a = createHash("sha256")
      .update(token ?? "")
      .digest();
    const b = createHash("sha256").update(expected).digest();
    return !!token && timingSafeEqual(a, b);
  }

  /** `POST /register`: a new node, or a fresh key for a known name (the old one gets a grace period). */
  /**
   * The registration token (503 when none is configured; a wrong one is 401, slowed down by
   * the throttle, never 429), then the flood limit of successful registrations (429).
   */
  async admit(token: string | undefined, source: string): Promise<void> {
    if (!this.#checkToken(token)) {
      await this.#keys.slowDown(source, "POST /register", token, { lock: false });
      throw new FleetHttpError(401, "invalid registration token");
    }
    this.#checkRate(source);
  }

  /** Registers after {@link admit}. */
  async register(
    body: RegisterBody,
    source: string,
  ): Promise<{ node: NodeRecord; apiKey: string; reregistered: boolean }> {
    const name = body.name ?? body.hostname;
    return this.mutex.run(`name:${name}`, async () => {
      const now = this.#o.clock.now();
      const labels = { ...normaliseTags(body.tags), ...(body.labels ?? {}) };
      const existing = await this.#state.findNodeByName(name);
      if (existing) {
        return this.mutex.run(existing.id, async () => {
          const node = (await this.#state.getNode(existing.id)) ?? existing;
          await this.requeueAll(node, "node registered again");
          // A fresh key; the old one keeps working for the grace period. When the old key
          // was revoked or deleted, the node gets a new key record (the registration token
          // is what admits a node; to shut one out, delete it and change the token).
          const current = await this.#state.getKey(node.key_id);
          let secret: string;
          if (current && current.revoked_at === null) {
            ({ secret } = await this.#keys.rotate(
              node.key_id,
              this.#o.reregistrationGraceMs,
              `node:${node.id}`,
              source,
            ));
          } else {
            const created = await this.#keys.create({
              name: `node:${name}`,
              kind: "node",
              scopes: [],
              nodeId: node.id,
              actor: "registration",
              source,
            });
            node.key_id = created.key.id;
            secret = created.secret;
          }
          node.hostname = body.hostname;
          node.os_type = body.os_type;
          node.capabilities = body.capabilities ?? node.capabilities;
          node.labels = body.tags !== undefined || body.labels !== undefined ? labels : node.labels;
          node.resources = body.resources ?? node.resources;
          node.task_types = body.task_types ?? node.task_types;
          node.slots = body.slots ?? node.slots;
          node.status = "idle";
          node.current_task_id = null;
          node.last_registered_at = now;
          node.last_seen_at = now;
          node.expired_at = null;
          node.registrations += 1;
          await this.#state.putNode(node);
          // A fresh registry entry: new declaration, health and circuit breaker reset.
          await this.#engine.unregister(node.id, { mode: "handback" });
          await this.#engine.register(this.worker(node));
          this.#o.logger.info({ node: node.id, name }, "fleet node registered again");
          return { node, apiKey: secret, reregistered: true };
        });
      }
      const id = uuid();
      const { key, secret } = await this.#keys.create({
        name: `node:${name}`,
        kind: "node",
        scopes: [],
        nodeId: id,
        actor: "registration",
        source,
      });
      const node: NodeRecord = {
        id,
        name,
        hostname: body.hostname,
        os_type: body.os_type,
        capabilities: body.capabilities ?? [],
        labels,
        resources: body.resources ?? {},
        task_types: body.task_types ?? DEFAULT_NODE_TASK_TYPES,
        slots: body.slots ?? 1,
        status: "idle",
        current_task_id: null,
        key_id: key.id,
        registered_at: now,
        last_registered_at: now,
        registrations: 1,
        last_heartbeat_at: null,
        last_seen_at: now,
      };
      await this.#state.putNode(node);
      await this.#engine.register(this.worker(node));
      this.#o.logger.info({ node: id, name }, "fleet node registered");
      return { node, apiKey: secret, reregistered: false };
    });
  }

  /** Resolves a node key to its node; 401 for a missing, unknown or revoked key. */
  async authenticate(
    secret: string | undefined,
    what: string,
    source: string,
  ): Promise<NodeRecord> {
    const key = await this.#keys.lookup(secret);
    if (key?.kind !== "node" || !key.node_id) {
      if (secret) {
        await this.#keys.audit("denied", null, { source, detail: `${what}: unknown key` });
        await this.#keys.slowDown(source, what, secret);
      }
      throw new FleetHttpError(
        401,
        secret ? "invalid API key" : "missing API key (X-API-Key header)",
      );
    }
    const node = await this.#state.getNode(key.node_id);
    if (!node) throw new FleetHttpError(401, "this key's node is no longer registered");
    await this.#keys.recordUse(key, what, source);
    this.#seen.set(node.id, this.#o.clock.now());
    return node;
  }

  /** Persists `last_seen_at` (and brings an offline node back). */
  async touch(nodeId: string, patch: (node: NodeRecord) => void = () => {}): Promise<NodeRecord> {
    return this.mutex.run(nodeId, async () => {
      const node = await this.#state.getNode(nodeId);
      if (!node) throw new FleetHttpError(404, `node ${nodeId} not found`);
      const wasOffline = node.status === "offline";
      node.last_seen_at = this.#o.clock.now();
      if (wasOffline) node.status = "idle";
      node.expired_at = null;
      patch(node);
      await this.#state.putNode(node);
      if (wasOffline) this.#reportLiveness(node);
      return node;
    });
  }

  /** The task and lease `node` holds for `taskId`, or why not (403/404). */
  async held(
    node: NodeRecord,
    taskId: string,
  ): Promise<{ task: TaskRecord; lease: Lease | null; finished: boolean }> {
    const task = await this.#engine.get(taskId);
    if (!task) throw new FleetHttpError(404, `task ${taskId} not found`);
    if (TERMINAL_STATUSES.has(task.status)) {
      const st = await this.#state.getTaskState(taskId);
      const last = task.result?.workerId ?? task.workerId ?? st?.last_node_id;
      if (last !== node.id) {
        throw new FleetHttpError(403, `task ${taskId} is not held by this node`);
      }
      return { task, lease: null, finished: true };
    }
    if (!task.lease || task.lease.holder !== node.id) {
      throw new FleetHttpError(403, `task ${taskId} is not held by this node`);
    }
    return { task, lease: task.lease, finished: false };
  }

  /** Returns every task the node still holds to the queue (re-registration, removal). */
  async requeueAll(node: NodeRecord, reason: string): Promise<string[]> {
    const out: string[] = [];
    for (const task of await this.holding(node.id)) {
      try {
        await this.#engine.releaseLease(task.id, task.lease!.id, reason);
        out.push(task.id);
      } catch (err) {
        this.#o.logger.warn(
          { err, taskId: task.id, node: node.id },
          "fleet: could not release a lease",
        );
      }
    }
    node.current_task_id = null;
    return out;
  }

  /**
   * Persists `offline` for silent nodes (their tasks return by lease expiry), and expires
   * nodes silent for `nodeExpiryMs`: hidden from lists, their tasks requeued at once.
   */
  async sweep(): Promise<void> {
    for (const node of await this.#state.listNodes()) {
      if (this.#expiring(node)) {
        await this.mutex.run(node.id, async () => {
          const fresh = await this.#state.getNode(node.id);
          if (!fresh || !this.#expiring(fresh)) return;
          const requeued = await this.requeueAll(fresh, "node expired");
          fresh.status = "offline";
          fresh.expired_at = this.#o.clock.now();
          await this.#state.putNode(fresh);
          this.#reportLiveness(fresh);
          this.#o.logger.warn(
            { node: fresh.id, name: fresh.name, requeued },
            "fleet node expired: hidden from lists, its tasks requeued",
          );
        });
        continue;
      }
      if (node.status !== "offline" && this.liveStatus(node) === "offline") {
        await this.mutex.run(node.id, async () => {
          const fresh = await this.#state.getNode(node.id);
          if (fresh && fresh.status !== "offline" && this.liveStatus(fresh) === "offline") {
            fresh.status = "offline";
            await this.#state.putNode(fresh);
            this.#reportLiveness(fresh);
            this.#o.logger.warn({ node: fresh.id, name: fresh.name }, "fleet node went offline");
          }
        });
      }
    }
  }

  /** Unregisters a node: its tasks go back to the queue and its key stops working. */
  async remove(id: string, actor: string): Promise<string[]> {
    return this.mutex.run(id, async () => {
      const node = await this.#state.getNode(id);
      if (!node) throw new FleetHttpError(404, `node ${id} not found`);
      const requeued = await this.requeueAll(node, "node unregistered");
      try {
        await this.#keys.revoke(node.key_id, actor);
      } catch (err) {
        if (!(err instanceof FleetHttpError && err.status === 404)) throw err;
      }
      await this.#engine.unregister(id, { mode: "handback" });
      await this.#state.deleteNode(id);
      this.#seen.delete(id);
      return requeued;
    });
  }

  /** The JSON view of a node, with the tasks it holds read from the engine. */
  async view(node: NodeRecord): Promise<Record<string, unknown>> {
    return this.#view(node, await this.holding(node.id));
  }

  /** The JSON views of several nodes (one engine read for all). */
  async views(nodes: NodeRecord[]): Promise<Array<Record<string, unknown>>> {
    const held = await this.#holdingAll();
    return nodes.map((n) => this.#view(n, held.get(n.id) ?? []));
  }

  /**
   * A node's status and tasks as the engine has them: `offline` and `error` from its
   * liveness and reports, else `busy` while it holds a task and `idle` when it holds none
   * (a finished task frees it at once, not at its next heartbeat).
   */
  #view(node: NodeRecord, held: TaskRecord[]): Record<string, unknown> {
    const seen = this.#lastSeen(node);
    const live = this.liveStatus(node);
    const ids = held.map((t) => t.id);
    const current =
      node.current_task_id !== null && ids.includes(node.current_task_id)
        ? node.current_task_id
        : (ids[0] ?? null);
    return {
      id: node.id,
      name: node.name,
      hostname: node.hostname,
      os_type: node.os_type,
      status: live === "offline" || live === "error" ? live : ids.length > 0 ? "busy" : "idle",
      current_task_id: current,
      leased_task_ids: ids,
      capabilities: node.capabilities,
      tags: node.labels,
      labels: node.labels,
      resources: node.resources,
      task_types: node.task_types,
      slots: node.slots,
      registered_at: iso(node.registered_at),
      last_registered_at: iso(node.last_registered_at),
      registrations: node.registrations,
      last_heartbeat: iso(node.last_heartbeat_at),
      last_seen: iso(seen),
    };
  }
}

function normaliseTags(tags: RegisterBody["tags"]): Record<string, string> {
  if (!tags) return {};
  if (Array.isArray(tags)) return Object.fromEntries(tags.map((t) => [t, "true"]));
  return Object.fromEntries(Object.entries(tags).map(([k, v]) => [k, String(v)]));
}
