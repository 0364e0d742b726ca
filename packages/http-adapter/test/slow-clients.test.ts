import { connect, type Socket } from "node:net";
import { Orchestrator, ToolCallWorker } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import {
  type ConnectionLimits,
  createFlotillaApp,
  type FlotillaServer,
  serveFlotilla,
} from "../src/index.js";

const KEY = "slow-clients-test-key";
let server: FlotillaServer | undefined;
let orchestrator: Orchestrator | undefined;
const sockets: Socket[] = [];
const timers: Array<ReturnType<typeof setInterval>> = [];
afterEach(async () => {
  for (const t of timers) clearInterval(t);
  for (const s of sockets) s.destroy();
  sockets.length = 0;
  await server?.close({ graceMs: 100 });
  await orchestrator?.stop();
  server = undefined;
});

async function start(limits: ConnectionLimits) {
  orchestrator = new Orchestrator();
  await orchestrator.register(new ToolCallWorker());
  await orchestrator.start();
  const app = createFlotillaApp({ orchestrator, auth: { keys: [KEY] } });
  server = await serveFlotilla(app, { port: 0, limits });
  return server;
}

/** A raw connection from `localAddress`; resolves when connected, with when it closed. */
function open(port: number, localAddress: string) {
  const s = connect({ host: "127.0.0.1", port, localAddress });
  sockets.push(s);
  s.on("error", () => {});
  s.resume(); // read what the server sends, so its close is seen
  const opened = Date.now();
  const closed = new Promise<number>((resolve) =>
    s.once("close", () => resolve(Date.now() - opened)),
  );
  const ready = new Promise<void>((resolve) => s.once("connect", () => resolve()));
  return { s, ready, closed };
}

function trickle(s: Socket, piece: string, everyMs: number) {
  const t = setInterval(() => {
    if (!s.destroyed) s.write(piece);
  }, everyMs);
  timers.push(t);
}

describe("slow and idle clients", () => {
  it("1000 slow connections from several addresses are closed in time and do not stop the server answering", async () => {
    const s = await start({
      headersTimeoutMs: 1000,
      idleTimeoutMs: 1000,
      minBodyBytesPerSecond: 100,
      bodyRateWindowMs: 500,
    });
    const port = s.port;
    const conns: Array<{ kind: string; closed: Promise<number> }> = [];
    for (let i = 0; i < 1000; i++) {
      const from = `127.0.0.${2 + (i % 4)}`;
      const c = open(port, from);
      await c.ready;
      const kind = ["headers", "nothing", "body", "idle"][i % 4]!;
      if (kind === "headers") {
        c.s.write("GET /health HTTP/1.1\r\nHost: x\r\n");
        trickle(c.s, "X-Slow: y\r\n", 200);
      } else if (kind === "body") {
        c.s.write(
          `POST /api/v2/orchestrator/tasks/submit HTTP/1.1\r\nHost: x\r\nx-api-key: ${KEY}\r\ncontent-type: application/json\r\ncontent-length: 100000\r\n\r\n{`,
        );
        trickle(c.s, " ", 300);
      } else if (kind === "idle") {
        c.s.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n"); // answered, then kept open idle
      }
      conns.push({ kind, closed: c.closed });
    }

    // While they hang on, the server answers at once.
    const t0 = Date.now();
    const health = await fetch(`${s.url}/health`);
    expect(health.status).toBe(200);
    const sub = await fetch(`${s.url}/api/v2/orchestrator/tasks/submit`, {
      method: "POST",
      headers: { "x-api-key": KEY, "content-type": "application/json" },
      body: JSON.stringify({ type: "tool_call", payload: { tool_name: "echo", tool_input: "hi" } }),
    });
    expect(sub.status).toBe(200);
    expect(Date.now() - t0).toBeLessThan(2000);

    // Every slow connection is closed by the server, within its limit plus the check interval.
    const lifetimes = await Promise.all(conns.map((c) => c.closed));
    const byKind = new Map<string, number>();
    for (const [i, c] of conns.entries()) {
      byKind.set(c.kind, Math.max(byKind.get(c.kind) ?? 0, lifetimes[i]!));
    }
    for (const [kind, longest] of byKind) expect(longest, kind).toBeLessThan(8000);
  }, 60_000);

  it("many requests with a body on one keep-alive connection leave no listener or timer behind", async () => {
    const s = await start({ minBodyBytesPerSecond: 100, bodyRateWindowMs: 500 });
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    const c = open(s.port, "127.0.0.1");
    await c.ready;
    let answers = 0;
    let seen = "";
    const allAnswered = new Promise<void>((resolve) => {
      c.s.on("data", (d: Buffer) => {
        seen += d.toString();
        const parts = seen.split("HTTP/1.1 200 OK");
        answers = parts.length - 1;
        if (answers >= 50) resolve();
      });
    });
    const body = JSON.stringify({ type: "tool_call", payload: { tool_name: "echo" } });
    const request = `POST /api/v2/orchestrator/tasks/submit HTTP/1.1\r\nHost: x\r\nx-api-key: ${KEY}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    for (let i = 0; i < 50; i++) c.s.write(request);
    await allAnswered;
    await new Promise((r) => setImmediate(r));
    process.off("warning", onWarning);
    expect(answers).toBe(50);
    expect(warnings.filter((w) => w.name === "MaxListenersExceededWarning")).toEqual([]);
  });

  it("a keep-alive connection is closed once idle for the timeout after its last answer, not while it is used", async () => {
    const idleMs = 1000;
    const s = await start({ idleTimeoutMs: idleMs, headersTimeoutMs: 2000 });
    const c = open(s.port, "127.0.0.1");
    await c.ready;
    let answers = 0;
    let lastAnswerAt = 0;
    let answered: (() => void) | undefined;
    c.s.on("data", (d: Buffer) => {
      const n = d.toString().split("HTTP/1.1 200 OK").length - 1;
      if (n === 0) return;
      answers += n;
      lastAnswerAt = Date.now();
      answered?.();
    });
    const ask = () =>
      new Promise<void>((resolve) => {
        answered = resolve;
        c.s.write("GET /health HTTP/1.1\r\nHost: x\r\n\r\n");
      });
    // Used for 1.5 idle timeouts, a request every 0.3 of one: never idle long enough.
    for (let i = 0; i < 5; i++) {
      await ask();
      await new Promise((r) => setTimeout(r, idleMs * 0.3));
    }
    await ask();
    expect(answers).toBe(6);
    // Then left idle: closed one timeout after the last answer (give or take the timer).
    await c.closed;
    const idleFor = Date.now() - lastAnswerAt;
    expect(idleFor).toBeGreaterThanOrEqual(idleMs - 50);
    expect(idleFor).toBeLessThan(idleMs + 3000);
  });

  it("a request in flight is never cut for idleness: an SSE stream outlives the idle timeout", async () => {
    const s = await start({ idleTimeoutMs: 300, headersTimeoutMs: 1000 });
    const api = `${s.url}/api/v2/orchestrator`;
    const headers = { "x-api-key": KEY, "content-type": "application/json" };
    const { task_id } = (await (
      await fetch(`${api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({
          type: "tool_call",
          payload: { tool_name: "echo" },
          approval: "before_run",
        }),
      })
    ).json()) as { task_id: string };
    const res = await fetch(`${api}/tasks/${task_id}/events`, { headers });
    const reader = res.body!.getReader();
    await reader.read(); // the first event
    // Three idle timeouts later the stream is still open: approving ends it normally.
    await new Promise((r) => setTimeout(r, 1000));
    await fetch(`${api}/tasks/${task_id}/approve`, { method: "POST", headers });
    let text = "";
    for (;;) {
      const r = await reader.read();
      if (r.done) break;
      text += new TextDecoder().decode(r.value);
    }
    expect(text).toContain("event: task:succeeded");
  });

  it("a WebSocket outlives the idle timeout (it has its own pings)", async () => {
    const s = await start({ idleTimeoutMs: 300, headersTimeoutMs: 1000 });
    const ws = new WebSocket(`${s.url.replace(/^http/, "ws")}/api/v2/orchestrator/ws/events`, [
      "flotilla.v1",
      `flotilla-key.${KEY}`,
    ]);
    let closed = false;
    ws.addEventListener("close", () => {
      closed = true;
    });
    await new Promise((r) => ws.addEventListener("open", r, { once: true }));
    await new Promise((r) => setTimeout(r, 1000));
    expect(closed).toBe(false);
    expect(ws.readyState).toBe(WebSocket.OPEN);
    ws.close();
  });

  it("caps open connections per address; other addresses are not affected", async () => {
    const s = await start({ maxConnectionsPerSource: 20, idleTimeoutMs: 5000 });
    const from9 = Array.from({ length: 30 }, () => open(s.port, "127.0.0.9"));
    await Promise.all(from9.map((c) => c.ready));
    // The ten beyond the cap are closed at once; the twenty stay open.
    const early = await Promise.race([
      Promise.all(from9.slice(20).map((c) => c.closed)),
      new Promise<"timeout">((r) => setTimeout(() => r("timeout"), 3000)),
    ]);
    expect(early).not.toBe("timeout");
    expect(from9.slice(0, 20).every((c) => !c.s.destroyed)).toBe(true);
    const other = open(s.port, "127.0.0.10");
    await other.ready;
    other.s.write("GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const answer = await new Promise<string>((resolve) => {
      let buf = "";
      other.s.on("data", (d) => {
        buf += d;
      });
      other.s.once("close", () => resolve(buf));
    });
    expect(answer).toMatch(/^HTTP\/1.1 200/);
  });
});
