import type { FlotillaError } from "@flotilla/core";
import { FakeClock, startPostgres } from "@flotilla/testing";
import { afterEach, describe, expect, it } from "vitest";
import {
  type PartitionChange,
  type PartitionLeases,
  PostgresStore,
  partitionOf,
  shareOf,
} from "../src/index.js";
import { dropSchema, freshSchema, pgUrl, sql } from "./pg-env.js";

const url = pgUrl();

describe("partitionOf and shareOf", () => {
  it("spreads ids evenly and puts an id in the same partition every time", () => {
    const counts = new Array<number>(64).fill(0);
    for (let i = 0; i < 64_000; i++) counts[partitionOf(`task-${i}`, 64)]!++;
    // 1000 expected per partition; FNV-1a keeps every one within 15%.
    expect(Math.min(...counts)).toBeGreaterThan(850);
    expect(Math.max(...counts)).toBeLessThan(1150);
    // Every instance and version must agree: 32-bit FNV-1a's published test vectors.
    expect([partitionOf("", 64), partitionOf("a", 64), partitionOf("foobar", 1024)]).toEqual([
      0x811c9dc5 % 64,
      0xe40c292c % 64,
      0xbf9cf968 % 1024,
    ]);
  });

  it("splits partitions evenly, the first instances holding one more", () => {
    expect([0, 1, 2].map((r) => shareOf(64, 3, r))).toEqual([22, 21, 21]);
    expect([0, 1].map((r) => shareOf(64, 2, r))).toEqual([32, 32]);
    expect(shareOf(64, 1, 0)).toBe(64);
    expect(shareOf(2, 3, 2)).toBe(0);
    expect(shareOf(64, 0, 0)).toBe(0);
  });
});

if (url) {
  describe("partition leases on a real PostgreSQL server", () => {
    const stores: PostgresStore[] = [];
    const leases: PartitionLeases[] = [];
    const schemas = new Set<string>();

    afterEach(async () => {
      for (const l of leases.splice(0)) await l.stop();
      for (const s of stores.splice(0)) await s.close();
      for (const s of schemas) await dropSchema(url, s);
      schemas.clear();
    });

    /** An instance: its own store (as each `flotilla serve` has) and leases on a fake clock. */
    async function instance(
      schema: string,
      id: string,
      options: {
        leaseMs?: number;
        partitions?: number;
        release?: (partitions: number[], how?: { drain: boolean }) => Promise<void>;
      } = {},
    ) {
      schemas.add(schema);
      const store = new PostgresStore({ connectionString: url, schema, exclusive: false });
      stores.push(store);
      await store.open();
      // Renewals happen when the test says (the fake clock's timers fire only when advanced).
      const clock = new FakeClock();
      const l = store.partitionLeases({
        instanceId: id,
        leaseMs: options.leaseMs ?? 60_000,
        ...(options.partitions ? { partitions: options.partitions } : {}),
        ...(options.release ? { release: options.release } : {}),
        clock,
      });
      leases.push(l);
      const changes: PartitionChange[] = [];
      l.onChange((c) => changes.push(c));
      return { store, leases: l, clock, changes };
    }

    /** Waits until `cond()` holds (checked every 20 ms, after `step` when given), failing after `ms`. */
    async function until(
      cond: () => boolean,
      what: string,
      ms = 10_000,
      step?: () => Promise<unknown>,
    ): Promise<void> {
      const deadline = Date.now() + ms;
      for (;;) {
        await step?.();
        if (cond()) return;
        if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    }

    function expectDisjointCover(sets: ReadonlySet<number>[], n = 64) {
      const all = sets.flatMap((s) => [...s]);
      expect(new Set(all).size).toBe(all.length);
      expect(all.length).toBe(n);
    }

    it("instances joining one by one end with an even, disjoint split of every partition, at once", async () => {
      const schema = freshSchema("parts");
      const a = await instance(schema, "a");
      await a.leases.start();
      expect(a.leases.owned().size).toBe(64);

      // B joins while A holds everything. The leases last a minute and no timer runs (fake
      // clocks): the notifications alone make A give half up and B take it.
      const b = await instance(schema, "b");
      await b.leases.start();
      const sizes = (xs: Array<{ leases: PartitionLeases }>) =>
        xs.map((x) => x.leases.owned().size);
      await until(() => sizes([a, b]).join() === "32,32", "A and B hold 32 each");
      expectDisjointCover([a.leases.owned(), b.leases.owned()]);

      const c = await instance(schema, "c");
      await c.leases.start();
      await until(() => sizes([a, b, c]).join() === "22,21,21", "A, B, C hold 22, 21, 21");
      expectDisjointCover([a, b, c].map((x) => x.leases.owned()));

      // What each was told adds up to what it holds.
      for (const x of [a, b, c]) {
        const held = new Set<number>();
        for (const ch of x.changes) {
          for (const n of ch.acquired) held.add(n);
          for (const n of ch.lost) held.delete(n);
        }
        expect(held).toEqual(x.leases.owned());
      }
      // The database agrees: each partition has the owner that believes it has it.
      const rows = await sql<{ n: number; owner: string }>(
        url,
        `SELECT n, owner FROM "${schema}".partitions ORDER BY n`,
      );
      expect(rows).toHaveLength(64);
      for (const r of rows) {
        const x = { a, b, c }[r.owner as "a" | "b" | "c"];
        expect(x?.leases.owns(r.n), `partition ${r.n}`).toBe(true);
      }
    });

    it("a crashed instance's partitions pass to the others once its leases lapse, with a new epoch", async () => {
      const schema = freshSchema("parts");
      const a = await instance(schema, "a");
      const b = await instance(schema, "b");
      // C renews on a short lease (long enough for the checks below on a loaded machine),
      // then stops renewing without handing anything back.
      const c = await instance(schema, "c", { leaseMs: 4000 });
      await a.leases.start();
      await b.leases.start();
      await c.leases.start();
      const sizes = () => [a, b, c].map((x) => x.leases.owned().size).join();
      await until(() => sizes() === "22,21,21", "A, B, C hold 22, 21, 21");
      await c.store.close(); // C is gone: no renewal, no goodbye
      const lost = [...c.leases.owned()];
      expect(lost.length).toBe(21);
      const epochs = await sql<{ n: number; epoch: string }>(
        url,
        `SELECT n, epoch FROM "${schema}".partitions WHERE n = ANY($1::integer[])`,
        [lost],
      );

      // While C's leases are live nobody else gets them.
      await a.leases.renew();
      await b.leases.renew();
      for (const n of lost) {
        expect(a.leases.owns(n)).toBe(false);
        expect(b.leases.owns(n)).toBe(false);
      }
      // Once they lapse (database time), A and B take them over.
      const deadline = Date.now() + 15_000;
      while (a.leases.owned().size + b.leases.owned().size < 64 && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 100));
        await a.leases.renew();
        await b.leases.renew();
      }
      expect([a.leases.owned().size, b.leases.owned().size]).toEqual([32, 32]);
      expectDisjointCover([a.leases.owned(), b.leases.owned()]);
      const after = await sql<{ n: number; epoch: string }>(
        url,
        `SELECT n, epoch FROM "${schema}".partitions WHERE n = ANY($1::integer[])`,
        [lost],
      );
      const before = new Map(epochs.map((r) => [r.n, Number(r.epoch)]));
      for (const r of after) expect(Number(r.epoch)).toBe(before.get(r.n)! + 1);
    });

    it("an instance that stops hands its partitions over at once", async () => {
      const schema = freshSchema("parts");
      const a = await instance(schema, "a");
      const b = await instance(schema, "b");
      await a.leases.start();
      await b.leases.start();
      await until(() => b.leases.owned().size === 32, "B holds 32");
      await a.leases.stop();
      expect(a.leases.owned().size).toBe(0);
      expect(a.changes.at(-1)?.lost).toHaveLength(32);
      // No waiting for a lapse (the leases run for a minute, B's timer never fires): told
      // that A left, B takes everything.
      await until(() => b.leases.owned().size === 64, "B holds all 64", 5000);
    });

    it("an instance that cannot renew gives its partitions up a renewal period before its lease lapses", async () => {
      const schema = freshSchema("parts");
      const released: number[][] = [];
      const a = await instance(schema, "a", {
        leaseMs: 6000,
        release: async (ps) => {
          released.push(ps);
        },
      });
      await a.leases.start();
      expect(a.leases.owned().size).toBe(64);
      // Its database connections are gone: renewals fail.
      await a.store.close();
      await a.leases.renew();
      await a.clock.advance(3900);
      expect(a.leases.owned().size).toBe(64);
      // 6 s - 2 s after the start of the last renewal that worked, on its own clock: given
      // up, and its work handed over, while the lease still holds in the database.
      await a.clock.advance(100);
      expect(a.leases.owns(0)).toBe(false);
      expect(a.leases.owned().size).toBe(0);
      expect(a.changes.at(-1)?.lost).toHaveLength(64);
      expect(released.map((ps) => ps.length)).toEqual([64]);
    });

    it("hands a partition's work over before another instance can take the partition", async () => {
      const schema = freshSchema("parts");
      // What the database says about the partitions being handed over, while A hands them over.
      const seen: Array<{ count: number; owners: string[] }> = [];
      const a = await instance(schema, "a", {
        release: async (ps) => {
          const rows = await sql<{ owner: string | null }>(
            url,
            `SELECT DISTINCT owner FROM "${schema}".partitions WHERE n = ANY($1::integer[])`,
            [ps],
          );
          seen.push({ count: ps.length, owners: rows.map((r) => String(r.owner)) });
        },
      });
      await a.leases.start();
      const b = await instance(schema, "b");
      await b.leases.start();
      await until(() => b.leases.owned().size === 32, "B holds 32");
      // A was asked once, for the 32 it gave up, while they were still leased to A.
      expect(seen).toEqual([{ count: 32, owners: ["a"] }]);
      expectDisjointCover([a.leases.owned(), b.leases.owned()]);
      // At stop, the rest: handed over first, then handed back.
      await a.leases.stop();
      expect(seen[1]).toEqual({ count: 32, owners: ["a"] });
      await until(() => b.leases.owned().size === 64, "B holds all 64", 5000);
    });

    it("keeps partitions whose hand-over failed, and tries again at the next renewal", async () => {
      const schema = freshSchema("parts");
      let fail = true;
      const a = await instance(schema, "a", {
        release: async () => {
          if (fail) throw new Error("engine busy");
        },
      });
      await a.leases.start();
      const b = await instance(schema, "b");
      await b.leases.start();
      await until(() => a.changes.some((c) => c.lost.length === 32), "A gave 32 up locally");
      await b.leases.renew();
      // Still leased to A in the database: B cannot take them.
      expect(b.leases.owned().size).toBe(0);
      fail = false;
      await a.leases.renew(); // hands them over again (in the background)
      await until(
        () => b.leases.owned().size === 32,
        "B holds 32",
        5000,
        () => b.leases.renew(),
      );
      expectDisjointCover([a.leases.owned(), b.leases.owned()]);
    });

    it("a partition handed over to rebalance stays leased, and renewed, while it drains", async () => {
      const schema = freshSchema("parts");
      const calls: Array<{ count: number; drain: boolean | undefined }> = [];
      let drained!: () => void;
      const draining = new Promise<void>((r) => {
        drained = r;
      });
      const a = await instance(schema, "a", {
        leaseMs: 6000,
        release: async (ps, how) => {
          calls.push({ count: ps.length, drain: how?.drain });
          if (how?.drain) await draining;
        },
      });
      await a.leases.start();
      const b = await instance(schema, "b");
      await b.leases.start();
      await until(() => a.leases.owned().size === 32, "A holds 32 for itself");
      expect(calls).toEqual([{ count: 32, drain: true }]);
      // Still A's in the database, and renewed, for as long as they drain.
      const leased = async () =>
        (
          await sql<{ owner: string; expires_at: string }>(
            url!,
            `SELECT owner, expires_at FROM "${schema}".partitions ORDER BY n`,
          )
        ).filter((r) => r.owner === "a");
      let rows = await leased();
      const before = Number(rows[63]!.expires_at);
      await a.clock.advance(2000); // A's renewal timer
      await until(
        () => Number(rows[63]?.expires_at) > before,
        "A renewed them",
        5000,
        async () => {
          rows = await leased();
        },
      );
      expect(rows).toHaveLength(64);
      await b.leases.renew();
      expect(b.leases.owned().size).toBe(0);
      expect(a.leases.owned().size).toBe(32); // the 32 others: not among those held
      // Drained: handed back, and B takes them.
      drained();
      await until(
        () => b.leases.owned().size === 32,
        "B holds 32",
        5000,
        () => b.leases.renew(),
      );
      expectDisjointCover([a.leases.owned(), b.leases.owned()]);
      expect(calls).toEqual([{ count: 32, drain: true }]);
    });

    it("stopping while partitions drain hands all of them back at once", async () => {
      const schema = freshSchema("parts");
      const calls: Array<{ count: number; drain: boolean | undefined }> = [];
      const a = await instance(schema, "a", {
        release: async (ps, how) => {
          calls.push({ count: ps.length, drain: how?.drain });
          if (how?.drain) await new Promise(() => {}); // never drains on its own
        },
      });
      await a.leases.start();
      const b = await instance(schema, "b");
      await b.leases.start();
      await until(() => calls.length === 1, "A drains 32");
      await a.leases.stop();
      expect(calls).toEqual([
        { count: 32, drain: true },
        { count: 64, drain: false },
      ]);
      await until(
        () => b.leases.owned().size === 64,
        "B holds all 64",
        5000,
        () => b.leases.renew(),
      );
    });

    it("instances starting together on a fresh schema agree on the partition count", async () => {
      for (let round = 0; round < 3; round++) {
        const schema = freshSchema("parts");
        const xs = await Promise.all(["a", "b", "c", "d"].map((id) => instance(schema, id)));
        await Promise.all(xs.map((x) => x.leases.start()));
        await until(
          () => xs.reduce((n, x) => n + x.leases.owned().size, 0) === 64,
          "every partition held",
        );
        expectDisjointCover(xs.map((x) => x.leases.owned()));
      }
    });

    it("refuses a partition count other than the schema's, and bad options", async () => {
      const schema = freshSchema("parts");
      const a = await instance(schema, "a", { partitions: 16 });
      await a.leases.start();
      expect(a.leases.owned().size).toBe(16);
      const b = await instance(schema, "b", { partitions: 64 });
      const err = (await b.leases.start().then(
        () => undefined,
        (e: unknown) => e,
      )) as FlotillaError;
      expect(err.code).toBe("VALIDATION");
      expect(err.message).toContain("split into 16 partitions; this instance was given 64");
      expect(() => a.store.partitionLeases({ leaseMs: 1000, renewEveryMs: 600 })).toThrow(
        /renewEveryMs \(600\) must be at most half of leaseMs \(1000\)/,
      );
      expect(() => a.store.partitionLeases({ partitions: 0 })).toThrow(/partitions/);
    });
  });
}

if (url) {
  describe("notifications between instances", () => {
    it("reach every instance on the schema and come back after a database restart", async () => {
      const server = await startPostgres();
      const a = new PostgresStore({ connectionString: server.url, schema: "n", exclusive: false });
      const b = new PostgresStore({ connectionString: server.url, schema: "n", exclusive: false });
      try {
        await a.open();
        await b.open();
        const got: string[] = [];
        let reconnects = 0;
        const n = a.notifications();
        n.on("wake", (p) => got.push(p));
        n.on("other", () => got.push("wrong topic"));
        n.onReconnect(() => reconnects++);
        await n.start();
        // Another schema's messages never arrive here.
        const elsewhere = new PostgresStore({
          connectionString: server.url,
          schema: "elsewhere",
          exclusive: false,
        });
        await elsewhere.open();
        await elsewhere.notifications().notify("wake", "from elsewhere");
        await elsewhere.close();
        await b.notifications().notify("wake", "one");
        const deadline = (ms: number) => Date.now() + ms;
        let until = deadline(5000);
        while (!got.includes("one") && Date.now() < until)
          await new Promise((r) => setTimeout(r, 20));
        expect(got).toEqual(["one"]);

        await server.stop();
        await server.start();
        // Listening again (the reconnect hook says when), messages arrive again.
        until = deadline(20_000);
        while (reconnects === 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
        expect(reconnects).toBe(1);
        await b.notifications().notify("wake", "two");
        until = deadline(5000);
        while (!got.includes("two") && Date.now() < until)
          await new Promise((r) => setTimeout(r, 20));
        expect(got).toEqual(["one", "two"]);
        await expect(a.notifications().notify("wake", "x".repeat(7001))).rejects.toThrow(
          /over 7000 bytes/,
        );
      } finally {
        await a.close();
        await b.close();
        await server.destroy();
      }
    }, 60_000);
  });
}
