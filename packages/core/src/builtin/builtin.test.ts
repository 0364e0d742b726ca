import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { systemClock } from "../clock.js";
import { RetryAfterError, UnrecoverableError } from "../errors.js";
import { silentLogger } from "../logger.js";
import type { ExecutionContext, WorkerTask } from "../worker/types.js";
import { ApiRequestWorker } from "./api-request.js";
import { hostAllowed } from "./http.js";
import { evaluateMath } from "./math.js";
import { ToolCallWorker } from "./tool-call.js";

const task = (type: string, payload: unknown): WorkerTask => ({
  id: "t1",
  type,
  payload,
  priority: 20,
  attempt: 1,
  metadata: {},
  dependencies: {},
  inputs: {},
});
const ctx = (signal = new AbortController().signal): ExecutionContext => ({
  signal,
  progress: () => {},
  reportUsage: () => {},
  logger: silentLogger,
  clock: systemClock,
});

let server: Server;
let base: string;
let host: string;
beforeAll(async () => {
  server = createServer((req, res) => {
    if (req.url === "/json") {
      res.setHeader("content-type", "application/json");
      res.end(JSON.stringify({ hello: "world", list: [1, 2, 3] }));
    } else if (req.url === "/echo") {
      let body = "";
      req.on("data", (c) => {
        body += c;
      });
      req.on("end", () => res.end(`${req.method}:${body}`));
    } else if (req.url === "/big") {
      res.end("x".repeat(200_000));
    } else if (req.url === "/slow") {
      setTimeout(() => res.end("late"), 2000).unref();
    } else if (req.url === "/429") {
      res.writeHead(429, { "retry-after": "3" }).end();
    } else if (req.url === "/404") {
      res.writeHead(404).end("nope");
    } else if (req.url === "/500") {
      res.writeHead(500).end("boom");
    } else if (req.url === "/redirect-out") {
      res.writeHead(302, { location: "http://localhost:1/elsewhere" }).end();
    } else res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  host = `127.0.0.1:${port}`;
  base = `http://${host}`;
});
afterAll(async () => {
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe("hostAllowed", () => {
  it("matches exact hosts, ports and subdomain wildcards; denies by default", () => {
    const u = new URL("https://api.example.com/x");
    expect(hostAllowed(u, [])).toBe(false);
    expect(hostAllowed(u, ["api.example.com"])).toBe(true);
    expect(hostAllowed(u, ["api.example.com:443"])).toBe(true);
    expect(hostAllowed(u, ["api.example.com:8443"])).toBe(false);
    expect(hostAllowed(u, ["*.example.com"])).toBe(true);
    expect(hostAllowed(new URL("https://example.com"), ["*.example.com"])).toBe(false);
    expect(hostAllowed(new URL("https://evilexample.com"), ["*.example.com"])).toBe(false);
  });
});

describe("ApiRequestWorker", () => {
  it("refuses every host when no allow-list is configured", async () => {
    const w = new ApiRequestWorker();
    await expect(w.execute(task("api_request", { url: `${base}/json` }), ctx())).rejects.toThrow(
      /not on the operator's allow-list/,
    );
  });

  it("fetches JSON from an allowed host, sends bodies", async () => {
    const w = new ApiRequestWorker({ allowedHosts: [host] });
    const r = await w.execute(task("api_request", { url: `${base}/json` }), ctx());
    expect(r.output.status).toBe(200);
    expect(r.output.body).toEqual({ hello: "world", list: [1, 2, 3] });
    const p = await w.execute(
      task("api_request", { url: `${base}/echo`, method: "post", body: { a: 1 } }),
      ctx(),
    );
    expect(p.output.body).toBe('POST:{"a":1}');
  });

  it("caps response size, times out, classifies statuses", async () => {
    const w = new ApiRequestWorker({
      allowedHosts: [host],
      maxResponseBytes: 1000,
      timeoutMs: 200,
    });
    await expect(w.execute(task("api_request", { url: `${base}/big` }), ctx())).rejects.toThrow(
      /exceeds the 1000-byte cap/,
    );
    await expect(w.execute(task("api_request", { url: `${base}/slow` }), ctx())).rejects.toThrow(
      /timed out after 200 ms/,
    );
    await expect(
      w.execute(task("api_request", { url: `${base}/429` }), ctx()),
    ).rejects.toBeInstanceOf(RetryAfterError);
    await expect(
      w.execute(task("api_request", { url: `${base}/404` }), ctx()),
    ).rejects.toBeInstanceOf(UnrecoverableError);
    const e500 = await w
      .execute(task("api_request", { url: `${base}/500` }), ctx())
      .catch((e) => e);
    expect(e500).toBeInstanceOf(Error);
    expect(e500).not.toBeInstanceOf(UnrecoverableError);
    const any = await w.execute(
      task("api_request", { url: `${base}/404`, accept_any_status: true }),
      ctx(),
    );
    expect(any.output.status).toBe(404);
  });

  it("re-checks redirect targets against the allow-list and rejects bad payloads", async () => {
    const w = new ApiRequestWorker({ allowedHosts: [host] });
    await expect(
      w.execute(task("api_request", { url: `${base}/redirect-out` }), ctx()),
    ).rejects.toThrow(/localhost:1 is not on the operator's allow-list/);
    await expect(w.execute(task("api_request", { nope: 1 }), ctx())).rejects.toThrow(/payload.url/);
    await expect(
      w.execute(task("api_request", { url: "file:///etc/passwd" }), ctx()),
    ).rejects.toThrow(/only http and https/);
  });

  it("honours cancellation", async () => {
    const w = new ApiRequestWorker({ allowedHosts: [host] });
    const ac = new AbortController();
    const p = w.execute(task("api_request", { url: `${base}/slow` }), ctx(ac.signal));
    ac.abort(new Error("cancelled by test"));
    await expect(p).rejects.toThrow(/cancelled by test/);
  });
});

describe("evaluateMath", () => {
  it("evaluates with precedence, powers, functions and variables", () => {
    expect(evaluateMath("1 + 2 * 3")).toBe(7);
    expect(evaluateMath("2 * (3 + 4) ^ 2")).toBe(98);
    expect(evaluateMath("2 ** 3 ** 2")).toBe(512);
    expect(evaluateMath("-2 ^ 2")).toBe(-4);
    expect(evaluateMath("max(x, 10) / 4", { x: 42 })).toBe(10.5);
    expect(evaluateMath("round(pi * 100) % 7")).toBe(314 % 7);
    expect(evaluateMath("1.5e3 + .5")).toBe(1500.5);
  });
  it("rejects anything that is not arithmetic", () => {
    expect(() => evaluateMath("process.exit(1)")).toThrow(UnrecoverableError);
    expect(() => evaluateMath("constructor")).toThrow(/unknown name/);
    expect(() => evaluateMath("toString(1)")).toThrow(/unknown function/);
    expect(() => evaluateMath("1 +")).toThrow(/unexpected end/);
    expect(() => evaluateMath("(1")).toThrow(/expected '\)'/);
    expect(() => evaluateMath(`${"(".repeat(500)}1${")".repeat(500)}`)).toThrow(
      /nested too deeply/,
    );
  });
});

describe("ToolCallWorker", () => {
  it("runs built-in tools", async () => {
    const w = new ToolCallWorker({ http: { allowedHosts: [host] } });
    const run = async (tool_name: string, tool_input: unknown) =>
      (await w.execute(task("tool_call", { tool_name, tool_input }), ctx())).output;
    expect(await run("echo", { a: 1 })).toEqual({ a: 1 });
    expect(await run("math", { expression: "6 * 7" })).toEqual({ result: 42 });
    expect(await run("json_transform", { data: { a: { b: [5, 6] } }, pick: "a.b[1]" })).toBe(6);
    expect(
      await run("json_transform", { data: { a: { b: [5, 6] } }, fields: { x: "a.b[0]", y: "z" } }),
    ).toEqual({ x: 5, y: null });
    expect(await run("sleep", { ms: 5 })).toEqual({ slept_ms: 5 });
    const got = (await run("http_get", { url: `${base}/json` })) as { body: unknown };
    expect(got.body).toEqual({ hello: "world", list: [1, 2, 3] });
  });

  it("validates tool input, names unknown tools, accepts registered tools", async () => {
    const w = new ToolCallWorker();
    w.registerTool("add", z.object({ a: z.number(), b: z.number() }), ({ a, b }) => a + b);
    const r = await w.execute(task("tool_call", { tool: "add", input: { a: 2, b: 3 } }), ctx());
    expect(r.output).toBe(5);
    await expect(
      w.execute(task("tool_call", { tool_name: "add", tool_input: { a: "x" } }), ctx()),
    ).rejects.toThrow(/tool_input.a/);
    await expect(w.execute(task("tool_call", { tool_name: "nope" }), ctx())).rejects.toThrow(
      /unknown tool "nope": expected one of add, echo/,
    );
    await expect(w.execute(task("tool_call", {}), ctx())).rejects.toThrow(/tool_name/);
    await expect(
      w.execute(
        task("tool_call", { tool_name: "http_get", tool_input: { url: `${base}/json` } }),
        ctx(),
      ),
    ).rejects.toThrow(/allow-list/);
  });

  it("aborts a sleeping tool", async () => {
    const w = new ToolCallWorker();
    const ac = new AbortController();
    const p = w.execute(
      task("tool_call", { tool_name: "sleep", tool_input: { ms: 10_000 } }),
      ctx(ac.signal),
    );
    ac.abort(new Error("stop"));
    await expect(p).rejects.toThrow(/stop/);
  });
});
