import { describe, expect, it } from "vitest";
import { FunctionWorker } from "../worker/base.js";
import { Orchestrator } from "./orchestrator.js";
import { TaskTelemetryLog } from "./telemetry.js";

describe("task telemetry", () => {
  it("keeps what a worker reports, with CPU, memory in MB and the current tool pulled out", async () => {
    const o = new Orchestrator({ telemetry: { samplesPerTask: 3 } });
    await o.register(
      new FunctionWorker({
        id: "w",
        taskTypes: ["job"],
        fn: (_p, ctx) => {
          ctx.progress({ type: "stats", cpuPercent: 41.5, memoryBytes: 256 * 1024 * 1024 });
          ctx.progress({ tool: "grep", step: "searching" });
          for (let i = 0; i < 5; i++) ctx.progress({ type: "token", text: "x" });
          ctx.progress({ type: "output", stream: "stdout", text: "hi" });
          ctx.progress({ cpu_percent: 12, memory_mb: 300 });
          ctx.progress({ step: "done", huge: "y".repeat(5000) });
          return "ok";
        },
      }),
    );
    await o.start();
    const h = await o.submit({ type: "job" });
    await h.result();
    const t = o.telemetry(h.id)!;
    expect(t.tokenChunks).toBe(5);
    expect(t.outputChunks).toBe(1);
    expect(t.dropped).toBe(1); // 4 samples, 3 kept
    expect(t.samples.map((s) => s.kind)).toEqual(["progress", "progress", "progress"]);
    expect(t.samples[0]).toMatchObject({ tool: "grep", step: "searching", attempt: 1 });
    expect(t.samples[2]).toMatchObject({ step: "done" });
    expect(t.samples[2]).not.toHaveProperty("data"); // too large to keep
    expect(t.latest).toMatchObject({ cpuPercent: 12, memoryMb: 300, tool: "grep", step: "done" });
    expect(o.telemetry("unknown")).toBeUndefined();
    await o.stop();
  });

  it("keeps only the most recently reporting tasks", () => {
    const log = new TaskTelemetryLog({ tasks: 2 });
    for (const id of ["a", "b", "a", "c"])
      log.record({ taskId: id, attempt: 1, at: 1, data: { step: id } });
    expect(log.get("a")?.samples).toHaveLength(2);
    expect(log.get("b")).toBeUndefined();
    expect(log.get("c")?.latest.step).toBe("c");
    const stats = new TaskTelemetryLog();
    stats.record({
      taskId: "d",
      attempt: 2,
      at: 5,
      data: {
        type: "stats",
        cpuPercent: 150,
        memoryBytes: 1.5 * 1024 * 1024,
        memoryLimitBytes: 512 * 1024 * 1024,
      },
    });
    expect(stats.get("d")?.samples[0]).toMatchObject({
      kind: "stats",
      cpuPercent: 150,
      memoryMb: 1.5,
      memoryLimitMb: 512,
      attempt: 2,
    });
  });
});
