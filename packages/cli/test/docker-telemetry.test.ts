import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadServeConfig, type RunningServer, runServe } from "../src/index.js";

const host = process.env.FLOTILLA_TEST_DOCKER_HOST;
const image = process.env.FLOTILLA_TEST_IMAGE ?? "localhost/flotilla-sandbox:latest";
const KEY = "admin-key-for-docker-telemetry";
let running: RunningServer | undefined;
let dir: string | undefined;
afterAll(async () => {
  await running?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("telemetry of a container task on flotilla serve", () => {
  it("keeps the Docker worker's CPU and memory samples, served at /tasks/{id}/telemetry", async () => {
    // A real engine is required: without one this fails, it never skips.
    if (!host) {
      throw new Error(
        "FLOTILLA_TEST_DOCKER_HOST is not set: this test needs a real engine (npm test starts one)",
      );
    }
    dir = mkdtempSync(join(tmpdir(), "flotilla-telemetry-"));
    const config = loadServeConfig(
      { port: 0, dataDir: dir, adminKey: KEY, logLevel: "silent", ollamaUrl: "http://127.0.0.1:9" },
      {},
    );
    const printed: string[] = [];
    running = await runServe(config, { DOCKER_HOST: host }, (l) => printed.push(l));
    expect(printed.join("\n")).toMatch(/\+ docker: engine at/);
    const api = `${running.url}/api/v2/orchestrator`;
    const headers = { "x-api-key": KEY, "content-type": "application/json" };
    const res = await fetch(`${api}/tasks/execute`, {
      method: "POST",
      headers,
      body: JSON.stringify({
        type: "docker_task",
        payload: {
          image,
          // Holds 20 MB and keeps a core busy for 6 s: the worker samples every 2 s (a
          // sample takes a second of the engine's own), so a loaded machine still gets one.
          command: [
            "python3",
            "-c",
            "import time\nx = b'y' * (20 * 1024 * 1024)\nend = time.time() + 6\nwhile time.time() < end: pass",
          ],
        },
        timeout_seconds: 60,
      }),
    });
    const done = (await res.json()) as { task_id: string; status: string };
    expect(done.status).toBe("succeeded");
    const t = (await (
      await fetch(`${api}/tasks/${done.task_id}/telemetry`, { headers })
    ).json()) as {
      samples: Array<{ kind: string; memory_mb?: number; cpu_percent?: number }>;
      latest: { memory_mb?: number };
      output_chunks: number;
    };
    const stats = t.samples.filter((s) => s.kind === "stats");
    expect(stats.length).toBeGreaterThanOrEqual(1);
    expect(stats.some((s) => (s.memory_mb ?? 0) > 10)).toBe(true);
    expect(t.latest.memory_mb).toBeGreaterThan(0);
  }, 120_000);
});
