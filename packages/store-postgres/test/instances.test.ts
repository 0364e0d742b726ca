import { FunctionWorker, Orchestrator, type TaskHandle } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { type PartitionLeases, PostgresStore, partitionOf } from "../src/index.js";
import { dropSchema, freshSchema, pgUrl } from "./pg-env.js";

const url = pgUrl();

/** An id whose partition (of 64) is in [from, to). */
function idIn(from: number, to: number, prefix: string): string {
  for (let i = 0; ; i++) {
    const id = `${prefix}-${i}`;
    const p = partitionOf(id, 64);
    if (p >= from && p < to) return id;
  }
}

/** Waits until `cond()` holds (checked every 20 ms), failing after `ms`. */
async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

if (url) {
  describe("orchestrators on one schema, partitions leased between them", () => {
    const cleanups: Array<() => Promise<void>> = [];
    const schemas = new Set<string>();
    afterEach(async () => {
      for (const c of cleanups.splice(0).reverse()) await c();
      for (const s of schemas) await dropSchema(url, s);
      schemas.clear();
    });

    /** Every run of every task, in order: `<id>@<instance>` started, `…:aborted` when cut off. */
    const log: string[] = [];
    const holds = new Map<string, () => void>();

    /** One instance as `flotilla serve` would wire it: store, orchestrator, leases. */
    async function instance(schema: string, name: string, recheckIntervalMs = 50) {
      schemas.add(schema);
      const store = new PostgresStore({ connectionString: url, schema, exclusive: false });
      await store.open();
      const orchestrator = new Orchestrator({
        store,
        partitions: { count: 64 },
        recheckIntervalMs,
      });
      await orchestrator.register(
        new FunctionWorker({
          id: `${name}-worker`,
          taskTypes: ["t"],
          maxConcurrency: 50,
          fn: (payload, ctx, task) => {
            log.push(`${task.id}@${name}`);
            if (!(payload as { hold?: boolean })?.hold) return Promise.resolve(name);
            return new Promise<string>((resolve, reject) => {
              holds.set(task.id, () => resolve(name));
              ctx.signal.addEventListener("abort", () => {
                log.push(`${task.id}@${name}:aborted`);
                reject(ctx.signal.reason);
              });
            });
          },
        }),
      );
      await orchestrator.start();
      const leases: PartitionLeases = store.partitionLeases({
        instanceId: name,
        partitions: 64,
        leaseMs: 60_000,
        release: (ps) => orchestrator.release(ps),
      });
      leases.onChange(({ acquired }) => {
        if (acquired.length > 0) void orchestrator.adopt(acquired);
      });
      await leases.start();
      cleanups.push(async () => {
        await leases.stop();
        await orchestrator.stop({ mode: "abort" });
        await store.close();
      });
      return { store, orchestrator, leases };
    }

    it("a handle on a task another instance runs settles when it ends there, not at the next poll", async () => {
      const schema = freshSchema("inst");
      // Polls of tasks held elsewhere a minute apart: only the followed events can be quick.
      const a = await instance(schema, "a", 60_000);
      const b = await instance(schema, "b", 60_000);
      await until(() => b.leases.owned().size === 32 && a.leases.owned().size === 32, "32/32");
      const owned = [...b.leases.owned()];
      let id = "elsewhere-0";
      for (let i = 1; !owned.includes(partitionOf(id, 64)); i++) id = `elsewhere-${i}`;
      const handle = await a.orchestrator.submit({ id, type: "t" });
      await b.orchestrator.adopt(owned); // B looks (as told, or at its sweep) and runs it
      const started = Date.now();
      const result = await Promise.race([
        handle.result(),
        new Promise<never>((_, reject) =>
          setTimeout(() => reject(new Error("the handle did not settle within 10 s")), 10_000),
        ),
      ]);
      expect(result.status).toBe("succeeded");
      expect(result.output).toBe("b");
      expect(Date.now() - started).toBeLessThan(5_000);
    });

    it("each task runs once, on its partition's holder; a rebalance hands running work over first", async () => {
      log.length = 0;
      const schema = freshSchema("inst");
      const a = await instance(schema, "a");
      expect(a.leases.owned().size).toBe(64);

      // A long task in a partition B will get (A keeps the lower half), and quick ones.
      const long = idIn(32, 64, "long");
      const held = await a.orchestrator.submit({ id: long, type: "t", payload: { hold: true } });
      const early = await a.orchestrator.submitBatch(
        Array.from({ length: 20 }, (_, i) => ({ id: `early-${i}`, type: "t" })),
      );
      await until(() => log.includes(`${long}@a`), "the long task runs on A");
      for (const h of early) expect((await h.result()).output).toBe("a");

      // B joins: A hands the upper half over (the long task is aborted and goes back to
      // the queue) before giving the leases up; B adopts them and runs it.
      const b = await instance(schema, "b");
      await until(() => b.leases.owned().size === 32, "B holds 32");
      await until(() => log.includes(`${long}@b`), "the long task runs on B");
      const i = log.indexOf(`${long}@a:aborted`);
      expect(i).toBeGreaterThanOrEqual(0);
      expect(i).toBeLessThan(log.indexOf(`${long}@b`));
      holds.get(long)!();
      // A's handle reads the store until the task ends.
      const result = await held.result();
      expect(result.status).toBe("succeeded");
      expect(result.output).toBe("b");

      // Submissions on either instance, to either half, run once each on the holder.
      const late: TaskHandle[] = [];
      for (let k = 0; k < 20; k++) {
        const on = k % 2 === 0 ? a : b;
        late.push(await on.orchestrator.submit({ id: `late-${k}`, type: "t" }));
      }
      // Each holder picks up what the other stored (a server does this on a wake-up).
      await a.orchestrator.adopt(a.orchestrator.partitions().held);
      await b.orchestrator.adopt(b.orchestrator.partitions().held);
      for (const h of late) {
        const r = await h.result();
        expect(r.status).toBe("succeeded");
        const p = partitionOf(h.id, 64);
        expect(r.output, `${h.id} in partition ${p}`).toBe(a.leases.owns(p) ? "a" : "b");
      }
      const runs = new Map<string, number>();
      for (const line of log) {
        if (line.endsWith(":aborted")) continue;
        const id = line.slice(0, line.lastIndexOf("@"));
        runs.set(id, (runs.get(id) ?? 0) + 1);
      }
      for (const [id, n] of runs) expect(n, id).toBe(id === long ? 2 : 1);
      expect(runs.size).toBe(41);
    });
  });
}
