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
/** Label with the id of the task the container runs. */
export const LABEL_TASK = "io.flotilla.task";

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
 * Docker Engine or podman's Docker-compatible API, one container per task, locked down by
 * default: no network, memory/CPU/pids limits, read-only root with a writable `/tmp` tmpfs,
 * user nobody, all capabilities dropped, no-new-privileges.
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
 * orchestrator.registerWorker(worker);
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
  readonly #live = new Set<string>();
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
  }

  /** Kills and removes every container it started; running executions reject with `SHUTTING_DOWN`. */
  protected override async onStop(): Promise<void> {
    this.#stopping.abort(
      new FlotillaError("SHUTTING_DOWN", `docker worker ${this.id} is stopping`),
    );
    await Promise.all([...this.#live].map((id) => this.#remove(id)));
    // Executions wind down (their containers are gone); give them a bounded moment.
    await Promise.race([
      Promise.allSettled([...this.#inflight]),
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
    await Promise.all(list.map((c) => this.#remove(c.Id)));
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
      await this.#ensureImage(spec.image, ctx);
      ctx.signal.throwIfAborted();
      return this.#run(task, spec, ctx);
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
  async #ensureImage(image: string, ctx: ExecutionContext): Promise<void> {
    try {
      await this.docker.getImage(image).inspect();
      return;
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
        await this.docker.getImage(image).inspect();
        return;
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

  async #run(task: WorkerTask, spec: RunSpec, ctx: ExecutionContext): Promise<ContainerRunOutput> {
    const o = this.#opts;
    const clock = ctx.clock;
    const volume = volumeLayout(spec.workdir);
    const container = await this.docker.createContainer({
      Image: spec.image,
      ...(spec.cmd ? { Cmd: spec.cmd } : {}),
      Env: spec.env,
      WorkingDir: spec.workdir,
      User: o.user,
      Labels: {
        [LABEL_MANAGED]: "true",
        [LABEL_WORKER]: this.id,
        [LABEL_TASK]: task.id,
      },
      // The working directory lives in an anonymous volume: the task's files can be put in
      // while the root filesystem stays read-only, and output files read after exit.
      Volumes: { [volume.mount]: {} },
      AttachStdin: false,
      AttachStdout: true,
      AttachStderr: true,
      OpenStdin: false,
      Tty: false,
      NetworkDisabled: !spec.network,
      HostConfig: {
        NetworkMode: spec.network ? o.networkMode : "none",
        Memory: spec.memoryMb * 1024 * 1024,
        MemorySwap: spec.memoryMb * 1024 * 1024,
        NanoCpus: Math.round(spec.cpus * 1e9),
        PidsLimit: spec.pids,
        ReadonlyRootfs: true,
        Tmpfs: { "/tmp": `rw,nosuid,nodev,size=${o.tmpfsMb}m,mode=1777` },
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
    this.#live.add(container.id);
    ctx.logger.debug({ containerId: container.id, image: spec.image }, "container created");
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
      ctx.signal.throwIfAborted();
      await container.putArchive(await buildInputTar(spec.files, volume.dir), {
        path: volume.mount,
      });
      let stdout = new CappedBuffer(o.sizes.maxOutputBytes);
      let stderr = new CappedBuffer(o.sizes.maxOutputBytes);
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
      // Attached before start so output streams live; no stdin (podman would feed the
      // request body to it). podman prepares the container here, so a missing executable can
      // fail this call rather than start().
      const attach = (await container
        .attach({ stream: true, stdout: true, stderr: true })
        .catch((err: unknown) => {
          throw this.#startError(err, spec);
        })) as unknown as Readable;
      const streamEnded = new Promise<void>((resolve) => {
        attach.on("data", (c: Buffer) => demux.push(c));
        attach.on("end", resolve);
        attach.on("close", resolve);
        attach.on("error", () => resolve());
      });
      ctx.signal.addEventListener("abort", onAbort, { once: true });
      this.#stopping.signal.addEventListener("abort", onStop, { once: true });
      if (ctx.signal.aborted) kill("cancel");
      if (this.#stopping.signal.aborted) kill("stop");
      if (killedBy) {
        attach.destroy();
        throw this.#abortError(killedBy, ctx);
      }
      const startedAt = clock.now();
      try {
        await container.start();
      } catch (err) {
        attach.destroy();
        throw this.#startError(err, spec);
      }
      timers.push(clock.setTimeout(() => kill("timeout"), spec.timeoutMs));
      if (o.statsIntervalMs > 0) this.#sampleStats(container, ctx, () => exited, timers);
      // The attach stream ends when the process exits; one inspect then is about twice as
      // fast as podman's wait().
      await streamEnded;
      if (killedBy === "cancel" || killedBy === "stop") throw this.#abortError(killedBy, ctx);
      let info = await container.inspect();
      if (info.State.Running) {
        // The stream can end a moment before the engine records the exit (the time limit
        // still holds while waiting).
        await container.wait();
        info = await container.inspect();
      }
      exited = true;
      for (const t of timers) clock.clearTimeout(t);
      // A time limit that fired as the process was exiting on its own does not count.
      if (killedBy === "timeout" && info.State.ExitCode === 137) {
        throw this.#abortError(killedBy, ctx, spec, stdout.text(), stderr.text());
      }
      if (killedBy === "cancel" || killedBy === "stop") throw this.#abortError(killedBy, ctx);
      if (!stdout.full && !stderr.full) {
        // podman can connect an attach too late for a process that exits at once; the
        // container's log has everything, so it wins when it holds more.
        const fromLog = await this.#readLog(container, o.sizes.maxOutputBytes);
        if (
          fromLog &&
          fromLog.stdout.totalBytes + fromLog.stderr.totalBytes >
            stdout.totalBytes + stderr.totalBytes
        ) {
          ({ stdout, stderr } = fromLog);
        }
      }
      const finishedAt = Date.parse(info.State.FinishedAt);
      const engineStart = Date.parse(info.State.StartedAt);
      const durationMs =
        Number.isFinite(finishedAt) && Number.isFinite(engineStart) && finishedAt >= engineStart
          ? finishedAt - engineStart
          : clock.now() - startedAt;
      const exitCode = info.State.ExitCode;
      // dockerd reports OOMKilled; podman never does, so a SIGKILL the worker did not send counts.
      const oomKilled = info.State.OOMKilled === true || exitCode === 137;
      const files: Record<string, OutputFile> = {};
      const missingFiles: string[] = [];
      const budget = { left: o.sizes.maxOutputFileBytes };
      for (const path of spec.outputFiles) {
        try {
          const tar = (await container.getArchive({
            path: `${spec.workdir}/${path}`,
          })) as unknown as Readable;
          const parent = path.includes("/") ? path.slice(0, path.lastIndexOf("/")) : "";
          await readOutputTar(tar, parent, budget, files);
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
      await this.#remove(container.id).catch((err: unknown) =>
        ctx.logger.warn({ err, containerId: container.id }, "cannot remove container"),
      );
    }
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

  /** The container's whole log (after exit), split and capped like the live output. */
  async #readLog(
    container: Docker.Container,
    max: number,
  ): Promise<{ stdout: CappedBuffer; stderr: CappedBuffer } | undefined> {
    try {
      const raw = (await container.logs({ follow: false, stdout: true, stderr: true })) as unknown;
      const stdout = new CappedBuffer(max);
      const stderr = new CappedBuffer(max);
      const demux = new Demuxer((stream, data) => (stream === 1 ? stdout : stderr).push(data));
      if (Buffer.isBuffer(raw)) demux.push(raw);
      else {
        for await (const chunk of raw as Readable) demux.push(chunk as Buffer);
      }
      return { stdout, stderr };
    } catch {
      return undefined;
    }
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

  #startError(err: unknown, spec: RunSpec): FlotillaError {
    const msg = messageOf(err);
    if (/executable file not found|no such file or directory|not found in \$PATH/i.test(msg)) {
      const what = spec.language ? `language ${spec.language}: ` : "";
      const exe = spec.cmd?.[0] ?? "the image's command";
      return new FlotillaError(
        "WORKER_ERROR",
        `${what}${exe} is not available in image ${spec.image} (${msg})`,
        {
          cause: err,
          retryable: false,
        },
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
  async #remove(id: string): Promise<void> {
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
  }
}
