import { request } from "node:http";
import {
  ApiRequestWorker,
  type Logger,
  MATH_FUNCTIONS,
  ToolCallWorker,
  type Worker,
} from "@flotilla/core";
import type { ServeConfig } from "./config.js";

/** One line of the startup report: a worker registered, or why it was not. */
export interface WorkerDecision {
  name: string;
  registered: boolean;
  reason: string;
  worker?: Worker;
}

type Module = Record<string, unknown>;
type Ctor = new (options: Record<string, unknown>) => Worker;

async function load(pkg: string): Promise<Module | undefined> {
  try {
    return (await import(pkg)) as Module;
  } catch {
    return undefined;
  }
}

/** GET a URL with a short timeout; resolves the status code or undefined. */
async function probeHttp(url: string, timeoutMs = 1500): Promise<number | undefined> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
    await res.body?.cancel();
    return res.status;
  } catch {
    return undefined;
  }
}

/** Docker's `GET /_ping` over DOCKER_HOST (unix socket or tcp). */
async function pingDocker(dockerHost: string, timeoutMs = 1500): Promise<boolean> {
  if (dockerHost.startsWith("tcp://") || dockerHost.startsWith("http://")) {
    const status = await probeHttp(`${dockerHost.replace(/^tcp:/, "http:")}/_ping`, timeoutMs);
    return status === 200;
  }
  const socketPath = dockerHost.replace(/^unix:\/\//, "");
  return new Promise((resolve) => {
    const req = request({ socketPath, path: "/_ping", timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on("timeout", () => {
      req.destroy();
      resolve(false);
    });
    req.on("error", () => resolve(false));
    req.end();
  });
}

/**
 * Decides which workers `flotilla serve` registers: the built-ins always; Docker when an
 * engine answers at DOCKER_HOST; Ollama when it answers; OpenAI / Anthropic when their
 * keys are set. Every decision carries its reason for the startup report.
 *
 * @example
 * ```ts
 * for (const d of await detectWorkers(config, process.env, logger)) console.log(d.registered, d.name, d.reason);
 * ```
 */
export async function detectWorkers(
  config: ServeConfig,
  env: Record<string, string | undefined>,
  logger: Logger,
): Promise<WorkerDecision[]> {
  const out: WorkerDecision[] = [];
  const http = { allowedHosts: config.allowHosts };
  const tools = new ToolCallWorker({ http });
  out.push({
    name: "tool-call",
    registered: true,
    worker: tools,
    reason: `built-in tool_call: ${tools
      .listTools()
      .map((t) => t.name)
      .join(", ")} (math functions: ${MATH_FUNCTIONS.length})`,
  });
  out.push({
    name: "api-request",
    registered: true,
    worker: new ApiRequestWorker(http),
    reason: `built-in api_request; allowed hosts: ${config.allowHosts.length ? config.allowHosts.join(", ") : "none (set --allow-hosts)"}`,
  });
  if (!config.detectWorkers) {
    out.push({
      name: "docker, ollama, openai, anthropic",
      registered: false,
      reason: "detection off (--no-detect-workers)",
    });
    return out;
  }

  const [docker, ollama, llm] = await Promise.all([
    (async (): Promise<WorkerDecision> => {
      const dockerHost = env.DOCKER_HOST || "unix:///var/run/docker.sock";
      const mod = await load("@flotilla/workers-docker");
      const Docker = mod?.DockerWorker as Ctor | undefined;
      if (!(await pingDocker(dockerHost))) {
        return {
          name: "docker",
          registered: false,
          reason: `no container engine answered at ${dockerHost}`,
        };
      }
      if (!Docker) {
        return {
          name: "docker",
          registered: false,
          reason: `engine answered at ${dockerHost}, but the Docker worker package is not available in this build`,
        };
      }
      try {
        return {
          name: "docker",
          registered: true,
          worker: new Docker({ host: dockerHost }),
          reason: `engine at ${dockerHost}`,
        };
      } catch (err) {
        return {
          name: "docker",
          registered: false,
          reason: `engine answered but the worker failed to start: ${(err as Error).message}`,
        };
      }
    })(),
    (async (): Promise<WorkerDecision> => {
      const url = config.ollamaUrl.replace(/\/+$/, "");
      const status = await probeHttp(`${url}/api/tags`);
      if (status !== 200)
        return { name: "ollama", registered: false, reason: `not reachable at ${url}` };
      const mod = await load("@flotilla/workers-ollama");
      const Ollama = mod?.OllamaWorker as Ctor | undefined;
      if (!Ollama) {
        return {
          name: "ollama",
          registered: false,
          reason: `answered at ${url}, but the Ollama worker package is not available in this build`,
        };
      }
      try {
        return {
          name: "ollama",
          registered: true,
          worker: new Ollama({ host: url }),
          reason: `reachable at ${url}`,
        };
      } catch (err) {
        return {
          name: "ollama",
          registered: false,
          reason: `reachable but the worker failed to start: ${(err as Error).message}`,
        };
      }
    })(),
    (async (): Promise<WorkerDecision[]> => {
      const mod = await load("@flotilla/workers-llm");
      const res: WorkerDecision[] = [];
      for (const [name, envName, ctorName] of [
        ["openai", "OPENAI_API_KEY", "OpenAIWorker"],
        ["anthropic", "ANTHROPIC_API_KEY", "AnthropicWorker"],
      ] as const) {
        const key = env[envName];
        if (!key) {
          res.push({ name, registered: false, reason: `${envName} not set` });
          continue;
        }
        const Ctor = mod?.[ctorName] as Ctor | undefined;
        if (!Ctor) {
          res.push({
            name,
            registered: false,
            reason: `${envName} set, but the ${name} worker is not available in this build`,
          });
          continue;
        }
        try {
          res.push({
            name,
            registered: true,
            worker: new Ctor({ id: name, apiKey: key }),
            reason: `${envName} set`,
          });
        } catch (err) {
          res.push({
            name,
            registered: false,
            reason: `${envName} set but the worker failed: ${(err as Error).message}`,
          });
        }
      }
      return res;
    })(),
  ]);
  out.push(docker, ollama, ...llm);
  logger.debug(
    { workers: out.map((d) => ({ name: d.name, registered: d.registered })) },
    "worker detection",
  );
  return out;
}
