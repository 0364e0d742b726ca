import { mkdir, writeFile } from "node:fs/promises";
import { cpus, hostname, platform, totalmem } from "node:os";
import { join } from "node:path";
import {
  type Clock,
  FlotillaError,
  type Logger,
  silentLogger,
  systemClock,
  type TimerHandle,
} from "@flotilla/core";
import { FleetClient, fleetErrorStatus } from "../fleet/client.js";
import type { SessionLog, TaskAssignment } from "../fleet/schemas.js";

/** What an executor gets besides the assignment. */
export interface RunContext {
  /** Aborted on timeout, cancellation by the server, or a forced stop. */
  signal: AbortSignal;
  /** Where the task's files were downloaded (exists, possibly empty). */
  filesDir: string;
  /** Reports progress (renews the lease; shown on the task). */
  progress(message?: string, percent?: number): void;
  logger: Logger;
}

/** What an executor resolves to. Throw (or reject) to fail the task. */
export interface RunOutcome {
  /** Becomes the task's result (non-strings are JSON-encoded). */
  output?: unknown;
  /** A session log to upload before the final status. */
  session?: SessionLog;
}

/** Runs one assignment on this node. */
export type TaskExecutor = (task: TaskAssignment, ctx: RunContext) => Promise<RunOutcome>;

/** Options of {@link NodeRunner}. */
export interface NodeRunnerOptions {
  /** The server's base URL. */
  orchestratorUrl: string;
  /** The registration token. */
  registrationToken: string;
  /** Node name, matched by target globs. @default os.hostname() */
  name?: string;
  /** Runs each task. */
  execute: TaskExecutor;
  /** Where task files go (`<workDir>/tasks/<id[:8]>/files`). */
  workDir: string;
  /** Tasks run at once; each is one poll. @default 1 */
  slots?: number;
  /** Task types this node runs. @default ["agent_run"] */
  taskTypes?: string[];
  /**
   * Capabilities reported at registration, matched by `requirements.capabilities`. @default []
   */
  capabilities?: string[];
  /**
   * Labels reported at registration, matched by `requirements.labels` and `target.tags`. @default {}
   */
  labels?: Record<string, string>;
  /** Reported at registration. @default CPU count, memory, platform */
  resources?: Record<string, unknown>;
  /** Pause between polls that found nothing. @default 10000 */
  pollIntervalMs?: number;
  /** Busy heartbeats while a task runs (keep below the server's lease). @default 30000 */
  heartbeatIntervalMs?: number;
  /** Longest back-off after errors (exponential with jitter from `pollIntervalMs`). @default 60000 */
  maxBackoffMs?: number;
  /** Per-request timeout. @default 30000 */
  requestTimeoutMs?: number;
  /**
   * Time source for polls, heartbeats and back-off. @default systemClock
   */
  clock?: Clock;
  /**
   * Where the runner logs (never secrets). @default silentLogger
   */
  logger?: Logger;
  /** Random source for jitter, in [0, 1). @default Math.random */
  random?: () => number;
  /** For tests and proxies. @default globalThis.fetch */
  fetch?: typeof fetch;
}

interface Running {
  task: TaskAssignment;
  abort: AbortController;
}

/**
 * A pull-mode node: registers with a Flotilla server, polls for work (one poll per free
 * slot), downloads and verifies task files, runs each task with `execute`, heartbeats while
 * it runs, uploads its log, reports the outcome, re-registers after a 401, backs off with
 * jitter on errors, and stops gracefully.
 *
 * @example
 * ```ts
 * const runner = new NodeRunner({
 *   orchestratorUrl: "https://flotilla.example.com",
 *   registrationToken: process.env.FLOTILLA_REGISTRATION_TOKEN!,
 *   name: "edge-1",
 *   workDir: "/var/lib/flotilla-runner",
 *   execute: async (task) => ({ output: `echo: ${task.prompt}` }),
 * });
 * await runner.start();
 * process.on("SIGTERM", () => runner.stop());
 * ```
 */
export class NodeRunner {
  readonly client: FleetClient;
  readonly #o: Required<
    Omit<NodeRunnerOptions, "fetch" | "capabilities" | "labels" | "resources" | "name">
  > & {
    name: string;
    capabilities: string[];
    labels: Record<string, string>;
    resources: Record<string, unknown>;
  };
  readonly #running = new Map<string, Running>();
  #stopping = false;
  #started = false;
  #loops: Promise<void>[] = [];
  #registering: Promise<void> | undefined;
  #heartbeatTimer: TimerHandle | undefined;
  readonly #sleepers = new Set<() => void>();
  readonly #stopAbort = new AbortController();

  constructor(options: NodeRunnerOptions) {
    if (typeof options?.execute !== "function") {
      throw new FlotillaError("VALIDATION", "execute: expected a function");
    }
    if (!options.workDir) throw new FlotillaError("VALIDATION", "workDir: required");
    if (!options.registrationToken) {
      throw new FlotillaError("VALIDATION", "registrationToken: required");
    }
    const slots = options.slots ?? 1;
    if (!Number.isInteger(slots) || slots < 1) {
      throw new FlotillaError("VALIDATION", "slots: expected an integer >= 1");
    }
    this.#o = {
      orchestratorUrl: options.orchestratorUrl,
      registrationToken: options.registrationToken,
      name: options.name ?? hostname(),
      execute: options.execute,
      workDir: options.workDir,
      slots,
      taskTypes: options.taskTypes ?? ["agent_run"],
      capabilities: options.capabilities ?? [],
      labels: options.labels ?? {},
      resources: options.resources ?? {
        cpus: cpus().length,
        memory_mb: Math.round(totalmem() / 1024 / 1024),
        platform: platform(),
        arch: process.arch,
      },
      pollIntervalMs: options.pollIntervalMs ?? 10_000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 30_000,
      maxBackoffMs: options.maxBackoffMs ?? 60_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 30_000,
      clock: options.clock ?? systemClock,
      logger: options.logger ?? silentLogger,
      random: options.random ?? Math.random,
    };
    this.client = new FleetClient({
      baseUrl: options.orchestratorUrl,
      registrationToken: options.registrationToken,
      timeoutMs: this.#o.requestTimeoutMs,
      ...(options.fetch ? { fetch: options.fetch } : {}),
    });
  }

  /** Ids of the tasks running now. */
  get runningTaskIds(): string[] {
    return [...this.#running.keys()];
  }

  /**
   * Registers (retrying with back-off until it works or `stop()`), then starts polling.
   *
   * @example
   * ```ts
   * await runner.start();
   * process.once("SIGTERM", () => void runner.stop());
   * ```
   */
  async start(): Promise<void> {
    if (this.#started) throw new FlotillaError("INVALID_STATE", "this runner was already started");
    this.#started = true;
    await this.#register();
    this.#armHeartbeat();
    for (let i = 0; i < this.#o.slots; i++) this.#loops.push(this.#loop(i));
  }

  /**
   * Stops polling. Graceful (default): running tasks finish and report first. With
   * `{ abort: true }` they are aborted (and report an error). Resolves when all is done.
   *
   * @example
   * ```ts
   * await runner.stop(); // let running tasks finish and report
   * await runner.stop({ abort: true }); // or abort them
   * ```
   */
  async stop(options: { abort?: boolean } = {}): Promise<void> {
    this.#stopping = true;
    this.#stopAbort.abort();
    for (const wake of this.#sleepers) wake();
    if (options.abort) for (const r of this.#running.values()) r.abort.abort();
    await Promise.allSettled(this.#loops);
    this.#loops = [];
    if (this.#heartbeatTimer !== undefined) this.#o.clock.clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = undefined;
    if (this.client.hasApiKey) await this.client.heartbeat("offline").catch(() => undefined);
  }

  async #register(): Promise<void> {
    this.#registering ??= (async () => {
      for (let attempt = 0; !this.#stopping; attempt++) {
        try {
          await this.client.register({
            name: this.#o.name,
            hostname: hostname(),
            os_type: platform(),
            capabilities: this.#o.capabilities,
            labels: this.#o.labels,
            resources: this.#o.resources,
            task_types: this.#o.taskTypes,
            slots: this.#o.slots,
          });
          this.#o.logger.info({ node: this.client.nodeId }, "registered with the orchestrator");
          return;
        } catch (err) {
          const status = fleetErrorStatus(err);
          this.#o.logger.warn({ err: String(err), status }, "registration failed");
          await this.#sleep(this.#backoff(attempt));
        }
      }
    })().finally(() => {
      this.#registering = undefined;
    });
    return this.#registering;
  }

  #backoff(attempt: number): number {
    const base = Math.min(
      this.#o.maxBackoffMs,
      this.#o.pollIntervalMs * 2 ** Math.min(attempt, 16),
    );
    return Math.round(base * (0.5 + this.#o.random() / 2));
  }

  #sleep(ms: number): Promise<void> {
    if (this.#stopping) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.#o.clock.clearTimeout(handle);
        this.#sleepers.delete(done);
        resolve();
      };
      const handle = this.#o.clock.setTimeout(done, ms);
      this.#sleepers.add(done);
    });
  }

  async #loop(slot: number): Promise<void> {
    let failures = 0;
    while (!this.#stopping) {
      let task: TaskAssignment | null;
      try {
        await this.#registering;
        task = await this.client.pollTask({ signal: this.#stopAbort.signal });
        failures = 0;
      } catch (err) {
        if (this.#stopping) break;
        const status = fleetErrorStatus(err);
        if (status === 401 || status === 404) {
          this.#o.logger.warn(
            { slot, status },
            "the server no longer knows this key: registering again",
          );
          await this.#register();
          continue;
        }
        this.#o.logger.warn({ slot, err: String(err) }, "poll failed");
        await this.#sleep(this.#backoff(failures++));
        continue;
      }
      if (!task) {
        await this.#sleep(this.#o.pollIntervalMs);
        continue;
      }
      await this.#run(task);
    }
  }

  #armHeartbeat(): void {
    // Keeps beating while tasks drain after stop(), so their leases stay alive.
    if (this.#stopping && this.#running.size === 0) return;
    this.#heartbeatTimer = this.#o.clock.setTimeout(() => {
      void this.#beat().finally(() => this.#armHeartbeat());
    }, this.#o.heartbeatIntervalMs);
  }

  async #beat(): Promise<void> {
    try {
      const running = [...this.#running.values()];
      if (running.length === 0) {
        await this.client.heartbeat("idle");
        return;
      }
      for (const r of running) {
        const res = (await this.client.heartbeat("busy", r.task.task_id)) as {
          cancelled_task_ids?: unknown;
        };
        const cancelled = Array.isArray(res.cancelled_task_ids) ? res.cancelled_task_ids : [];
        if (cancelled.includes(r.task.task_id)) {
          this.#o.logger.info({ task: r.task.task_id }, "the server cancelled a running task");
          r.abort.abort(new FlotillaError("CANCELLED", "cancelled by the server"));
        }
      }
    } catch (err) {
      this.#o.logger.warn({ err: String(err) }, "heartbeat failed");
    }
  }

  async #run(task: TaskAssignment): Promise<void> {
    const id = task.task_id;
    const log = this.#o.logger.child({ task: id });
    const filesDir = join(this.#o.workDir, "tasks", id.slice(0, 8), "files");
    const abort = new AbortController();
    this.#running.set(id, { task, abort });
    let timer: TimerHandle | undefined;
    try {
      try {
        await mkdir(filesDir, { recursive: true });
        for (const [i, name] of (task.files ?? []).entries()) {
          const bytes = await this.client.downloadFile(
            task,
            name,
            task.file_checksums?.[i] ?? undefined,
          );
          const base = name.split(/[\\/]/).pop() || `file-${i}`;
          await writeFile(join(filesDir, base), bytes);
        }
      } catch (err) {
        // Like any runner: a task whose files cannot be fetched is left to its lease, which
        // brings it back to the queue for another try.
        log.warn({ err: String(err) }, "could not fetch the task's files; dropping it");
        return;
      }
      await this.client.reportStatus({ taskId: id, status: "running" }).catch((err) => {
        log.warn({ err: String(err) }, "could not report running");
      });
      if (task.timeout_seconds) {
        timer = this.#o.clock.setTimeout(
          () =>
            abort.abort(new FlotillaError("TIMEOUT", `timed out after ${task.timeout_seconds} s`)),
          task.timeout_seconds * 1000,
        );
      }
      let outcome: RunOutcome | undefined;
      let failure: string | undefined;
      try {
        outcome = await this.#o.execute(task, {
          signal: abort.signal,
          filesDir,
          logger: log,
          progress: (message, percent) => {
            void this.client
              .reportStatus({
                taskId: id,
                status: "running",
                ...(message !== undefined ? { message } : {}),
                ...(percent !== undefined ? { progress: Math.max(0, Math.min(100, percent)) } : {}),
              })
              .catch((err) => log.warn({ err: String(err) }, "could not report progress"));
          },
        });
        if (abort.signal.aborted) throw abort.signal.reason;
      } catch (err) {
        const reason = abort.signal.aborted ? abort.signal.reason : err;
        failure = reason instanceof Error ? reason.message : String(reason);
      }
      if (outcome?.session) {
        await this.client.uploadLogs(id, outcome.session).catch((err) => {
          log.warn({ err: String(err) }, "could not upload the session log");
        });
      }
      const output = outcome?.output;
      await this.client
        .reportStatus(
          failure === undefined
            ? {
                taskId: id,
                status: "success",
                message: typeof output === "string" ? output : JSON.stringify(output ?? null),
              }
            : { taskId: id, status: "error", message: failure },
        )
        .catch((err) => log.warn({ err: String(err) }, "could not report the outcome"));
    } finally {
      if (timer !== undefined) this.#o.clock.clearTimeout(timer);
      this.#running.delete(id);
    }
  }
}
