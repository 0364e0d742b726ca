import { FleetClient, fleetErrorStatus } from "@flotilla/workers-remote";
import { afterEach, describe, expect, it } from "vitest";
import { type FleetUnderTest, REG_TOKEN, removeDir, startFleet, upload } from "./harness.js";

let f: FleetUnderTest | undefined;
afterEach(async () => {
  if (f) {
    await f.stop().catch(() => undefined);
    await removeDir(f.dir);
    f = undefined;
  }
});

describe("FleetClient against the fleet routes (a Flotilla runner's view)", () => {
  it("registers with labels, slots and task types; two slots hold two tasks; files, logs, status", async () => {
    f = await startFleet();
    const client = new FleetClient({ baseUrl: f.url, registrationToken: REG_TOKEN });
    const reg = await client.register({
      name: "flotilla-gpu-1",
      hostname: "gpu-1.lan",
      os_type: "linux",
      capabilities: ["gpu"],
      labels: { zone: "eu-west" },
      resources: { cpus: 16, memory_mb: 65536 },
      task_types: ["agent_run", "remote_compute"],
      slots: 2,
    });
    expect(reg).toMatchObject({ name: "flotilla-gpu-1", slots: 2, labels: { zone: "eu-west" } });

    const up = await upload(f.url, "input.json", '{"n":1}');
    const gpu = await f.admin("POST", "/tasks", {
      prompt: "needs a gpu",
      capabilities: ["gpu"],
      target_tags: { zone: "eu-west" },
      files: [up.json.filename],
    });
    const other = await f.admin("POST", "/tasks", {
      prompt: "compute",
      type: "remote_compute",
      payload: { n: 2 },
    });
    const a = await client.pollTask();
    const b = await client.pollTask();
    expect(new Set([a?.task_id, b?.task_id])).toEqual(new Set([gpu.json.id, other.json.id]));
    expect(await client.pollTask()).toBeNull();

    const withFile = a?.task_id === gpu.json.id ? a : b;
    const bytes = await client.downloadFile(
      withFile!,
      withFile!.files![0]!,
      withFile!.file_checksums![0],
    );
    expect(Buffer.from(bytes).toString()).toBe('{"n":1}');

    const compute = a?.task_id === other.json.id ? a : b;
    expect(compute).toMatchObject({ type: "remote_compute", payload: { n: 2, prompt: "compute" } });

    await client.heartbeat("busy", gpu.json.id);
    const running = await client.reportStatus({
      taskId: gpu.json.id,
      status: "running",
      progress: 50,
    });
    expect(running).toMatchObject({ status: "running", state: "running", progress: 50 });
    await client.uploadLogs(gpu.json.id, {
      id: "s",
      messages: [{ role: "assistant", content: "[]" }],
    });
    const done = await client.reportStatus({
      taskId: gpu.json.id,
      status: "success",
      message: "ok",
    });
    expect(done).toMatchObject({ status: "completed", result: "ok", log_count: 1 });
    const failed = await client.reportStatus({
      taskId: other.json.id,
      status: "error",
      message: "boom",
    });
    expect(failed).toMatchObject({ status: "failed", error_message: "boom" });

    // A foreign file name is refused with the contract's status.
    const err = await client
      .downloadFile({ orchestrator_url: f.url }, "../flotilla.db")
      .catch((e: unknown) => e);
    expect([403, 404]).toContain(fleetErrorStatus(err));
  });
});
