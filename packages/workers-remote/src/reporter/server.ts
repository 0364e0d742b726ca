import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";
import { z } from "zod";
import { FleetClient } from "../fleet/client.js";
import type { ReportedStatus, SessionLog } from "../fleet/schemas.js";
import { findCrushDb, readCrushSessions } from "./crush.js";

/** Options of {@link createStatusReporter}. Each defaults to the environment the runner sets. */
export interface StatusReporterOptions {
  /** @default process.env.ORCHESTRATOR_URL */
  orchestratorUrl?: string;
  /** @default process.env.TASK_ID ?? process.env.JOB_ID */
  taskId?: string;
  /** @default process.env.NODE_API_KEY */
  apiKey?: string;
  /** The Crush database. @default found under VICTORIA_HOME, ./.crush or XDG_DATA_HOME */
  crushDbPath?: string;
  /** Per-request timeout. @default 30000 */
  timeoutMs?: number;
  /** For tests and proxies. @default globalThis.fetch */
  fetch?: typeof fetch;
}

type ToolAnswer = { content: Array<{ type: "text"; text: string }>; isError?: boolean };

const answer = (value: Record<string, unknown>, isError = false): ToolAnswer => ({
  content: [{ type: "text", text: JSON.stringify(value) }],
  ...(isError ? { isError: true } : {}),
});

/**
 * The status-reporter MCP server an agent inside a task's container uses to tell the
 * orchestrator how the task goes: `report_status`, `report_started`, `report_complete`,
 * `report_error` (both upload the latest Crush session by default), `submit_crush_logs`,
 * `get_job_info`. It speaks the fleet protocol (`/status`, `/logs`) with the node's key.
 *
 * @example
 * ```ts
 * // In the container, with ORCHESTRATOR_URL, TASK_ID and NODE_API_KEY set by the runner:
 * await runStatusReporter(); // MCP over stdio
 * ```
 */
export function createStatusReporter(options: StatusReporterOptions = {}): McpServer {
  const url = options.orchestratorUrl ?? process.env.ORCHESTRATOR_URL;
  const taskId = options.taskId ?? process.env.TASK_ID ?? process.env.JOB_ID;
  const apiKey = options.apiKey ?? process.env.NODE_API_KEY;
  const client = url
    ? new FleetClient({
        baseUrl: url,
        ...(apiKey ? { apiKey } : {}),
        timeoutMs: options.timeoutMs ?? 30_000,
        ...(options.fetch ? { fetch: options.fetch } : {}),
      })
    : undefined;
  const dbPath = () => options.crushDbPath ?? findCrushDb();
  const sessions = (): SessionLog[] => {
    const p = dbPath();
    return p ? readCrushSessions(p) : [];
  };
  const notConfigured = (): ToolAnswer | undefined => {
    if (!client) return answer({ sent: false, error: "ORCHESTRATOR_URL not configured" }, true);
    if (!taskId) return answer({ sent: false, error: "TASK_ID not configured" }, true);
    if (!apiKey) return answer({ sent: false, error: "NODE_API_KEY not configured" }, true);
    return undefined;
  };

  const send = async (
    status: ReportedStatus,
    message?: string,
    progress?: number,
    sessionId?: string,
  ): Promise<Record<string, unknown>> => {
    try {
      const response = await client!.reportStatus({
        taskId: taskId!,
        status,
        ...(message ? { message } : {}),
        ...(progress !== undefined ? { progress } : {}),
        ...(sessionId ? { sessionId } : {}),
      });
      return { sent: true, response };
    } catch (err) {
      return { sent: false, error: (err as Error).message };
    }
  };

  const upload = async (sessionId?: string): Promise<Record<string, unknown>> => {
    let all: SessionLog[];
    try {
      all = sessions();
    } catch (err) {
      return { sent: false, error: `cannot read the Crush database: ${(err as Error).message}` };
    }
    const session = sessionId ? all.find((s) => s.id === sessionId) : all[0];
    if (!session) return { sent: false, error: "no Crush session found" };
    // Like the runner: at most 10 MiB of log.
    let body = session;
    while (JSON.stringify(body).length > 10 * 1024 * 1024 && (body.messages?.length ?? 0) > 1) {
      body = { ...body, messages: (body.messages ?? []).slice(1) };
    }
    try {
      await client!.uploadLogs(taskId!, body);
      return { sent: true, session_id: session.id, message_count: body.messages?.length ?? 0 };
    } catch (err) {
      return { sent: false, error: (err as Error).message };
    }
  };

  const finish = async (
    status: "success" | "error",
    message: string,
    submitLogs: boolean,
  ): Promise<ToolAnswer> => {
    const missing = notConfigured();
    if (missing) return missing;
    let latest: SessionLog | undefined;
    try {
      latest = sessions()[0];
    } catch {
      latest = undefined;
    }
    const statusResult = await send(status, message, undefined, latest?.id ?? undefined);
    const out: Record<string, unknown> = {
      status_sent: statusResult.sent,
      status_result: statusResult,
      logs_sent: false,
    };
    if (submitLogs && latest) {
      const logs = await upload(latest.id ?? undefined);
      out.logs_sent = logs.sent;
      out.logs_result = logs;
    }
    return answer(out, statusResult.sent !== true);
  };

  const server = new McpServer({ name: "flotilla-status-reporter", version: "0.1.0" });

  server.registerTool(
    "report_status",
    {
      description:
        'Report the task\'s status to the orchestrator. Always finish with status "success" or "error".',
      inputSchema: {
        status: z.enum(["running", "analyzing", "success", "error"]),
        message: z.string().optional(),
        progress: z.number().min(0).max(100).optional(),
      },
    },
    async ({ status, message, progress }) => {
      const missing = notConfigured();
      if (missing) return missing;
      const r = await send(status, message, progress);
      return answer(r, r.sent !== true);
    },
  );

  server.registerTool(
    "report_started",
    {
      description: "Report that the task has started.",
      inputSchema: { message: z.string().optional() },
    },
    async ({ message }) => {
      const missing = notConfigured();
      if (missing) return missing;
      const r = await send("running", message ?? "Task started");
      return answer(r, r.sent !== true);
    },
  );

  server.registerTool(
    "report_complete",
    {
      description: "Report that the task completed successfully (uploads the latest session log).",
      inputSchema: { message: z.string().optional(), submit_logs: z.boolean().optional() },
    },
    async ({ message, submit_logs }) =>
      finish("success", message ?? "Task completed successfully", submit_logs ?? true),
  );

  server.registerTool(
    "report_error",
    {
      description: "Report that the task failed (uploads the latest session log).",
      inputSchema: { error_message: z.string().min(1), submit_logs: z.boolean().optional() },
    },
    async ({ error_message, submit_logs }) => finish("error", error_message, submit_logs ?? true),
  );

  server.registerTool(
    "submit_crush_logs",
    {
      description: "Upload a Crush session log (the latest when no id is given).",
      inputSchema: { session_id: z.string().optional() },
    },
    async ({ session_id }) => {
      const missing = notConfigured();
      if (missing) return missing;
      const r = await upload(session_id);
      return answer(r, r.sent !== true);
    },
  );

  server.registerTool(
    "get_job_info",
    { description: "The current job's id, orchestrator URL and Crush database." },
    async () =>
      answer({
        job_id: taskId ?? null,
        orchestrator_url: url ?? null,
        api_key_configured: Boolean(apiKey),
        crush_db_path: dbPath() ?? null,
      }),
  );

  return server;
}

/**
 * Runs {@link createStatusReporter} over stdio until stdin closes.
 *
 * @example
 * ```ts
 * // the entry of an MCP stdio server process started by the agent
 * await runStatusReporter({ orchestratorUrl: "http://127.0.0.1:8000", taskId: process.env.TASK_ID });
 * ```
 */
export async function runStatusReporter(options: StatusReporterOptions = {}): Promise<void> {
  const server = createStatusReporter(options);
  await server.connect(new StdioServerTransport());
}
