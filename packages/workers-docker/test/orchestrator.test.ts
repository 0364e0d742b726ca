import { Orchestrator } from "@flotilla/core";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type ContainerRunOutput, DockerWorker, LABEL_WORKER } from "../src/index.js";
import { engineHost, IMAGE, streamed } from "./engine-suite.js";

const engines = [
  ["dockerd", engineHost("FLOTILLA_TEST_DOCKER_HOST", "dockerd")],
  ["podman", engineHost("FLOTILLA_TEST_PODMAN_HOST", "podman")],
] as const;

for (const [engine, host] of engines) {
  if (host) describeEndToEnd(engine, host);
}

function describeEndToEnd(engine: string, host: string): void {
  describe(`DockerWorker on ${engine} end to end through the Orchestrator`, () => {
    let orchestrator: Orchestrator;
    const worker = new DockerWorker({
      id: `docker-e2e-${engine}`,
      host,
      image: IMAGE,
      pull: "never",
      maxConcurrency: 4,
      statsIntervalMs: 0,
    });
    const docker = new Docker({ socketPath: host.replace("unix://", "") });
    const leftovers = () =>
      docker.listContainers({ all: true, filters: { label: [`${LABEL_WORKER}=${worker.id}`] } });

    beforeAll(async () => {
      orchestrator = new Orchestrator();
      await orchestrator.start();
      await orchestrator.register(worker);
    });
    afterAll(async () => {
      await orchestrator.stop({ mode: "abort" });
      await worker.stop();
      expect(await leftovers()).toEqual([]);
    });

    it.concurrent("runs a snippet with input files and streams its output as progress", async () => {
      const handle = await orchestrator.submit({
        type: "code_execution",
        payload: {
          language: "python",
          code: "print(open('in.txt').read().upper())",
          files: { "in.txt": "shout" },
        },
      });
      const progress: unknown[] = [];
      for await (const p of handle.progress()) progress.push(p.data);
      const result = await handle.result();
      expect(result.status).toBe("succeeded");
      expect((result.output as ContainerRunOutput).stdout).toBe("SHOUT\n");
      expect(streamed(progress, "stdout")).toBe("SHOUT\n");
    });

    it.concurrent("fails a non-zero exit at once, without retrying, with the output", async () => {
      const handle = await orchestrator.submit({
        type: "code_execution",
        payload: { language: "bash", code: "echo nope >&2; exit 4" },
        retry: { maxAttempts: 3, initialDelayMs: 1 },
      });
      const result = await handle.result();
      expect(result.status).toBe("failed");
      expect(result.attempts).toBe(1);
      expect(result.error?.code).toBe("WORKER_ERROR");
      expect(result.error?.message).toContain("exited with code 4: nope");
    });

    it.concurrent("times out by the task's timeoutMs", async () => {
      const handle = await orchestrator.submit({
        type: "code_execution",
        payload: { language: "bash", code: "sleep 30" },
        timeoutMs: 800,
      });
      const result = await handle.result();
      expect(result.status).toBe("timed_out");
      expect(result.error?.code).toBe("TIMEOUT");
    });

    it.concurrent("cancels a running container", async () => {
      const handle = await orchestrator.submit({
        type: "code_execution",
        payload: { language: "bash", code: "echo started; sleep 30" },
      });
      for await (const p of handle.progress()) {
        if ((p.data as { text?: string }).text === "started\n") break;
      }
      const started = Date.now();
      expect(await handle.cancel("test")).toBe(true);
      const result = await handle.result();
      expect(result.status).toBe("cancelled");
      expect(Date.now() - started).toBeLessThan(10_000); // the container would sleep 30 s
    });

    it.concurrent("rejects a bad payload as a validation failure", async () => {
      const handle = await orchestrator.submit({
        type: "code_execution",
        payload: { language: "python", code: "1", limits: { memoryMb: 999_999 } },
      });
      const result = await handle.result();
      expect(result.status).toBe("failed");
      expect(result.error?.code).toBe("VALIDATION");
      expect(result.error?.message).toContain("payload.limits.memoryMb");
    });
  });
}
