import { describe, expect, it } from "vitest";
import { WorkerRegistry } from "../registry/registry.js";
import type { WorkerEntry } from "../registry/types.js";
import { makeStubWorker, makeTaskRecord } from "../testing/index.js";
import type { Worker } from "../worker/types.js";
import {
  cheapest,
  createRouter,
  leastLoaded,
  lowestLatency,
  powerOfTwoChoices,
  preferLocal,
  roundRobin,
} from "./strategies.js";

const task = makeTaskRecord({ type: "llm_request", estimate: { tokens: 1000 } });

function fleet(workers: (Partial<Worker> & { id: string; inFlight?: number })[]) {
  const registry = new WorkerRegistry();
  for (const { inFlight = 0, ...w } of workers) {
    const entry = registry.add(makeStubWorker({ maxConcurrency: 4, ...w }));
    entry.inFlight = inFlight;
  }
  return { registry, all: registry.list() };
}
const id = (e: WorkerEntry | undefined) => e?.id;

describe("leastLoaded", () => {
  it("picks the smallest share of slots in use", () => {
    const { all } = fleet([
      { id: "a", maxConcurrency: 2, inFlight: 1 }, // 50%
      { id: "b", maxConcurrency: 10, inFlight: 3 }, // 30%
      { id: "c", maxConcurrency: 4, inFlight: 2 }, // 50%
    ]);
    expect(id(leastLoaded().pick(task, all))).toBe("b");
  });

  it("breaks ties toward healthy, then more free slots, then candidate order", () => {
    const { all } = fleet([
      { id: "a", maxConcurrency: 2 },
      { id: "b", maxConcurrency: 8 },
      { id: "c", maxConcurrency: 8 },
    ]);
    expect(id(leastLoaded().pick(task, all))).toBe("b");
    all[1]!.health = "degraded";
    expect(id(leastLoaded().pick(task, all))).toBe("c");
    expect(id(leastLoaded().pick(task, [all[0]!]))).toBe("a");
  });
});

describe("roundRobin", () => {
  it("takes turns, and stays fair when the candidate set changes", () => {
    const { all } = fleet([{ id: "a" }, { id: "b" }, { id: "c" }]);
    const rr = roundRobin();
    const picks = Array.from({ length: 6 }, () => id(rr.pick(task, all)));
    expect(picks).toEqual(["a", "b", "c", "a", "b", "c"]);
    // "a" busy for a while: the others alternate, then "a" is next as the least recently picked.
    expect(id(rr.pick(task, [all[1]!, all[2]!]))).toBe("b");
    expect(id(rr.pick(task, [all[1]!, all[2]!]))).toBe("c");
    expect(id(rr.pick(task, all))).toBe("a");
  });

  it("each router instance has its own rotation", () => {
    const { all } = fleet([{ id: "a" }, { id: "b" }]);
    const one = roundRobin();
    one.pick(task, all);
    expect(id(roundRobin().pick(task, all))).toBe("a");
    expect(id(one.pick(task, all))).toBe("b");
  });
});

describe("powerOfTwoChoices", () => {
  it("samples two distinct candidates with the injected random and keeps the less loaded", () => {
    const { all } = fleet([
      { id: "a", inFlight: 3 },
      { id: "b", inFlight: 0 },
      { id: "c", inFlight: 2 },
      { id: "d", inFlight: 1 },
    ]);
    // First draw 0.0 -> index 0 ("a"); second over the 3 others: 0.99 -> 2, shifted past "a" -> "d".
    const seq = [0.0, 0.99];
    const p2c = powerOfTwoChoices({ random: () => seq.shift() ?? 0 });
    expect(id(p2c.pick(task, all))).toBe("d");
    // Equal draws never compare a worker with itself.
    const seq2 = [0.5, 0.5];
    const p2c2 = powerOfTwoChoices({ random: () => seq2.shift() ?? 0 });
    // first = floor(0.5*4) = 2 ("c"); second = floor(0.5*3) = 1 (<2, so "b"); b is less loaded.
    expect(id(p2c2.pick(task, all))).toBe("b");
  });

  it("never picks the most loaded of many when it is sampled against anything else", () => {
    const { all } = fleet([{ id: "hot", inFlight: 3 }, ...["x", "y", "z"].map((i) => ({ id: i }))]);
    let seed = 42;
    const random = () => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed / 2 ** 31;
    };
    const p2c = powerOfTwoChoices({ random });
    for (let i = 0; i < 200; i++) expect(id(p2c.pick(task, all))).not.toBe("hot");
  });

  it("survives a random returning 1 or out of range", () => {
    const { all } = fleet([{ id: "a" }, { id: "b" }]);
    expect(id(powerOfTwoChoices({ random: () => 1 }).pick(task, all))).toBeDefined();
    expect(id(powerOfTwoChoices({ random: () => -3 }).pick(task, [all[0]!]))).toBe("a");
  });
});

describe("cheapest", () => {
  it("picks the lowest estimate; unknown costs come last", () => {
    const seen: unknown[] = [];
    const { all } = fleet([
      { id: "none" },
      { id: "pricey", estimateCost: () => 0.03 },
      {
        id: "cheap",
        estimateCost: (t) => {
          seen.push(t.estimate);
          return 0.001;
        },
      },
      { id: "nan", estimateCost: () => Number.NaN },
      {
        id: "throws",
        estimateCost: () => {
          throw new Error("no price");
        },
      },
    ]);
    expect(id(cheapest().pick(task, all))).toBe("cheap");
    expect(seen).toEqual([{ tokens: 1000 }]);
    expect(id(cheapest().pick(task, [all[0]!, all[3]!, all[1]!]))).toBe("pricey");
  });

  it("breaks equal costs (and all-unknown) by load", () => {
    const { all } = fleet([
      { id: "busy", estimateCost: () => 0, inFlight: 3 },
      { id: "idle", estimateCost: () => 0 },
    ]);
    expect(id(cheapest().pick(task, all))).toBe("idle");
    const { all: unknown } = fleet([{ id: "u1", inFlight: 1 }, { id: "u2" }]);
    expect(id(cheapest().pick(task, unknown))).toBe("u2");
  });
});

describe("preferLocal", () => {
  it("prefers local workers by default and falls back to remote ones", () => {
    const { all } = fleet([
      { id: "api", kind: "openai", local: false },
      { id: "box", kind: "ollama", inFlight: 3 },
    ]);
    expect(id(preferLocal().pick(task, all))).toBe("box");
    expect(id(preferLocal().pick(task, [all[0]!]))).toBe("api");
  });

  it("prefers a kind or labels when asked, choosing within the group by the inner strategy", () => {
    const { all } = fleet([
      { id: "api", kind: "openai", local: false },
      { id: "o1", kind: "ollama", inFlight: 2 },
      { id: "o2", kind: "ollama", inFlight: 1 },
      { id: "fn", kind: "function" },
      { id: "gpu", kind: "docker", labels: { gpu: "yes" } },
    ]);
    expect(id(preferLocal({ kind: "ollama" }).pick(task, all))).toBe("o2");
    expect(id(preferLocal({ kind: ["docker", "ollama"] }).pick(task, all))).toBe("gpu");
    expect(id(preferLocal({ labels: { gpu: "yes" } }).pick(task, all))).toBe("gpu");
    expect(id(preferLocal({ kind: "ollama", within: roundRobin() }).pick(task, all))).toBe("o1");
    expect(id(preferLocal({ prefer: (e) => e.id === "api" }).pick(task, all))).toBe("api");
    // No ollama among the candidates: least loaded of the rest.
    expect(id(preferLocal({ kind: "ollama" }).pick(task, [all[0]!, all[3]!]))).toBe("api");
  });
});

describe("lowestLatency", () => {
  it("picks the lowest EWMA, trying unmeasured workers first", () => {
    const { registry, all } = fleet([{ id: "slow" }, { id: "fast" }, { id: "new" }]);
    registry.recordResult("slow", { ok: true, durationMs: 900 });
    registry.recordResult("fast", { ok: true, durationMs: 120 });
    expect(id(lowestLatency().pick(task, all))).toBe("new");
    registry.recordResult("new", { ok: true, durationMs: 400 });
    expect(id(lowestLatency().pick(task, all))).toBe("fast");
    for (let i = 0; i < 20; i++) registry.recordResult("fast", { ok: true, durationMs: 2000 });
    expect(id(lowestLatency().pick(task, all))).toBe("new");
  });
});

describe("createRouter", () => {
  it("builds every built-in strategy by kebab or camel name", () => {
    const names = {
      "least-loaded": "least-loaded",
      leastLoaded: "least-loaded",
      "round-robin": "round-robin",
      roundRobin: "round-robin",
      "power-of-two": "power-of-two",
      powerOfTwoChoices: "power-of-two",
      cheapest: "cheapest",
      "prefer-local": "prefer-local",
      preferLocal: "prefer-local",
      "lowest-latency": "lowest-latency",
      lowestLatency: "lowest-latency",
    } as const;
    for (const [name, expected] of Object.entries(names)) {
      expect(createRouter(name as keyof typeof names).name).toBe(expected);
    }
    expect(createRouter().name).toBe("least-loaded");
  });

  it("returns a custom strategy as is, rejects unknown names and bad shapes with VALIDATION", () => {
    const custom = { name: "first", pick: (_t: unknown, c: readonly WorkerEntry[]) => c[0] };
    expect(createRouter(custom)).toBe(custom);
    expect(() => createRouter("fastest" as never)).toThrow(/unknown strategy "fastest"/);
    expect(() => createRouter("toString" as never)).toThrow(
      expect.objectContaining({ code: "VALIDATION" }),
    );
    expect(() => createRouter({ name: "x" } as never)).toThrow(/pick/);
  });

  it("picks only among the candidates it is given (already eligible and available)", () => {
    const { registry } = fleet([
      { id: "a", taskTypes: ["llm_request"] },
      { id: "b", taskTypes: ["tool_call"] },
      { id: "c", taskTypes: ["llm_request"], inFlight: 4 },
    ]);
    for (const name of [
      "least-loaded",
      "round-robin",
      "power-of-two",
      "cheapest",
      "prefer-local",
      "lowest-latency",
    ] as const) {
      const router = createRouter(name);
      const candidates = registry.available(task);
      expect(candidates.map((e) => e.id)).toEqual(["a"]);
      expect(id(router.pick(task, candidates))).toBe("a");
    }
  });
});
