import { Command, Option } from "commander";
import { loadServeConfig, SERVE_OPTIONS } from "./config.js";
import {
  EXEC_OPTION,
  loadRunnerConfig,
  REPORTER_OPTIONS,
  RUNNER_OPTIONS,
  reporterOptions,
  runMcpReporter,
  runRunner,
} from "./runner.js";
import { runServe, VERSION } from "./serve.js";
import {
  type ClientOptions,
  cancelTask,
  decideTask,
  getTask,
  listTasks,
  submitTask,
  watchTask,
} from "./task.js";

/**
 * Builds the `flotilla` command (commander). `flotilla --help` and `flotilla serve --help`
 * list every option with its environment variable and default.
 *
 * @example
 * ```ts
 * await createProgram().parseAsync(["node", "flotilla", "serve", "--port", "9000"]);
 * ```
 */
export function createProgram(env: Record<string, string | undefined> = process.env): Command {
  const program = new Command("flotilla")
    .description(
      "Flotilla: orchestration for AI-agent workloads.\n" +
        "  flotilla serve            run the standalone server (HTTP API, WebSocket, dashboard, fleet)\n" +
        "  flotilla task <command>   submit, inspect and list tasks on a running server\n" +
        "  flotilla runner           run a fleet node that pulls tasks from a server and runs a command\n" +
        "  flotilla mcp-reporter     status-reporter MCP server (stdio) for an agent inside a task",
    )
    .version(VERSION)
    .showHelpAfterError();

  const serve = program
    .command("serve")
    .description(
      "Run the standalone server. Settings: flags > environment (FLOTILLA_*) > JSON config file > defaults. " +
        "Registers the built-in tool_call and api_request workers, Docker when an engine answers at DOCKER_HOST, " +
        "Ollama when reachable, OpenAI/Anthropic when OPENAI_API_KEY/ANTHROPIC_API_KEY are set. " +
        "SIGHUP re-reads the config file's resource policy (resources, tenantWeights) without a restart.",
    )
    .addOption(
      new Option(
        "--config <file>",
        "JSON config file with any of the settings below (camelCase keys), plus resources and tenantWeights [env: FLOTILLA_CONFIG]",
      ),
    );
  for (const o of SERVE_OPTIONS) {
    const desc = `${o.description} [env: ${o.env}]${o.default && !o.flag.startsWith("--no-") ? ` (default: ${o.default})` : ""}`;
    serve.addOption(new Option(o.flag, desc));
  }
  serve.action(async (opts: Record<string, unknown>, cmd: Command) => {
    const flags: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(opts)) {
      if (cmd.getOptionValueSource(k) === "cli") flags[k] = v;
    }
    let config: ReturnType<typeof loadServeConfig>;
    try {
      config = loadServeConfig(flags, env);
    } catch (err) {
      process.stderr.write(`flotilla serve: ${(err as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    const running = await runServe(config, env);
    void running.ended.then((why) => {
      process.stderr.write(`flotilla serve: stopped: ${why}\n`);
      process.exit(3);
    });
    let signals = 0;
    let firstAt = 0;
    const onSignal = (sig: string) => {
      // A terminal's Ctrl-C can reach us twice (directly and through a wrapper): ignore repeats within 1 s.
      if (signals > 0 && Date.now() - firstAt < 1000) return;
      signals++;
      if (signals === 1) firstAt = Date.now();
      if (signals > 1) {
        process.stderr.write(
          `flotilla: second ${sig}, exiting now (running tasks are requeued on next start)\n`,
        );
        process.exit(130);
      }
      process.stderr.write(`flotilla: ${sig} received, shutting down (press again to force)\n`);
      void running.stop().then(() => process.exit(0));
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    // SIGHUP: re-read the config file and apply its resource policy, keeping counted usage.
    process.on("SIGHUP", () => {
      void (async () => {
        try {
          const next = loadServeConfig(flags, env);
          const { restartRequired } = await running.reload(next);
          process.stderr.write(
            `flotilla: SIGHUP: resource policy reloaded${config.configFile ? ` from ${config.configFile}` : ""}${restartRequired.length ? `; these take effect at the next start: ${restartRequired.join(", ")}` : ""}\n`,
          );
        } catch (err) {
          process.stderr.write(
            `flotilla: SIGHUP: reload refused, the running policy is unchanged: ${(err as Error).message}\n`,
          );
        }
      })();
    });
  });

  const runner = program
    .command("runner")
    .description(
      "Run a fleet node: register with a server (POST /register), poll for tasks, run each with a command " +
        "(the prompt as its last argument; TASK_ID, TASK_PROMPT, TASK_FILES_DIR, ORCHESTRATOR_URL and NODE_API_KEY " +
        "in its environment), heartbeat, upload its log and report the outcome (exit 0: success, else error). " +
        "Settings: flags > environment (FLOTILLA_*) > defaults. SIGINT/SIGTERM: running tasks finish first; a second signal aborts them.",
    )
    .usage("[options] [-- <command> [args...]]")
    .argument("[command...]", "the command each task runs (instead of --exec)");
  for (const o of [...RUNNER_OPTIONS, EXEC_OPTION]) {
    runner.addOption(
      new Option(
        o.flag,
        `${o.description} [env: ${o.env}]${o.default ? ` (default: ${o.default})` : ""}`,
      ),
    );
  }
  runner.action(async (command: string[], opts: Record<string, unknown>, cmd: Command) => {
    const flags: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(opts)) {
      if (cmd.getOptionValueSource(k) === "cli") flags[k] = v;
    }
    let config: ReturnType<typeof loadRunnerConfig>;
    try {
      config = loadRunnerConfig(flags, env, command);
    } catch (err) {
      process.stderr.write(`flotilla runner: ${(err as Error).message}\n`);
      process.exitCode = 2;
      return;
    }
    let started: Awaited<ReturnType<typeof runRunner>> | undefined;
    let signals = 0;
    const onSignal = (sig: string) => {
      signals++;
      if (!started) process.exit(130);
      if (signals === 1) {
        process.stderr.write(
          `flotilla runner: ${sig}: finishing running tasks (again to abort them)\n`,
        );
        void started.stop().then(() => process.exit(0));
      } else {
        void started.stop({ abort: true }).then(() => process.exit(130));
      }
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    started = await runRunner(config);
  });

  const reporter = program
    .command("mcp-reporter")
    .description(
      "Serve the status-reporter MCP tools (report_status, report_started, report_complete, report_error, " +
        "submit_crush_logs, get_job_info) on stdio, for an agent running inside a task. Inside a task started by " +
        "`flotilla runner` it needs no options: ORCHESTRATOR_URL, TASK_ID and NODE_API_KEY are set.",
    );
  for (const o of REPORTER_OPTIONS) {
    reporter.addOption(
      new Option(
        o.flag,
        `${o.description} [env: ${o.env}]${o.default ? ` (default: ${o.default})` : ""}`,
      ),
    );
  }
  reporter.action(async (opts: Record<string, string | undefined>) => {
    try {
      await runMcpReporter(reporterOptions(opts, env));
    } catch (err) {
      process.stderr.write(`flotilla mcp-reporter: ${(err as Error).message}\n`);
      process.exitCode = 2;
    }
  });

  const task = program
    .command("task")
    .description("Work with tasks on a running server")
    .addOption(
      new Option("--url <url>", "server URL [env: FLOTILLA_URL] (default: http://127.0.0.1:8000)"),
    )
    .addOption(
      new Option("--api-key <key>", "admin API key [env: FLOTILLA_API_KEY or FLOTILLA_ADMIN_KEY]"),
    )
    .addOption(
      new Option(
        "--prefix <path>",
        "API prefix [env: FLOTILLA_PREFIX] (default: /api/v2/orchestrator)",
      ),
    );
  const client = (): ClientOptions => {
    const o = task.opts<{ url?: string; apiKey?: string; prefix?: string }>();
    const c: ClientOptions = {
      url: o.url ?? env.FLOTILLA_URL ?? "http://127.0.0.1:8000",
      prefix: o.prefix ?? env.FLOTILLA_PREFIX ?? "/api/v2/orchestrator",
    };
    const key = o.apiKey ?? env.FLOTILLA_API_KEY ?? env.FLOTILLA_ADMIN_KEY;
    if (key) c.apiKey = key;
    return c;
  };
  const out = (v: unknown): void => {
    process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
  };
  const guard = (fn: () => Promise<void>) => async () => {
    try {
      await fn();
    } catch (err) {
      process.stderr.write(`flotilla task: ${(err as Error).message}\n`);
      process.exitCode = 1;
    }
  };
  task
    .command("submit")
    .description("Submit a task (with --wait: run it and print the result)")
    .requiredOption("--type <type>", "task type, e.g. tool_call, api_request, llm_request")
    .option("--payload <json>", "payload as JSON", "{}")
    .option("--priority <p>", "critical, high, normal, low, background, or a number")
    .option("--depends-on <ids>", "comma-separated task ids that must succeed first")
    .option("--timeout-seconds <n>", "per-attempt timeout")
    .option("--approval <when>", "before_run or after_run: wait for `flotilla task approve`")
    .option("--wait", "wait for the result (POST /tasks/execute)")
    .action(async (o: Record<string, string | boolean | undefined>) =>
      guard(async () => {
        let payload: unknown;
        try {
          payload = JSON.parse(String(o.payload));
        } catch (err) {
          throw new Error(`--payload: not valid JSON (${(err as Error).message})`);
        }
        out(
          await submitTask(client(), {
            type: String(o.type),
            payload,
            ...(o.priority ? { priority: String(o.priority) } : {}),
            ...(o.dependsOn ? { dependsOn: String(o.dependsOn).split(",") } : {}),
            ...(o.timeoutSeconds ? { timeoutSeconds: Number(o.timeoutSeconds) } : {}),
            ...(o.approval ? { approval: String(o.approval) } : {}),
            wait: Boolean(o.wait),
          }),
        );
      })(),
    );
  task
    .command("get <id>")
    .description("Show one task")
    .action(async (id: string) => guard(async () => out(await getTask(client(), id)))());
  task
    .command("list")
    .description("List recent tasks, newest first")
    .option("--status <status>", "only this status (completed, failed, queued, running, ...)")
    .option("--limit <n>", "at most this many (default 100)")
    .action(async (o: { status?: string; limit?: string }) =>
      guard(async () =>
        out(
          await listTasks(client(), {
            ...(o.status ? { status: o.status } : {}),
            ...(o.limit ? { limit: Number(o.limit) } : {}),
          }),
        ),
      )(),
    );
  task
    .command("watch <id>")
    .description("Follow a task's events until it ends (exit 0 when it succeeded)")
    .action(async (id: string) =>
      guard(async () => {
        const status = await watchTask(client(), id, (e) => {
          const d = e.data as { status?: string; progress?: unknown; error?: { message?: string } };
          const extra = d?.progress !== undefined ? ` ${JSON.stringify(d.progress)}` : "";
          process.stdout.write(`${e.ts} ${e.type}${d?.status ? ` (${d.status})` : ""}${extra}\n`);
        });
        if (status !== "succeeded") process.exitCode = 1;
      })(),
    );
  task
    .command("cancel <id>")
    .description("Cancel a task")
    .action(async (id: string) => guard(async () => out(await cancelTask(client(), id)))());
  for (const decision of ["approve", "reject"] as const) {
    task
      .command(`${decision} <id>`)
      .description(
        decision === "approve"
          ? "Approve a task awaiting approval (it runs, or its result is accepted)"
          : "Reject a task awaiting approval (it ends rejected)",
      )
      .option("--comment <text>", "why; kept with the decision")
      .action(async (id: string, o: { comment?: string }) =>
        guard(async () => out(await decideTask(client(), id, decision, o.comment)))(),
      );
  }
  return program;
}
