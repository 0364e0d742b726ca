import { spawn } from "node:child_process";
import { FlotillaError, systemClock, type Worker, type WorkerTask } from "@flotilla/core";
import type { TaskExecutor } from "./runner.js";

/** Options of {@link commandExecutor}. */
export interface CommandExecutorOptions {
  /** Extra environment for the command. @default {} */
  env?: Record<string, string>;
  /** Working directory. @default the task's files directory */
  cwd?: string;
  /** Output kept as the task's result (the tail). @default 65536 */
  maxOutputBytes?: number;
  /** Grace between SIGTERM and SIGKILL when the task is aborted. @default 5000 */
  killGraceMs?: number;
}

/**
 * Runs every task as a command line (like Victoria's container command). The prompt is the
 * last argument and `TASK_PROMPT`; `TASK_ID`, `TASK_FILES_DIR` are set. Exit 0 succeeds with
 * the tail of stdout; any other exit fails with "Task failed with exit code N". On timeout
 * or cancellation the process gets SIGTERM, then SIGKILL.
 *
 * @example
 * ```ts
 * const execute = commandExecutor(["podman", "run", "--rm", "-i", "my-agent:latest", "--task"]);
 * ```
 */
export function commandExecutor(
  argv: readonly string[],
  options: CommandExecutorOptions = {},
): TaskExecutor {
  const [cmd, ...args] = argv;
  if (!cmd) throw new FlotillaError("VALIDATION", "argv: expected at least a command");
  const max = options.maxOutputBytes ?? 65_536;
  const grace = options.killGraceMs ?? 5_000;
  return (task, ctx) =>
    new Promise((resolve, reject) => {
      const child = spawn(cmd, [...args, task.prompt], {
        cwd: options.cwd ?? ctx.filesDir,
        env: {
          ...process.env,
          ...options.env,
          TASK_ID: task.task_id,
          JOB_ID: task.task_id,
          TASK_PROMPT: task.prompt,
          TASK_FILES_DIR: ctx.filesDir,
        },
        stdio: ["ignore", "pipe", "pipe"],
      });
      let out = Buffer.alloc(0);
      child.stdout.on("data", (d: Buffer) => {
        out = Buffer.concat([out, d]);
        if (out.length > max) out = out.subarray(out.length - max);
      });
      child.stderr.on("data", (d: Buffer) => ctx.logger.debug({ stderr: d.toString("utf8") }));
      let killTimer: ReturnType<typeof setTimeout> | undefined;
      const onAbort = () => {
        child.kill("SIGTERM");
        killTimer = setTimeout(() => child.kill("SIGKILL"), grace);
        killTimer.unref?.();
      };
      if (ctx.signal.aborted) onAbort();
      else ctx.signal.addEventListener("abort", onAbort, { once: true });
      child.on("error", (err) => {
        ctx.signal.removeEventListener("abort", onAbort);
        reject(new FlotillaError("WORKER_ERROR", `cannot run ${cmd}: ${err.message}`));
      });
      child.on("close", (code, signal) => {
        ctx.signal.removeEventListener("abort", onAbort);
        if (killTimer) clearTimeout(killTimer);
        const exit = code ?? (signal === "SIGKILL" ? 137 : 143);
        if (exit === 0) resolve({ output: out.toString("utf8").trim() });
        else reject(new Error(`Task failed with exit code ${exit}`));
      });
    });
}

/**
 * Runs tasks with local Flotilla workers: the first worker whose `taskTypes` include the
 * task's type (or `"*"`) executes it with the assignment's `payload` (or `{ prompt }`).
 *
 * @example
 * ```ts
 * const execute = workersExecutor([new FunctionWorker({ taskTypes: ["agent_run"], fn: async (p) => p })]);
 * ```
 */
export function workersExecutor(workers: readonly Worker[]): TaskExecutor {
  if (workers.length === 0) throw new FlotillaError("VALIDATION", "workers: expected at least one");
  return async (task, ctx) => {
    const type = typeof task.type === "string" ? task.type : "agent_run";
    const worker = workers.find((w) => w.taskTypes.includes(type) || w.taskTypes.includes("*"));
    if (!worker) throw new FlotillaError("NO_ELIGIBLE_WORKER", `no local worker runs "${type}"`);
    const payload =
      task.payload && typeof task.payload === "object" ? task.payload : { prompt: task.prompt };
    const wt: WorkerTask = {
      id: task.task_id,
      type,
      payload,
      priority: typeof task.priority === "number" ? task.priority : 20,
      attempt: typeof task.attempt === "number" ? task.attempt : 1,
      metadata: { filesDir: ctx.filesDir },
      dependencies: {},
      inputs: {},
      ...(task.timeout_seconds ? { timeoutMs: task.timeout_seconds * 1000 } : {}),
    };
    const result = await worker.execute(wt, {
      signal: ctx.signal,
      progress: (data) =>
        ctx.progress(typeof data === "string" ? data : JSON.stringify(data ?? null)),
      reportUsage: () => {},
      logger: ctx.logger,
      clock: systemClock,
    });
    return { output: result.output };
  };
}
