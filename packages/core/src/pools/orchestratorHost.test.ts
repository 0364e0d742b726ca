import { describe, expect, it } from "vitest";
import { Orchestrator } from "../orchestrator/orchestrator.js";
import { FakeClock } from "../testing/index.js";
import { FunctionWorker } from "../worker/base.js";
import { orchestratorPoolHost } from "./orchestratorHost.js";

describe("orchestratorPoolHost", () => {
  it("reads the engine's queue, including tasks queued before the host was made", async () => {
    const clock = new FakeClock({ now: 0 });
    const orchestrator = new Orchestrator({ clock });
    await orchestrator.start();
    await orchestrator.submitBatch([{ type: "a" }, { type: "a" }, { type: "b" }]);
    await clock.advance(1_500);
    const host = orchestratorPoolHost(orchestrator);
    expect(host.queueReading(["a"])).toEqual({ depth: 2, oldestWaitMs: 1_500 });
    expect(host.queueReading(["*"]).depth).toBe(3);
    await host.registerWorker(
      new FunctionWorker({ id: "wa", taskTypes: ["a"], fn: async () => 1 }),
    );
    await clock.flush();
    expect(host.queueReading(["a"]).depth).toBe(0);
    await host.unregisterWorker("wa", { drain: true });
    expect(orchestrator.listWorkers()).toEqual([]);
    await orchestrator.stop();
  });
});
