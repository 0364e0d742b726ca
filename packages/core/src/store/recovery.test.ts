import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { Orchestrator } from "../orchestrator/index.js";
import type { TaskRecord } from "../task/types.js";
import { FakeClock } from "../testing/index.js";
import { FunctionWorker, type WorkerFunction } from "../worker/base.js";
import { SqliteStore } from "./sqlite.js";

/**
 * Restart recovery over a real SQLite file: a first orchestrator is abandoned mid-work (its
 * store closed under it, as if the process had died), a second one opens the same file.
 */
describe("restart recovery on SqliteStore", () => {
  let dir: string;
  let path: string;
  let clock: FakeClock;
  const stores: SqliteStore[] = [];
  const orchestrators: Orchestrator[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), "flotilla-recovery-"));
    path = join(dir, "flotilla.db");
    clock = new FakeClock();
  });

  afterEach(async () => {
    for (const o of orchestrators.splice(0)) await o.stop({ mode: "abort" }).catch(() => {});
    for (const s of stores.splice(0)) await s.close().catch(() => {});
    rmSync(dir, { recursive: true, force: true });
  });

  function boot(): { orchestrator: Orchestrator; store: SqliteStore } {
    const store = new SqliteStore({ path, clock });
    const orchestrator = new Orchestrator({ store, clock, random: () => 0 });
    orchestrator.on("error", () => {});
    stores.push(store);
    orchestrators.push(orchestrator);
    return { orchestrator, store };
  }

  /** The process "dies": nothing more of it reaches the file. */
  async function crash(store: SqliteStore): Promise<void> {
    await store.close();
  }

  const worker = (id: string, taskTypes: string[], fn: WorkerFunction, maxConcurrency = 1) =>
    new FunctionWorker({ id, taskTypes, fn, maxConcurrency });

  async function waitFor<T>(probe: () => Promise<T | undefined>, what: string): Promise<T> {
    for (let i = 0; i < 500; i++) {
      const value = await probe();
      if (value !== undefined) return value;
      await new Promise((r) => setTimeout(r, 5));
    }
    throw new Error(`timed out waiting for ${what}`);
  }

  it("restores queued tasks in priority and submission order", async () => {
    const first = boot();
    await first.orchestrator.start();
    const specs = [
      { id: "n1", priority: "normal" },
      { id: "h1", priority: "high" },
      { id: "n2", priority: "normal" },
      { id: "l1", priority: "low" },
      { id: "h2", priority: "high" },
      { id: "c1", priority: "critical" },
    ] as const;
    for (const s of specs) await first.orchestrator.submit({ type: "job", ...s });
    await crash(first.store);

    const second = boot();
    const ran: string[] = [];
    await second.orchestrator.register(
      worker("w", ["job"], async (_p, _ctx, task) => {
        ran.push(task.id);
        return task.id;
      }),
    );
    await second.orchestrator.start();
    const handles = await Promise.all(specs.map((s) => second.orchestrator.handle(s.id)));
    const results = await Promise.all(handles.map((h) => h!.result()));
    expect(results.map((r) => r.status)).toEqual(specs.map(() => "succeeded"));
    expect(ran).toEqual(["c1", "h1", "h2", "n1", "n2", "l1"]);
  });

  it("restores DAG state and dependency outputs, and keeps finished results", async () => {
    const first = boot();
    await first.orchestrator.register(
      worker("w-first", ["first"], async (payload) => ({ from: payload })),
    );
    await first.orchestrator.start();
    const a = await first.orchestrator.submit({ id: "a", type: "first", payload: "A" });
    await first.orchestrator.submit({ id: "b", type: "second", dependsOn: ["a"] });
    await first.orchestrator.submit({ id: "c", type: "second", dependsOn: ["b"] });
    await first.orchestrator.submit({ id: "x", type: "first", payload: "X" });
    await first.orchestrator.submit({ id: "y", type: "second", dependsOn: ["x", "c"] });
    expect((await a.result()).status).toBe("succeeded");
    await waitFor(async () => {
      const b = await first.store.getTask("b");
      const x = await first.store.getTask("x");
      return b?.status === "queued" && x?.status === "succeeded" ? true : undefined;
    }, "b queued and x done");
    expect((await first.store.getTask("c"))?.status).toBe("pending");
    await crash(first.store);

    const second = boot();
    const seen: Record<string, unknown> = {};
    await second.orchestrator.register(
      worker("w-second", ["second"], async (_p, _ctx, task) => {
        seen[task.id] = task.dependencies;
        return `${task.id} done`;
      }),
    );
    await second.orchestrator.start();
    const y = await second.orchestrator.handle("y");
    expect((await y!.result()).status).toBe("succeeded");
    expect(seen).toEqual({
      b: { a: { from: "A" } },
      c: { b: "b done" },
      y: { x: { from: "X" }, c: "c done" },
    });
    const aAfter = await second.orchestrator.get("a");
    expect(aAfter?.result).toMatchObject({ status: "succeeded", output: { from: "A" } });
    expect((await second.orchestrator.handle("a"))?.status).toBe("succeeded");
  });

  it("retries a task that was running when the process died as a new attempt", async () => {
    const first = boot();
    await first.orchestrator.register(worker("w", ["slow"], () => new Promise(() => {})));
    await first.orchestrator.start();
    await first.orchestrator.submit({ id: "s", type: "slow", retry: { maxAttempts: 3 } });
    await waitFor(
      async () => ((await first.store.getTask("s"))?.status === "running" ? true : undefined),
      "s running",
    );
    await crash(first.store);

    const second = boot();
    const attempts: number[] = [];
    await second.orchestrator.register(
      worker("w", ["slow"], async (_p, _ctx, task) => {
        attempts.push(task.attempt);
        return "finally";
      }),
    );
    await second.orchestrator.start();
    const handle = await second.orchestrator.handle("s");
    const pending = handle!.result();
    await clock.advance(5_000);
    const result = await pending;
    expect(result).toMatchObject({ status: "succeeded", output: "finally", attempts: 2 });
    expect(attempts).toEqual([2]);
    const history = await second.store.listAttempts("s");
    expect(history.map((h) => [h.attempt, h.status])).toEqual([
      [1, "queued"],
      [2, "succeeded"],
    ]);
  });

  it("retries a task cut off by the crash even when its attempts are spent (the crash was not its fault)", async () => {
    const first = boot();
    await first.orchestrator.register(worker("w", ["slow"], () => new Promise(() => {})));
    await first.orchestrator.start();
    await first.orchestrator.submit({ id: "s", type: "slow", retry: { maxAttempts: 1 } });
    await waitFor(
      async () => ((await first.store.getTask("s"))?.status === "running" ? true : undefined),
      "s running",
    );
    await crash(first.store);

    const second = boot();
    await second.orchestrator.register(worker("w", ["slow"], async () => 1));
    await second.orchestrator.start();
    const stored = await waitFor(async () => {
      const t = await second.store.getTask("s");
      return t?.status === "succeeded" ? t : undefined;
    }, "s succeeded");
    expect(stored).toMatchObject({ attempt: 2, interruptions: 1, result: { output: 1 } });
  });

  it("retries a local worker's task at once even when the restarted process names its workers differently", async () => {
    const store0 = new SqliteStore({ path, clock });
    stores.push(store0);
    const first = new Orchestrator({ store: store0, clock, random: () => 0, leaseMs: 10_000 });
    first.on("error", () => {});
    orchestrators.push(first);
    await first.register(worker("w-old", ["slow"], () => new Promise(() => {})));
    await first.start();
    await first.submit({ id: "s", type: "slow", retry: { maxAttempts: 3, initialDelayMs: 0 } });
    await waitFor(
      async () => ((await store0.getTask("s"))?.status === "running" ? true : undefined),
      "s running",
    );
    await crash(store0);

    const second = boot();
    const attempts: number[] = [];
    await second.orchestrator.register(
      worker("w-new", ["slow"], async (_p, _ctx, task) => {
        attempts.push(task.attempt);
        return "ok";
      }),
    );
    await second.orchestrator.start();
    const handle = await second.orchestrator.handle("s");
    expect(await handle!.result()).toMatchObject({ status: "succeeded", attempts: 2 });
    expect(attempts).toEqual([2]);
  });

  it("keeps a live remote lease across a restart, and requeues it once it expires", async () => {
    const first = boot();
    await first.orchestrator.start();
    await first.orchestrator.submit({ id: "r", type: "remote", retry: { maxAttempts: 3 } });
    const claim = await first.orchestrator.claim({ holderId: "node-1" }, { leaseMs: 30_000 });
    expect(claim?.task.id).toBe("r");
    await crash(first.store);

    const second = boot();
    await second.orchestrator.start();
    expect(await second.orchestrator.claim({ holderId: "node-2" })).toBeNull();
    const renewed = await second.orchestrator.renewLease("r", claim!.lease.id, 30_000);
    expect(renewed.holder).toBe("node-1");
    await crash(second.store);

    const third = boot();
    await third.orchestrator.start();
    expect(await third.orchestrator.claim({ holderId: "node-2" })).toBeNull();
    await clock.advance(31_000);
    const again = await waitFor(
      () => third.orchestrator.claim({ holderId: "node-2" }).then((c) => c ?? undefined),
      "a new claim after expiry",
    );
    expect(again.task.id).toBe("r");
    expect(again.task.attempt).toBe(2);
    const done = await third.orchestrator.completeLease("r", again.lease.id, { output: "ok" });
    expect(done.status).toBe("succeeded");
    await expect(
      third.orchestrator.completeLease("r", claim!.lease.id, { output: "late" }),
    ).rejects.toThrow();
    expect((await third.store.getTask("r"))?.result?.output).toBe("ok");
  });

  it("answers a repeated idempotency key with the task stored before the restart", async () => {
    const first = boot();
    await first.orchestrator.start();
    const original = await first.orchestrator.submit({
      type: "job",
      idempotencyKey: "order-42",
      payload: 1,
    });
    await crash(first.store);

    const second = boot();
    await second.orchestrator.start();
    const again = await second.orchestrator.submit({
      type: "job",
      idempotencyKey: "order-42",
      payload: 2,
    });
    expect(again.id).toBe(original.id);
    expect(await second.store.countTasks()).toBe(1);
    const rec = (await second.store.getTask(original.id)) as TaskRecord;
    expect(rec.payload).toBe(1);
  });
});
