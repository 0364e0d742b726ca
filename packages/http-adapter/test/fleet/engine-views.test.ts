// Node and task views are read from the engine: they cannot lag behind it.
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { createFlotillaApp } from "../../src/index.js";
import { ADMIN_KEY, type FleetUnderTest, REG_TOKEN, removeDir, startFleet } from "./harness.js";
import { VictoriaRunner } from "./victoria-runner.js";

let f: FleetUnderTest | undefined;
afterEach(async () => {
  await f?.stop();
  if (f) await removeDir(f.dir);
  f = undefined;
});

function runner(fleet: FleetUnderTest, name: string) {
  return new VictoriaRunner({
    orchestratorUrl: fleet.url,
    registrationToken: REG_TOKEN,
    name,
    home: join(fleet.dir, `home-${name}`),
  });
}

describe("fleet views read the engine", () => {
  it("a node is busy while it holds a task and idle as soon as it reports success", async () => {
    f = await startFleet();
    const r = runner(f, "worker-1");
    await r.register();
    const t = await f.admin("POST", "/tasks", { prompt: "do it" });
    const got = await r.poll();
    expect(got?.task_id).toBe(t.json.id);
    const during = await f.admin("GET", `/nodes/${r.nodeId}`);
    expect(during.json).toMatchObject({
      status: "busy",
      current_task_id: t.json.id,
      leased_task_ids: [t.json.id],
    });
    expect((await r.status(t.json.id, "success", "done")).status).toBe(200);
    // No heartbeat and no poll since: the view still follows the engine.
    const after = await f.admin("GET", `/nodes/${r.nodeId}`);
    expect(after.json).toMatchObject({
      status: "idle",
      current_task_id: null,
      leased_task_ids: [],
    });
    const list = await f.admin("GET", "/nodes");
    expect(list.json.nodes[0]).toMatchObject({ status: "idle", leased_task_ids: [] });
  });

  it("a task handed back by re-registration is assigned to no node while it waits", async () => {
    f = await startFleet();
    const r = runner(f, "restarty");
    await r.register();
    const t = await f.admin("POST", "/tasks", { prompt: "survive" });
    await r.poll();
    expect((await f.admin("GET", `/tasks/${t.json.id}`)).json.assigned_node_id).toBe(r.nodeId);
    await runner(f, "restarty").register();
    const waiting = await f.admin("GET", `/tasks/${t.json.id}`);
    expect(waiting.json).toMatchObject({ state: "queued", assigned_node_id: null });
  });

  it("an offline node is offline in the Vera worker list too, and comes back with its node", async () => {
    f = await startFleet();
    const app = createFlotillaApp({ orchestrator: f.orchestrator, auth: { keys: [ADMIN_KEY] } });
    const workerStatus = async (id: string) => {
      const res = await app.fetch(
        new Request("http://x/api/v2/orchestrator/workers/list", {
          headers: { "x-api-key": ADMIN_KEY },
        }),
      );
      const body = (await res.json()) as { workers: Array<{ id: string; status: string }> };
      return body.workers.find((w) => w.id === id)?.status;
    };
    try {
      const r = runner(f, "sleepy");
      await r.register();
      expect(await workerStatus(r.nodeId!)).toBe("idle");
      await f.clock.advance(31_000); // past the 30 s node timeout and a sweep
      expect((await f.admin("GET", `/nodes/${r.nodeId}`)).json.status).toBe("offline");
      expect(await workerStatus(r.nodeId!)).toBe("offline");
      await r.heartbeat("idle", null);
      expect(await workerStatus(r.nodeId!)).toBe("idle");
    } finally {
      app.flotilla.close();
    }
  });
});
