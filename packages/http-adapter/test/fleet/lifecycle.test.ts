import { createHash } from "node:crypto";
import { join } from "node:path";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ADMIN_KEY,
  type FleetUnderTest,
  REG_TOKEN,
  removeDir,
  startFleet,
  upload,
} from "./harness.js";
import { httpRequest, VictoriaRunner } from "./victoria-runner.js";

const sha = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

let fleets: FleetUnderTest[] = [];
async function fleet(opts: Parameters<typeof startFleet>[0] = {}) {
  const f = await startFleet(opts);
  fleets.push(f);
  return f;
}
afterEach(async () => {
  for (const f of fleets) {
    await f.stop().catch(() => undefined);
    await removeDir(f.dir);
  }
  fleets = [];
});

function runner(f: FleetUnderTest, name: string, url = f.url) {
  return new VictoriaRunner({
    orchestratorUrl: url,
    registrationToken: REG_TOKEN,
    name,
    home: join(f.dir, `home-${name}`),
  });
}

describe("fleet lifecycle with a Victoria-style runner", () => {
  it("runs a task with files end to end: poll, download, running, logs, success", async () => {
    const f = await fleet();
    const a = await upload(f.url, "sales data.csv", "region,total\nnorth,10\n");
    expect(a.status).toBe(201);
    expect(a.json).toMatchObject({ original_name: "sales data.csv", size: 22 });
    expect(a.json.checksum).toBe(sha("region,total\nnorth,10\n"));
    const b = await upload(f.url, "../../etc/notes.txt", "notes");
    expect(b.json.original_name).toBe("notes.txt");

    const r = runner(f, "client-acme-prod-1");
    expect(await r.register()).toBe(true);
    expect(await r.poll()).toBeNull();
    // The node is a worker of the orchestrator's registry, visible in status().
    const status = f.orchestrator.status();
    expect(status.workers).toContainEqual(
      expect.objectContaining({
        id: r.nodeId,
        kind: "remote-node",
        name: "client-acme-prod-1",
        local: false,
      }),
    );

    const created = await f.admin("POST", "/tasks", {
      prompt: "Analyze the sales data",
      files: [a.json.filename, b.json.filename],
    });
    expect(created.status).toBe(201);
    const id = created.json.id as string;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(created.json).toMatchObject({ status: "pending", timeout_seconds: 3600 });

    const task = await r.poll();
    expect(task).toMatchObject({
      task_id: id,
      prompt: "Analyze the sales data",
      orchestrator_url: f.url,
      timeout_seconds: 3600,
      files: ["sales data.csv", "notes.txt"],
      file_checksums: [a.json.checksum, b.json.checksum],
    });
    // A second poll of the same node is another free slot: nothing else is queued.
    expect(await r.poll()).toBeNull();

    const final = await r.run(task!, { kind: "exit", code: 0, output: "3 insights" });
    expect(final?.status).toBe(200);
    expect(final?.json).toMatchObject({ id, status: "completed", result: "3 insights" });
    expect(r.downloaded.get("sales data.csv")?.toString()).toBe("region,total\nnorth,10\n");
    expect(r.events.filter((e) => e.kind.startsWith("dropped"))).toEqual([]);

    const logs = await f.admin("GET", `/logs/${id}`);
    expect(logs.status).toBe(200);
    expect(logs.json.count).toBe(1);
    expect(logs.json.logs[0].session.messages).toHaveLength(2);
    expect(logs.json.logs[0].node_id).toBe(r.nodeId);

    // Idempotent after completion: a late status is ignored, the answer is still the task.
    const late = await r.status(id, "error", "late");
    expect(late.status).toBe(200);
    expect(late.json).toMatchObject({ id, status: "completed" });

    // The in-container reporter may post its log after the final status: still accepted.
    expect((await r.logs(id, 100)).status).toBe(200);
    const detail = await f.admin("GET", `/tasks/${id}`);
    expect(detail.json).toMatchObject({
      status: "completed",
      assigned_node_id: r.nodeId,
      log_count: 2,
    });
  });

  it("records an error exit and a timeout exit as failures", async () => {
    const f = await fleet();
    const r = runner(f, "edge-1");
    await r.register();
    const t1 = await f.admin("POST", "/tasks", { prompt: "fail please" });
    const t2 = await f.admin("POST", "/tasks", { prompt: "hang please", timeout_seconds: 5 });
    const first = await r.poll();
    expect(first?.task_id).toBe(t1.json.id);
    const res1 = await r.run(first!, { kind: "exit", code: 2 });
    expect(res1?.json).toMatchObject({
      status: "failed",
      error_message: "Task failed with exit code 2",
    });
    const second = await r.poll();
    expect(second).toMatchObject({ task_id: t2.json.id, timeout_seconds: 5 });
    const res2 = await r.run(second!, { kind: "exit", code: 143 });
    expect(res2?.status).toBe(200);
    expect(res2?.json.error_message).toBe("Task failed with exit code 143");
    expect(["timed_out", "failed"]).toContain(res2?.json.status);
  });

  it("requeues a killed runner's task to another node when its lease expires", async () => {
    const f = await fleet({ fleet: { leaseMs: 60_000 } });
    const r1 = runner(f, "worker-a");
    const r2 = runner(f, "worker-b");
    await r1.register();
    await r2.register();
    const t = await f.admin("POST", "/tasks", { prompt: "long job" });
    const got = await r1.poll();
    expect(got?.task_id).toBe(t.json.id);
    await r1.run(got!, { kind: "killed" });
    // While the lease is live nobody else gets it, even after a while.
    await f.clock.advance(45_000);
    expect(await r2.poll()).toBeNull();
    // The busy heartbeat had renewed it: 60 s from the renewal, it expires.
    await f.clock.advance(20_000);
    const again = await r2.poll();
    expect(again?.task_id).toBe(t.json.id);
    const fin = await r2.run(again!, { kind: "exit", code: 0 });
    expect(fin?.json).toMatchObject({ status: "completed", assigned_node_id: r2.nodeId });
    expect(fin?.json.attempts).toBe(2);
    // The killed node coming back with a late report is not the holder.
    const stale = await r1.status(t.json.id, "success", "late");
    expect(stale.status).toBe(403);
    expect(stale.json).toEqual({ detail: expect.any(String) });
  });

  it("gives up on a task its node keeps alive past timeout_seconds (plus a grace) and hands it out again", async () => {
    const f = await fleet({ fleet: { leaseMs: 60_000 } });
    const r1 = runner(f, "stuck-1");
    const r2 = runner(f, "stuck-2");
    await r1.register();
    await r2.register();
    const t = await f.admin("POST", "/tasks", { prompt: "hangs", timeout_seconds: 60 });
    const got = await r1.poll();
    await r1.status(t.json.id, "running");
    for (let s = 0; s < 180; s += 30) {
      await f.clock.advance(30_000);
      await r1.heartbeat("busy", t.json.id);
    }
    const again = await r2.poll();
    expect(again?.task_id).toBe(t.json.id);
    const late = await r1.status(String(got?.task_id), "success", "too late");
    expect(late.status).toBe(403);
  });

  it("a busy heartbeat keeps a long task's lease alive", async () => {
    const f = await fleet({ fleet: { leaseMs: 60_000 } });
    const r1 = runner(f, "long-1");
    const r2 = runner(f, "long-2");
    await r1.register();
    await r2.register();
    const t = await f.admin("POST", "/tasks", { prompt: "marathon" });
    const got = await r1.poll();
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.status).toBe("assigned");
    // No "running" report (the Victoria runner sends none): a busy heartbeat says it runs.
    await r1.heartbeat("busy", t.json.id);
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.status).toBe("running");
    for (let i = 0; i < 5; i++) {
      await f.clock.advance(40_000);
      await r1.heartbeat("busy", t.json.id);
      expect(await r2.poll()).toBeNull();
    }
    const fin = await r1.run(got!, { kind: "exit", code: 0 });
    expect(fin?.json.status).toBe("completed");
  });

  it("re-registration after a restart issues a fresh key, keeps the old one for a grace period and requeues the task", async () => {
    const f = await fleet({ fleet: { reregistrationGraceMs: 30_000 } });
    const r = runner(f, "restarty");
    await r.register();
    const oldKey = r.apiKey!;
    const oldId = r.nodeId!;
    const t = await f.admin("POST", "/tasks", { prompt: "survive restart" });
    const got = await r.poll();
    await r.run(got!, { kind: "killed" });

    const restarted = runner(f, "restarty");
    await restarted.register();
    expect(restarted.nodeId).toBe(oldId);
    expect(restarted.apiKey).not.toBe(oldKey);
    // Requeued at once (not lost), as a new attempt, to the restarted runner.
    const again = await restarted.poll();
    expect(again?.task_id).toBe(t.json.id);
    // The old key still works during the grace period, then stops.
    const viaOld = await httpRequest("GET", `${f.url}/tasks/pending`, { "X-API-Key": oldKey });
    expect(viaOld.status).toBe(200);
    await f.clock.advance(30_001);
    const expired = await httpRequest("GET", `${f.url}/tasks/pending`, { "X-API-Key": oldKey });
    expect(expired.status).toBe(401);
    expect(expired.json).toEqual({ detail: expect.any(String) });
    const fin = await restarted.run(again!, { kind: "exit", code: 0 });
    expect(fin?.json).toMatchObject({ status: "completed", attempts: 2 });
    const nodes = await f.admin("GET", "/nodes");
    expect(nodes.json.count).toBe(1);
    expect(nodes.json.nodes[0]).toMatchObject({ id: oldId, registrations: 2 });
  });

  it("targets by node id, name glob and tags across two nodes", async () => {
    const f = await fleet();
    const acme = runner(f, "client-acme-prod-1");
    const beta = runner(f, "client-beta-prod-1");
    await acme.register();
    await beta.register();
    const byName = await f.admin("POST", "/tasks", {
      prompt: "acme only",
      target_node_name: "client-acme-*",
    });
    const byId = await f.admin("POST", "/tasks", {
      prompt: "beta by id",
      target_node_id: beta.nodeId,
    });
    expect(await beta.poll()).toMatchObject({ task_id: byId.json.id });
    expect(await beta.poll()).toBeNull();
    expect(await acme.poll()).toMatchObject({ task_id: byName.json.id });

    // Tags come from registration (`tags`), matched key/value.
    const tagged = new VictoriaRunner({
      orchestratorUrl: f.url,
      registrationToken: REG_TOKEN,
      name: "gpu-box-1",
      home: join(f.dir, "gpu"),
    });
    const reg = await httpRequest(
      "POST",
      `${f.url}/register`,
      { "Content-Type": "application/json", "X-Registration-Token": REG_TOKEN },
      JSON.stringify({
        hostname: "gpu",
        name: "gpu-box-1",
        os_type: "ubuntu",
        capabilities: [],
        tags: { env: "production", gpu: "a100" },
      }),
    );
    expect(reg.status).toBe(200);
    tagged.apiKey = (reg.json as { api_key: string }).api_key;
    tagged.nodeId = (reg.json as { id: string }).id;
    const byTag = await f.admin("POST", "/tasks", {
      prompt: "prod gpu",
      target_tags: { env: "production" },
    });
    expect(await acme.poll()).toBeNull();
    expect(await beta.poll()).toBeNull();
    expect(await tagged.poll()).toMatchObject({ task_id: byTag.json.id });
  });

  it("works under a base-URL prefix", async () => {
    const f = await fleet({ prefix: "/qb" });
    const r = runner(f, "prefixed");
    expect(await r.register()).toBe(true);
    const up = await upload(f.url, "in.txt", "hello");
    const pct = await upload(f.url, "50% done #1.txt", "half");
    const t = await f.admin("POST", "/tasks", {
      prompt: "p",
      files: [up.json.filename, pct.json.filename],
    });
    const got = await r.poll();
    expect(got?.orchestrator_url).toBe(f.url);
    const fin = await r.run(got!, { kind: "exit", code: 0 });
    expect(fin?.json).toMatchObject({ id: t.json.id, status: "completed" });
    expect(r.downloaded.get("in.txt")?.toString()).toBe("hello");
    expect(r.downloaded.get("50% done #1.txt")?.toString()).toBe("half");
  });

  it("survives a server restart: nodes, keys, tasks, leases, files and logs", async () => {
    const f = await fleet();
    const r = runner(f, "durable-1");
    await r.register();
    const up = await upload(f.url, "keep.txt", "kept bytes");
    const done = await f.admin("POST", "/tasks", { prompt: "first" });
    const got = await r.poll();
    await r.run(got!, { kind: "exit", code: 0 });
    const pending = await f.admin("POST", "/tasks", {
      prompt: "second",
      files: [up.json.filename],
    });
    const scoped = await f.admin("POST", "/keys", { name: "ci", scopes: ["tasks:read"] });
    const held = await f.admin("POST", "/tasks", { prompt: "held", priority: "critical" });
    expect((await r.poll())?.task_id).toBe(held.json.id);
    await r.status(held.json.id, "running");
    const hourly = await f.admin("POST", "/tasks", { prompt: "hourly", recurrence: "0 * * * *" });
    expect(hourly.status).toBe(201);
    await f.stop();

    const g = await fleet({ dir: f.dir, clock: f.clock });
    const r2 = new VictoriaRunner({
      orchestratorUrl: g.url,
      registrationToken: REG_TOKEN,
      name: "durable-1",
      home: join(g.dir, "h2"),
    });
    r2.apiKey = r.apiKey;
    r2.nodeId = r.nodeId;
    const logs = await g.admin("GET", `/logs/${done.json.id}`);
    expect(logs.json.count).toBe(1);
    expect((await g.admin("GET", `/tasks/${done.json.id}`)).json.status).toBe("completed");
    expect((await g.admin("GET", "/tasks", undefined, scoped.json.api_key)).status).toBe(200);
    // The lease survived the restart: the node finishes what it held.
    const heldDone = await r2.status(held.json.id, "success", "held done");
    expect(heldDone.json).toMatchObject({ status: "completed", result: "held done", attempts: 1 });
    const next = await r2.poll();
    expect(next?.task_id).toBe(pending.json.id);
    const fin = await r2.run(next!, { kind: "exit", code: 0 });
    expect(fin?.json.status).toBe("completed");
    expect(r2.downloaded.get("keep.txt")?.toString()).toBe("kept bytes");
    // The recurrence is still armed.
    await g.clock.advance(3_600_000);
    const occurrence = await r2.poll();
    expect(occurrence?.prompt).toBe("hourly");
  });
});

describe("fleet keys", () => {
  it("scoped keys may only create tasks inside their targets", async () => {
    const f = await fleet();
    const k = await f.admin("POST", "/keys", {
      name: "acme-integration",
      scopes: ["tasks:create", "tasks:read"],
      allowed_targets: ["client-acme-*"],
    });
    expect(k.status).toBe(201);
    const secret = k.json.api_key as string;
    expect(secret).toBeTruthy();
    const ok = await f.admin(
      "POST",
      "/tasks",
      { prompt: "x", target_node_name: "client-acme-prod-*" },
      secret,
    );
    expect(ok.status).toBe(201);
    for (const target of ["client-beta-prod-1", "client-*", "*"]) {
      const no = await f.admin("POST", "/tasks", { prompt: "x", target_node_name: target }, secret);
      expect(no.status).toBe(403);
      expect(no.json).toEqual({ detail: expect.any(String) });
    }
    const untargeted = await f.admin("POST", "/tasks", { prompt: "x" }, secret);
    expect(untargeted.status).toBe(403);
    // Scopes: this key cannot manage keys or read nodes.
    expect((await f.admin("GET", "/keys", undefined, secret)).status).toBe(403);
    expect((await f.admin("GET", "/nodes", undefined, secret)).status).toBe(403);
    // A request refused for a missing scope is audited as denied, never as a use.
    const audit = await f.admin("GET", `/keys/audit?key_id=${k.json.id}&limit=100`);
    const lines = audit.json.entries as Array<{
      action: string;
      detail: string | null;
    }>;
    const onKeys = lines.filter((l) => l.detail?.startsWith("GET /keys"));
    expect(onKeys.map((l) => l.action)).toEqual(["denied"]);
    expect(onKeys[0]?.detail).toBe('GET /keys: lacks the "admin" scope');
    await f.admin("POST", "/tasks", { prompt: "other", target_node_name: "client-beta-1" });
    expect((await f.admin("GET", "/tasks")).json.total).toBe(2);
    const mine = await f.admin("GET", "/tasks", undefined, secret);
    expect(mine.json.total).toBe(1);
    expect(mine.json.tasks[0].target_node_name).toBe("client-acme-prod-*");
    // The secret is shown once: the list never has it nor its hash.
    const keys = await f.admin("GET", "/keys");
    expect(JSON.stringify(keys.json)).not.toContain(secret);
    expect(JSON.stringify(keys.json)).not.toContain(sha(secret));
  });

  it("rotation keeps the old secret for the grace period; revocation is immediate; all audited", async () => {
    const f = await fleet();
    const k = await f.admin("POST", "/keys", { name: "ops", scopes: ["admin"] });
    const first = k.json.api_key as string;
    expect((await f.admin("GET", "/nodes", undefined, first)).status).toBe(200);
    const rot = await f.admin("POST", `/keys/${k.json.id}/rotate?grace_period_hours=1`);
    expect(rot.status).toBe(200);
    const second = rot.json.api_key as string;
    expect(second).not.toBe(first);
    expect((await f.admin("GET", "/nodes", undefined, first)).status).toBe(200);
    expect((await f.admin("GET", "/nodes", undefined, second)).status).toBe(200);
    await f.clock.advance(3_600_001);
    expect((await f.admin("GET", "/nodes", undefined, first)).status).toBe(401);
    expect((await f.admin("GET", "/nodes", undefined, second)).status).toBe(200);
    const rot0 = await f.admin("POST", `/keys/${k.json.id}/rotate?grace_period_hours=0`);
    expect((await f.admin("GET", "/nodes", undefined, second)).status).toBe(401);
    const third = rot0.json.api_key as string;
    const rev = await f.admin("POST", `/keys/${k.json.id}/revoke`);
    expect(rev.json.status).toBe("revoked");
    const denied = await f.admin("GET", "/nodes", undefined, third);
    expect(denied.status).toBe(401);
    expect(denied.json).toEqual({ detail: expect.any(String) });
    const audit = await f.admin("GET", `/keys/audit?key_id=${k.json.id}`);
    const actions = audit.json.entries.map((e: { action: string }) => e.action);
    expect(actions).toEqual(expect.arrayContaining(["created", "used", "rotated", "revoked"]));
    expect(actions.indexOf("created")).toBe(0);
    expect(actions[actions.length - 1]).toBe("revoked");
    expect((await f.admin("GET", `/keys/${k.json.id}`)).json.status).toBe("revoked");
    expect((await f.admin("DELETE", `/keys/${k.json.id}`)).status).toBe(200);
    expect((await f.admin("GET", `/keys/${k.json.id}`)).status).toBe(404);
  });

  it("approval decisions are in the audit log with the approver and the comment", async () => {
    const f = await fleet();
    const t = await f.admin("POST", "/tasks", { prompt: "ship it", approval: "before_run" });
    expect(t.status).toBe(201);
    const id = t.json.task_id as string;
    // The task records the key that created it, as the Vera routes name keys.
    const hash12 = createHash("sha256").update(ADMIN_KEY).digest("hex").slice(0, 12);
    expect((await f.orchestrator.get(id))?.apiKey).toBe(`key:${hash12}`);
    await f.orchestrator.approve(id, { by: "key:0123456789ab", comment: "looks right" });
    const other = await f.admin("POST", "/tasks", { prompt: "no", approval: "before_run" });
    await f.orchestrator.reject(other.json.task_id as string, { by: "open" });
    // The audit lines are written as the decisions are emitted.
    await vi.waitFor(async () => {
      const lines = (await f.admin("GET", "/keys/audit?limit=100")).json.entries as Array<{
        action: string;
        actor: string | null;
        detail: string | null;
      }>;
      expect(lines.filter((l) => l.action.startsWith("task_"))).toEqual(
        expect.arrayContaining([
          expect.objectContaining({
            action: "task_approved",
            actor: "key:0123456789ab",
            detail: expect.stringMatching(new RegExp(`^task ${id} .*: looks right$`)),
          }),
          expect.objectContaining({ action: "task_rejected", actor: "open" }),
        ]),
      );
    });
  });

  it("a revoked node key stops polling at once, and the runner does not re-register", async () => {
    const f = await fleet();
    const r = runner(f, "revokee");
    await r.register();
    const keys = await f.admin("GET", "/keys");
    const nodeKey = keys.json.keys.find((k: { node_id: string | null }) => k.node_id === r.nodeId);
    expect(nodeKey).toBeTruthy();
    await f.admin("POST", `/keys/${nodeKey.id}/revoke`);
    await r.cycle();
    await r.cycle();
    const errs = r.events.filter((e) => e.kind === "poll-error");
    expect(errs.map((e) => e.status)).toEqual([401, 401]);
    expect(r.events.filter((e) => e.kind === "registered")).toHaveLength(1);
  });
});

describe("fleet bad input", () => {
  it("path traversal cannot reach anything but the task's own files", async () => {
    const f = await fleet();
    const up = await upload(f.url, "secret.txt", "task file");
    const other = await upload(f.url, "passwd", "not yours");
    const r = runner(f, "trav");
    await r.register();
    await f.admin("POST", "/tasks", { prompt: "p", files: [up.json.filename] });
    await r.poll();
    const key = { "X-API-Key": r.apiKey! };
    for (const path of [
      "/files/..%2F..%2Fetc%2Fpasswd",
      "/files/%2E%2E%2Fflotilla.db",
      "/files/..%5C..%5Cflotilla.db",
      "/files/flotilla.db",
    ]) {
      const res = await httpRequest("GET", `${f.url}${path}`, key);
      expect([403, 404]).toContain(res.status);
      expect(res.json).toEqual({ detail: expect.any(String) });
    }
    const notMine = await httpRequest("GET", `${f.url}/files/passwd`, key);
    expect(notMine.status).toBe(403);
    expect(other.status).toBe(201);
    const mine = await httpRequest("GET", `${f.url}/files/secret.txt`, key);
    expect(mine.status).toBe(200);
    expect(mine.text).toBe("task file");
    const unknown = await httpRequest("GET", `${f.url}/files/nope.bin`, key);
    expect(unknown.status).toBe(404);
    const noKey = await httpRequest("GET", `${f.url}/files/secret.txt`);
    expect(noKey.status).toBe(401);
  });

  it("upload names a node could not use safely are refused or cleaned", async () => {
    const f = await fleet();
    for (const name of [".", "..", "dir/..", "\u202e"]) {
      const res = await upload(f.url, name, "x");
      expect(res.status, name).toBe(400);
      expect(String(res.json.detail)).toContain("cannot be a file name on a node");
    }
    // A right-to-left override would show "report_exe.txt" as "report_txt.exe": it is removed.
    const bidi = await upload(f.url, "report_\u202etxt.exe", "x");
    expect(bidi.status).toBe(201);
    expect(bidi.json.original_name).toBe("report_txt.exe");
    const r = runner(f, "names");
    await r.register();
    await f.admin("POST", "/tasks", { prompt: "p", files: [bidi.json.filename] });
    const polled = await r.poll();
    expect(polled?.files).toEqual(["report_txt.exe"]);
    const got = await httpRequest("GET", `${f.url}/files/report_txt.exe`, {
      "X-API-Key": r.apiKey!,
    });
    expect(got.status).toBe(200);
  });

  it("a checksum mismatch makes the runner drop the task silently; the lease brings it back", async () => {
    const f = await fleet({ fleet: { leaseMs: 60_000 } });
    const up = await upload(f.url, "data.bin", "abc");
    const r = runner(f, "checker");
    await r.register();
    const t = await f.admin("POST", "/tasks", { prompt: "p", files: [up.json.filename] });
    const got = await r.poll();
    got!.file_checksums = ["0".repeat(64)];
    expect(await r.run(got!, { kind: "exit", code: 0 })).toBeUndefined();
    expect(r.events.some((e) => e.kind === "dropped-download")).toBe(true);
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.status).toBe("assigned");
    await f.clock.advance(60_001);
    expect((await r.poll())?.task_id).toBe(t.json.id);
  });

  it("accepts 10 MiB of logs, rejects bodies over the limit with 413 and stores nothing", async () => {
    const f = await fleet({ fleet: { maxLogBytes: 12 * 1024 * 1024 } });
    const r = runner(f, "logger");
    await r.register();
    const t = await f.admin("POST", "/tasks", { prompt: "p" });
    await r.poll();
    const big = await r.logs(t.json.id, 10 * 1024 * 1024 - 8192);
    expect(big.status).toBe(200);
    expect(big.json).toMatchObject({ task_id: t.json.id, title: "Task Session", message_count: 2 });
    expect(big.text.length).toBeLessThan(2048);
    const huge = JSON.stringify({
      task_id: t.json.id,
      session: {
        id: "s",
        messages: [{ role: "assistant", content: "y".repeat(13 * 1024 * 1024) }],
      },
    });
    const res = await httpRequest(
      "POST",
      `${f.url}/logs`,
      { "Content-Type": "application/json", "X-API-Key": r.apiKey! },
      huge,
    );
    expect(res.status).toBe(413);
    expect(res.json).toEqual({ detail: expect.any(String) });
    expect((await f.admin("GET", `/logs/${t.json.id}`)).json.count).toBe(1);
  });

  it("rejects unknown statuses, foreign tasks and unknown tasks with the contract's codes", async () => {
    const f = await fleet();
    const a = runner(f, "holder");
    const b = runner(f, "intruder");
    await a.register();
    await b.register();
    const t = await f.admin("POST", "/tasks", { prompt: "p" });
    await a.poll();
    const bad = await a.status(t.json.id, "completed");
    expect(bad.status).toBe(400);
    expect((bad.json as { detail: string }).detail).toMatch(/status/);
    const foreign = await b.status(t.json.id, "success", "stolen");
    expect(foreign.status).toBe(403);
    const foreignLogs = await b.logs(t.json.id, 10);
    expect(foreignLogs.status).toBe(403);
    const unknown = await a.status("00000000-0000-4000-8000-000000000000", "running");
    expect(unknown.status).toBe(404);
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.status).toBe("assigned");
    expect((await f.admin("GET", `/logs/${t.json.id}`)).json.count).toBe(0);
    // Aliases: job_id and agent_session_id.
    const alias = await httpRequest(
      "POST",
      `${f.url}/status`,
      { "Content-Type": "application/json", "X-API-Key": a.apiKey! },
      JSON.stringify({
        job_id: t.json.id,
        status: "analyzing",
        agent_session_id: "sess-9",
        progress: 45,
      }),
    );
    expect(alias.status).toBe(200);
    expect(alias.json).toMatchObject({ id: t.json.id, crush_session_id: "sess-9", progress: 45 });
    const hbBad = await httpRequest(
      "POST",
      `${f.url}/nodes/heartbeat`,
      { "Content-Type": "application/json", "X-API-Key": a.apiKey! },
      JSON.stringify({ node_id: a.nodeId, status: "sleeping", current_task_id: null }),
    );
    expect(hbBad.status).toBe(400);
    const hbUnknown = await httpRequest(
      "POST",
      `${f.url}/nodes/heartbeat`,
      { "Content-Type": "application/json", "X-API-Key": "nope" },
      JSON.stringify({ node_id: "x", status: "idle", current_task_id: null }),
    );
    expect(hbUnknown.status).toBe(401);
    const notJson = await httpRequest(
      "POST",
      `${f.url}/status`,
      { "Content-Type": "application/json", "X-API-Key": a.apiKey! },
      "{nope",
    );
    expect(notJson.status).toBe(400);
  });

  it("registration: 401 bad token, 503 without a token, 429 on a flood of registrations, nothing stored", async () => {
    const f = await fleet({ fleet: { registrationRateLimit: { max: 5, windowMs: 60_000 } } });
    const body = JSON.stringify({ hostname: "h", name: "n", os_type: "linux" });
    const h = (token: string) => ({
      "Content-Type": "application/json",
      "X-Registration-Token": token,
    });
    const bad = await httpRequest("POST", `${f.url}/register`, h("wrong"), body);
    expect(bad.status).toBe(401);
    expect(bad.json).toEqual({ detail: expect.any(String) });
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) {
      const rr = await httpRequest("POST", `${f.url}/register`, h(REG_TOKEN), body);
      statuses.push(rr.status);
    }
    // The wrong token does not count against the flood limit (only registrations do).
    expect(statuses.slice(0, 5)).toEqual([200, 200, 200, 200, 200]);
    expect(statuses.slice(5)).toEqual([429]);
    const flooded = await httpRequest("POST", `${f.url}/register`, h(REG_TOKEN), body);
    expect(flooded.json).toEqual({ detail: expect.any(String) });
    expect(flooded.headers["retry-after"]).toBeDefined();
    expect((await f.admin("GET", "/nodes")).json.count).toBe(1);
    await f.clock.advance(60_001);
    expect((await httpRequest("POST", `${f.url}/register`, h(REG_TOKEN), body)).status).toBe(200);

    const g = await fleet({ fleet: { registrationToken: undefined } });
    const off = await httpRequest("POST", `${g.url}/register`, h(REG_TOKEN), body);
    expect(off.status).toBe(503);
    expect(off.json).toEqual({ detail: expect.any(String) });
    expect((await g.admin("GET", "/nodes")).json.count).toBe(0);
  });

  it("admin routes need a key; paths are exact, never redirected; bad task input names the field", async () => {
    const f = await fleet();
    expect((await f.admin("GET", "/nodes", undefined, "")).status).toBe(401);
    expect((await f.admin("GET", "/nodes", undefined, "wrong")).status).toBe(401);
    const health = await httpRequest("GET", `${f.url}/health`);
    expect(health.status).toBe(200);
    const slash = await httpRequest("GET", `${f.url}/tasks/pending/`, { "X-API-Key": ADMIN_KEY });
    expect([301, 302, 307, 308]).not.toContain(slash.status);
    const noPrompt = await f.admin("POST", "/tasks", { target_node_name: "x" });
    expect(noPrompt.status).toBe(400);
    expect(noPrompt.json.detail).toMatch(/prompt/);
    const badCron = await f.admin("POST", "/tasks", { prompt: "p", recurrence: "every tuesday" });
    expect(badCron.status).toBe(400);
    expect(badCron.json.detail).toMatch(/recurrence/);
    const badFile = await f.admin("POST", "/tasks", { prompt: "p", files: ["nope.txt"] });
    expect(badFile.status).toBe(400);
    expect(badFile.json.detail).toMatch(/files/);
    expect((await f.admin("GET", "/tasks")).json.total).toBe(0);
  });
});

describe("fleet admin", () => {
  it("accepts Bearer node auth, pages and filters lists, and never stores a secret in plain text", async () => {
    const f = await fleet();
    const r = runner(f, "bearer-node");
    await r.register();
    const bearer = { Authorization: `Bearer ${r.apiKey}` };
    expect((await httpRequest("GET", `${f.url}/tasks/pending`, bearer)).status).toBe(200);
    const hb404 = await httpRequest(
      "POST",
      `${f.url}/nodes/heartbeat`,
      { ...bearer, "Content-Type": "application/json" },
      JSON.stringify({ node_id: "no-such-node", status: "idle", current_task_id: null }),
    );
    expect(hb404.status).toBe(404);
    expect(hb404.json).toEqual({ detail: expect.any(String) });
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      ids.push((await f.admin("POST", "/tasks", { prompt: `t${i}` })).json.id);
    }
    const got = await r.poll();
    const page = await f.admin("GET", "/tasks?limit=2&offset=1");
    expect(page.json).toMatchObject({ total: 5, limit: 2, offset: 1 });
    expect(page.json.tasks).toHaveLength(2);
    const mine = await f.admin("GET", `/tasks?node_id=${r.nodeId}`);
    expect(mine.json.tasks.map((t: { id: string }) => t.id)).toEqual([got?.task_id]);
    expect((await f.admin("GET", "/tasks?limit=0")).status).toBe(400);

    const key = await f.admin("POST", "/keys", { name: "plain-check", scopes: ["admin"] });
    const secrets = [key.json.api_key as string, r.apiKey as string, REG_TOKEN, ADMIN_KEY];
    await f.stop();
    const { readFile } = await import("node:fs/promises");
    const files = [f.dbPath, `${f.dbPath}-wal`];
    let bytes = "";
    for (const file of files) bytes += await readFile(file, "latin1").catch(() => "");
    expect(bytes.length).toBeGreaterThan(0);
    for (const secret of secrets) expect(bytes).not.toContain(secret);
    expect(bytes).toContain(sha(key.json.api_key));
  });

  it("cancel, list with filters, stats, cleanup, node removal requeues", async () => {
    const f = await fleet();
    const r = runner(f, "admin-node");
    await r.register();
    const t1 = await f.admin("POST", "/tasks", { prompt: "one", priority: "high" });
    const t2 = await f.admin("POST", "/tasks", { prompt: "two" });
    const t3 = await f.admin("POST", "/tasks", { prompt: "three" });
    const got = await r.poll();
    expect(got?.task_id).toBe(t1.json.id);
    await r.run(got!, { kind: "exit", code: 0 });
    const cancelled = await f.admin("DELETE", `/tasks/${t3.json.id}`);
    expect(cancelled.json.status).toBe("cancelled");
    const held = await r.poll();
    expect(held?.task_id).toBe(t2.json.id);
    expect((await f.admin("GET", "/tasks?status=completed")).json.total).toBe(1);
    expect((await f.admin("GET", "/tasks?status=bogus")).status).toBe(400);
    const stats = await f.admin("GET", "/dashboard/stats");
    expect(stats.json).toMatchObject({
      nodes: { total: 1 },
      tasks: { total: 3, completed: 1, cancelled: 1, assigned: 1 },
      // Every stored key counts, the node's own too (the config admin key is not stored).
      keys: { total: 1, admin: 0, scoped: 0, node: 1 },
    });
    const del = await f.admin("DELETE", `/nodes/${r.nodeId}`);
    expect(del.json.requeued_task_ids).toEqual([t2.json.id]);
    expect((await f.admin("GET", `/tasks/${t2.json.id}`)).json.status).toBe("pending");
    expect(
      (await httpRequest("GET", `${f.url}/tasks/pending`, { "X-API-Key": r.apiKey! })).status,
    ).toBe(401);
    await f.clock.advance(20 * 60_000);
    expect((await f.admin("POST", "/tasks/cleanup?days=1")).json.deleted).toBe(0);
    expect((await f.admin("POST", "/tasks/cleanup?days=-1")).status).toBe(400);
    const clean = await f.admin("POST", "/tasks/cleanup?days=0.01");
    expect(clean.json.deleted).toBe(2);
    expect((await f.admin("GET", `/tasks/${t2.json.id}`)).status).toBe(200);
    expect((await f.admin("GET", `/tasks/${t1.json.id}`)).status).toBe(404);
    expect((await f.admin("GET", `/logs/${t1.json.id}`)).status).toBe(404);
  });

  it("missing heartbeats show a node offline", async () => {
    const f = await fleet();
    const r = runner(f, "sleepy");
    await r.register();
    expect((await f.admin("GET", `/nodes/${r.nodeId}`)).json.status).toBe("idle");
    await f.clock.advance(31_000);
    expect((await f.admin("GET", `/nodes/${r.nodeId}`)).json.status).toBe("offline");
    // The registry sees it too (degraded: it gets work again on its first poll).
    const workers = f.orchestrator.listWorkers();
    expect(workers.find((w) => w.id === r.nodeId)?.health).toBe("degraded");
    const hb = await r.heartbeat("idle", null);
    expect(hb.json).toMatchObject({ id: r.nodeId, name: "sleepy", status: "idle" });
    expect(hb.json.api_key).toBeUndefined();
    expect((await f.admin("GET", `/nodes/${r.nodeId}`)).json.status).toBe("idle");
  });

  it("a node silent for nodeExpiryMs is hidden from lists and its tasks requeued; it comes back when it polls", async () => {
    const f = await fleet({ fleet: { nodeExpiryMs: 600_000, leaseMs: 3_600_000 } });
    const gone = runner(f, "gone");
    await gone.register();
    const t = await f.admin("POST", "/tasks", { prompt: "held" });
    const held = await gone.poll();
    expect(held?.task_id).toBe(t.json.id);
    const names = async () =>
      ((await f.admin("GET", "/nodes")).json.nodes as Array<{ name: string }>).map((n) => n.name);
    await f.clock.advance(31_000);
    expect(await names()).toEqual(["gone"]); // offline, still listed
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.status).toBe("assigned");
    await f.clock.advance(600_000);
    expect(await names()).toEqual([]);
    expect((await f.admin("GET", `/nodes/${gone.nodeId}`)).json.status).toBe("offline");
    expect((await f.admin("GET", "/dashboard/stats")).json.nodes).toMatchObject({
      total: 0,
      expired: 1,
    });
    // Its task went back to the queue at once (its hour-long lease had not run out).
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.status).toBe("pending");
    const other = runner(f, "other");
    await other.register();
    expect((await other.poll())?.task_id).toBe(t.json.id);
    // Its key still works: the first poll brings it back into the lists.
    expect(await gone.poll()).toBeNull();
    expect((await names()).sort()).toEqual(["gone", "other"]);
  });

  it("prune removes the fleet's rows of tasks retention removed, and old audit lines", async () => {
    const f = await fleet();
    const kept = await f.admin("POST", "/tasks", { prompt: "still queued" });
    const done = await f.admin("POST", "/tasks", { prompt: "cancelled" });
    expect((await f.admin("DELETE", `/tasks/${done.json.task_id}`)).status).toBe(200);
    expect((await f.admin("GET", "/nodes", undefined, "a-wrong-key")).status).toBe(401); // audited
    await f.clock.advance(2 * 86_400_000);
    expect(await f.store.deleteFinished({ olderThan: 86_400_000 })).toBe(1);
    const audit = (await f.store.kvList("fleet.audit")).length;
    const out = await f.fleet.prune({ auditOlderThanMs: 86_400_000 });
    expect(out.tasks).toBe(1);
    expect(out.audit).toBeGreaterThan(0);
    expect((await f.store.kvList("fleet.audit")).length).toBe(audit - out.audit);
    expect((await f.admin("GET", `/tasks/${done.json.task_id}`)).status).toBe(404);
    expect((await f.admin("GET", `/tasks/${kept.json.task_id}`)).json.status).toBe("pending");
  });

  it("schedules: scheduled_for waits, recurrence submits each occurrence", async () => {
    const f = await fleet();
    const r = runner(f, "cron-node");
    await r.register();
    const at = new Date(f.clock.now() + 10 * 60_000).toISOString();
    const later = await f.admin("POST", "/tasks", { prompt: "later", scheduled_for: at });
    expect(later.json.scheduled_for).toBe(at);
    expect(await r.poll()).toBeNull();
    await f.clock.advance(10 * 60_000);
    const laterTask = await r.poll();
    expect(laterTask?.task_id).toBe(later.json.id);
    await r.run(laterTask!, { kind: "exit", code: 0 });

    const rec = await f.admin("POST", "/tasks", { prompt: "hourly", recurrence: "0 * * * *" });
    expect(rec.status).toBe(201);
    expect(rec.json.recurrence).toBe("0 * * * *");
    const ids = new Set<string>();
    for (let h = 0; h < 3; h++) {
      await f.clock.advance(3_600_000);
      const t = await r.poll();
      expect(t?.prompt).toBe("hourly");
      ids.add(String(t?.task_id));
      await r.run(t!, { kind: "exit", code: 0 });
    }
    expect(ids.size).toBe(3);
    await f.admin("DELETE", `/tasks/${rec.json.id}`);
  });
});
