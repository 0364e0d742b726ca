import { describe, expect, it } from "vitest";
import { FlotillaError } from "../errors.js";
import { silentLogger } from "../logger.js";
import { MemoryStore } from "../store/memory.js";
import type { StoredEvent } from "../store/types.js";
import type { TaskRecord } from "../task/types.js";
import { FakeClock } from "../testing/index.js";
import { partitionOf } from "../util/partition.js";
import { FunctionWorker } from "../worker/base.js";
import { Orchestrator } from "./orchestrator.js";

/** An id that hashes into `partition` of `count`. */
function idIn(partition: number, count: number, prefix: string): string {
  for (let i = 0; ; i++) {
    const id = `${prefix}-${i}`;
    if (partitionOf(id, count) === partition) return id;
  }
}

/** An orchestrator on `store` (its `count` partitions, none held yet) whose one worker runs type "t" with `fn`. */
async function member(
  name: string,
  store: MemoryStore,
  clock: FakeClock,
  fn: ConstructorParameters<typeof FunctionWorker>[0]["fn"],
  count = 2,
): Promise<Orchestrator> {
  const o = new Orchestrator({ clock, store, partitions: { count } });
  await o.register(
    new FunctionWorker({ id: `${name}-worker`, taskTypes: ["t"], maxConcurrency: 10, fn }),
  );
  await o.start();
  return o;
}

/** Two orchestrators on one store, each recording the tasks it ran; `hold` keeps tasks running until released. */
async function pair(options: { count?: number; hold?: boolean } = {}) {
  const clock = new FakeClock({ now: 0 });
  const store = new MemoryStore({ clock });
  const count = options.count ?? 2;
  const ran: Array<[string, string]> = [];
  const aborted: string[] = [];
  const releases = new Map<string, () => void>();
  const make = (name: string) =>
    member(
      name,
      store,
      clock,
      (_payload, ctx, task) => {
        ran.push([task.id, name]);
        if (!options.hold) return Promise.resolve(`${name}:${task.id}`);
        return new Promise<string>((resolve, reject) => {
          releases.set(`${task.id}@${name}`, () => resolve(`${name}:${task.id}`));
          ctx.signal.addEventListener("abort", () => {
            aborted.push(`${task.id}@${name}`);
            reject(ctx.signal.reason);
          });
        });
      },
      count,
    );
  const a = await make("a");
  const b = await make("b");
  return { clock, store, a, b, ran, aborted, releases, count };
}

describe("partitions: several orchestrators on one store", () => {
  it("each runs only the partitions it holds; a task submitted anywhere runs on its holder", async () => {
    const { clock, a, b, ran } = await pair();
    await a.adopt([0]);
    await b.adopt([1]);
    const mine = await a.submit({ id: idIn(0, 2, "mine"), type: "t" });
    const theirs = await a.submit({ id: idIn(1, 2, "theirs"), type: "t" });
    expect((await mine.result()).output).toBe(`a:${mine.id}`);
    await clock.advance(0);
    // B learns of it when it adopts its partition again (a wake-up or a timer in a server).
    expect(ran).toEqual([[mine.id, "a"]]);
    expect((await a.get(theirs.id))?.status).toBe("queued");
    // Why it waits, asked where it is not held: held elsewhere.
    expect((await a.explain(theirs.id)).reasons).toEqual([
      expect.objectContaining({ kind: "held_elsewhere", partition: 1 }),
    ]);
    await b.adopt(b.partitions().held);
    // A's handle reads the store until the task ends.
    await clock.advance(1_000);
    const result = await theirs.result();
    expect(result.output).toBe(`b:${theirs.id}`);
    expect(ran).toEqual([
      [mine.id, "a"],
      [theirs.id, "b"],
    ]);
    expect(a.partitions()).toMatchObject({ count: 2, held: [0] });
    expect(b.partitions().of({ id: theirs.id })).toBe(1);
    await a.stop();
    await b.stop();
  });

  it("a batch is scheduled in one partition, so its DAG runs on one holder", async () => {
    const { clock, a, b, ran } = await pair({ count: 8 });
    await a.adopt([0, 1, 2, 3]);
    await b.adopt([4, 5, 6, 7]);
    const first = idIn(6, 8, "fetch");
    const handles = await a.submitBatch([
      { id: first, type: "t" },
      { id: "parse", type: "t", dependsOn: [first] },
      { id: "report", type: "t", dependsOn: ["parse"] },
    ]);
    for (const h of handles) expect((await a.get(h.id))?.partition).toBe(6);
    await b.adopt([6]);
    await clock.advance(1_000);
    for (const h of handles) expect((await h.result()).status).toBe("succeeded");
    expect(ran).toEqual([
      [first, "b"],
      ["parse", "b"],
      ["report", "b"],
    ]);
    // A later task that depends on one of them joins their partition.
    const next = await a.submit({ id: "summary", type: "t", dependsOn: ["report"] });
    expect((await a.get(next.id))?.partition).toBe(6);
    await a.stop();
    await b.stop();
  });

  it("a task waiting here on a dependency held elsewhere runs once that one finished there", async () => {
    const { clock, a, b, ran } = await pair();
    await a.adopt([0]);
    await b.adopt([1]);
    const x = idIn(0, 2, "x");
    const y = idIn(1, 2, "y");
    await a.submitBatch([{ id: x, type: "t", approval: "before_run" }]);
    await b.submitBatch([{ id: y, type: "t", approval: "before_run" }]);
    // Depends on both: it joins x's partition (A's) and waits on y, which B runs.
    const z = await a.submit({ id: "z", type: "t", dependsOn: [x, y] });
    expect((await a.get("z"))?.partition).toBe(0);
    await a.approve(x);
    await b.approve(y);
    await clock.advance(0);
    expect((await a.get("z"))?.status).toBe("pending");
    await a.adopt([0]);
    expect((await z.result()).output).toBe("a:z");
    expect(ran.map(([id]) => id)).toEqual(expect.arrayContaining([x, y, "z"]));
    await a.stop();
    await b.stop();
  });

  it("releasing a partition hands its running task back; the next holder runs it, not twice at once", async () => {
    const { clock, a, b, ran, aborted, releases } = await pair({ hold: true });
    await a.adopt([0, 1]);
    const id = idIn(1, 2, "job");
    const handle = await a.submit({ id, type: "t", retry: { maxAttempts: 1 } });
    await clock.advance(0);
    expect(ran).toEqual([[id, "a"]]);
    await a.release([1]);
    expect(aborted).toEqual([`${id}@a`]);
    const stored = await b.get(id);
    expect(stored?.status).toBe("queued");
    expect(stored?.lease).toBeUndefined();
    await b.adopt([1]);
    await clock.advance(0);
    expect(ran).toEqual([
      [id, "a"],
      [id, "b"],
    ]);
    releases.get(`${id}@b`)!();
    await clock.advance(1_000);
    // Handed back is not a failure: one allowed attempt, and it succeeded on B.
    const result = await handle.result();
    expect(result.status).toBe("succeeded");
    expect(result.output).toBe(`b:${id}`);
    // Nothing of it is counted on A any more.
    expect(a.status()).toMatchObject({ inFlight: 0, queued: 0 });
    expect(a.status().counts.running).toBe(0);
    expect(a.status().counts.queued).toBe(0);
    await a.stop();
    await b.stop();
  });

  it("a holder that lost its partition unawares cannot overwrite the new holder's work", async () => {
    const { clock, store, a, b, ran, aborted, releases } = await pair({ hold: true });
    await a.adopt([0, 1]);
    const id = idIn(1, 2, "job");
    const handle = await a.submit({ id, type: "t" });
    await clock.advance(0);
    expect(ran).toEqual([[id, "a"]]);
    // B takes partition 1 over as after a lapse, while A still runs the task: B's copy
    // starts again from the store (an interrupted attempt).
    await b.adopt([1]);
    await clock.advance(0);
    expect(ran).toEqual([
      [id, "a"],
      [id, "b"],
    ]);
    expect((await store.getTask(id))?.interruptions).toBe(1);
    // A's run ends first: its write expects the version A last stored, finds B's, and is
    // refused; A lets the task go (nothing of A's result is stored).
    releases.get(`${id}@a`)!();
    await clock.advance(0);
    expect((await store.getTask(id))?.status).toBe("running");
    expect(a.status()).toMatchObject({ inFlight: 0 });
    expect(a.status().counts.running).toBe(0);
    // B's run ends: that result is the task's.
    releases.get(`${id}@b`)!();
    await clock.advance(1_000);
    expect((await store.getTask(id))?.result?.output).toBe(`b:${id}`);
    expect((await handle.result()).output).toBe(`b:${id}`);
    expect(aborted).toEqual([]);
    await a.stop();
    await b.stop();
  });

  it("a task held elsewhere is cancelled from here; its holder lets it go at its next adopt", async () => {
    const { clock, store, a, b, ran, aborted } = await pair({ hold: true });
    await a.adopt([0]);
    await b.adopt([1]);
    const waiting = await a.submit({ id: idIn(1, 2, "deploy"), type: "t", approval: "before_run" });
    const running = await b.submit({ id: idIn(1, 2, "render"), type: "t" });
    const after = await b.submit({ type: "t", dependsOn: [running.id] });
    await clock.advance(0);
    expect(ran).toEqual([[running.id, "b"]]);
    const cancelled: string[] = [];
    a.on("task:cancelled", (e) => cancelled.push(e.taskId));

    // Cancelled from A: a versioned write of the stored record, told to A's listeners.
    expect(await a.cancel(waiting.id, "not today")).toBe(true);
    expect(await a.cancel(running.id)).toBe(true);
    expect(cancelled).toEqual([waiting.id, running.id]);
    expect((await store.getTask(running.id))?.status).toBe("cancelled");
    expect(await a.cancel(running.id)).toBe(false);
    // B finds out at its next adopt: it lets both go (aborting the run, writing nothing),
    // and the dependent is skipped.
    await b.adopt([1]);
    await clock.advance(1_000);
    expect(aborted).toEqual([`${running.id}@b`]);
    expect((await running.result()).status).toBe("cancelled");
    expect((await waiting.result()).error?.message).toBe("not today");
    expect((await after.result()).status).toBe("skipped");
    expect((await store.getTask(running.id))?.status).toBe("cancelled");
    expect(b.status().counts.running).toBe(0);
    await a.stop({ mode: "abort" });
    await b.stop({ mode: "abort" });
  });

  it("a task held elsewhere is approved or rejected from here; its holder goes on at its next adopt", async () => {
    const { clock, a, b, ran } = await pair();
    await a.adopt([0]);
    await b.adopt([1]);
    const ship = await b.submit({ id: idIn(1, 2, "ship"), type: "t", approval: "before_run" });
    const drop = await b.submit({ id: idIn(1, 2, "drop"), type: "t", approval: "before_run" });
    const next = await b.submit({ type: "t", dependsOn: [drop.id] });
    const approved = await a.approve(ship.id, { by: "alice" });
    expect(approved).toMatchObject({ status: "pending", approvalDecision: { by: "alice" } });
    // Asked again: the decision stands.
    expect((await a.approve(ship.id)).status).toBe("pending");
    const rejected = await a.reject(drop.id, { by: "bob", comment: "not this one" });
    expect(rejected.status).toBe("rejected");
    await expect(a.approve(drop.id)).rejects.toMatchObject({ code: "INVALID_STATE" });
    await b.adopt([1]);
    await clock.advance(1_000);
    expect((await ship.result()).output).toBe(`b:${ship.id}`);
    expect((await drop.result()).error?.message).toBe("rejected by bob: not this one");
    expect((await next.result()).status).toBe("skipped");
    expect(ran).toEqual([[ship.id, "b"]]);
    await a.stop();
    await b.stop();
  });

  it("a look whose read is older than what finished here meanwhile takes nothing in again", async () => {
    const clock = new FakeClock({ now: 0 });
    // The unfinished tasks are read at once, handed over when the test says.
    let gate: Promise<void> | undefined;
    class SlowRead extends MemoryStore {
      override async loadUnfinished() {
        const read = await super.loadUnfinished();
        if (gate) await gate;
        return read;
      }
    }
    const store = new SlowRead({ clock });
    const warnings: string[] = [];
    const logger = {
      ...silentLogger,
      warn: (o: unknown, msg?: string) => warnings.push(msg ?? String(o)),
      child: () => logger,
    } as typeof silentLogger;
    const o = new Orchestrator({ clock, store, logger, partitions: { count: 2 } });
    const runs: string[] = [];
    let finish = () => {};
    await o.register(
      new FunctionWorker({
        id: "w",
        taskTypes: ["t"],
        fn: (_p, _ctx, task) => {
          runs.push(task.id);
          return new Promise((r) => {
            finish = () => r("done");
          });
        },
      }),
    );
    await o.start();
    await o.adopt([0]);
    const id = idIn(0, 2, "job");
    const handle = await o.submit({ id, type: "t" });
    await clock.advance(0);
    expect(runs).toEqual([id]);
    let open = () => {};
    gate = new Promise<void>((r) => {
      open = r;
    });
    // A look reads the task as running; before the read is handed over, the task ends here.
    const look = o.adopt([0]);
    await clock.advance(0);
    finish();
    expect((await handle.result()).output).toBe("done");
    gate = undefined;
    open();
    await look;
    await clock.advance(1_000);
    expect(runs).toEqual([id]);
    expect((await store.getTask(id))?.status).toBe("succeeded");
    expect(warnings).toEqual([]);
    await o.stop();
  });

  /** A store that refuses every write and read while `down` (a database outage). */
  class FlakyStore extends MemoryStore {
    down = false;
    #check(): void {
      if (this.down) throw new FlotillaError("STORE_ERROR", "the database is unreachable");
    }
    override async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
      this.#check();
      return super.saveTask(task, expectedVersion);
    }
    override async appendEvents(events: readonly StoredEvent[]): Promise<void> {
      this.#check();
      return super.appendEvents(events);
    }
    override async loadUnfinished(): Promise<TaskRecord[]> {
      this.#check();
      return super.loadUnfinished();
    }
    override async getTask(id: string): Promise<TaskRecord | undefined> {
      this.#check();
      return super.getTask(id);
    }
  }

  async function flakyPair() {
    const clock = new FakeClock({ now: 0 });
    const store = new FlakyStore({ clock });
    const ran: string[] = [];
    const make = (name: string) =>
      member(name, store, clock, async (_payload, _ctx, task) => {
        ran.push(`${task.id}@${name}`);
        return name;
      });
    return { clock, store, ran, a: await make("a"), b: await make("b") };
  }

  it("a result the store refused is not stored over the task taken in again after a release", async () => {
    const { clock, store, ran, a, b } = await flakyPair();
    await a.adopt([0, 1]);
    const id = idIn(1, 2, "job");
    await a.submit({ id, type: "t" });
    store.down = true; // the run ends while the database is away: its result waits
    await clock.advance(0);
    expect(ran).toEqual([`${id}@a`]);
    store.down = false;
    expect((await store.getTask(id))?.status).toBe("running");
    store.down = true;
    // A's leases lapse: it lets the partition go (what is not stored stays unstored)…
    await a.release([1]);
    store.down = false;
    // …and gets it back: the task is taken in as stored (running: interrupted) and runs again.
    await a.adopt([1]);
    await clock.advance(10_000);
    expect(ran).toEqual([`${id}@a`, `${id}@a`]);
    const stored = await store.getTask(id);
    expect(stored?.status).toBe("succeeded");
    const history = (await store.listEvents({ taskId: id })).map((e) => e.type);
    expect(history.filter((t) => t === "task:succeeded")).toHaveLength(1);
    // Both starts are in the history: the first run's lines, refused while the store was
    // away, were appended once it was back.
    expect(history.filter((t) => t === "task:running")).toHaveLength(2);
    await a.stop();
    await b.stop();
  });

  it("a holder cut off while another ran its task takes the task in again when the partition comes back", async () => {
    const { clock, store, ran, a, b } = await flakyPair();
    await a.adopt([0, 1]);
    const id = idIn(1, 2, "job");
    await a.submit({ id, type: "t" });
    store.down = true; // A's run ends while A cannot reach the database
    await clock.advance(0);
    expect(ran).toEqual([`${id}@a`]);
    store.down = false;
    // A's leases lapsed unawares: B took the partition over, and hands it back before
    // running the task (the interrupted attempt is queued again).
    await b.adopt([1]);
    await b.release([1]);
    // A adopts again, still holding its stale copy with the unstored result.
    await a.adopt([1]);
    await clock.advance(10_000);
    await a.adopt([1]); // the next look, as the periodic sweep makes
    await clock.advance(10_000);
    const stored = await store.getTask(id);
    expect(stored?.status).toBe("succeeded");
    expect(ran.filter((r) => r === `${id}@a`).length).toBeGreaterThanOrEqual(2);
    const history = (await store.listEvents({ taskId: id })).map((e) => e.type);
    expect(history.filter((t) => t === "task:succeeded")).toHaveLength(1);
    await a.stop();
    await b.stop();
  });

  it("taking a partition in finishes when a task it reads changes meanwhile (it is let go, not waited for)", async () => {
    const clock = new FakeClock({ now: 0 });
    let afterRead: (() => Promise<void>) | undefined;
    class ReadThenChange extends MemoryStore {
      override async loadUnfinished() {
        const read = await super.loadUnfinished();
        const hook = afterRead;
        afterRead = undefined;
        await hook?.();
        return read;
      }
    }
    const store = new ReadThenChange({ clock });
    const finishes = new Map<string, () => void>();
    const make = (name: string) =>
      member(
        name,
        store,
        clock,
        (_p, _ctx, task) =>
          new Promise<string>((resolve) => finishes.set(`${task.id}@${name}`, () => resolve(name))),
      );
    const a = await make("a");
    const b = await make("b");
    await b.adopt([1]);
    const id = idIn(1, 2, "job");
    const handle = await b.submit({ id, type: "t" });
    await clock.advance(0);
    expect((await store.getTask(id))?.status).toBe("running");
    // A takes the partition over (as after B's lease lapsed) and reads the task running;
    // before A writes its new attempt, B's run ends and is stored.
    afterRead = async () => {
      finishes.get(`${id}@b`)!();
      await handle.result();
    };
    await a.adopt([1]); // resolves: the refused write lets the task go
    expect((await store.getTask(id))?.status).toBe("succeeded");
    expect(a.status().counts.queued).toBe(0);
    // A's turns go on: releasing and adopting again are not held up.
    await a.release([1]);
    await a.adopt([1]);
    await a.stop();
    await b.stop();
  });

  it("an attempt handed over with its partition stays free on the next holder (retries are not used up)", async () => {
    const clock = new FakeClock({ now: 0 });
    const store = new MemoryStore({ clock });
    const runs: string[] = [];
    let hold: (() => void) | undefined;
    const make = (name: string) =>
      member(name, store, clock, (_p, ctx) => {
        runs.push(name);
        if (name === "a") {
          // A's run is cut off by the hand-over.
          return new Promise<string>((_resolve, reject) => {
            hold = () => {};
            ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
          });
        }
        // B's first run fails; its retry succeeds.
        if (runs.filter((r) => r === "b").length === 1) throw new Error("flaky");
        return Promise.resolve("done");
      });
    const a = await make("a");
    const b = await make("b");
    await a.adopt([1]);
    const id = idIn(1, 2, "job");
    const handle = await a.submit({
      id,
      type: "t",
      retry: { maxAttempts: 2, initialDelayMs: 10, jitter: 0 },
    });
    await clock.advance(0);
    expect(hold).toBeDefined();
    await a.release([1]);
    expect((await store.getTask(id))?.freeAttempts).toBe(1);
    await b.adopt([1]);
    await clock.advance(1_000);
    // Attempt 1 (handed over) was free: B's failed attempt 2 leaves one retry, attempt 3.
    const result = await handle.result();
    expect(result.status).toBe("succeeded");
    expect(runs).toEqual(["a", "b", "b"]);
    expect((await store.getTask(id))?.attempt).toBe(3);
    await a.stop();
    await b.stop();
  });

  it("a lease call made to an orchestrator that does not hold the task says where it must go", async () => {
    const { a, b } = await pair();
    await a.adopt([0]);
    await b.adopt([1]);
    const id = idIn(1, 2, "remote");
    await b.submit({ id, type: "r" });
    const claim = await b.claim({ holderId: "node-1", taskTypes: ["r"] });
    expect(claim?.task.id).toBe(id);
    const err = await a.completeLease(id, claim!.lease.id, { output: 1 }).catch((e) => e);
    expect(err).toMatchObject({
      code: "INVALID_STATE",
      details: { partition: 1, heldElsewhere: true },
    });
    expect(err.message).toContain("send its lease calls to the server that gave the lease");
    // The holder takes it.
    expect((await b.completeLease(id, claim!.lease.id, { output: 1 })).status).toBe("succeeded");
    await a.stop();
    await b.stop();
  });

  it("a remote holder claims through any orchestrator: a task queued in a partition held elsewhere", async () => {
    const { clock, store, a, b } = await pair();
    await a.adopt([0]);
    await b.adopt([1]);
    const id = idIn(1, 2, "fleet");
    const handle = await b.submit({ id, type: "r" });
    const after = await b.submit({ id: "after", type: "t", dependsOn: [id] });
    // The node polls A, which holds nothing for it: it gets B's task.
    const claim = await a.claim({ holderId: "node-1", taskTypes: ["r"] });
    expect(claim?.task.id).toBe(id);
    expect(await store.getTask(id)).toMatchObject({ status: "leased", workerId: "node-1" });
    // B, told (or at its sweep), sees it leased elsewhere: it does not hand it out again.
    await b.adopt(b.partitions().held);
    expect(await b.claim({ holderId: "node-2", taskTypes: ["r"] })).toBeNull();
    // The node's lease calls go to A, which gave the lease.
    await a.renewLease(id, claim!.lease.id);
    expect((await a.completeLease(id, claim!.lease.id, { output: 7 })).status).toBe("succeeded");
    // B hears of it: the handle taken at B ends, and the dependent, in B's partition, runs on B.
    await b.adopt(b.partitions().held);
    await clock.advance(1_000);
    expect((await handle.result()).output).toBe(7);
    expect((await after.result()).status).toBe("succeeded");
    expect((await store.getTask("after"))?.result?.output).toBe("b:after");
    expect(a.partitions().held).toEqual([0]);
    await a.stop();
    await b.stop();
  });

  it("a task claimed from elsewhere and given back goes back to its holder; a task its holder took first is not claimed", async () => {
    const { store, a, b } = await pair();
    await a.adopt([0]);
    await b.adopt([1]);
    const id = idIn(1, 2, "back");
    await b.submit({ id, type: "r" });
    const claim = await a.claim({ holderId: "node-1", taskTypes: ["r"] });
    expect(claim?.task.id).toBe(id);
    await a.releaseLease(id, claim!.lease.id, "node shutting down");
    expect(await store.getTask(id)).toMatchObject({ status: "queued" });
    // A keeps nothing of it: B hands it out now (after taking it in again).
    expect(await a.explain(id)).toMatchObject({
      reasons: [expect.objectContaining({ kind: "held_elsewhere" })],
    });
    await b.adopt(b.partitions().held);
    const again = await b.claim({ holderId: "node-2", taskTypes: ["r"] });
    expect(again?.task.id).toBe(id);
    expect(again?.task.attempt).toBe(2);
    // Held by B's node now: A finds nothing to claim.
    expect(await a.claim({ holderId: "node-1", taskTypes: ["r"] })).toBeNull();
    await b.completeLease(id, again!.lease.id, { output: 1 });
    await a.stop();
    await b.stop();
  });

  it("two orchestrators claiming one task held elsewhere at once: one gets it", async () => {
    const { a, b, clock, store } = await pair({ count: 4 });
    const c = await member("c", store, clock, async () => "c", 4);
    await a.adopt([0]);
    await b.adopt([1]);
    await c.adopt([2, 3]);
    const id = idIn(3, 4, "race");
    await c.submit({ id, type: "r" });
    const [x, y] = await Promise.all([
      a.claim({ holderId: "node-a", taskTypes: ["r"] }),
      b.claim({ holderId: "node-b", taskTypes: ["r"] }),
    ]);
    expect([x?.task.id, y?.task.id].filter(Boolean)).toEqual([id]);
    const winner = x ? a : b;
    const claim = (x ?? y)!;
    expect((await winner.completeLease(id, claim.lease.id, { output: 1 })).status).toBe(
      "succeeded",
    );
    await a.stop();
    await b.stop();
    await c.stop();
  });

  it("why a task held elsewhere waits is answered here from its record: dependencies, approval, run time", async () => {
    const { clock, a, b } = await pair();
    await a.adopt([0]);
    await b.adopt([1]);
    const first = idIn(1, 2, "first");
    await b.submitBatch([
      { id: first, type: "t", approval: "before_run" },
      { id: "second", type: "t", dependsOn: [first] },
    ]);
    const later = idIn(1, 2, "later");
    await b.submit({ id: later, type: "t", runAt: clock.now() + 60_000 });
    expect((await a.explain(first)).reasons).toEqual([
      expect.objectContaining({ kind: "approval", stage: "before_run" }),
    ]);
    expect((await a.explain("second")).reasons).toEqual([
      expect.objectContaining({ kind: "dependencies", waitingFor: [first] }),
    ]);
    expect((await a.explain(later)).reasons).toEqual([
      expect.objectContaining({ kind: "run_at", until: clock.now() + 60_000 }),
    ]);
    // Due and queued: which worker or limit it waits for, only its holder knows.
    const plain = idIn(1, 2, "plain");
    await b.submit({ id: plain, type: "none-runs-this" });
    expect((await a.explain(plain)).reasons).toEqual([
      expect.objectContaining({ kind: "held_elsewhere", partition: 1 }),
    ]);
    expect((await b.explain(plain)).reasons).toEqual([
      expect.objectContaining({ kind: "no_worker" }),
    ]);
    await a.stop();
    await b.stop();
  });

  it("a task taken in by an adopt while its submission was being stored runs once, and its handle ends", async () => {
    class SlowInsert extends MemoryStore {
      hold: Promise<void> | undefined;
      override async insertTasks(tasks: readonly TaskRecord[]): Promise<void> {
        await super.insertTasks(tasks);
        await this.hold; // stored, but the submission has not heard yet
      }
    }
    const clock = new FakeClock({ now: 0 });
    const store = new SlowInsert({ clock });
    const ran: string[] = [];
    const a = await member("a", store, clock, async (_payload, _ctx, task) => {
      ran.push(task.id);
      return "done";
    });
    await a.adopt([0, 1]);
    let open!: () => void;
    store.hold = new Promise<void>((r) => {
      open = r;
    });
    const submitted = a.submit({ id: "late", type: "t" });
    await clock.advance(0);
    // A sweep adopts the held partitions again meanwhile: it reads the stored task.
    await a.adopt([0, 1]);
    await clock.advance(0);
    open();
    const handle = await submitted;
    await clock.advance(1_000);
    expect((await handle.result()).status).toBe("succeeded");
    expect(ran).toEqual(["late"]);
    expect((await store.getTask("late"))?.status).toBe("succeeded");
    // Nothing of it is left live here.
    await a.adopt([0, 1]);
    await clock.advance(1_000);
    expect((await a.get("late"))?.status).toBe("succeeded");
    expect(await a.explain("late")).toMatchObject({ status: "succeeded", reasons: [] });
    await a.stop();
  });

  it("a task taken in by an adopt and running when its submission's write returns keeps one live state", async () => {
    class SlowInsert extends MemoryStore {
      hold: Promise<void> | undefined;
      override async insertTasks(tasks: readonly TaskRecord[]): Promise<void> {
        await super.insertTasks(tasks);
        await this.hold;
      }
    }
    const clock = new FakeClock({ now: 0 });
    const store = new SlowInsert({ clock });
    const ran: string[] = [];
    let finish!: () => void;
    const a = await member("a", store, clock, (_payload, _ctx, task) => {
      ran.push(task.id);
      return new Promise((r) => {
        finish = () => r("done");
      });
    });
    await a.adopt([0, 1]);
    let open!: () => void;
    store.hold = new Promise<void>((r) => {
      open = r;
    });
    const submitted = a.submit({ id: "raced", type: "t" });
    await clock.advance(0);
    await a.adopt([0, 1]); // takes it in and runs it, while the submission waits
    await clock.advance(0);
    expect(ran).toEqual(["raced"]);
    open();
    const handle = await submitted;
    await clock.advance(0);
    finish();
    await clock.advance(1_000);
    expect((await handle.result()).status).toBe("succeeded");
    expect(ran).toEqual(["raced"]);
    expect((await store.getTask("raced"))?.status).toBe("succeeded");
    await a.adopt([0, 1]);
    await clock.advance(1_000);
    expect(await a.explain("raced")).toMatchObject({ status: "succeeded", reasons: [] });
    await a.stop();
  });

  it("a release that drains lets running tasks finish here, leaves new ones to the next holder, and aborts only what outlasts it", async () => {
    const { clock, store, a, b, ran, aborted, releases } = await pair({ hold: true });
    await a.adopt([0, 1]);
    const quick = await a.submit({ id: idIn(1, 2, "quick"), type: "t" });
    const slow = await a.submit({ id: idIn(1, 2, "slow"), type: "t" });
    await clock.advance(0);
    expect(ran.map(([id]) => id)).toEqual([quick.id, slow.id]);
    let released = false;
    const release = a.release([1], { drainMs: 10_000 }).then(() => {
      released = true;
    });
    await clock.advance(0);
    // Not dispatched here any more: a task submitted now waits for the next holder.
    const later = await a.submit({ id: idIn(1, 2, "later"), type: "t" });
    await clock.advance(0);
    expect(ran.map(([id]) => id)).toEqual([quick.id, slow.id]);
    // One running task finishes here, within the drain.
    releases.get(`${quick.id}@a`)!();
    await clock.advance(1_000);
    expect((await store.getTask(quick.id))?.status).toBe("succeeded");
    expect(released).toBe(false);
    // The other outlasts it: aborted, back to queued without using a retry.
    await clock.advance(9_000);
    await release;
    expect(aborted).toEqual([`${slow.id}@a`]);
    expect(await store.getTask(slow.id)).toMatchObject({ status: "queued" });
    expect(a.partitions().held).toEqual([0]);
    // The next holder runs what is left.
    await b.adopt([1]);
    await clock.advance(0);
    releases.get(`${slow.id}@b`)!();
    releases.get(`${later.id}@b`)!();
    await clock.advance(1_000);
    expect((await store.getTask(slow.id))?.status).toBe("succeeded");
    expect((await store.getTask(later.id))?.status).toBe("succeeded");
    expect(ran).toEqual([
      [quick.id, "a"],
      [slow.id, "a"],
      [slow.id, "b"],
      [later.id, "b"],
    ]);
    await expect(a.release([0], { drainMs: -1 })).rejects.toMatchObject({ code: "VALIDATION" });
    await a.stop();
    await b.stop();
  });

  it("a release waits a bounded time for a store that does not answer, so later changes go on", async () => {
    class Silent extends MemoryStore {
      silent = false;
      readonly held: Array<() => void> = [];
      override async saveTask(task: TaskRecord, expectedVersion?: number): Promise<boolean> {
        // Does not answer until told to.
        if (this.silent) await new Promise<void>((r) => this.held.push(r));
        return super.saveTask(task, expectedVersion);
      }
    }
    const clock = new FakeClock({ now: 0 });
    const store = new Silent({ clock });
    const a = await member("a", store, clock, (_payload, ctx) => {
      return new Promise((_resolve, reject) => {
        ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason));
      });
    });
    await a.adopt([0, 1]);
    await a.submit({ id: idIn(1, 2, "stuck"), type: "t" });
    await clock.advance(0);
    store.silent = true;
    let released = false;
    const release = a.release([1]).then(() => {
      released = true;
    });
    let adopted = false;
    const adopt = a.adopt([0]).then(() => {
      adopted = true;
    });
    await clock.advance(9_000);
    expect(released).toBe(false);
    expect(adopted).toBe(false); // in turn, behind the release
    await clock.advance(1_000);
    await release;
    await adopt;
    expect(released && adopted).toBe(true);
    expect(a.partitions().held).toEqual([0]);
    expect(store.held.length).toBeGreaterThan(0);
    store.silent = false;
    for (const answer of store.held) answer();
    await a.stop();
  });

  it("a handle's read of a task held elsewhere, answered after the task was taken in here, does not roll the running task back", async () => {
    class SlowRead extends MemoryStore {
      hold: Promise<void> | undefined;
      reading = false;
      override async getTask(id: string): Promise<TaskRecord | undefined> {
        const read = await super.getTask(id); // read now, answered later
        if (this.hold) {
          this.reading = true;
          await this.hold;
        }
        return read;
      }
      /** The stored task, without waiting. */
      peek(id: string): Promise<TaskRecord | undefined> {
        return super.getTask(id);
      }
    }
    const clock = new FakeClock({ now: 0 });
    const store = new SlowRead({ clock });
    let finish!: () => void;
    const a = await member("a", store, clock, () => {
      return new Promise((r) => {
        finish = () => r("done");
      });
    });
    await a.adopt([0]);
    const id = idIn(1, 2, "handled");
    const handle = await a.submit({ id, type: "t" }); // held elsewhere: the handle reads the store
    let answer!: () => void;
    store.hold = new Promise<void>((r) => {
      answer = r;
    });
    await clock.advance(1_000); // the handle's read starts, and waits
    expect(store.reading).toBe(true);
    await a.adopt([1]); // the partition comes here: the task is taken in and runs
    await clock.advance(0);
    expect((await store.peek(id))?.status).toBe("running");
    answer(); // the old read (queued) comes back
    store.hold = undefined;
    await clock.advance(0);
    finish();
    await clock.advance(1_000);
    expect((await handle.result()).status).toBe("succeeded");
    expect((await store.peek(id))?.status).toBe("succeeded");
    await a.stop();
  });

  it("adopt and release check their partitions; without the option they are refused", async () => {
    const { a, b } = await pair();
    await expect(a.adopt([2])).rejects.toMatchObject({ code: "VALIDATION" });
    await expect(a.release([-1])).rejects.toMatchObject({ code: "VALIDATION" });
    const plain = new Orchestrator();
    await expect(plain.adopt([0])).rejects.toMatchObject({ code: "INVALID_STATE" });
    expect(plain.partitions()).toMatchObject({ count: undefined, held: [] });
    await a.stop();
    await b.stop();
  });
});
