import { Orchestrator, silentLogger } from "@flotilla/core";
import { describe, expect, it } from "vitest";
import { buildWorkerFactories } from "../src/index.js";

describe("run-time worker factories", () => {
  it("a remote worker serves the task types and capabilities it was registered with", async () => {
    const { factories } = await buildWorkerFactories();
    const orchestrator = new Orchestrator();
    const worker = await factories.remote!(
      {
        remote_url: "http://127.0.0.1:9/api/v2/orchestrator",
        worker_id: "gpu-box",
        task_types: ["render", "transcode"],
        capabilities: ["gpu"],
      },
      { orchestrator, logger: silentLogger },
    );
    expect(worker.id).toBe("gpu-box");
    expect(worker.taskTypes).toEqual(["render", "transcode"]);
    expect(worker.capabilities).toEqual(["gpu"]);
    const plain = await factories.remote!(
      { remote_url: "http://127.0.0.1:9/api" },
      { orchestrator, logger: silentLogger },
    );
    expect(plain.taskTypes).toEqual(["remote_compute"]);
  });
});
