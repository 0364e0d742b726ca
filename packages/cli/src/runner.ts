import { mkdir } from "node:fs/promises";
import { hostname } from "node:os";
import { resolve } from "node:path";
import type { Logger } from "@flotilla/core";
import {
  commandExecutor,
  NodeRunner,
  runStatusReporter,
  type StatusReporterOptions,
  type TaskExecutor,
} from "@flotilla/workers-remote";
import { z } from "zod";
import { createJsonLogger, LOG_LEVELS, type LogLevel } from "./logger.js";

/** Settings of `flotilla runner`, after flags and environment are merged. */
export interface RunnerConfig {
  url: string;
  registrationToken: string;
  name: string;
  labels: Record<string, string>;
  capabilities: string[];
  taskTypes: string[];
  slots: number;
  pollIntervalSeconds: number;
  heartbeatIntervalSeconds: number;
  workDir: string;
  /** The command each task runs (argv; the prompt is appended as the last argument). */
  command: string[];
  logLevel: LogLevel;
}

/** One option of `flotilla runner` or `flotilla mcp-reporter`: flag, environment variable, default. */
export interface CliOptionSpec<K extends string = string> {
  key: K;
  flag: string;
  env: string;
  description: string;
  default?: string;
}

/** Every option of `flotilla runner` (the help text is built from it). */
export const RUNNER_OPTIONS: readonly CliOptionSpec<Exclude<keyof RunnerConfig, "command">>[] = [
  {
    key: "url",
    flag: "--url <url>",
    env: "FLOTILLA_URL",
    description: "server URL (where `flotilla serve` answers)",
    default: "http://127.0.0.1:8000",
  },
  {
    key: "registrationToken",
    flag: "--registration-token <token>",
    env: "FLOTILLA_REGISTRATION_TOKEN",
    description:
      "the server's registration token (required; prefer the environment: flags show in ps)",
  },
  {
    key: "name",
    flag: "--name <name>",
    env: "FLOTILLA_NODE_NAME",
    description: "node name, matched by target_node_name globs",
    default: "the host name",
  },
  {
    key: "labels",
    flag: "--labels <k=v,...>",
    env: "FLOTILLA_LABELS",
    description: "labels (tags) matched by a task's target_tags, e.g. gpu=a100,zone=eu",
  },
  {
    key: "capabilities",
    flag: "--capabilities <a,b>",
    env: "FLOTILLA_CAPABILITIES",
    description: "capabilities matched by a task's capabilities",
  },
  {
    key: "taskTypes",
    flag: "--task-types <a,b>",
    env: "FLOTILLA_TASK_TYPES",
    description: "task types this node runs",
    default: "agent_run",
  },
  {
    key: "slots",
    flag: "--slots <n>",
    env: "FLOTILLA_SLOTS",
    description: "tasks run at once (one poll per free slot)",
    default: "1",
  },
  {
    key: "pollIntervalSeconds",
    flag: "--poll-interval-seconds <n>",
    env: "FLOTILLA_POLL_INTERVAL_SECONDS",
    description: "pause after a poll that found nothing",
    default: "10",
  },
  {
    key: "heartbeatIntervalSeconds",
    flag: "--heartbeat-interval-seconds <n>",
    env: "FLOTILLA_HEARTBEAT_INTERVAL_SECONDS",
    description: "heartbeats while a task runs (keep below the server's --lease-seconds)",
    default: "30",
  },
  {
    key: "workDir",
    flag: "--work-dir <dir>",
    env: "FLOTILLA_WORK_DIR",
    description: "where task files are downloaded (<dir>/tasks/<id>/files)",
    default: ".flotilla-runner",
  },
  {
    key: "logLevel",
    flag: "--log-level <level>",
    env: "FLOTILLA_LOG_LEVEL",
    description: `log level (${Object.keys(LOG_LEVELS).join(", ")}); JSON lines on stderr`,
    default: "info",
  },
];

/** The executor command option, kept apart because it can also come after `--`. */
export const EXEC_OPTION: CliOptionSpec<"exec"> = {
  key: "exec",
  flag: "--exec <command>",
  env: "FLOTILLA_EXEC",
  description:
    'shell command each task runs, the prompt appended as its last argument ("$@"); or give the command after --',
};

const list = z
  .string()
  .transform((s) =>
    s
      .split(",")
      .map((x) => x.trim())
      .filter(Boolean),
  )
  .pipe(z.array(z.string().min(1).max(256)).max(64));
const seconds = z.coerce
  .number({ error: "expected a number of seconds" })
  .positive({ error: "expected a number of seconds > 0" })
  .max(86_400);

const RunnerSchema = z.object({
  url: z.url({ protocol: /^https?$/, error: "expected an http(s) URL" }),
  registrationToken: z
    .string({ error: "required: the server's registration token" })
    .min(1, { error: "required: the server's registration token" }),
  name: z.string().min(1).max(256),
  labels: z
    .string()
    .transform((s, ctx) => {
      const out: Record<string, string> = {};
      for (const pair of s
        .split(",")
        .map((x) => x.trim())
        .filter(Boolean)) {
        const i = pair.indexOf("=");
        if (i <= 0) {
          ctx.addIssue({ code: "custom", message: `expected key=value pairs, got "${pair}"` });
          return z.NEVER;
        }
        out[pair.slice(0, i).trim()] = pair.slice(i + 1).trim();
      }
      return out;
    })
    .default({}),
  capabilities: list.default([]),
  taskTypes: list.pipe(z.array(z.string()).min(1)).default(["agent_run"]),
  slots: z.coerce
    .number({ error: "expected an integer between 1 and 256" })
    .int({ error: "expected an integer between 1 and 256" })
    .min(1, { error: "expected an integer between 1 and 256" })
    .max(256, { error: "expected an integer between 1 and 256" })
    .default(1),
  pollIntervalSeconds: seconds.default(10),
  heartbeatIntervalSeconds: seconds.default(30),
  workDir: z.string().min(1).default(".flotilla-runner"),
  logLevel: z.enum(Object.keys(LOG_LEVELS) as [LogLevel, ...LogLevel[]]).default("info"),
  exec: z.string().min(1).optional(),
});

/**
 * Merges `flotilla runner` settings: flags win over environment variables (`FLOTILLA_*`),
 * which win over defaults. `command` is the argv given after `--` (or built from `--exec`).
 * Throws an `Error` naming the bad setting and where it came from.
 *
 * @example
 * ```ts
 * const config = loadRunnerConfig({ registrationToken: "t" }, process.env, ["./agent.sh"]);
 * ```
 */
export function loadRunnerConfig(
  flags: Record<string, unknown>,
  env: Record<string, string | undefined> = process.env,
  command: readonly string[] = [],
): RunnerConfig {
  const merged: Record<string, unknown> = { url: "http://127.0.0.1:8000", name: hostname() };
  const source: Record<string, string> = {};
  for (const o of [...RUNNER_OPTIONS, EXEC_OPTION]) {
    const fromEnv = env[o.env];
    if (fromEnv !== undefined && fromEnv !== "") {
      merged[o.key] = fromEnv;
      source[o.key] = `environment ${o.env}`;
    }
    if (flags[o.key] !== undefined) {
      merged[o.key] = flags[o.key];
      source[o.key] = `flag ${o.flag.split(" ")[0]}`;
    }
  }
  const r = RunnerSchema.safeParse(merged);
  if (!r.success) {
    const msgs = r.error.issues.map((i) => {
      const k = String(i.path[0] ?? "");
      const spec = RUNNER_OPTIONS.find((o) => o.key === k);
      const where = source[k] ?? (spec ? `${spec.flag.split(" ")[0]} / ${spec.env}` : k);
      return `${where}: ${i.message}`;
    });
    throw new Error(`invalid configuration: ${msgs.join("; ")}`);
  }
  const c = r.data;
  // `sh -c '<exec> "$@"' flotilla-task <prompt>`: the prompt arrives as the last argument.
  const argv = command.length
    ? [...command]
    : c.exec
      ? ["/bin/sh", "-c", `${c.exec} "$@"`, "flotilla-task"]
      : [];
  if (argv.length === 0) {
    throw new Error(
      `invalid configuration: no task command: give ${EXEC_OPTION.flag} / ${EXEC_OPTION.env}, or the command after --`,
    );
  }
  return {
    url: c.url.replace(/\/+$/, ""),
    registrationToken: c.registrationToken,
    name: c.name,
    labels: c.labels,
    capabilities: c.capabilities,
    taskTypes: c.taskTypes,
    slots: c.slots,
    pollIntervalSeconds: c.pollIntervalSeconds,
    heartbeatIntervalSeconds: c.heartbeatIntervalSeconds,
    workDir: resolve(c.workDir),
    command: argv,
    logLevel: c.logLevel,
  };
}

/** A started `flotilla runner`. */
export interface RunningRunner {
  runner: NodeRunner;
  /** Graceful stop (running tasks finish and report); `{ abort: true }` aborts them. */
  stop(options?: { abort?: boolean }): Promise<void>;
}

/**
 * Starts a fleet node: registers with the server (retrying until it answers), then polls for
 * tasks and runs each with the configured command. The command's environment carries
 * `TASK_ID`, `TASK_PROMPT`, `TASK_FILES_DIR`, and what `flotilla mcp-reporter` needs to
 * report from inside the task: `ORCHESTRATOR_URL`, `NODE_API_KEY` (also as `FLOTILLA_URL`,
 * `FLOTILLA_TASK_ID`, `FLOTILLA_NODE_API_KEY`).
 *
 * @example
 * ```ts
 * const r = await runRunner(loadRunnerConfig({ registrationToken: "t", exec: "./agent.sh" }));
 * process.once("SIGTERM", () => void r.stop());
 * ```
 */
export async function runRunner(
  config: RunnerConfig,
  print: (line: string) => void = (l) => process.stdout.write(`${l}\n`),
  logger: Logger = createJsonLogger(config.logLevel),
): Promise<RunningRunner> {
  await mkdir(config.workDir, { recursive: true });
  // The node key is issued at registration; the executed command needs it for the
  // status reporter. It is read off the runner's own requests, never logged.
  let nodeKey: string | undefined;
  const keyedFetch: typeof fetch = (input, init) => {
    const h = new Headers(init?.headers);
    const k = h.get("x-api-key");
    if (k) nodeKey = k;
    return fetch(input, init);
  };
  const execute: TaskExecutor = (task, ctx) =>
    commandExecutor(config.command, {
      env: {
        ORCHESTRATOR_URL: task.orchestrator_url,
        FLOTILLA_URL: task.orchestrator_url,
        FLOTILLA_TASK_ID: task.task_id,
        ...(nodeKey ? { NODE_API_KEY: nodeKey, FLOTILLA_NODE_API_KEY: nodeKey } : {}),
      },
    })(task, ctx);
  const runner = new NodeRunner({
    orchestratorUrl: config.url,
    registrationToken: config.registrationToken,
    name: config.name,
    execute,
    workDir: config.workDir,
    slots: config.slots,
    taskTypes: config.taskTypes,
    capabilities: config.capabilities,
    labels: config.labels,
    pollIntervalMs: Math.round(config.pollIntervalSeconds * 1000),
    heartbeatIntervalMs: Math.round(config.heartbeatIntervalSeconds * 1000),
    logger,
    fetch: keyedFetch,
  });
  print(
    `flotilla runner "${config.name}" -> ${config.url} (slots ${config.slots}, task types ${config.taskTypes.join(", ")}, command ${config.command[0]})`,
  );
  // The runner's timers (polls, heartbeats) are unref'd: hold the process open until stop().
  const keepAlive = setInterval(() => undefined, 0x7fffffff);
  try {
    await runner.start();
  } catch (err) {
    clearInterval(keepAlive);
    throw err;
  }
  print(
    `registered as node ${runner.client.nodeId ?? "?"}; polling every ${config.pollIntervalSeconds} s`,
  );
  return {
    runner,
    stop: async (options) => {
      try {
        await runner.stop(options);
      } finally {
        clearInterval(keepAlive);
      }
    },
  };
}

/** Every option of `flotilla mcp-reporter`. */
export const REPORTER_OPTIONS: readonly CliOptionSpec<
  "url" | "taskId" | "apiKey" | "crushDb" | "timeoutSeconds"
>[] = [
  {
    key: "url",
    flag: "--url <url>",
    env: "FLOTILLA_URL",
    description: "server URL (also read from ORCHESTRATOR_URL, which the runner sets)",
  },
  {
    key: "taskId",
    flag: "--task-id <id>",
    env: "FLOTILLA_TASK_ID",
    description: "the task being reported on (also TASK_ID or JOB_ID)",
  },
  {
    key: "apiKey",
    flag: "--api-key <key>",
    env: "FLOTILLA_NODE_API_KEY",
    description: "the node's key (also NODE_API_KEY; prefer the environment)",
  },
  {
    key: "crushDb",
    flag: "--crush-db <path>",
    env: "FLOTILLA_CRUSH_DB",
    description:
      "the Crush session database (default: found under VICTORIA_HOME, ./.crush or XDG_DATA_HOME)",
  },
  {
    key: "timeoutSeconds",
    flag: "--timeout-seconds <n>",
    env: "FLOTILLA_TIMEOUT_SECONDS",
    description: "per-request timeout",
    default: "30",
  },
];

/**
 * Options of the status-reporter MCP server from flags, `FLOTILLA_*` and the variables the
 * runner sets (`ORCHESTRATOR_URL`, `TASK_ID`/`JOB_ID`, `NODE_API_KEY`), in that order.
 *
 * @example
 * ```ts
 * const options = reporterOptions({}, process.env); // { orchestratorUrl, taskId, apiKey, ... }
 * ```
 */
export function reporterOptions(
  flags: Record<string, string | undefined>,
  env: Record<string, string | undefined> = process.env,
): StatusReporterOptions {
  const pick = (key: string, ...names: string[]) => {
    if (flags[key]) return flags[key];
    for (const n of names) if (env[n]) return env[n];
    return undefined;
  };
  const out: StatusReporterOptions = {};
  const url = pick("url", "FLOTILLA_URL", "ORCHESTRATOR_URL");
  if (url) out.orchestratorUrl = url;
  const taskId = pick("taskId", "FLOTILLA_TASK_ID", "TASK_ID", "JOB_ID");
  if (taskId) out.taskId = taskId;
  const apiKey = pick("apiKey", "FLOTILLA_NODE_API_KEY", "NODE_API_KEY");
  if (apiKey) out.apiKey = apiKey;
  const db = pick("crushDb", "FLOTILLA_CRUSH_DB");
  if (db) out.crushDbPath = db;
  const t = pick("timeoutSeconds", "FLOTILLA_TIMEOUT_SECONDS");
  if (t !== undefined) {
    const n = Number(t);
    if (!Number.isFinite(n) || n <= 0) {
      throw new Error(
        `invalid configuration: --timeout-seconds: expected a number > 0, got "${t}"`,
      );
    }
    out.timeoutMs = Math.round(n * 1000);
  }
  return out;
}

/**
 * Runs the status-reporter MCP server on stdio (`flotilla mcp-reporter`).
 *
 * @example
 * ```ts
 * await runMcpReporter(reporterOptions({}, process.env));
 * ```
 */
export async function runMcpReporter(options: StatusReporterOptions): Promise<void> {
  await runStatusReporter(options);
}
