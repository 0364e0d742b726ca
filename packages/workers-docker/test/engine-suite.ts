import { randomUUID } from "node:crypto";
import {
  type ExecutionContext,
  FlotillaError,
  silentLogger,
  systemClock,
  type WorkerTask,
} from "@flotilla/core";
import Docker from "dockerode";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import {
  type ContainerRunOutput,
  DockerWorker,
  type DockerWorkerOptions,
  LABEL_MANAGED,
  LABEL_WARM,
  LABEL_WORKER,
} from "../src/index.js";
import { registryPorts, startTestRegistry } from "./registry.js";

export const IMAGE = process.env.FLOTILLA_TEST_IMAGE ?? "localhost/flotilla-sandbox:latest";
const HAS_NODE = process.env.FLOTILLA_TEST_IMAGE_HAS_NODE === "true";

/**
 * Returns the engine URL, or undefined when it is not configured: then a failing test says
 * so (these tests need a real engine; they never skip).
 */
export function engineHost(envVar: string, engine: string): string | undefined {
  const host = process.env[envVar];
  if (host) return host;
  const msg = `${envVar} is not set: the ${engine} tests need a real engine (run \`bash scripts/test-env.sh up\`, or \`npm test\`, which does it)`;
  describe(`${engine} engine`, () => {
    it("is configured", () => {
      throw new Error(msg);
    });
  });
  return undefined;
}

let seq = 0;
export function task(type: string, payload: unknown, extra: Partial<WorkerTask> = {}): WorkerTask {
  seq += 1;
  return {
    id: `t-${seq}-${randomUUID().slice(0, 6)}`,
    type,
    payload,
    priority: 0,
    attempt: 1,
    metadata: {},
    dependencies: {},
    inputs: {},
    ...extra,
  };
}

export function ctx(signal: AbortSignal = new AbortController().signal) {
  const events: unknown[] = [];
  const c: ExecutionContext = {
    signal,
    progress: (d) => events.push(d),
    reportUsage: () => {},
    logger: silentLogger,
    clock: systemClock,
  };
  return { ctx: c, events };
}

/** The text streamed as output progress on `stream`, joined. */
export function streamed(events: unknown[], stream: "stdout" | "stderr"): string {
  return events
    .filter(
      (e) =>
        (e as { type?: string }).type === "output" && (e as { stream?: string }).stream === stream,
    )
    .map((e) => (e as { text: string }).text)
    .join("");
}

async function rejection(p: Promise<unknown>): Promise<FlotillaError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof FlotillaError) return err;
    throw err;
  }
  throw new Error("expected the promise to reject");
}

/** The worker integration suite against one engine. */
export function describeEngine(engine: string, host: string): void {
  const docker = new Docker(
    host.startsWith("unix://") ? { socketPath: host.slice("unix://".length) } : undefined,
  );
  const made: DockerWorker[] = [];
  const make = (options: DockerWorkerOptions = {}) => {
    const w = new DockerWorker({
      id: `test-${engine}-${randomUUID().slice(0, 8)}`,
      host,
      image: IMAGE,
      pull: "never",
      maxConcurrency: 8,
      statsIntervalMs: 0,
      ...options,
    });
    made.push(w);
    return w;
  };
  const containersOf = (workerId: string) =>
    docker.listContainers({ all: true, filters: { label: [`${LABEL_WORKER}=${workerId}`] } });

  let worker: DockerWorker;
  beforeAll(async () => {
    worker = make();
    await worker.start();
  });
  afterAll(async () => {
    await Promise.all(made.map((w) => w.stop()));
    for (const w of made) {
      expect(await containersOf(w.id)).toEqual([]);
      const { Volumes } = await docker.listVolumes({
        filters: { label: [`${LABEL_WORKER}=${w.id}`] },
      });
      expect(Volumes ?? []).toEqual([]);
    }
  });

  const run = async (payload: unknown, type = "code_execution", w = worker) =>
    (await w.execute(task(type, payload), ctx().ctx)).output as ContainerRunOutput;

  describe.concurrent(`DockerWorker on ${engine}`, () => {
    it("runs python, with args, env and stderr, as nobody", async () => {
      const { ctx: c, events } = ctx();
      const code =
        "import os, sys\nprint('hello', sys.argv[1], os.environ['GREETING'])\nprint('oops', file=sys.stderr)\nprint(os.getuid())";
      const res = await worker.execute(
        task("code_execution", {
          language: "python",
          code,
          args: ["world"],
          env: { GREETING: "hi" },
        }),
        c,
      );
      const out = res.output as ContainerRunOutput;
      expect(out.exitCode).toBe(0);
      expect(out.stdout).toBe("hello world hi\n65534\n");
      expect(out.stderr).toBe("oops\n");
      expect(out.truncated).toBe(false);
      expect(out.oomKilled).toBe(false);
      expect(out.durationMs).toBeGreaterThanOrEqual(0);
      expect(streamed(events, "stdout")).toBe("hello world hi\n65534\n");
      expect(streamed(events, "stderr")).toBe("oops\n");
    });

    it("runs bash with a read-only root, a writable /tmp and workdir, no capabilities", async () => {
      const code = [
        "touch /etc/x 2>/dev/null && echo rootfs-writable || echo rootfs-readonly",
        "echo a > /tmp/a && echo tmp-ok",
        "echo b > ./b && echo workdir-ok",
        "grep CapEff /proc/self/status",
        "grep NoNewPrivs /proc/self/status",
      ].join("\n");
      const out = await run({ language: "bash", code });
      expect(out.stdout).toContain("rootfs-readonly");
      expect(out.stdout).toContain("tmp-ok");
      expect(out.stdout).toContain("workdir-ok");
      expect(out.stdout).toMatch(/CapEff:\s+0000000000000000/);
      expect(out.stdout).toMatch(/NoNewPrivs:\s+1/);
    });

    it("runs node, or says clearly that the image lacks it", async () => {
      const p = run({ language: "node", code: "console.log(6 * 7)" });
      if (HAS_NODE) expect((await p).stdout).toBe("42\n");
      else expect((await rejection(p)).message).toContain("language node: node is not available");
    });

    it("says clearly when a language's interpreter is not in the image", async () => {
      const w = make({ languages: { ruby: { file: "main.rb", command: ["ruby", "{file}"] } } });
      const err = await rejection(run({ language: "ruby", code: "puts 1" }, "code_execution", w));
      expect(err.code).toBe("WORKER_ERROR");
      expect(err.message).toContain(`language ruby: ruby is not available in image ${IMAGE}`);
    });

    it("runs a docker_task: image, shell command, env, workdir", async () => {
      const out = await run(
        { image: IMAGE, command: "echo $FOO; pwd", env: { FOO: "bar" }, workdir: "/job/run" },
        "docker_task",
      );
      expect(out.stdout).toBe("bar\n/job/run\n");
      const argv = await run({ image: IMAGE, command: ["echo", "a b"] }, "docker_task");
      expect(argv.stdout).toBe("a b\n");
    });

    it("fails the task on a non-zero exit, with the output; or returns it when asked", async () => {
      const code = "import sys\nprint('partial')\nsys.exit(3)";
      const err = await rejection(run({ language: "python", code }));
      expect(err.code).toBe("WORKER_ERROR");
      expect(err.message).toContain("exited with code 3");
      expect(err.details).toMatchObject({ exitCode: 3, stdout: "partial\n", oomKilled: false });
      const out = await run({ language: "python", code, failOnNonZeroExit: false });
      expect(out.exitCode).toBe(3);
    });

    it("kills the container at its time limit", async () => {
      const started = Date.now();
      const err = await rejection(
        run({ language: "bash", code: "echo started; sleep 30", timeoutMs: 1000 }),
      );
      expect(err.code).toBe("TIMEOUT");
      expect(err.details).toMatchObject({ stdout: "started\n", timeoutMs: 1000 });
      expect(Date.now() - started).toBeLessThan(8000);
    });

    it("reports a memory kill", async () => {
      const out = await run({
        language: "python",
        code: "x = b'x' * (256 * 1024 * 1024)\nprint('survived')",
        limits: { memoryMb: 32 },
        failOnNonZeroExit: false,
      });
      expect(out.exitCode).toBe(137);
      expect(out.oomKilled).toBe(true);
      expect(out.killed).toBe("killed (likely out of memory)");
      expect(out.stdout).toBe("");
    });

    it("finishes promptly when flooded with output, keeping a capped, marked part", async () => {
      const w = make({ sizes: { maxOutputBytes: 64 * 1024 } });
      const { ctx: c, events } = ctx();
      const started = Date.now();
      const res = await w.execute(
        task("code_execution", {
          language: "bash",
          code: "head -c 20000000 /dev/zero | tr '\\0' a; echo done >&2",
        }),
        c,
      );
      const out = res.output as ContainerRunOutput;
      expect(Date.now() - started).toBeLessThan(15_000);
      expect(out.exitCode).toBe(0);
      expect(out.truncated).toBe(true);
      expect(out.stdout.startsWith("a".repeat(64 * 1024))).toBe(true);
      expect(out.stdout).toContain(
        `[output truncated: ${20_000_000 - 64 * 1024} of 20000000 bytes dropped]`,
      );
      expect(out.stderr).toBe("done\n");
      expect(streamed(events, "stdout")).toBe("a".repeat(64 * 1024));
    });

    it("puts input files in and collects declared output files", async () => {
      const bin = Buffer.from([0, 1, 2, 255]);
      const code = [
        "import os",
        "print(open('data/in.txt').read())",
        "print(list(open('blob.bin', 'rb').read()))",
        "os.makedirs('out/sub', exist_ok=True)",
        "open('out/result.txt', 'w').write('result!')",
        "open('out/sub/raw.bin', 'wb').write(bytes([200, 201]))",
        "open('single.txt', 'w').write('one')",
      ].join("\n");
      const out = await run({
        language: "python",
        code,
        files: {
          "data/in.txt": "hello file",
          "blob.bin": { content: bin.toString("base64"), encoding: "base64" },
        },
        outputFiles: ["out", "single.txt", "missing.txt"],
      });
      expect(out.stdout).toBe("hello file\n[0, 1, 2, 255]\n");
      expect(out.files["out/result.txt"]).toEqual({
        size: 7,
        encoding: "utf8",
        content: "result!",
      });
      expect(out.files["out/sub/raw.bin"]).toEqual({
        size: 2,
        encoding: "base64",
        content: Buffer.from([200, 201]).toString("base64"),
      });
      expect(out.files["single.txt"]).toEqual({ size: 3, encoding: "utf8", content: "one" });
      expect(out.missingFiles).toEqual(["missing.txt"]);
    });

    it("caps collected output files", async () => {
      const w = make({ sizes: { maxOutputFileBytes: 1000 } });
      const out = await run(
        {
          language: "bash",
          code: "head -c 5000 /dev/zero | tr '\\0' b > big.txt",
          outputFiles: ["big.txt"],
        },
        "code_execution",
        w,
      );
      expect(out.files["big.txt"]).toMatchObject({ size: 5000, truncated: true });
      expect(out.files["big.txt"]?.content).toBe("b".repeat(1000));
    });

    it("bounds the working directory: writing past workdirMb fails cleanly", async () => {
      const w = make({ workdirMb: 8 });
      const code = [
        "df -k . | tail -1",
        "head -c 20000000 /dev/zero > big.bin",
        "echo rc=$? size=$(stat -c %s big.bin)",
        "rm big.bin && echo small > small.txt && echo still-writable",
      ].join("\n");
      const out = await run(
        { language: "bash", code, outputFiles: ["small.txt"] },
        "code_execution",
        w,
      );
      expect(out.exitCode).toBe(0);
      expect(out.oomKilled).toBe(false);
      expect(out.stderr).toContain("No space left on device");
      expect(out.stdout).toMatch(/^tmpfs\s+8192\s/);
      const size = Number(/rc=1 size=(\d+)/.exec(out.stdout)?.[1]);
      expect(size).toBeLessThanOrEqual(8 * 1024 * 1024);
      expect(out.stdout).toContain("still-writable");
      expect(out.files["small.txt"]?.content).toBe("small\n");
      // The task is told and can go on; nothing outside the container filled up.
      const err = await rejection(
        run(
          { language: "bash", code: "head -c 20000000 /dev/zero > big.bin" },
          "code_execution",
          w,
        ),
      );
      expect(err.code).toBe("WORKER_ERROR");
      expect(err.message).toContain("No space left on device");
    });

    it("has no network but loopback", async () => {
      const out = await run({ language: "bash", code: "ls /sys/class/net" });
      expect(out.stdout.trim().split(/\s+/)).toEqual(["lo"]);
    });

    it("kills the container on cancellation", async () => {
      const ac = new AbortController();
      const { ctx: c, events } = ctx(ac.signal);
      const w = make();
      const p = w.execute(
        task("code_execution", { language: "bash", code: "echo up; sleep 30" }),
        c,
      );
      for (let i = 0; i < 200 && events.length === 0; i++)
        await new Promise((r) => setTimeout(r, 25));
      expect(streamed(events, "stdout")).toBe("up\n");
      const started = Date.now();
      ac.abort(new FlotillaError("CANCELLED", "cancelled by test"));
      const err = await rejection(p);
      expect(err.code).toBe("CANCELLED");
      expect(Date.now() - started).toBeLessThan(1000);
      // The container is killed and removed right after the caller got the cancellation.
      let left = await containersOf(w.id);
      for (let i = 0; i < 100 && left.length > 0; i++) {
        await new Promise((r) => setTimeout(r, 50));
        left = await containersOf(w.id);
      }
      expect(left).toEqual([]);
    });

    it("samples CPU and memory into progress while running", async () => {
      const w = make({ statsIntervalMs: 300 });
      const { ctx: c, events } = ctx();
      await w.execute(
        task("code_execution", {
          language: "python",
          code: "import time\nx = b'y' * (20 * 1024 * 1024)\nend = time.time() + 2.5\nwhile time.time() < end: pass",
        }),
        c,
      );
      const stats = events.filter((e) => (e as { type: string }).type === "stats") as {
        memoryBytes?: number;
        cpuPercent?: number;
      }[];
      expect(stats.length).toBeGreaterThanOrEqual(1);
      expect(stats.some((s) => (s.memoryBytes ?? 0) > 10 * 1024 * 1024)).toBe(true);
    });

    it("rejects bad input before any container exists", async () => {
      const w = make({ sizes: { maxCodeBytes: 100, maxInputBytes: 200 } });
      const create = vi.spyOn(w.docker, "createContainer");
      const bad: [unknown, string, string][] = [
        [{ language: "cobol", code: "x" }, "code_execution", 'unknown language "cobol"'],
        [{ language: "python", code: "x".repeat(101) }, "code_execution", "maxCodeBytes = 100"],
        [
          { language: "python", code: "1", files: { "a.txt": "y".repeat(300) } },
          "code_execution",
          "maxInputBytes = 200",
        ],
        [
          { language: "python", code: "1", limits: { memoryMb: 4096 } },
          "code_execution",
          "payload.limits.memoryMb: above the operator's ceiling memoryMb = 2048 MiB",
        ],
        [
          { language: "python", code: "1", timeoutMs: 10_000_000 },
          "code_execution",
          "payload.timeoutMs: above the operator's ceiling timeoutMs",
        ],
        [
          { language: "python", code: "1", network: true },
          "code_execution",
          "network is not allowed",
        ],
        [
          { language: "python", code: "1", files: { "../x": "y" } },
          "code_execution",
          "payload.files",
        ],
        [
          { language: "python", code: "1", outputFiles: ["/etc/passwd"] },
          "code_execution",
          "payload.outputFiles[0]",
        ],
        [{ language: "python", code: "1", env: { "A-B": "x" } }, "code_execution", "payload.env"],
        [{ command: ["true"] }, "docker_task", "payload.image"],
        [
          { image: IMAGE, workdir: "/" },
          "docker_task",
          "payload.workdir: expected an absolute path other than /",
        ],
        [{ image: IMAGE, command: [] }, "docker_task", "payload.command"],
        [
          { image: "localhost/flotilla-no-such-image:1", command: ["true"] },
          "docker_task",
          "is not present on the engine and pulling is disabled",
        ],
        [{ anything: 1 }, "unknown_type", 'does not run tasks of type "unknown_type"'],
      ];
      for (const [payload, type, expected] of bad) {
        const err = await rejection(w.execute(task(type, payload), ctx().ctx));
        expect(err.message).toContain(expected);
        expect(["VALIDATION", "WORKER_ERROR"]).toContain(err.code);
      }
      expect(create).not.toHaveBeenCalled();
      expect(await containersOf(w.id)).toEqual([]);
    });

    it("surfaces a failed pull from the progress stream", async () => {
      const w = make({ pull: "missing" });
      const create = vi.spyOn(w.docker, "createContainer");
      const err = await rejection(
        w.execute(
          task("docker_task", { image: "127.0.0.1:9/flotilla/missing:1", command: ["true"] }),
          ctx().ctx,
        ),
      );
      expect(err.code).toBe("WORKER_ERROR");
      expect(err.message).toContain(
        "image 127.0.0.1:9/flotilla/missing:1 is not present and pulling it failed:",
      );
      expect(create).not.toHaveBeenCalled();
    });

    it("pulls a missing image with progress from a registry it may reach", async () => {
      const registry = await startTestRegistry(registryPorts());
      try {
        const w = make({ pull: "missing" });
        const { ctx: c, events } = ctx();
        const err = await rejection(
          w.execute(task("docker_task", { image: registry.image, command: ["/hello"] }), c),
        );
        // The image holds one text file and no program: the pull worked, the start could not.
        expect(err.message).toContain(`sleep is not available in image ${registry.image}`);
        const pulls = events.filter((e) => (e as { type: string }).type === "pull") as {
          status?: string;
        }[];
        expect(pulls.length).toBeGreaterThan(0);
        // dockerd reports "Pull complete" for a layer, podman "Download complete".
        expect(pulls.some((p) => /Pull complete|Download complete/.test(p.status ?? ""))).toBe(
          true,
        );
        expect(registry.requests.some((r) => r.includes("/blobs/sha256:"))).toBe(true);
        await docker.getImage(registry.image).inspect();
      } finally {
        await docker
          .getImage(registry.image)
          .remove({ force: true })
          .catch(() => {});
        await registry.close();
      }
    });

    it("checks health with an engine ping", async () => {
      expect(await worker.healthCheck(AbortSignal.timeout(5000))).toEqual({ status: "healthy" });
      const dead = make({ host: "unix:///nonexistent/flotilla.sock" });
      const report = await dead.healthCheck(AbortSignal.timeout(5000));
      expect(report.status).toBe("unhealthy");
    });
  });

  describe(`DockerWorker ownership on ${engine}`, () => {
    it("removes containers left by an earlier run of the same worker id on start", async () => {
      const id = `test-orphans-${randomUUID().slice(0, 8)}`;
      const orphan = await docker.createContainer({
        Image: IMAGE,
        Cmd: ["sleep", "60"],
        Labels: { [LABEL_MANAGED]: "true", [LABEL_WORKER]: id },
        HostConfig: { NetworkMode: "none" },
      });
      await orphan.start();
      expect(await containersOf(id)).toHaveLength(1);
      const w = make({ id });
      await w.start();
      expect(await containersOf(id)).toEqual([]);
    });

    it("stop() kills what is running, rejects it with SHUTTING_DOWN, and is idempotent", async () => {
      const w = make();
      await w.start();
      const { ctx: c, events } = ctx();
      const p = w.execute(
        task("code_execution", { language: "bash", code: "echo up; sleep 30" }),
        c,
      );
      for (let i = 0; i < 200 && events.length === 0; i++)
        await new Promise((r) => setTimeout(r, 25));
      expect(await containersOf(w.id)).toHaveLength(1);
      const settled = rejection(p);
      await Promise.all([w.stop(), w.stop()]);
      const err = await settled;
      expect(err.code).toBe("SHUTTING_DOWN");
      expect(await containersOf(w.id)).toEqual([]);
      await w.stop();
    });

    it("serves tasks from a warm pool: each container is started ahead and used once", async () => {
      const w = make({ warmPool: { size: 2 } });
      await w.start();
      const warmOf = async () =>
        (
          await docker.listContainers({
            all: true,
            filters: { label: [`${LABEL_WORKER}=${w.id}`, `${LABEL_WARM}=true`] },
          })
        ).map((c) => c.Id);
      const until = async (what: () => Promise<boolean> | boolean) => {
        for (let i = 0; i < 400 && !(await what()); i++)
          await new Promise((r) => setTimeout(r, 50));
        expect(await what()).toBe(true);
      };
      await until(() => w.warmIdle === 2);
      const idle = await warmOf();
      expect(idle).toHaveLength(2);
      // Each task finds an empty working directory and /tmp: nothing of an earlier task.
      const code =
        "ls -A; ls -A /tmp; echo secret > left-behind.txt; echo secret > /tmp/left-behind.txt";
      const used: string[] = [];
      for (let i = 0; i < 3; i++) {
        const out = await run({ language: "bash", code }, "code_execution", w);
        expect(out.stdout).toBe("main.sh\n");
        used.push(out.containerId);
        await until(async () => !(await warmOf()).includes(out.containerId));
      }
      expect(new Set(used).size).toBe(3);
      expect(idle).toContain(used[0]);
      // A failed task's container is not reused either.
      const failed = await rejection(
        run({ language: "bash", code: "ls -A; exit 3" }, "code_execution", w),
      );
      expect(failed.details).toMatchObject({ exitCode: 3, stdout: "main.sh\n" });
      const failedId = (failed.details as ContainerRunOutput).containerId;
      expect(used).not.toContain(failedId);
      await until(async () => !(await warmOf()).includes(failedId));
      await until(() => w.warmIdle === 2);
      // A warm container that died while idle is replaced by a fresh one for the task.
      const [dead] = (await warmOf()).filter((id) => !used.includes(id));
      await docker.getContainer(dead!).kill();
      await until(async () => (await docker.getContainer(dead!).inspect()).State.Running === false);
      const afterDeath: string[] = [];
      for (let i = 0; i < 2; i++) {
        const out = await run({ language: "bash", code: "ls -A" }, "code_execution", w);
        expect(out.stdout).toBe("main.sh\n");
        afterDeath.push(out.containerId);
      }
      expect(afterDeath).not.toContain(dead);
      // Refilled in the background up to the size.
      await until(() => w.warmIdle === 2);
      // Another profile (other limits) runs cold, then is kept warm too.
      const other = await run(
        { language: "bash", code: "true", limits: { memoryMb: 64 } },
        "code_execution",
        w,
      );
      expect(idle).not.toContain(other.containerId);
      await until(() => w.warmIdle === 4);
      await w.stop();
      expect(await containersOf(w.id)).toEqual([]);
      const { Volumes } = await docker.listVolumes({
        filters: { label: [`${LABEL_WORKER}=${w.id}`] },
      });
      expect(Volumes ?? []).toEqual([]);
    });

    it("measures per-container latency (create, start, wait, remove)", async () => {
      const n = 5;
      const started = performance.now();
      for (let i = 0; i < n; i++) {
        const out = await run({ language: "bash", code: "true" });
        expect(out.exitCode).toBe(0);
      }
      const ms = (performance.now() - started) / n;
      console.log(
        `[${engine}] per-container latency (sequential bash 'true'): ${ms.toFixed(0)} ms`,
      );
      expect(ms).toBeLessThan(5000);
    });
  });
}
