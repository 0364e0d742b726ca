import { afterEach, describe, expect, it } from "vitest";
import { Orchestrator } from "../orchestrator/orchestrator.js";
import { fnWorker, sleep } from "../orchestrator/testkit.test-helpers.js";
import type { TaskSpec } from "../task/schema.js";
import { FakeClock } from "../testing/index.js";
import { resolveInputs, resolveTemplates, splitReference } from "./templates.js";
import { DependencyTracker } from "./tracker.js";

const stops: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const s of stops.splice(0)) await s();
});

async function setup() {
  const clock = new FakeClock();
  const orchestrator = new Orchestrator({ clock });
  await orchestrator.start();
  stops.push(() => orchestrator.stop({ mode: "abort" }));
  return { clock, orchestrator };
}

describe("templates", () => {
  const outputs = new Map<string, unknown>([
    ["fetch", { body: { title: "Hello", n: 3 }, list: [1, 2] }],
    ["count", 7],
    ["a.b", "dotted"],
  ]);

  it("keeps the type of a whole-string template and interpolates inside text", () => {
    expect(
      resolveTemplates(
        {
          n: "{{count}}",
          obj: "{{ fetch.body }}",
          deep: ["{{fetch.list.1}}"],
          text: "title={{fetch.body.title}} n={{fetch.body.n}} obj={{fetch.list}}",
          other: "{{unrelated}} stays",
          dotted: "{{a.b}}",
          num: 5,
        },
        outputs,
      ),
    ).toEqual({
      n: 7,
      obj: { title: "Hello", n: 3 },
      deep: [2],
      text: "title=Hello n=3 obj=[1,2]",
      other: "{{unrelated}} stays",
      dotted: "dotted",
      num: 5,
    });
  });

  it("resolves input mappings and splits references on the longest dependency id", () => {
    expect(
      resolveInputs({ t: "fetch.body.title", c: "count", missing: "fetch.nope" }, outputs),
    ).toEqual({
      t: "Hello",
      c: 7,
      missing: undefined,
    });
    expect(splitReference("a.b.c", new Set(["a", "a.b"]))).toEqual(["a.b", ["c"]]);
    expect(splitReference("x.y", new Set(["a"]))).toBeUndefined();
  });
});

describe("DependencyTracker", () => {
  it("counts in-degrees incrementally and reports ready and skipped dependents", () => {
    const dag = new DependencyTracker();
    dag.add("c", ["a", "b"]);
    dag.add("d", ["a"]);
    expect(dag.resolve("a", true, () => "skip")).toEqual({ ready: ["d"], skip: [] });
    expect(dag.remaining("c")).toBe(1);
    expect(dag.resolve("b", false, () => "skip")).toEqual({ ready: [], skip: ["c"] });
    dag.add("f", ["e"]);
    expect(dag.resolve("e", false, () => "run")).toEqual({ ready: ["f"], skip: [] });
  });
});

describe("DAG in the orchestrator", () => {
  it("rejects unknown dependencies and cycles at submit, naming them", async () => {
    const { orchestrator } = await setup();
    await expect(orchestrator.submit({ type: "t", dependsOn: ["ghost"] })).rejects.toMatchObject({
      code: "UNKNOWN_DEPENDENCY",
      message: expect.stringContaining("ghost"),
    });
    await expect(
      orchestrator.submitBatch([
        { id: "a", type: "t", dependsOn: ["c"] },
        { id: "b", type: "t", dependsOn: ["a"] },
        { id: "c", type: "t", dependsOn: ["b"] },
        { id: "free", type: "t" },
      ]),
    ).rejects.toMatchObject({
      code: "CYCLE_DETECTED",
      message: expect.stringContaining("[a, b, c]"),
    });
    await expect(
      orchestrator.submit({ id: "self", type: "t", dependsOn: ["self"] }),
    ).rejects.toMatchObject({
      code: "CYCLE_DETECTED",
    });
    // atomic: nothing of the rejected batch was stored
    expect(await orchestrator.list()).toEqual([]);
  });

  it("flows results to dependents (templates and inputs), across submissions too", async () => {
    const { orchestrator } = await setup();
    const seen: unknown[] = [];
    await orchestrator.register(
      fnWorker("w", ["*"], async (payload, _ctx, task) => {
        if (task.type === "fetch") return { title: "Flotilla", words: 2 };
        seen.push({ payload, inputs: task.inputs, deps: task.dependencies });
        return "done";
      }),
    );
    await (await orchestrator.submit({ id: "fetch", type: "fetch" })).result();
    const h = await orchestrator.submit({
      id: "sum",
      type: "summarize",
      dependsOn: ["fetch"],
      inputs: { t: "fetch.title" },
      payload: { prompt: "Summarize {{fetch.title}}", words: "{{fetch.words}}" },
    });
    expect((await h.result()).status).toBe("succeeded");
    expect(seen[0]).toEqual({
      payload: { prompt: "Summarize Flotilla", words: 2 },
      inputs: { t: "Flotilla" },
      deps: { fetch: { title: "Flotilla", words: 2 } },
    });
  });

  it("rejects inputs that do not name a dependency", async () => {
    const { orchestrator } = await setup();
    await orchestrator.submit({ id: "a", type: "t" });
    await expect(
      orchestrator.submit({ type: "t", dependsOn: ["a"], inputs: { x: "b.field" } }),
    ).rejects.toMatchObject({ code: "VALIDATION", message: expect.stringContaining("inputs.x") });
  });

  it("skips dependents of a failed task transitively, or runs them by policy", async () => {
    const { orchestrator } = await setup();
    await orchestrator.register(
      fnWorker("w", ["ok", "bad"], async (_p, _c, task) => {
        if (task.type === "bad") throw new Error("boom");
        return task.id;
      }),
    );
    const hs = await orchestrator.submitBatch([
      { id: "c", type: "ok", dependsOn: ["b"] },
      { id: "b", type: "ok", dependsOn: ["a"] },
      { id: "a", type: "bad" },
      { id: "cleanup", type: "ok", dependsOn: ["a"], onDependencyFailure: "run" },
      { id: "indep", type: "ok" },
    ]);
    const results = Object.fromEntries(
      await Promise.all(hs.map(async (h) => [h.id, (await h.result()).status] as const)),
    );
    expect(results).toEqual({
      a: "failed",
      b: "skipped",
      c: "skipped",
      cleanup: "succeeded",
      indep: "succeeded",
    });
    const c = await orchestrator.get("c");
    expect(c?.result?.error).toMatchObject({
      code: "DEPENDENCY_FAILED",
      message: expect.stringContaining("b"),
    });
    // a dependency that already failed: the new dependent is skipped at once
    const late = await orchestrator.submit({ type: "ok", dependsOn: ["a"] });
    expect((await late.result()).status).toBe("skipped");
  });

  it("orders ready tasks of a batch by submission order, not by the dependency sort", async () => {
    const { orchestrator, clock } = await setup();
    const order: string[] = [];
    await orchestrator.submitBatch([
      { id: "z", type: "t" },
      { id: "y", type: "t" },
      { id: "after-z", type: "t", dependsOn: ["z"] },
      { id: "x", type: "t" },
    ]);
    await orchestrator.register(
      fnWorker("w", ["t"], async (_p, _c, t) => {
        order.push(t.id);
        await sleep(clock, 1);
        return null;
      }),
    );
    await clock.advance(100);
    // FIFO is by submission order: after-z (submitted before x) goes first once z is done
    expect(order).toEqual(["z", "y", "after-z", "x"]);
  });

  it("runs independent tasks of a batch in parallel", async () => {
    const { orchestrator, clock } = await setup();
    await orchestrator.register(
      fnWorker("w", ["t"], async () => sleep(clock, 100), { maxConcurrency: 10 }),
    );
    const hs = await orchestrator.submitBatch(Array.from({ length: 10 }, () => ({ type: "t" })));
    await clock.advance(100);
    for (const h of hs) expect(h.status).toBe("succeeded");
  });

  it("runs a 10k-node DAG quickly and in dependency order", async () => {
    const { orchestrator } = await setup();
    const n = 10_000;
    const finished = new Set<string>();
    let violations = 0;
    const specs: TaskSpec[] = [];
    for (let i = 0; i < n; i++) {
      const deps: string[] = [];
      if (i > 0) deps.push(`n${Math.floor((i - 1) / 2)}`); // a binary tree
      if (i > 2) deps.push(`n${i - 3}`); // plus cross edges
      specs.push({ id: `n${i}`, type: "t", dependsOn: deps, payload: { deps } });
    }
    await orchestrator.register(
      fnWorker(
        "w",
        ["t"],
        async (payload, _ctx, task) => {
          for (const d of (payload as { deps: string[] }).deps) if (!finished.has(d)) violations++;
          finished.add(task.id);
          return null;
        },
        { maxConcurrency: 64 },
      ),
    );
    const t0 = performance.now();
    const handles = await orchestrator.submitBatch(specs);
    const submitMs = performance.now() - t0;
    await Promise.all(handles.map((h) => h.result()));
    const totalMs = performance.now() - t0;
    expect(finished.size).toBe(n);
    expect(violations).toBe(0);
    expect(orchestrator.status().counts.succeeded).toBe(n);
    // generous bounds for a loaded 2-core machine; a per-completion graph rebuild would take minutes
    expect(submitMs).toBeLessThan(10_000);
    expect(totalMs).toBeLessThan(30_000);
  }, 60_000);
});
