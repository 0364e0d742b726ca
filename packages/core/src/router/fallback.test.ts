import { describe, expect, it } from "vitest";
import { silentLogger } from "../logger.js";
import { type RegistryChange, WorkerRegistry } from "../registry/registry.js";
import { FakeClock, makeTaskRecord } from "../testing/index.js";
import { FunctionWorker } from "../worker/base.js";
import type { HealthReport } from "../worker/types.js";
import { createRouter, preferLocal } from "./strategies.js";

/**
 * A whole dispatch loop in miniature, as the orchestrator runs it: available() -> pick ->
 * acquireSlot -> execute -> recordResult -> releaseSlot, under a fake clock.
 */
describe("routing with health and circuit breaking", () => {
  it("prefers the local model, falls back to the API while it is down, and returns when it recovers", async () => {
    const clock = new FakeClock({ now: 0 });
    let ollamaUp = true;
    let ollamaFails = false;
    const ollama = new (class extends FunctionWorker {
      override readonly kind = "ollama";
      override async healthCheck(): Promise<HealthReport> {
        return ollamaUp ? { status: "healthy" } : { status: "unhealthy", message: "ECONNREFUSED" };
      }
    })({
      id: "ollama",
      taskTypes: ["llm_request"],
      maxConcurrency: 2,
      fn: async () => {
        if (ollamaFails) throw new Error("model crashed");
        return "local answer";
      },
    });
    const api = new FunctionWorker({
      id: "openai",
      taskTypes: ["llm_request"],
      maxConcurrency: 8,
      local: false,
      fn: async () => "api answer",
    });
    const changes: string[] = [];
    const registry = new WorkerRegistry({
      clock,
      health: { intervalMs: 1000, timeoutMs: 100, unhealthyAfter: 2, recoverAfter: 2 },
      circuit: { failureThreshold: 2, cooldownMs: 5000 },
    });
    registry.on("change", (c: RegistryChange) => changes.push(`${c.workerId}:${c.kind}:${c.to}`));
    registry.add(api);
    registry.add(ollama);
    registry.start();
    const router = preferLocal({ kind: "ollama" });

    const dispatch = async () => {
      const task = makeTaskRecord({ type: "llm_request" });
      const candidates = registry.available(task);
      const chosen = candidates.length > 0 ? router.pick(task, candidates) : undefined;
      if (chosen === undefined || !registry.acquireSlot(chosen.id)) return "queued";
      const started = clock.now();
      try {
        const { output } = await chosen.worker.execute(
          { ...task, attempt: 1, dependencies: {}, inputs: {} },
          {
            signal: new AbortController().signal,
            progress: () => {},
            reportUsage: () => {},
            logger: silentLogger,
            clock,
          },
        );
        registry.recordResult(chosen.id, { ok: true, durationMs: clock.now() - started });
        return output;
      } catch (err) {
        registry.recordResult(chosen.id, {
          ok: false,
          durationMs: clock.now() - started,
          error: err,
        });
        return `error: ${(err as Error).message}`;
      } finally {
        registry.releaseSlot(chosen.id);
      }
    };

    await clock.advance(0);
    expect(await dispatch()).toBe("local answer");

    // The local server goes down: after two failed checks it is unhealthy, and work goes to the API.
    ollamaUp = false;
    await clock.advance(1000);
    expect(await dispatch()).toBe("local answer"); // degraded still takes work
    await clock.advance(1000);
    expect(registry.get("ollama")!.health).toBe("unhealthy");
    expect(await dispatch()).toBe("api answer");

    // It comes back: two good checks later, local again.
    ollamaUp = true;
    await clock.advance(2000);
    expect(registry.get("ollama")!.health).toBe("healthy");
    expect(await dispatch()).toBe("local answer");

    // Its executions start failing although its health check passes: the circuit opens.
    ollamaFails = true;
    expect(await dispatch()).toBe("error: model crashed");
    expect(await dispatch()).toBe("error: model crashed");
    expect(registry.get("ollama")!.circuit).toBe("open");
    expect(await dispatch()).toBe("api answer");

    // After the cooldown one probe goes local; it succeeds and closes the circuit.
    ollamaFails = false;
    await clock.advance(5000);
    expect(registry.get("ollama")!.circuit).toBe("half_open");
    expect(await dispatch()).toBe("local answer");
    expect(registry.get("ollama")!.circuit).toBe("closed");

    expect(changes).toEqual([
      "ollama:health:degraded",
      "ollama:health:unhealthy",
      "ollama:health:healthy",
      "ollama:circuit:open",
      "ollama:circuit:half_open",
      "ollama:circuit:closed",
    ]);
    const api_ = registry.info("openai")!;
    expect(api_.stats.tasksCompleted).toBe(2);
    expect(registry.info("ollama")!.stats).toMatchObject({ tasksCompleted: 4, tasksFailed: 2 });

    registry.stop();
    expect(clock.pendingTimers).toBe(0);
  });

  it("leaves the task queued when no worker can take it", () => {
    const registry = new WorkerRegistry();
    registry.add(new FunctionWorker({ id: "busy", taskTypes: ["x"], fn: async () => 1 }));
    registry.acquireSlot("busy");
    const task = makeTaskRecord({ type: "x" });
    expect(registry.available(task)).toEqual([]);
    expect(createRouter("least-loaded").pick(task, registry.available(task))).toBeUndefined();
  });
});
