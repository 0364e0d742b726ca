import { createHash } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";

/**
 * A test double of Victoria Terminal's remote runner, written from the fleet contract:
 * - a new connection per request (`agent: false`, `Connection: close`), httpx-style headers;
 * - any non-2xx answer (redirects included) is a failure;
 * - registers with `X-Registration-Token` and `{hostname, name, os_type, capabilities: [], tags: {}}`,
 *   needs non-empty `id` and `api_key`, retries 5 times then gives up; keeps no credentials;
 * - polls `GET /tasks/pending` with `X-API-Key`; `null` is "no work"; an assignment missing
 *   `task_id`, `prompt` or `orchestrator_url` is dropped silently;
 * - downloads files from `<orchestrator_url>/files/<percent-encoded basename>` into
 *   `<home>/tasks/<id[:8]>/files/`, verifies lowercase-hex SHA-256, and on any failure drops the
 *   task without reporting anything;
 * - sends `running`, a `busy` heartbeat, then `/logs` (truncated to 10 MiB) before the final
 *   `/status` (`success`, or `error` with "Task failed with exit code N");
 * - on a 401 while polling it just keeps polling with the same key (never re-registers).
 */

/** A parsed JSON answer, inspected freely by tests. */
// biome-ignore lint/suspicious/noExplicitAny: test answers are inspected freely
export type Json = any;

export interface HttpAnswer {
  status: number;
  text: string;
  json: Json;
  headers: Record<string, string | string[] | undefined>;
}

/** One HTTP/1.1 request on a fresh connection. */
export function httpRequest(
  method: string,
  url: string,
  headers: Record<string, string> = {},
  body?: string | Buffer,
): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request(
      {
        method,
        hostname: u.hostname,
        port: u.port,
        path: `${u.pathname}${u.search}`,
        agent: false,
        headers: {
          Connection: "close",
          "User-Agent": "python-httpx/0.27.0",
          Accept: "*/*",
          "Accept-Encoding": "gzip, deflate",
          ...(body !== undefined ? { "Content-Length": String(Buffer.byteLength(body)) } : {}),
          ...headers,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const raw = Buffer.concat(chunks);
          const text = raw.toString("utf8");
          let json: unknown;
          try {
            json = text === "" ? undefined : JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({
            status: res.statusCode ?? 0,
            text,
            json,
            headers: res.headers,
            raw,
          } as HttpAnswer);
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

/** Fetches raw bytes on a fresh connection. */
function httpBytes(
  url: string,
  headers: Record<string, string>,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const req = request(
      {
        method: "GET",
        hostname: u.hostname,
        port: u.port,
        path: `${u.pathname}${u.search}`,
        agent: false,
        headers: { Connection: "close", ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

const ok = (s: number) => s >= 200 && s < 300;

/** How the simulated container run ends. */
export type RunBehaviour =
  | { kind: "exit"; code: number; output?: string; logBytes?: number }
  | { kind: "killed" };

export interface RunnerEvent {
  kind: string;
  taskId?: string;
  detail?: string;
  status?: number;
}

export interface VictoriaRunnerOptions {
  orchestratorUrl: string;
  registrationToken: string;
  name: string;
  home: string;
  /** Delay between registration attempts (Victoria: 10 s). */
  registrationRetryDelayMs?: number;
}

/** A Victoria-runner look-alike driven step by step by tests. */
export class VictoriaRunner {
  readonly events: RunnerEvent[] = [];
  nodeId: string | undefined;
  apiKey: string | undefined;
  /** Set when registration failed 5 times (the real runner exits). */
  exited = false;
  readonly #o: VictoriaRunnerOptions;
  readonly downloaded = new Map<string, Buffer>();

  constructor(options: VictoriaRunnerOptions) {
    this.#o = options;
  }

  get #base(): string {
    return this.#o.orchestratorUrl.replace(/\/+$/, "");
  }

  #json(body: unknown): [Record<string, string>, string] {
    return [{ "Content-Type": "application/json" }, JSON.stringify(body)];
  }

  /** Registers; 5 attempts, then "exits". Returns whether it succeeded. */
  async register(): Promise<boolean> {
    for (let attempt = 1; attempt <= 5; attempt++) {
      const [h, body] = this.#json({
        hostname: `${this.#o.name}.example.test`,
        name: this.#o.name,
        os_type: "fedora",
        capabilities: [],
        tags: {},
      });
      const res = await httpRequest(
        "POST",
        `${this.#base}/register`,
        { ...h, "X-Registration-Token": this.#o.registrationToken },
        body,
      );
      const data = res.json as { id?: unknown; api_key?: unknown } | null | undefined;
      if (
        ok(res.status) &&
        typeof data?.id === "string" &&
        data.id &&
        typeof data.api_key === "string" &&
        data.api_key
      ) {
        this.nodeId = data.id;
        this.apiKey = data.api_key;
        this.events.push({ kind: "registered", status: res.status });
        return true;
      }
      this.events.push({ kind: "register-failed", status: res.status, detail: res.text });
      if (attempt < 5) await sleep(this.#o.registrationRetryDelayMs ?? 0);
    }
    this.exited = true;
    return false;
  }

  #auth(): Record<string, string> {
    return { "X-API-Key": this.apiKey ?? "" };
  }

  async heartbeat(status: "idle" | "busy", currentTaskId: string | null): Promise<HttpAnswer> {
    const [h, body] = this.#json({ node_id: this.nodeId, status, current_task_id: currentTaskId });
    const res = await httpRequest(
      "POST",
      `${this.#base}/nodes/heartbeat`,
      { ...h, ...this.#auth() },
      body,
    );
    if (!ok(res.status)) this.events.push({ kind: "heartbeat-failed", status: res.status });
    return res;
  }

  /** One poll: the assignment, or null (nothing, an error, or a malformed task). */
  async poll(): Promise<Record<string, unknown> | null> {
    const res = await httpRequest("GET", `${this.#base}/tasks/pending`, this.#auth());
    if (!ok(res.status)) {
      this.events.push({ kind: "poll-error", status: res.status, detail: res.text });
      return null;
    }
    const task = res.json as Record<string, unknown> | null | undefined;
    if (task === null) return null;
    if (task === undefined) {
      this.events.push({ kind: "poll-error", status: res.status, detail: "empty body" });
      return null;
    }
    if (!task.task_id || !task.prompt || !task.orchestrator_url) {
      this.events.push({ kind: "dropped-malformed" });
      return null;
    }
    return task;
  }

  async status(taskId: string, status: string, message?: string): Promise<HttpAnswer> {
    const [h, body] = this.#json({
      task_id: taskId,
      status,
      timestamp: new Date().toISOString(),
      ...(message !== undefined ? { message } : {}),
    });
    return httpRequest("POST", `${this.#base}/status`, { ...h, ...this.#auth() }, body);
  }

  async logs(taskId: string, bytes: number): Promise<HttpAnswer> {
    const content = JSON.stringify([{ type: "text", text: "x".repeat(Math.max(0, bytes)) }]);
    const now = Math.floor(Date.now() / 1000);
    const session = {
      id: `sess-${taskId.slice(0, 8)}`,
      title: "Task Session",
      prompt_tokens: 120,
      completion_tokens: 80,
      cost: 0.0012,
      created_at: now,
      updated_at: now,
      messages: [
        {
          id: "m1",
          role: "user",
          content: JSON.stringify([{ type: "text", text: "go" }]),
          model: null,
          provider: null,
          created_at: now,
          finished_at: now,
        },
        {
          id: "m2",
          role: "assistant",
          content,
          model: "claude",
          provider: "anthropic",
          created_at: now,
          finished_at: now,
        },
      ],
    };
    let body = JSON.stringify({ task_id: taskId, session });
    const max = 10 * 1024 * 1024;
    if (Buffer.byteLength(body) > max) {
      session.messages[1]!.content = content.slice(0, max - 4096);
      body = JSON.stringify({ task_id: taskId, session });
    }
    return httpRequest(
      "POST",
      `${this.#base}/logs`,
      { "Content-Type": "application/json", ...this.#auth() },
      body,
    );
  }

  /** Downloads and verifies the task's files; false (and nothing reported) on any failure. */
  async downloadFiles(task: Record<string, unknown>): Promise<boolean> {
    const files = (task.files as string[] | undefined) ?? [];
    const sums = (task.file_checksums as string[] | undefined) ?? [];
    const id = String(task.task_id);
    const dir = join(this.#o.home, "tasks", id.slice(0, 8), "files");
    await mkdir(dir, { recursive: true });
    for (const [i, name] of files.entries()) {
      const base = name.split("/").pop() ?? name;
      const url = `${String(task.orchestrator_url).replace(/\/+$/, "")}/files/${encodeURIComponent(base)}`;
      try {
        const res = await httpBytes(url, this.#auth());
        if (!ok(res.status)) throw new Error(`status ${res.status}`);
        const sum = createHash("sha256").update(res.body).digest("hex");
        if (sums[i] !== undefined && sums[i] !== sum) throw new Error("checksum mismatch");
        await writeFile(join(dir, base), res.body);
        this.downloaded.set(base, res.body);
      } catch (err) {
        this.events.push({ kind: "dropped-download", taskId: id, detail: (err as Error).message });
        return false;
      }
    }
    return true;
  }

  /** Runs a task the way the runner does; returns the final `/status` answer when one was sent. */
  async run(
    task: Record<string, unknown>,
    behaviour: RunBehaviour,
  ): Promise<HttpAnswer | undefined> {
    const id = String(task.task_id);
    if (!(await this.downloadFiles(task))) return undefined;
    await this.status(id, "running");
    await this.heartbeat("busy", id);
    if (behaviour.kind === "killed") {
      this.events.push({ kind: "killed", taskId: id });
      return undefined;
    }
    const logs = await this.logs(id, behaviour.logBytes ?? 200);
    this.events.push({ kind: "logs", taskId: id, status: logs.status });
    const final =
      behaviour.code === 0
        ? await this.status(id, "success", behaviour.output ?? "done")
        : await this.status(id, "error", `Task failed with exit code ${behaviour.code}`);
    this.events.push({ kind: "final", taskId: id, status: final.status });
    await this.heartbeat("idle", null);
    return final;
  }

  /** One loop turn: idle heartbeat, poll, run what came. */
  async cycle(
    behaviour: RunBehaviour = { kind: "exit", code: 0 },
  ): Promise<Record<string, unknown> | null> {
    await this.heartbeat("idle", null);
    const task = await this.poll();
    if (task) await this.run(task, behaviour);
    return task;
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
