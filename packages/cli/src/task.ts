/** Options shared by the `flotilla task` commands. */
export interface ClientOptions {
  /**
   * Server base URL; the CLI passes `--url`, `FLOTILLA_URL` or `http://127.0.0.1:8000`.
   */
  url: string;
  /**
   * Admin API key sent as `X-API-Key`. @default undefined (no key: works against an `--open` server)
   */
  apiKey?: string;
  /**
   * API prefix of the task routes; the CLI passes `--prefix`, `FLOTILLA_PREFIX` or `/api/v2/orchestrator`.
   */
  prefix: string;
}

async function call(
  opts: ClientOptions,
  method: string,
  path: string,
  body?: unknown,
): Promise<unknown> {
  const headers: Record<string, string> = {};
  if (opts.apiKey) headers["x-api-key"] = opts.apiKey;
  if (body !== undefined) headers["content-type"] = "application/json";
  const url = `${opts.url.replace(/\/+$/, "")}${opts.prefix}${path}`;
  let res: Response;
  try {
    res = await fetch(url, {
      method,
      headers,
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
    });
  } catch (err) {
    throw new Error(`cannot reach ${url}: ${(err as Error).message}`);
  }
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  if (!res.ok) {
    const msg = (json as { detail?: string })?.detail ?? text;
    throw new Error(`${method} ${path}: ${res.status} ${msg}`);
  }
  return json;
}

/**
 * `flotilla task submit`: submits (or with `wait`, executes) a task; resolves the server's answer.
 *
 * @example
 * ```ts
 * await submitTask({ url: "http://127.0.0.1:8000", prefix: "/api/v2/orchestrator", apiKey }, { type: "tool_call", payload: { tool_name: "echo" }, wait: true });
 * ```
 */
export async function submitTask(
  opts: ClientOptions,
  input: {
    type: string;
    payload?: unknown;
    priority?: string;
    wait?: boolean;
    dependsOn?: string[];
    timeoutSeconds?: number;
    /** `before_run` or `after_run`: the task (or its result) waits for `flotilla task approve`. */
    approval?: string;
  },
): Promise<unknown> {
  const body: Record<string, unknown> = { type: input.type };
  if (input.payload !== undefined) body.payload = input.payload;
  if (input.priority !== undefined)
    body.priority = /^-?\d+(\.\d+)?$/.test(input.priority)
      ? Number(input.priority)
      : input.priority;
  if (input.dependsOn?.length) body.depends_on = input.dependsOn;
  if (input.timeoutSeconds) body.timeout_seconds = input.timeoutSeconds;
  if (input.approval) body.approval = input.approval;
  return call(opts, "POST", input.wait ? "/tasks/execute" : "/tasks/submit", body);
}

/**
 * `flotilla task get <id>`: one task as `GET /tasks/{id}` answers it.
 *
 * @example
 * ```ts
 * const task = await getTask(opts, "7c0…");
 * ```
 */
export function getTask(opts: ClientOptions, id: string): Promise<unknown> {
  return call(opts, "GET", `/tasks/${encodeURIComponent(id)}`);
}

/**
 * `flotilla task list`: `GET /tasks/history`, newest first.
 *
 * @example
 * ```ts
 * const { tasks } = (await listTasks(opts, { status: "failed", limit: 20 })) as { tasks: unknown[] };
 * ```
 */
export function listTasks(
  opts: ClientOptions,
  q: { status?: string; limit?: number },
): Promise<unknown> {
  const params = new URLSearchParams();
  if (q.status) params.set("status", q.status);
  if (q.limit) params.set("limit", String(q.limit));
  const qs = params.toString();
  return call(opts, "GET", `/tasks/history${qs ? `?${qs}` : ""}`);
}

/**
 * `flotilla task cancel <id>`.
 *
 * @example
 * ```ts
 * await cancelTask(opts, "7c0…");
 * ```
 */
export function cancelTask(opts: ClientOptions, id: string): Promise<unknown> {
  return call(opts, "POST", `/tasks/${encodeURIComponent(id)}/cancel`);
}

/**
 * `flotilla task approve <id>` / `flotilla task reject <id>`: decides a task awaiting
 * approval; the server records the decision with the caller's key and the comment.
 *
 * @example
 * ```ts
 * await decideTask(opts, "deploy-42", "approve", "checked the diff");
 * ```
 */
export function decideTask(
  opts: ClientOptions,
  id: string,
  decision: "approve" | "reject",
  comment?: string,
): Promise<unknown> {
  return call(
    opts,
    "POST",
    `/tasks/${encodeURIComponent(id)}/${decision}`,
    comment === undefined ? {} : { comment },
  );
}

/**
 * `flotilla task watch <id>`: follows `/ws/tasks/{id}` and calls `onEvent` for each envelope
 * until the server closes the stream (when the task ends). Resolves with the last status seen.
 *
 * @example
 * ```ts
 * const status = await watchTask(opts, id, (e) => console.log(e.type));
 * ```
 */
export function watchTask(
  opts: ClientOptions,
  id: string,
  onEvent: (envelope: { type: string; ts: string; data: unknown }) => void,
): Promise<string | undefined> {
  const base = opts.url.replace(/\/+$/, "").replace(/^http/, "ws");
  const url = `${base}${opts.prefix}/ws/tasks/${encodeURIComponent(id)}`;
  const safe = opts.apiKey && /^[A-Za-z0-9_\-.~]+$/.test(opts.apiKey);
  const ws = new WebSocket(
    safe || !opts.apiKey ? url : `${url}?api_key=${encodeURIComponent(opts.apiKey)}`,
    safe ? ["flotilla.v1", `flotilla-key.${opts.apiKey}`] : ["flotilla.v1"],
  );
  let status: string | undefined;
  return new Promise((resolve, reject) => {
    let opened = false;
    ws.addEventListener("open", () => {
      opened = true;
    });
    ws.addEventListener("message", (m) => {
      const env = JSON.parse(String(m.data)) as {
        type: string;
        ts: string;
        data: { status?: string };
      };
      if (typeof env.data?.status === "string") status = env.data.status;
      onEvent(env);
    });
    ws.addEventListener("error", () => {
      if (!opened)
        reject(new Error(`cannot open ${url} (server down, wrong key, or not a Flotilla server)`));
    });
    ws.addEventListener("close", (e) => {
      if (e.code === 4404) reject(new Error(`task ${id} not found`));
      else if (opened) resolve(status);
    });
  });
}
