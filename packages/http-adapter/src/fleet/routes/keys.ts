import type { TaskStatus } from "@flotilla/core";
import type { Hono } from "hono";
import { KEY_SCOPES } from "../keys.js";
import type { FleetKit } from "../routes.js";
import { AuditQuerySchema, CreateKeyBodySchema, RotateQuerySchema } from "../schemas.js";
import { FleetHttpError, iso } from "../util.js";

/** The key API: create, list, audit, revoke, rotate. @internal */
export function keyRoutes(app: Hono, k: FleetKit): void {
  const { o, state, keys, nodes, h, jsonLimit, admin, sourceOf, jsonBody, queryOf } = k;
  // ---- keys --------------------------------------------------------------------------------

  app.post(
    "/keys",
    jsonLimit,
    h(async (c) => {
      const p = await admin(c, "admin");
      const body = await jsonBody(c, CreateKeyBodySchema);
      const bad = body.scopes.filter((s) => !(KEY_SCOPES as readonly string[]).includes(s));
      if (bad.length) {
        throw new FleetHttpError(
          400,
          `body.scopes: unknown scope ${bad.map((s) => `"${s}"`).join(", ")} (allowed: ${KEY_SCOPES.join(", ")})`,
        );
      }
      const now = o.clock.now();
      const expiresAt =
        body.expires_at ?? (body.expires_in_days ? now + body.expires_in_days * 86_400_000 : null);
      const isAdmin = body.scopes.includes("admin") && !body.allowed_targets?.length;
      const { key, secret } = await keys.create({
        name: body.name,
        kind: isAdmin ? "admin" : "scoped",
        scopes: body.scopes,
        allowedTargets: body.allowed_targets ?? null,
        expiresAt,
        actor: p.label,
        source: sourceOf(c),
      });
      return c.json({ ...keys.view(key), api_key: secret }, 201);
    }),
  );

  app.get(
    "/keys",
    h(async (c) => {
      await admin(c, "admin");
      const list = (await state.listKeys()).map((k) => keys.view(k));
      return c.json({ keys: list, count: list.length });
    }),
  );

  app.get(
    "/keys/audit",
    h(async (c) => {
      await admin(c, "admin");
      const { key_id: keyId, limit: lim } = queryOf(c, AuditQuerySchema);
      let entries = await state.listAudit();
      if (keyId) entries = entries.filter((e) => e.key_id === keyId);
      const slice = entries.slice(-lim).map((e) => ({ ...e, at: iso(e.at) }));
      return c.json({ entries: slice, count: slice.length, total: entries.length });
    }),
  );

  app.get(
    "/keys/:id",
    h(async (c) => {
      await admin(c, "admin");
      const key = await state.getKey(c.req.param("id") ?? "");
      if (!key) throw new FleetHttpError(404, `key ${c.req.param("id")} not found`);
      return c.json(keys.view(key));
    }),
  );

  app.delete(
    "/keys/:id",
    h(async (c) => {
      const p = await admin(c, "admin");
      const id = c.req.param("id") ?? "";
      await keys.delete(id, p.label, sourceOf(c));
      return c.json({ status: "deleted", id });
    }),
  );

  app.post(
    "/keys/:id/rotate",
    h(async (c) => {
      const p = await admin(c, "admin");
      const { grace_period_hours: hours } = queryOf(c, RotateQuerySchema);
      const { key, secret } = await keys.rotate(
        c.req.param("id") ?? "",
        hours * 3_600_000,
        p.label,
        sourceOf(c),
      );
      return c.json({ ...keys.view(key), api_key: secret, grace_period_hours: hours });
    }),
  );

  app.post(
    "/keys/:id/revoke",
    h(async (c) => {
      const p = await admin(c, "admin");
      const key = await keys.revoke(c.req.param("id") ?? "", p.label, sourceOf(c));
      return c.json(keys.view(key));
    }),
  );

  app.get(
    "/dashboard/stats",
    h(async (c) => {
      await admin(c, "stats:read");
      const stored = await state.listNodes();
      const nodeList = stored.filter((n) => !n.expired_at);
      const byNode: Record<string, number> = { idle: 0, busy: 0, offline: 0, error: 0 };
      for (const n of nodeList) {
        const s = nodes.liveStatus(n);
        byNode[s] = (byNode[s] ?? 0) + 1;
      }
      const count = (status: TaskStatus[]) => o.store.countTasks({ status });
      const [pending, assigned, running, completed, failed, cancelled, total] = await Promise.all([
        count(["pending", "queued", "awaiting_approval"]),
        count(["leased"]),
        count(["running"]),
        count(["succeeded"]),
        count(["failed", "timed_out"]),
        count(["cancelled", "rejected", "skipped"]),
        o.store.countTasks({}),
      ]);
      return c.json({
        nodes: { total: nodeList.length, ...byNode, expired: stored.length - nodeList.length },
        tasks: { total, pending, assigned, running, completed, failed, cancelled },
        keys: keyCounts(await state.listKeys()),
      });
    }),
  );
}

/** Stored keys by kind (revoked ones too: they stay listed until deleted). */
function keyCounts(keys: ReadonlyArray<{ kind: string }>): Record<string, number> {
  const out: Record<string, number> = { total: keys.length, admin: 0, scoped: 0, node: 0 };
  for (const k of keys) out[k.kind] = (out[k.kind] ?? 0) + 1;
  return out;
}
