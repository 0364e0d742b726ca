import type { Clock, Logger } from "@flotilla/core";
import type { AuthThrottle } from "../http/throttle.js";
import type { AuditEntry, FleetState, KeyKind, KeyRecord } from "./state.js";
import { FleetHttpError, globMatch, newSecret, sameDigest, sha256Hex, uuid } from "./util.js";

/** Permissions a scoped key may carry. `admin` implies all of them. */
export const KEY_SCOPES = [
  "admin",
  "tasks:create",
  "tasks:read",
  "tasks:cancel",
  "nodes:read",
  "nodes:write",
  "logs:read",
  "files:upload",
  "stats:read",
] as const;
/** One of {@link KEY_SCOPES}. */
export type KeyScope = (typeof KEY_SCOPES)[number];

/** Who is calling an admin route. */
export interface AdminPrincipal {
  /** `config` for a key given in the server's configuration, `open` when auth is off. */
  source: "config" | "stored" | "open";
  key: KeyRecord | null;
  label: string;
  /**
   * The key as tasks and approvals record it: `key:` and the first 12 hex digits of the
   * SHA-256 of the secret presented (as the Vera routes name it); null in open mode.
   */
  actor: string | null;
}

/** Throttle for recording node-key use in the audit log (every poll would flood it). */
const NODE_USE_AUDIT_MS = 60_000;

/** API keys: hashed at rest, shown once, rotated with a grace period, revoked at once, audited. */
export class KeyService {
  readonly #state: FleetState;
  readonly #throttle: AuthThrottle | undefined;
  readonly #clock: Clock;
  readonly #logger: Logger;
  readonly #configHashes: string[];
  readonly #open: boolean;

  constructor(
    state: FleetState,
    clock: Clock,
    logger: Logger,
    adminKeys: readonly string[],
    open: boolean,
    throttle?: AuthThrottle,
  ) {
    this.#throttle = throttle;
    this.#state = state;
    this.#clock = clock;
    this.#logger = logger;
    this.#open = open;
    this.#configHashes = adminKeys.map((k) => {
      if (k.startsWith("sha256:")) {
        const hex = k.slice(7).toLowerCase();
        if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error("adminKeys: bad sha256:<hex> entry");
        return hex;
      }
      return sha256Hex(k);
    });
  }

  /**
   * A failed authentication of `source`: waits out the throttle's delay, or throws 429 with
   * `Retry-After` once the source is locked (never for `lock: false`, the registration token).
   */
  async slowDown(
    source: string | null,
    what: string,
    credential: string | undefined,
    { lock = true }: { lock?: boolean } = {},
  ): Promise<void> {
    if (!this.#throttle) return;
    const verdict = this.#throttle.fail(source ?? "unknown", what, credential, { lock });
    if (verdict.retryAfterMs !== undefined) {
      throw new FleetHttpError(
        429,
        "too many failed authentications from this source; try again later",
        {
          "retry-after": String(Math.ceil(verdict.retryAfterMs / 1000)),
        },
      );
    }
    await this.#throttle.delay(verdict.delayMs);
  }

  async audit(
    action: string,
    key: KeyRecord | null,
    fields: { actor?: string | null; source?: string | null; detail?: string | null } = {},
  ): Promise<void> {
    const entry: AuditEntry = {
      id: uuid(),
      at: this.#clock.now(),
      action,
      key_id: key?.id ?? null,
      key_name: key?.name ?? null,
      actor: fields.actor ?? null,
      source: fields.source ?? null,
      detail: fields.detail ?? null,
    };
    await this.#state.putAudit(entry);
  }

  /** Finds the stored key a secret belongs to, if it is currently valid. */
  async lookup(secret: string | undefined): Promise<KeyRecord | null> {
    if (!secret || secret.length > 4096) return null;
    const hash = sha256Hex(secret);
    const entry = await this.#state.getKeyIndex(hash);
    if (!entry) return null;
    const now = this.#clock.now();
    if (entry.valid_until !== null && entry.valid_until <= now) return null;
    const key = await this.#state.getKey(entry.key_id);
    if (!key || key.revoked_at !== null) return null;
    if (key.expires_at !== null && key.expires_at <= now) return null;
    const known =
      sameDigest(key.hash, hash) ||
      key.previous.some((p) => p.valid_until > now && sameDigest(p.hash, hash));
    return known ? key : null;
  }

  /** Records a use of `key` (throttled for node keys) and its last-use time. */
  async recordUse(key: KeyRecord, what: string, source: string | null): Promise<void> {
    const now = this.#clock.now();
    const last = key.last_used_at ?? 0;
    key.last_used_at = now;
    key.use_count += 1;
    if (key.kind !== "node" || now - last >= NODE_USE_AUDIT_MS) {
      await this.#state.putKey(key);
      await this.audit("used", key, { source, detail: what });
    }
  }

  /**
   * Authenticates an admin or scoped caller; throws 401 when the key is missing or unknown,
   * and 403 when `scope` is given and a stored key lacks it (audited as `denied`, not `used`).
   */
  async authenticateAdmin(
    secret: string | undefined,
    what: string,
    source: string | null,
    scope?: KeyScope,
  ): Promise<AdminPrincipal> {
    if (secret) {
      const hash = sha256Hex(secret);
      if (this.#configHashes.some((h) => sameDigest(h, hash))) {
        return {
          source: "config",
          key: null,
          label: "config-admin-key",
          actor: `key:${hash.slice(0, 12)}`,
        };
      }
      const key = await this.lookup(secret);
      if (key && key.kind !== "node") {
        const principal: AdminPrincipal = {
          source: "stored",
          key,
          label: key.id,
          actor: `key:${hash.slice(0, 12)}`,
        };
        if (scope !== undefined && !this.#holds(key, scope)) {
          await this.audit("denied", key, {
            source,
            detail: `${what}: lacks the "${scope}" scope`,
          });
          throw new FleetHttpError(403, `this key lacks the "${scope}" scope`);
        }
        await this.recordUse(key, what, source);
        return principal;
      }
      await this.audit("denied", null, { source, detail: `${what}: unknown or revoked key` });
      await this.slowDown(source, what, secret);
    }
    if (this.#open) return { source: "open", key: null, label: "open", actor: null };
    throw new FleetHttpError(
      401,
      secret ? "invalid or revoked API key" : "missing API key (X-API-Key header)",
    );
  }

  /**
   * Whether `secret` is a stored key that may act as an admin elsewhere (the Vera routes):
   * an unrevoked, unexpired admin or scoped key holding the `admin` scope. Node keys never
   * qualify. The use is recorded like any admin-route use; a refusal is audited.
   */
  async verifyAdmin(
    secret: string | undefined,
    what: string,
    source: string | null,
  ): Promise<boolean> {
    const key = await this.lookup(secret);
    if (key && key.kind !== "node" && key.scopes.includes("admin")) {
      await this.recordUse(key, what, source);
      return true;
    }
    if (secret) await this.audit("denied", key, { source, detail: `${what}: not an admin key` });
    return false;
  }

  /** Whether a stored key holds `scope` (or `admin`, which holds every scope). */
  #holds(key: KeyRecord, scope: KeyScope): boolean {
    return key.scopes.includes("admin") || key.scopes.includes(scope);
  }

  /** Whether the principal may target a node name pattern or name (scoped keys' `allowed_targets`). */
  mayTarget(principal: AdminPrincipal, target: string | undefined): boolean {
    const allowed = principal.key?.allowed_targets;
    if (principal.source !== "stored" || !allowed || allowed.length === 0) return true;
    if (principal.key?.scopes.includes("admin")) return true;
    if (target === undefined) return false;
    return allowed.some((pattern) => globMatch(pattern, target));
  }

  /** Creates a key; the secret is returned once and only its hash is stored. */
  async create(input: {
    name: string;
    kind: KeyKind;
    scopes: string[];
    allowedTargets?: string[] | null;
    nodeId?: string | null;
    expiresAt?: number | null;
    actor: string | null;
    source?: string | null;
  }): Promise<{ key: KeyRecord; secret: string }> {
    const secret = newSecret(input.kind === "node" ? "fln" : "flk");
    const hash = sha256Hex(secret);
    const key: KeyRecord = {
      id: uuid(),
      name: input.name,
      kind: input.kind,
      hash,
      prefix: secret.slice(0, 8),
      scopes: input.scopes,
      allowed_targets: input.allowedTargets ?? null,
      node_id: input.nodeId ?? null,
      created_at: this.#clock.now(),
      created_by: input.actor,
      expires_at: input.expiresAt ?? null,
      revoked_at: null,
      rotated_at: null,
      last_used_at: null,
      use_count: 0,
      previous: [],
    };
    await this.#state.putKey(key);
    await this.#state.putKeyIndex(hash, { key_id: key.id, valid_until: null });
    await this.audit("created", key, { actor: input.actor, source: input.source ?? null });
    return { key, secret };
  }

  /** Issues a new secret; the old one stays valid for `graceMs` (0: not at all). */
  async rotate(
    id: string,
    graceMs: number,
    actor: string | null,
    source: string | null = null,
  ): Promise<{ key: KeyRecord; secret: string }> {
    const key = await this.#state.getKey(id);
    if (!key) throw new FleetHttpError(404, `key ${id} not found`);
    if (key.revoked_at !== null) throw new FleetHttpError(409, `key ${id} is revoked`);
    const now = this.#clock.now();
    const secret = newSecret(key.kind === "node" ? "fln" : "flk");
    const hash = sha256Hex(secret);
    const previous = key.previous.filter((p) => p.valid_until > now);
    for (const p of key.previous) {
      if (p.valid_until <= now) await this.#state.deleteKeyIndex(p.hash);
    }
    if (graceMs > 0) {
      previous.push({ hash: key.hash, valid_until: now + graceMs });
      await this.#state.putKeyIndex(key.hash, { key_id: key.id, valid_until: now + graceMs });
    } else {
      await this.#state.deleteKeyIndex(key.hash);
    }
    key.hash = hash;
    key.prefix = secret.slice(0, 8);
    key.previous = previous;
    key.rotated_at = now;
    await this.#state.putKey(key);
    await this.#state.putKeyIndex(hash, { key_id: key.id, valid_until: null });
    await this.audit("rotated", key, {
      actor,
      source,
      detail: `old secret valid for ${Math.round(graceMs / 1000)} s`,
    });
    return { key, secret };
  }

  /** Revokes a key at once: every secret of it stops working. */
  async revoke(id: string, actor: string | null, source: string | null = null): Promise<KeyRecord> {
    const key = await this.#state.getKey(id);
    if (!key) throw new FleetHttpError(404, `key ${id} not found`);
    if (key.revoked_at === null) {
      key.revoked_at = this.#clock.now();
      await this.#dropIndex(key);
      key.previous = [];
      await this.#state.putKey(key);
      await this.audit("revoked", key, { actor, source });
    }
    return key;
  }

  /** Deletes a key (and with it every secret). */
  async delete(id: string, actor: string | null, source: string | null = null): Promise<void> {
    const key = await this.#state.getKey(id);
    if (!key) throw new FleetHttpError(404, `key ${id} not found`);
    await this.#dropIndex(key);
    await this.#state.deleteKey(id);
    await this.audit("deleted", key, { actor, source });
  }

  async #dropIndex(key: KeyRecord): Promise<void> {
    await this.#state.deleteKeyIndex(key.hash);
    for (const p of key.previous) await this.#state.deleteKeyIndex(p.hash);
  }

  /** The JSON view of a key: never the secret or its hash. */
  view(key: KeyRecord): Record<string, unknown> {
    const now = this.#clock.now();
    const iso = (t: number | null) => (t === null ? null : new Date(t).toISOString());
    return {
      id: key.id,
      name: key.name,
      kind: key.kind,
      prefix: key.prefix,
      scopes: key.scopes,
      allowed_targets: key.allowed_targets,
      node_id: key.node_id,
      status:
        key.revoked_at !== null
          ? "revoked"
          : key.expires_at !== null && key.expires_at <= now
            ? "expired"
            : "active",
      created_at: iso(key.created_at),
      created_by: key.created_by,
      expires_at: iso(key.expires_at),
      revoked_at: iso(key.revoked_at),
      rotated_at: iso(key.rotated_at),
      last_used_at: iso(key.last_used_at),
      use_count: key.use_count,
      grace_secrets: key.previous
        .filter((p) => p.valid_until > now)
        .map((p) => ({ valid_until: iso(p.valid_until) })),
    };
  }

  warnIfOpen(): void {
    if (this.#open) {
      this.#logger.warn(
        { fleet: "admin-open" },
        "fleet admin routes are OPEN: configure admin keys before exposing this server",
      );
    }
  }
}
