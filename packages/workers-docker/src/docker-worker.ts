import { randomUUID } from "node:crypto";
import type { Readable } from "node:stream";
import { StringDecoder } from "node:string_decoder";
import {
  abortReason,
  BaseWorker,
  type ExecutionContext,
  FlotillaError,
  type HealthReport,
  type TimerHandle,
  type WorkerResult,
  type WorkerTask,
} from "@flotilla/core";
import Docker from "dockerode";
import { buildInputTar, CappedBuffer, Demuxer, type OutputFile, readOutputTar } from "./io.js";
import { type DockerWorkerOptions, type ResolvedOptions, resolveOptions } from "./options.js";
import {
  type CodeExecutionPayload,
  type DockerTaskPayload,
  decodeFiles,
  parsePayload,
  payloadSchemas,
} from "./payload.js";
import { WarmPool } from "./warm-pool.js";

/**
 * Label every container of a Flotilla worker carries (value `"true"`).
 *
 * @example
 * ```ts
 * await docker.listContainers({ all: true, filters: { label: [`${LABEL_MANAGED}=true`] } });
 * ```
 */
export const LABEL_MANAGED = "io.flotilla.managed";
/** Label with the id of the worker that created the container. */
export const LABEL_WORKER = "io.flotilla.worker";
/** Label with the id of the task the container runs (a warm container has none: it was started before its task was known). */
export const LABEL_TASK = "io.flotilla.task";
/** Label of a container started ahead of its task by the warm pool (value `"true"`). */
export const LABEL_WARM = "io.flotilla.warm";

/** The output of a task run in a container. */
export interface ContainerRunOutput {
  /** The process's exit code (137 when killed). */
  exitCode: number;
  /** Stdout, cut at `maxOutputBytes` with a marker when longer. */
  stdout: string;
  /** Stderr, cut at `maxOutputBytes` with a marker when longer. */
  stderr: string;
  /** Whether stdout or stderr was cut. */
  truncated: boolean;
  /** Wall time from start to exit, in ms. */
  durationMs: number;
  /** The kernel killed it for memory (dockerd reports it; on podman: exit 137 the worker did not cause). */
  oomKilled: boolean;
  /** Why it was killed, when it was: `"killed (likely out of memory)"`. */
  killed?: string;
  /** Collected output files, by path relative to the working directory. */
  files: Record<string, OutputFile>;
  /** Requested output paths that did not exist. */
  missingFiles: string[];
  image: string;
  containerId: string;
}

/** A CPU/memory sample of a running container, sent as task progress. */
export interface ContainerStatsProgress {
  type: "stats";
  containerId: string;
  /** CPU use since the previous sample, in percent of one core (200 = two cores busy). */
  cpuPercent?: number;
  memoryBytes?: number;
  memoryLimitBytes?: number;
  pids?: number;
}

/** A chunk of stdout/stderr, sent as task progress while the container runs. */
export interface ContainerOutputProgress {
  type: "output";
  stream: "stdout" | "stderr";
  text: string;
}

/** A line of an image pull, sent as task progress. */
export interface ImagePullProgress {
  type: "pull";
  image: string;
  status?: string;
  id?: string;
  progress?: string;
}

interface RunSpec {
  image: string;
  cmd?: string[];
  env: string[];
  workdir: string;
  files: { path: string; data: Buffer; mode: number }[];
  outputFiles: string[];
  memoryMb: number;
  cpus: number;
  pids: number;
  timeoutMs: number;
  network: boolean;
  failOnNonZeroExit: boolean;
  /** Language of a code_execution task (for a clear error when its interpreter is missing). */
  language?: string;
}

const KILLED_OOM = "killed (likely out of memory)";
/** How engines word an executable that is not in the image. */
const NOT_FOUND = /executable file not found|no such file or directory|not found in \$PATH/i;

/** What a container is started for: a warm container serves only a task of the same profile. */
interface Profile {
  key: string;
  image: string;
  memoryMb: number;
  cpus: number;
  pids: number;
  network: boolean;
  /** Where the working directory's tmpfs is mounted. */
  mount: string;
}

/** A started container whose idle process keeps it up until its one task runs in it. */
interface Sandbox {
  container: Docker.Container;
  /** The tmpfs volume of the working directory (dockerd), removed with the container. */
  volume?: string;
}

function connection(host: DockerWorkerOptions["host"]): Docker.DockerOptions | undefined {
  if (host === undefined) return undefined;
  if (typeof host !== "string") return host;
  const url = new URL(host);
  if (url.protocol === "unix:") return { socketPath: url.pathname };
  return {
    host: url.hostname,
    port: Number(url.port || (url.protocol === "https:" ? 2376 : 2375)),
    protocol: url.protocol === "https:" ? "https" : "http",
  };
}

function statusOf(err: unknown): number | undefined {
  const s = (err as { statusCode?: unknown } | null)?.statusCode;
  return typeof s === "number" ? s : undefined;
}

function messageOf(err: unknown): string {
  const json = (err as { json?: { message?: unknown } } | null)?.json;
  if (json && typeof json.message === "string") return json.message;
  if (err instanceof Error) return err.message;
  return String(err);
}

/** Settles with `work`, or rejects as soon as one of the signals aborts (with its reason). */
function untilAborted<T>(work: Promise<T>, ...signals: AbortSignal[]): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = (signal: AbortSignal) => () => {
      cleanup();
      reject(signal === signals[0] ? abortReason(signal) : signal.reason);
    };
    const listeners = signals.map((signal) => {
      const fn = onAbort(signal);
      signal.addEventListener("abort", fn, { once: true });
      return [signal, fn] as const;
    });
    const cleanup = () => {
      for (const [signal, fn] of listeners) signal.removeEventListener("abort", fn);
    };
    for (const signal of signals) {
      if (signal.aborted) {
        onAbort(signal)();
        return;
      }
    }
    work.then(
      (v) => {
        cleanup();
        resolve(v);
      },
      (err: unknown) => {
        cleanup();
        reject(err);
      },
    );
  });
}

/**
 * Where the working directory's volume is mounted. Engines do not let an archive change the
 * owner or mode of the directory it is unpacked into, so a working directory two or more
 * levels deep (`/workspace/job`) is created, world-writable, inside a volume mounted at its
 * parent; a top-level one (`/app`) is the volume itself, writable as the image made it.
 */
function volumeLayout(workdir: string): { mount: string; dir: string } {
  const clean = workdir.replace(/\/+$/, "");
  const cut = clean.lastIndexOf("/");
  if (cut <= 0) return { mount: clean || "/", dir: "" };
  return { mount: clean.slice(0, cut), dir: clean.slice(cut + 1) };
}

/**
 * Runs `code_execution` snippets (python, bash, node) and `docker_task` containers on a
 * Docker Engine or podman's Docker-compatible API, one container per task (never reused),
 * locked down by default: no network, memory/CPU/pids limits, read-only root with tmpfs
 * `/tmp` and working directory (`workdirMb`), user nobody, all capabilities dropped,
 * no-new-privileges. The container is started with an idle process and the task's command
 * runs in it (`exec`); with `warmPool`, containers are started ahead of their tasks.
 *
 * `code_execution` payload: `{ language, code, args?, files?, outputFiles?, env?, limits?,
 * timeoutMs?, network?, failOnNonZeroExit? }`. `docker_task` payload: `{ image, command?,
 * workdir?, files?, outputFiles?, env?, limits?, timeoutMs?, network?, failOnNonZeroExit? }`.
 * The output is a {@link ContainerRunOutput}.
 *
 * @example
 * ```ts
 * const worker = new DockerWorker({ id: "docker-1", host: "unix:///var/run/docker.sock" });
 * await worker.start(); // removes containers a previous "docker-1" left behind
 * await orchestrator.register(worker);
 * await orchestrator.submit({ type: "code_execution", payload: { language: "python", code: "print(6*7)" } });
 * ```
 */
export class DockerWorker extends BaseWorker {
  readonly kind = "docker";
  /** The dockerode client (for callers who need the engine directly). */
  readonly docker: Docker;
  readonly #opts: ResolvedOptions;
  readonly #schemas: ReturnType<typeof payloadSchemas>;
  /** Executions still running (including those whose caller already got an abort). */
  readonly #inflight = new Set<Promise<unknown>>();
  /** Containers this worker created and has not removed yet. */
  readonly #live = new Map<string, Sandbox>();
  /** Removals of used containers going on in the background. */
  readonly #removals = new Set<Promise<unknown>>();
  /** Idle containers started ahead of tasks (when `warmPool` is set). */
  #pool: WarmPool<Profile, Sandbox> | undefined;
  #kind: Promise<"docker" | "podman"> | undefined;
  /** Aborted by stop(): running executions kill their containers. */
  #stopping = new AbortController();

  /** @param options see {@link DockerWorkerOptions}; `VALIDATION` naming the field when wrong. */
  constructor(options: DockerWorkerOptions = {}) {
    const opts = resolveOptions(options);
    super(
      {
        ...(options.id === undefined ? {} : { id: options.id }),
        ...(options.name === undefined ? {} : { name: options.name }),
        taskTypes: options.taskTypes ?? ["code_execution", "docker_task"],
        maxConcurrency: options.maxConcurrency ?? 2,
        capabilities: options.capabilities ?? [],
        labels: options.labels ?? {},
        local: true,
      },
      "docker",
    );
    this.#opts = opts;
    this.#schemas = payloadSchemas(opts);
    this.docker = new Docker(connection(options.host));
    this.#pool = this.#newPool();
  }

  #newPool(): WarmPool<Profile, Sandbox> | undefined {
    const w = this.#opts.warmPool;
    if (!w) return undefined;
    return new WarmPool<Profile, Sandbox>({
      size: w.size,
      maxProfiles: w.maxProfiles,
      create: (p) => this.#createSandbox(p),
      destroy: (sb) => this.#remove(sb),
      onError: () => {},
      now: () => Date.now(),
    });
  }

  /**
   * Idle containers of the warm pool, ready for a task (0 without `warmPool`).
   *
   * @example
   * ```ts
   * const w = new DockerWorker({ warmPool: { size: 2 } });
   * await w.start();
   * w.warmIdle; // 0 at first, 2 once the pool has filled
   * ```
   */
  get warmIdle(): number {
    return this.#pool?.idle() ?? 0;
  }

  /**
   * Languages `code_execution` accepts.
   *
   * @example
   * ```ts
   * new DockerWorker().languages; // ["python", "bash", "node"]
   * ```
   */
  get languages(): string[] {
    return Object.keys(this.#opts.languages);
  }

  /** Removes containers this worker's id left behind (a crash, a killed process). */
  protected override async onStart(): Promise<void> {
    this.#stopping = new AbortController();
    try {
      await this.docker.ping();
      await this.removeOrphans();
      if (this.#pool?.closed) this.#pool = this.#newPool();
    } catch (err) {
      throw new FlotillaError(
        "WORKER_ERROR",
        `docker worker ${this.id} cannot use the engine: ${messageOf(err)}`,
        {
          cause: err,
          retryable: true,
        },
      );
    }
    // The default code_execution profile is warmed at once when its image is here (no pull).
    const pool = this.#pool;
    if (pool) {
      const o = this.#opts;
      const profile = this.#profileOf({
        image: o.image,
        ...o.defaults,
        network: false,
        workdir: o.workdir,
      });
      this.docker
        .getImage(o.image)
        .inspect()
        .then(
          () => pool.warm(profile.key, profile),
          () => {},
        );
    }
  }

  /**
   * Stops the worker: kills and removes every container it started (see `onStop`). A worker
   * that was never started still waits for the removal of the containers of tasks it ran.
   *
   * @example
   * ```ts
   * await worker.stop(); // nothing of this worker is left on the engine
   * ```
   */
  override async stop(): Promise<void> {
    await super.stop();
    await this.#pool?.close();
    await Promise.allSettled([...this.#removals]);
  }

  /** Kills and removes every container it started; running executions reject with `SHUTTING_DOWN`. */
  protected override async onStop(): Promise<void> {
    this.#stopping.abort(
      new FlotillaError("SHUTTING_DOWN", `docker worker ${this.id} is stopping`),
    );
    await this.#pool?.close();
    await Promise.all([...this.#live.values()].map((sb) => this.#remove(sb).catch(() => {})));
    // Executions wind down (their containers are gone); give them a bounded moment.
    await Promise.race([
      Promise.allSettled([...this.#inflight, ...this.#removals]),
      new Promise((resolve) => setTimeout(resolve, 10_000).unref()),
    ]);
    await this.removeOrphans().catch(() => {});
  }

  /**
   * Removes every container labelled with this worker's id (running or not) and returns how
   * many. `start()` calls it.
   *
   * @example
   * ```ts
   * const removed = await worker.removeOrphans();
   * ```
   */
  async removeOrphans(): Promise<number> {
    const list = await this.docker.listContainers({
      all: true,
      filters: { label: [`${LABEL_WORKER}=${this.id}`] },
    });
    await Promise.all(list.map((c) => this.#remove({ container: this.docker.getContainer(c.Id) })));
    // dockerd's working-directory volumes outlive their containers only after a crash.
    const { Volumes } = await this.docker.listVolumes({
      filters: { label: [`${LABEL_WORKER}=${this.id}`] },
    });
    await Promise.all((Volumes ?? []).map((v) => this.#removeVolume(v.Name).catch(() => {})));
    return list.length;
  }

  /**
   * Health is the engine's ping: `healthy` when it answers, `unhealthy` otherwise.
   *
   * @example
   * ```ts
   * const report = await worker.healthCheck(AbortSignal.timeout(2000));
   * ```
   */
  override async healthCheck(signal: AbortSignal): Promise<HealthReport> {
    if (signal.aborted) return { status: "unhealthy", message: "health check aborted" };
    try {
      await new Promise<void>((resolve, reject) => {
        const onAbort = () => reject(new Error("health check aborted"));
        signal.addEventListener("abort", onAbort, { once: true });
        (this.docker.ping({ abortSignal: signal } as never) as unknown as Promise<unknown>).then(
          () => {
            signal.removeEventListener("abort", onAbort);
            resolve();
          },
          (err: unknown) => {
            signal.removeEventListener("abort", onAbort);
            reject(err);
          },
        );
      });
      return { status: "healthy" };
    } catch (err) {
      return { status: "unhealthy", message: `engine ping failed: ${messageOf(err)}` };
    }
  }

  /**
   * Runs the task in a fresh container and removes the container afterwards.
   *
   * Fails with `VALIDATION` (before any container exists) for a bad payload, an unknown
   * language, oversized code or files, limits above the ceilings, or a network not allowed;
   * `WORKER_ERROR` for a missing image, a missing interpreter, or a non-zero exit (when
   * `failOnNonZeroExit`; `details` is the {@link ContainerRunOutput}); `TIMEOUT` when the
   * time limit killed it; the signal's reason when it was cancelled.
   *
   * @example
   * ```ts
   * const { output } = await worker.execute(task, ctx);
   * console.log(output.exitCode, output.stdout);
   * ```
   */
  async execute(
    task: WorkerTask,
    ctx: ExecutionContext,
  ): Promise<WorkerResult<ContainerRunOutput>> {
    const spec = this.#spec(task);
    ctx.signal.throwIfAborted();
    if (this.#stopping.signal.aborted) throw this.#stopping.signal.reason;
    // The work goes on in the background after an abort (killing and removing the
    // container); the caller gets the abort at once. stop() waits for what is left.
    const work = (async () => {
      const image = await this.#ensureImage(spec.image, ctx);
      ctx.signal.throwIfAborted();
      return this.#run(task, spec, ctx, image);
    })();
    this.#inflight.add(work);
    work.then(
      () => this.#inflight.delete(work),
      () => this.#inflight.delete(work),
    );
    let output: ContainerRunOutput;
    try {
      output = await untilAborted(work, ctx.signal, this.#stopping.signal);
    } catch (err) {
      throw this.#typed(err, ctx);
    }
    if (output.exitCode !== 0 && spec.failOnNonZeroExit) {
      const why = output.killed ? ` (${output.killed})` : "";
      const tail = (output.stderr || output.stdout).slice(-500);
      throw new FlotillaError(
        "WORKER_ERROR",
        `container exited with code ${output.exitCode}${why}${tail ? `: ${tail}` : ""}`,
        {
          retryable: false,
          details: output,
        },
      );
    }
    return { output };
  }

  /** Validates the payload and turns it into what the container needs. */
  #spec(task: WorkerTask): RunSpec {
    const o = this.#opts;
    if (task.type === "code_execution") {
      const p = parsePayload<CodeExecutionPayload>(this.#schemas.code, task.payload, task.type);
      const lang = o.languages[p.language]!;
      const workdir = o.workdir;
      const codeFile = { path: lang.file, data: Buffer.from(p.code, "utf8"), mode: 0o644 };
      const files = decodeFiles(p.files, o.sizes.maxInputBytes, codeFile.data.length);
      if (files.some((f) => f.path === lang.file)) {
        throw new FlotillaError(
          "VALIDATION",
          `invalid code_execution payload: payload.files.${lang.file}: clashes with the code file`,
        );
      }
      const cmd = [
        ...lang.command.map((a) => a.replaceAll("{file}", `${workdir}/${lang.file}`)),
        ...(p.args ?? []),
      ];
      return this.#limits(task, p, {
        image: lang.image ?? o.image,
        cmd,
        workdir,
        files: [codeFile, ...files],
        language: p.language,
      });
    }
    if (task.type === "docker_task") {
      const p = parsePayload<DockerTaskPayload>(this.#schemas.docker, task.payload, task.type);
      const cmd =
        p.command === undefined
          ? undefined
          : typeof p.command === "string"
            ? ["/bin/sh", "-c", p.command]
            : p.command;
      return this.#limits(task, p, {
        image: p.image,
        ...(cmd ? { cmd } : {}),
        workdir: p.workdir ?? o.workdir,
        files: decodeFiles(p.files, o.sizes.maxInputBytes),
      });
    }
    throw new FlotillaError(
      "VALIDATION",
      `docker worker does not run tasks of type ${JSON.stringify(task.type)}`,
    );
  }

  #limits(
    task: WorkerTask,
    p: CodeExecutionPayload | DockerTaskPayload,
    base: Pick<RunSpec, "image" | "workdir" | "files"> & Partial<RunSpec>,
  ): RunSpec {
    const d = this.#opts.defaults;
    // The task's own timeout (the orchestrator's) counts too, held to the ceiling.
    const taskTimeout =
      task.timeoutMs === undefined
        ? undefined
        : Math.min(task.timeoutMs, this.#opts.ceilings.timeoutMs);
    const timeouts = [p.timeoutMs, p.limits?.timeoutMs, taskTimeout].filter(
      (t): t is number => t !== undefined,
    );
    return {
      env: [
        "HOME=/tmp",
        "PYTHONDONTWRITEBYTECODE=1",
        "PYTHONUNBUFFERED=1",
        ...Object.entries(p.env ?? {}).map(([k, v]) => `${k}=${v}`),
      ],
      outputFiles: p.outputFiles ?? [],
      memoryMb: p.limits?.memoryMb ?? d.memoryMb,
      cpus: p.limits?.cpus ?? d.cpus,
      pids: p.limits?.pids ?? d.pids,
      timeoutMs: timeouts.length ? Math.min(...timeouts) : d.timeoutMs,
      network: p.network === true,
      failOnNonZeroExit: p.failOnNonZeroExit ?? this.#opts.failOnNonZeroExit,
      ...base,
    };
  }

  /** Checks the image is present; pulls it (with progress) where allowed. */
  async #ensureImage(image: string, ctx: ExecutionContext): Promise<Docker.ImageInspectInfo> {
    try {
      return await this.docker.getImage(image).inspect();
    } catch (err) {
      if (statusOf(err) !== 404) {
        throw new FlotillaError(
          "WORKER_ERROR",
          `cannot inspect image ${image}: ${messageOf(err)}`,
          { cause: err, retryable: true },
        );
      }
    }
    if (this.#opts.pull === "never") {
      throw new FlotillaError(
        "WORKER_ERROR",
        `image ${image} is not present on the engine and pulling is disabled (pull: "never")`,
        {
          retryable: false,
        },
      );
    }
    let pullError: string | undefined;
    try {
      const stream = (await this.docker.pull(image, { abortSignal: ctx.signal })) as Readable;
      await new Promise<void>((resolve, reject) => {
        this.docker.modem.followProgress(
          stream,
          (err) => (err ? reject(err) : resolve()),
          (ev: {
            status?: string;
            id?: string;
            progress?: string;
            error?: string;
            errorDetail?: { message?: string };
          }) => {
            if (ev.error || ev.errorDetail?.message)
              pullError = ev.errorDetail?.message ?? ev.error;
            const progress: ImagePullProgress = { type: "pull", image };
            if (ev.status) progress.status = ev.status;
            if (ev.id) progress.id = ev.id;
            if (ev.progress) progress.progress = ev.progress;
            ctx.progress(progress);
          },
        );
      });
    } catch (err) {
      ctx.signal.throwIfAborted();
      pullError = messageOf(err);
    }
    if (pullError === undefined) {
      // Some engines end the stream without an error line although nothing was pulled.
      try {
        return await this.docker.getImage(image).inspect();
      } catch {
        pullError = "the pull ended but the image is still missing";
      }
    }
    throw new FlotillaError(
      "WORKER_ERROR",
      `image ${image} is not present and pulling it failed: ${pullError}`,
      {
        retryable: false,
      },
    );
  }

  /** Profile of the container a spec needs: what a warm container must match. */
  #profileOf(
    spec: Pick<RunSpec, "image" | "memoryMb" | "cpus" | "pids" | "network" | "workdir">,
  ): Profile {
    const mount = volumeLayout(spec.workdir).mount;
    const { image, memoryMb, cpus, pids, network } = spec;
    return {
      key: JSON.stringify([image, memoryMb, cpus, pids, network, mount]),
      image,
      memoryMb,
      cpus,
      pids,
      network,
      mount,
    };
  }

  /** dockerd or podman (they need different mounts for a sized working directory). */
  #engineKind(): Promise<"docker" | "podman"> {
    if (!this.#kind) {
      this.#kind = this.docker.version().then((v) => {
        const names = [
          ...(v.Components ?? []).map((c) => c.Name),
          (v as { Platform?: { Name?: string } }).Platform?.Name ?? "",
        ];
        return names.some((n) => /podman/i.test(n)) ? "podman" : "docker";
      });
      this.#kind.catch(() => {
        this.#kind = undefined;
      });
    }
    return this.#kind;
  }

  /**
   * Creates and starts a container of the profile whose idle process keeps it up; the task's
   * process runs in it later (`exec`). The working directory's parent is a tmpfs of
   * `workdirMb`: on dockerd a tmpfs volume (files can be copied into a volume of a running
   * container), on podman a tmpfs mount (podman copies into the running container's mounts).
   */
  async #createSandbox(p: Profile, taskId?: string): Promise<Sandbox> {
    const o = this.#opts;
    const kind = await this.#engineKind();
    const labels: Record<string, string> = {
      [LABEL_MANAGED]: "true",
      [LABEL_WORKER]: this.id,
      ...(taskId === undefined ? { [LABEL_WARM]: "true" } : { [LABEL_TASK]: taskId }),
    };
    const sized = `size=${o.workdirMb}m,mode=1777`;
    const tmpfs: Record<string, string> = {};
    if (p.mount !== "/tmp") tmpfs["/tmp"] = `rw,nosuid,nodev,size=${o.tmpfsMb}m,mode=1777`;
    const mounts: { Type: "volume"; Source: string; Target: string }[] = [];
    let volume: string | undefined;
    if (kind === "podman") tmpfs[p.mount] = `rw,nosuid,nodev,${sized}`;
    else {
      volume = `flotilla-${randomUUID()}`;
      await this.docker.createVolume({
        Name: volume,
        Driver: "local",
        DriverOpts: { type: "tmpfs", device: "tmpfs", o: `${sized},nosuid,nodev` },
        Labels: labels,
      });
      mounts.push({ Type: "volume", Source: volume, Target: p.mount });
    }
    const [entry, ...args] = o.idleCommand;
    let container: Docker.Container;
    try {
      container = await this.docker.createContainer({
        Image: p.image,
        // The image's entrypoint is replaced so the idle command runs as it is; the task's
        // command gets the entrypoint back (see #command).
        Entrypoint: [entry!],
        Cmd: args,
        Env: [],
        User: o.user,
        Labels: labels,
        AttachStdin: false,
        AttachStdout: false,
        AttachStderr: false,
        OpenStdin: false,
        Tty: false,
        NetworkDisabled: !p.network,
        HostConfig: {
          NetworkMode: p.network ? o.networkMode : "none",
          Memory: p.memoryMb * 1024 * 1024,
          MemorySwap: p.memoryMb * 1024 * 1024,
          NanoCpus: Math.round(p.cpus * 1e9),
          // The idle process takes one.
          PidsLimit: p.pids + 1,
          ReadonlyRootfs: true,
          Tmpfs: tmpfs,
          ...(mounts.length ? { Mounts: mounts } : {}),
          CapDrop: ["ALL"],
          SecurityOpt: ["no-new-privileges"],
          // podman needs both or neither.
          Ulimits: [
            { Name: "nofile", Soft: o.ulimits.nofile, Hard: o.ulimits.nofile },
            { Name: "nproc", Soft: o.ulimits.nproc, Hard: o.ulimits.nproc },
          ],
          Privileged: false,
          AutoRemove: false,
          LogConfig: { Type: "json-file", Config: {} },
        },
      });
    } catch (err) {
      if (volume) await this.#removeVolume(volume).catch(() => {});
      throw err;
    }
    const sandbox: Sandbox = { container, ...(volume ? { volume } : {}) };
    this.#live.set(container.id, sandbox);
    try {
      await container.start();
    } catch (err) {
      await this.#remove(sandbox).catch(() => {});
      throw this.#startError(err, p.image, o.idleCommand[0]!, "the idle command ");
    }
    return sandbox;
  }

  /** Removes a used (or unusable) container in the background; stop() waits for it. */
  #discard(sandbox: Sandbox, logger?: ExecutionContext["logger"]): void {
    const removal = this.#remove(sandbox).catch((err: unknown) =>
      logger?.warn({ err, containerId: sandbox.container.id }, "cannot remove container"),
    );
    this.#removals.add(removal);
    removal.finally(() => this.#removals.delete(removal));
  }

  async #run(
    task: WorkerTask,
    spec: RunSpec,
    ctx: ExecutionContext,
    image: Docker.ImageInspectInfo,
  ): Promise<ContainerRunOutput> {
    const o = this.#opts;
    const clock = ctx.clock;
    const layout = volumeLayout(spec.workdir);
    const cmd = this.#command(spec, image);
    const profile = this.#profileOf(spec);
    const tar = await buildInputTar(spec.files, layout.dir);
    // A warm container serves exactly this task and is removed after it, like a cold one.
    // Files in, and the task's process made (not started yet), in a container of the profile.
    const prepare = async (sb: Sandbox) => {
      await sb.container.putArchive(tar, { path: layout.mount });
      return sb.container.exec({
        Cmd: cmd,
        Env: spec.env,
        WorkingDir: spec.workdir,
        User: o.user,
        // No stdin: podman would feed an attach request's body to it.
        AttachStdin: false,
        AttachStdout: true,
        AttachStderr: true,
        Tty: false,
      });
    };
    let sandbox = this.#pool?.take(profile.key, profile);
    let exec: Docker.Exec | undefined;
    if (sandbox) {
      try {
        exec = await prepare(sandbox);
      } catch (err) {
        // It died while idle (killed, an engine restart): the task gets a fresh one.
        ctx.logger.warn({ err, containerId: sandbox.container.id }, "warm container unusable");
        this.#discard(sandbox, ctx.logger);
        sandbox = undefined;
      }
    }
    if (!sandbox || !exec) {
      ctx.signal.throwIfAborted();
      sandbox = await this.#createSandbox(profile, task.id);
      try {
        exec = await prepare(sandbox);
      } catch (err) {
        this.#discard(sandbox, ctx.logger);
        throw err;
      }
    }
    const container = sandbox.container;
    ctx.logger.debug({ containerId: container.id, image: spec.image }, "container ready");
    let killedBy: "timeout" | "cancel" | "stop" | undefined;
    let exited = false;
    const timers: TimerHandle[] = [];
    const kill = (why: "timeout" | "cancel" | "stop") => {
      if (exited || killedBy) return;
      killedBy = why;
      container.kill({ signal: "SIGKILL" }).catch(() => {});
    };
    const onAbort = () => kill("cancel");
    const onStop = () => kill("stop");
    try {
      const stdout = new CappedBuffer(o.sizes.maxOutputBytes);
      const stderr = new CappedBuffer(o.sizes.maxOutputBytes);
      // Decoders keep a UTF-8 character split across chunks whole in the progress text.
      const decoders = { 1: new StringDecoder("utf8"), 2: new StringDecoder("utf8") };
      const demux = new Demuxer((stream, data) => {
        const kept = (stream === 1 ? stdout : stderr).push(data);
        if (kept.length && o.streamOutput) {
          const text = decoders[stream].write(kept);
          if (!text) return;
          const ev: ContainerOutputProgress = {
            type: "output",
            stream: stream === 1 ? "stdout" : "stderr",
            text,
          };
          ctx.progress(ev);
        }
      });
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      this.#stopping.signal.addEventListener("abort", onStop, { once: true });
      if (ctx.signal.aborted) kill("cancel");
      if (this.#stopping.signal.aborted) kill("stop");
      if (killedBy) throw this.#abortError(killedBy, ctx);
      const startedAt = clock.now();
      let stream: Readable;
      try {
        stream = (await exec.start({ hijack: true, stdin: false })) as unknown as Readable;
      } catch (err) {
        if (killedBy) throw this.#abortError(killedBy, ctx);
        throw this.#startError(
          err,
          spec.image,
          cmd[0] ?? "",
          spec.language ? `language ${spec.language}: ` : "",
        );
      }
      timers.push(clock.setTimeout(() => kill("timeout"), spec.timeoutMs));
      if (o.statsIntervalMs > 0) this.#sampleStats(container, ctx, () => exited, timers);
      await new Promise<void>((resolve) => {
        stream.on("data", (c: Buffer) => demux.push(c));
        stream.on("end", resolve);
        stream.on("close", resolve);
        stream.on("error", () => resolve());
      });
      if (killedBy === "cancel" || killedBy === "stop") throw this.#abortError(killedBy, ctx);
      // The stream can end a moment before the engine records the exit (the time limit still
      // holds while waiting).
      // An engine may forget the exec of a container it just killed: then it was the kill.
      const inspectExec = () =>
        exec.inspect().catch((err: unknown) => {
          if (killedBy) return { Running: false, ExitCode: 137 } as Docker.ExecInspectInfo;
          throw err;
        });
      let info = await inspectExec();
      for (let i = 0; i < 200 && info.Running && !killedBy; i++) {
        await new Promise((r) => setTimeout(r, 25));
        info = await inspectExec();
      }
      const durationMs = clock.now() - startedAt;
      exited = true;
      for (const t of timers) clock.clearTimeout(t);
      const exitCode = typeof info.ExitCode === "number" && !info.Running ? info.ExitCode : 137;
      // A time limit that fired as the process was exiting on its own does not count.
      if (killedBy === "timeout" && exitCode !== 0) {
        throw this.#abortError(killedBy, ctx, spec, stdout.text(), stderr.text());
      }
      if (killedBy === "cancel" || killedBy === "stop") throw this.#abortError(killedBy, ctx);
      if ((exitCode === 126 || exitCode === 127) && NOT_FOUND.test(stdout.text() + stderr.text())) {
        throw this.#startError(
          new Error((stdout.text() + stderr.text()).trim()),
          spec.image,
          cmd[0] ?? "",
          spec.language ? `language ${spec.language}: ` : "",
        );
      }
      // The kernel's OOM kill is a SIGKILL the worker did not send (podman never reports
      // OOMKilled, and an exec'd process has no such flag on either engine).
      const oomKilled = exitCode === 137;
      const files: Record<string, OutputFile> = {};
      const missingFiles: string[] = [];
      const budget = { left: o.sizes.maxOutputFileBytes };
      for (const path of spec.outputFiles) {
        try {
          const tarOut = (await container.getArchive({
            path: `${spec.workdir}/${path}`,
          })) as unknown as Readable;
          const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
          await readOutputTar(tarOut, parent, budget, files);
        } catch (err) {
          if (statusOf(err) === 404) missingFiles.push(path);
          else
            throw new FlotillaError(
              "WORKER_ERROR",
              `cannot read output ${path}: ${messageOf(err)}`,
              { cause: err },
            );
        }
      }
      const out: ContainerRunOutput = {
        exitCode,
        stdout: stdout.text(),
        stderr: stderr.text(),
        truncated: stdout.truncated || stderr.truncated,
        durationMs,
        oomKilled,
        files,
        missingFiles,
        image: spec.image,
        containerId: container.id,
      };
      if (oomKilled) out.killed = KILLED_OOM;
      return out;
    } finally {
      exited = true;
      for (const t of timers) clock.clearTimeout(t);
      ctx.signal.removeEventListener("abort", onAbort);
      this.#stopping.signal.removeEventListener("abort", onStop);
      this.#discard(sandbox, ctx.logger);
    }
  }

  /** The task's argv: the image's entrypoint, then the task's command or the image's. */
  #command(spec: RunSpec, image: Docker.ImageInspectInfo): string[] {
    const entrypoint = image.Config?.Entrypoint;
    const ep = Array.isArray(entrypoint) ? entrypoint : entrypoint ? [entrypoint] : [];
    const cmd = [...ep, ...(spec.cmd ?? image.Config?.Cmd ?? [])];
    if (cmd.length === 0) {
      throw new FlotillaError(
        "VALIDATION",
        `invalid docker_task payload: payload.command: image ${spec.image} has no command of its own, so one is required`,
      );
    }
    return cmd;
  }

  /**
   * Errors leave as `FlotillaError`: the signal's reason when aborted, `SHUTTING_DOWN` when the
   * worker is stopping (its containers vanish under running calls), else `WORKER_ERROR`
   * (retryable: an engine hiccup).
   */
  #typed(err: unknown, ctx: ExecutionContext): Error {
    if (err instanceof FlotillaError) return err;
    if (ctx.signal.aborted && err === ctx.signal.reason) return err as Error;
    if (ctx.signal.aborted) return abortReason(ctx.signal);
    if (this.#stopping.signal.aborted) return this.#stopping.signal.reason as Error;
    return new FlotillaError("WORKER_ERROR", `container engine error: ${messageOf(err)}`, {
      cause: err,
      retryable: true,
    });
  }

  #abortError(
    why: "timeout" | "cancel" | "stop",
    ctx: ExecutionContext,
    spec?: RunSpec,
    stdout?: string,
    stderr?: string,
  ): Error {
    if (why === "cancel") return abortReason(ctx.signal);
    if (why === "stop") return this.#stopping.signal.reason as Error;
    return new FlotillaError(
      "TIMEOUT",
      `container killed after its time limit of ${spec?.timeoutMs} ms`,
      {
        retryable: false,
        details: { stdout, stderr, timeoutMs: spec?.timeoutMs },
      },
    );
  }

  /** A start failure; a missing executable is named (`prefix` says whose: a language, the idle command). */
  #startError(err: unknown, image: string, exe: string, prefix = ""): FlotillaError {
    const msg = messageOf(err);
    if (NOT_FOUND.test(msg)) {
      return new FlotillaError(
        "WORKER_ERROR",
        `${prefix}${exe} is not available in image ${image} (${msg})`,
        { cause: err, retryable: false },
      );
    }
    return new FlotillaError("WORKER_ERROR", `container failed to start: ${msg}`, {
      cause: err,
      retryable: true,
    });
  }

  /** Samples CPU and memory every `statsIntervalMs` until the container exits. */
  #sampleStats(
    container: Docker.Container,
    ctx: ExecutionContext,
    done: () => boolean,
    timers: TimerHandle[],
  ): void {
    let prev: { cpu: number; system: number } | undefined;
    const tick = async () => {
      if (done()) return;
      try {
        const s = (await container.stats({ stream: false })) as Docker.ContainerStats;
        if (done()) return;
        const ev: ContainerStatsProgress = { type: "stats", containerId: container.id };
        const cpu = s.cpu_stats?.cpu_usage?.total_usage;
        const system = s.cpu_stats?.system_cpu_usage;
        const cores = s.cpu_stats?.online_cpus || s.cpu_stats?.cpu_usage?.percpu_usage?.length || 1;
        if (typeof cpu === "number" && typeof system === "number") {
          if (prev && system > prev.system) {
            ev.cpuPercent =
              Math.round(((cpu - prev.cpu) / (system - prev.system)) * cores * 1000) / 10;
          }
          prev = { cpu, system };
        }
        if (typeof s.memory_stats?.usage === "number") ev.memoryBytes = s.memory_stats.usage;
        if (typeof s.memory_stats?.limit === "number") ev.memoryLimitBytes = s.memory_stats.limit;
        const pids = (s as { pids_stats?: { current?: number } }).pids_stats?.current;
        if (typeof pids === "number") ev.pids = pids;
        ctx.progress(ev);
      } catch {
        // The container may have exited between the check and the call.
      }
      if (!done()) timers.push(ctx.clock.setTimeout(tick, this.#opts.statsIntervalMs));
    };
    timers.push(ctx.clock.setTimeout(tick, this.#opts.statsIntervalMs));
  }

  /** Force-removes a container with its anonymous volume; a missing container is fine. */
  async #remove(sandbox: Sandbox): Promise<void> {
    const id = sandbox.container.id;
    const volume = sandbox.volume ?? this.#live.get(id)?.volume;
    try {
      await this.docker.getContainer(id).remove({ force: true, v: true });
    } catch (err) {
      const s = statusOf(err);
      // 409: removal already in progress; podman answers 500 "no such container".
      if (s !== 404 && s !== 409 && !/no such container/i.test(messageOf(err))) {
        this.#live.delete(id);
        throw new FlotillaError(
          "WORKER_ERROR",
          `cannot remove container ${id}: ${messageOf(err)}`,
          { cause: err },
        );
      }
    }
    this.#live.delete(id);
    if (volume) await this.#removeVolume(volume);
  }

  /** Removes a volume; one still in use by a container being removed is retried briefly. */
  async #removeVolume(name: string): Promise<void> {
    for (let i = 0; ; i++) {
      try {
        await this.docker.getVolume(name).remove();
        return;
      } catch (err) {
        const s = statusOf(err);
        if (s === 404) return;
        if (s !== 409 || i >= 20) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}
