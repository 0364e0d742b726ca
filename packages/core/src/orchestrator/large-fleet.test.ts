import { describe, expect, it } from "vitest";
import { createRouter } from "../router/strategies.js";
import { FakeClock } from "../testing/index.js";
import { FunctionWorker } from "../worker/base.js";
import { ROUTING_WINDOW } from "./dispatcher.js";
import { Orchestrator } from "./orchestrator.js";

/** `n` one-type workers whose tasks run until released (by worker id). */
async function fleet(
  o: Orchestrator,
  n: number,
  options: { maxConcurrency?: number; capabilities?: (i: number) => string[] } = {},
) {
  const releases = new Map<string, Array<() => void>>();
  for (let i = 0; i < n; i++) {
    const id = `w${i}`;
    await o.register(
      new FunctionWorker({
        id,
        taskTypes: ["t"],
        maxConcurrency: options.maxConcurrency ?? 1,
        capabilities: options.capabilities?.(i) ?? [],
        fn: () =>
          new Promise<string>((r) => {
            const list = releases.get(id) ?? [];
            list.push(() => r(id));
            releases.set(id, list);
          }),
      }),
    );
  }
  const release = (id: string) => releases.get(id)?.shift()?.();
  const load = () => [...releases.values()].map((l) => l.length);
  return { release, load };
}

describe("a fleet larger than the routing window", () => {
  it("round-robin reaches every worker", async () => {
    const clock = new FakeClock({ now: 0 });
    const o = new Orchestrator({ clock, concurrency: 1, routing: createRouter("round-robin") });
    await o.start();
    const n = ROUTING_WINDOW * 2 + 22;
    for (let i = 0; i < n; i++) {
      await o.register(new FunctionWorker({ id: `w${i}`, taskTypes: ["t"], fn: async () => null }));
    }
    const handles = await o.submitBatch(Array.from({ length: n }, () => ({ type: "t" })));
    const used = new Set<string>();
    for (const h of handles) used.add((await h.result()).workerId!);
    expect(used.size).toBe(n);
    await o.stop();
  });

  it("least-loaded spreads tasks over the whole fleet", async () => {
    const clock = new FakeClock({ now: 0 });
    const o = new Orchestrator({ clock, concurrency: 10_000 });
    await o.start();
    const n = 200;
    const f = await fleet(o, n, { maxConcurrency: 4 });
    await o.submitBatch(Array.from({ length: 2 * n }, () => ({ type: "t" })));
    await clock.advance(0);
    const load = f.load();
    expect(load.reduce((a, b) => a + b, 0)).toBe(2 * n);
    expect(Math.min(...load)).toBeGreaterThanOrEqual(1);
    expect(Math.max(...load)).toBeLessThanOrEqual(3);
    await o.stop({ mode: "abort" });
  });

  it("a task waiting for a busy fleet runs as soon as a matching worker frees a slot", async () => {
    const clock = new FakeClock({ now: 0 });
    const o = new Orchestrator({ clock, concurrency: 10_000 });
    const waiting: string[] = [];
    o.on("task:waiting", (w) => waiting.push(`${w.taskId}:${w.kind}`));
    await o.start();
    // Every third worker has a GPU: more GPU workers than a parked lane is indexed under.
    const n = 300;
    const f = await fleet(o, n, { capabilities: (i) => (i % 3 === 0 ? ["gpu"] : []) });
    const busy = await o.submitBatch(Array.from({ length: n }, () => ({ type: "t" })));
    await clock.advance(0);
    expect(f.load().every((l) => l === 1)).toBe(true);
    const on = new Map<string, (typeof busy)[number]>();
    for (const h of busy) on.set((await o.get(h.id))!.workerId!, h);
    const plain = await o.submit({ id: "plain", type: "t" });
    const gpu = await o.submit({
      id: "gpu",
      type: "t",
      priority: "high",
      requirements: { capabilities: ["gpu"] },
    });
    await clock.advance(0);
    expect(waiting).toEqual(["plain:workers_unavailable", "gpu:workers_unavailable"]);
    // A worker without a GPU frees its slot: the plain task takes it, the GPU task waits.
    f.release("w1");
    await on.get("w1")!.result();
    await clock.advance(0);
    expect((await o.get("plain"))?.status).toBe("running");
    expect((await o.get("plain"))?.workerId).toBe("w1");
    expect((await o.get("gpu"))?.status).toBe("queued");
    // A GPU worker frees its slot: the GPU task runs there.
    f.release("w3");
    await on.get("w3")!.result();
    await clock.advance(0);
    expect((await o.get("gpu"))?.status).toBe("running");
    expect((await o.get("gpu"))?.workerId).toBe("w3");
    f.release("w3");
    f.release("w1");
    expect((await gpu.result()).output).toBe("w3");
    expect((await plain.result()).output).toBe("w1");
    await o.stop({ mode: "abort" });
  });
});
