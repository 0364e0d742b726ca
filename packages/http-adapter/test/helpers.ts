import type { Clock } from "@flotilla/core";
import {
  type DispatchGate,
  FunctionWorker,
  Orchestrator,
  ToolCallWorker,
  type Worker,
} from "@flotilla/core";
import {
  createFlotillaApp,
  type FlotillaAppOptions,
  type FlotillaServer,
  serveFlotilla,
} from "../src/index.js";

export const KEY = "test-admin-key-0123456789";
export const PREFIX = "/api/v2/orchestrator";

export interface Harness {
  url: string;
  api: string;
  orchestrator: Orchestrator;
  server: FlotillaServer;
  app: ReturnType<typeof createFlotillaApp>;
  /** fetch with the admin key. */
  req(path: string, init?: RequestInit & { json?: unknown }): Promise<Response>;
  close(): Promise<void>;
}

/** Workers used across the tests: tools, an LLM stand-in, a failing one and a slow one. */
export function testWorkers(): Worker[] {
  return [
    new ToolCallWorker({ maxConcurrency: 4 }),
    new FunctionWorker({
      id: "fake-llm",
      taskTypes: ["llm_request"],
      maxConcurrency: 2,
      fn: async (payload: { prompt?: string }) => ({ text: `echo: ${payload.prompt}` }),
    }),
    new FunctionWorker({
      id: "failing",
      taskTypes: ["custom"],
      fn: async (payload: { fail?: boolean; ms?: number }, ctx) => {
        if (payload?.ms) {
          await new Promise<void>((resolve, reject) => {
            const t = setTimeout(resolve, payload.ms);
            ctx.signal.addEventListener("abort", () => {
              clearTimeout(t);
              reject(ctx.signal.reason);
            });
          });
        }
        if (payload?.fail) throw new Error("custom worker failed on purpose");
        return { ok: true };
      },
    }),
  ];
}

/** Starts a real orchestrator and server on 127.0.0.1, port 0. */
export async function startHarness(
  opts: Partial<FlotillaAppOptions> & {
    workers?: Worker[];
    gates?: DispatchGate[];
    /** The engine's clock (a `FakeClock` that is never advanced makes every event simultaneous). */
    engineClock?: Clock;
  } = {},
): Promise<Harness> {
  const orchestrator = new Orchestrator({
    ...(opts.gates ? { gates: opts.gates } : {}),
    ...(opts.engineClock ? { clock: opts.engineClock } : {}),
  });
  for (const w of opts.workers ?? testWorkers()) await orchestrator.register(w);
  await orchestrator.start();
  const { workers: _w, gates: _g, engineClock: _c, ...rest } = opts;
  const app = createFlotillaApp({ orchestrator, auth: { keys: [KEY] }, ...rest });
  const server = await serveFlotilla(app, { host: "127.0.0.1", port: 0 });
  const url = server.url;
  const api = `${url}${app.flotilla.prefix}`;
  return {
    url,
    api,
    orchestrator,
    server,
    app,
    req(path, init = {}) {
      const { json, ...rest2 } = init;
      const headers = new Headers(rest2.headers);
      if (!headers.has("x-api-key") && !headers.has("authorization")) headers.set("x-api-key", KEY);
      if (json !== undefined) headers.set("content-type", "application/json");
      return fetch(path.startsWith("http") ? path : `${api}${path}`, {
        ...rest2,
        headers,
        ...(json !== undefined
          ? { method: rest2.method ?? "POST", body: JSON.stringify(json) }
          : {}),
      });
    },
    async close() {
      await server.close({ graceMs: 500 });
      await orchestrator.stop({ mode: "abort" });
    },
  };
}
