import { describeWorkerConformance } from "@flotilla/testing/vitest";
import { DockerWorker } from "../src/index.js";
import { engineHost, IMAGE } from "./engine-suite.js";

const engines = [
  ["dockerd", engineHost("FLOTILLA_TEST_DOCKER_HOST", "dockerd")],
  ["podman", engineHost("FLOTILLA_TEST_PODMAN_HOST", "podman")],
] as const;

for (const [engine, host] of engines) {
  if (!host) continue;
  describeWorkerConformance(
    `DockerWorker on ${engine}`,
    () => new DockerWorker({ host, image: IMAGE, pull: "never", statsIntervalMs: 0 }),
    {
      task: { type: "code_execution", payload: { language: "python", code: "print(1)" } },
      slowTask: { type: "code_execution", payload: { language: "bash", code: "sleep 30" } },
      failingTask: { type: "code_execution", payload: { language: "cobol", code: "x" } },
    },
  );
}
