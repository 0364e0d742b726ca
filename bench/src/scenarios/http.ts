/**
 * Scenario 8: HTTP. Submit and status over loopback under bounded load (keep-alive fetch,
 * a fixed number of requests in flight): p50/p99 latency and requests/s, against a bare
 * hello-world on the same server stack (Hono on @hono/node-server) and on bare node:http as
 * the ceiling. Then WebSocket fan-out: many subscribers on the events stream, tasks
 * submitted one at a time, the time until every subscriber got each task's terminal event,
 * and a check that every subscriber got every event exactly once.
 */
import { createServer, type IncomingMessage, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { FunctionWorker, Orchestrator } from "@flotilla/core";
import { createFlotillaApp, generateApiKey, serveFlotilla } from "@flotilla/http-adapter";
import { serve } from "@hono/node-server";
import { Hono } from "hono";
import { WebSocket, WebSocketServer } from "ws";
import { type BenchContext, check, type Scenario } from "../report.js";
import { median, nowMs, percentile } from "../stats.js";

const NAME = "8. HTTP";
const PREFIX = "/api/v2/orchestrator";
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out", "rejected", "skipped"]);

interface LoadResult {
  latencies: number[];
  perSecond: number;
  failures: number;
}

/** Runs `n` requests with `concurrency` in flight; `one(i)` returns whether the answer was right. */
async function load(
  n: number,
  concurrency: number,
  one: (i: number) => Promise<boolean>,
): Promise<LoadResult> {
  const latencies = new Array<number>(n);
  let next = 0;
  let failures = 0;
  const t0 = nowMs();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      for (let i = next++; i < n; i = next++) {
        const t = nowMs();
        const ok = await one(i).catch(() => false);
        latencies[i] = nowMs() - t;
        if (!ok) failures++;
      }
    }),
  );
  return { latencies, perSecond: (n / (nowMs() - t0)) * 1000, failures };
}

interface Summary {
  p50: number;
  p99: number;
  perSecond: number;
  failures: number;
}

/** Median of each figure over the runs. */
function summarise(runs: readonly LoadResult[]): Summary {
  return {
    p50: median(runs.map((r) => percentile(r.latencies, 50))),
    p99: median(runs.map((r) => percentile(r.latencies, 99))),
    perSecond: median(runs.map((r) => r.perSecond)),
    failures: runs.reduce((s, r) => s + r.failures, 0),
  };
}

function pushRows(ctx: BenchContext, caseName: string, subject: string, s: Summary): void {
  const base = { scenario: NAME, case: caseName, subject };
  ctx.rows.push(
    { ...base, metric: "p50 latency", value: s.p50, unit: "ms", better: "lower" },
    { ...base, metric: "p99 latency", value: s.p99, unit: "ms", better: "lower" },
    { ...base, metric: "throughput", value: s.perSecond, unit: "req/s", better: "higher" },
  );
}

/** A server's base URL once it listens on 127.0.0.1 with an OS-chosen port. */
function listening(server: Server): Promise<string> {
  return new Promise((resolve, reject) => {
    const done = () => resolve(`http://127.0.0.1:${(server.address() as AddressInfo).port}`);
    if (server.listening) done();
    else {
      server.once("listening", done);
      server.once("error", reject);
    }
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => resolve(Buffer.concat(chunks).toString()));
    req.on("error", reject);
  });
}

/** The ceiling on the same stack: a one-route Hono app served by @hono/node-server. */
async function startHono(): Promise<{ url: string; close(): Promise<void> }> {
  const app = new Hono();
  app.get("/hello", (c) => c.json({ hello: "world" }));
  app.post("/hello", async (c) => {
    await c.req.json();
    return c.json({ hello: "world" });
  });
  const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 }) as Server;
  const url = await listening(server);
  return { url, close: () => closeServer(server) };
}

/** The ceiling without any framework: node:http answering a small JSON body. */
async function startBare(): Promise<{ url: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const answer = () => {
      res.writeHead(200, { "content-type": "application/json" });
      res.end('{"hello":"world"}');
    };
    if (req.method === "POST") {
      readBody(req).then((b) => {
        JSON.parse(b);
        answer();
      }, answer);
    } else answer();
  });
  server.listen(0, "127.0.0.1");
  const url = await listening(server);
  return { url, close: () => closeServer(server) };
}

const JSON_HEADERS = { "content-type": "application/json" };

/** `runs` measured load runs of POST and GET against a hello-world URL. */
async function helloLoad(url: string, n: number, concurrency: number, runs: number) {
  const post = (_i: number) =>
    fetch(`${url}/hello`, {
      method: "POST",
      headers: JSON_HEADERS,
      body: JSON.stringify({ type: "noop", payload: { i: _i } }),
    }).then(async (r) => r.status === 200 && (await r.json()).hello === "world");
  const get = (_i: number) =>
    fetch(`${url}/hello`).then(async (r) => r.status === 200 && (await r.json()).hello === "world");
  await load(Math.min(n, 200), concurrency, post);
  await load(Math.min(n, 200), concurrency, get);
  const posts: LoadResult[] = [];
  const gets: LoadResult[] = [];
  for (let r = 0; r < runs; r++) {
    posts.push(await load(n, concurrency, post));
    gets.push(await load(n, concurrency, get));
  }
  return { post: summarise(posts), get: summarise(gets) };
}

/** Opens `n` event-stream subscribers, a batch at a time, each resolved on its `hello`. */
async function subscribe(
  url: string,
  headers: Record<string, string>,
  n: number,
  onMessage: (sub: number, data: string) => void,
): Promise<WebSocket[]> {
  const sockets: WebSocket[] = [];
  const batch = 100;
  for (let start = 0; start < n; start += batch) {
    const opened = Array.from(
      { length: Math.min(batch, n - start) },
      (_, k) =>
        new Promise<WebSocket>((resolve, reject) => {
          const id = start + k;
          const ws = new WebSocket(url, { headers, perMessageDeflate: false });
          sockets.push(ws);
          let helloSeen = false;
          ws.on("message", (raw) => {
            const text = raw.toString();
            if (!helloSeen) {
              helloSeen = true;
              resolve(ws);
              return;
            }
            onMessage(id, text);
          });
          ws.once("error", reject);
        }),
    );
    await Promise.all(opened);
  }
  return sockets;
}

function closeSockets(sockets: readonly WebSocket[]): Promise<void> {
  return Promise.all(
    sockets.map(
      (ws) =>
        new Promise<void>((resolve) => {
          if (ws.readyState === WebSocket.CLOSED) return resolve();
          ws.once("close", () => resolve());
          ws.terminate();
        }),
    ),
  ).then(() => undefined);
}

/** Resolves when `cond()` holds, checked on each `poke()`; rejects after `timeoutMs`. */
interface Pending {
  cond: () => boolean;
  resolve: () => void;
}

class Waiter {
  #pending: Pending[] = [];
  wait(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    if (cond()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const entry = {
        cond,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      const timer = setTimeout(() => {
        this.#pending = this.#pending.filter((e) => e !== entry);
        reject(new Error(`timed out waiting for ${what}`));
      }, timeoutMs);
      this.#pending.push(entry);
    });
  }
  poke(): void {
    if (this.#pending.length === 0) return;
    const keep: Pending[] = [];
    for (const e of this.#pending) {
      if (e.cond()) e.resolve();
      else keep.push(e);
    }
    this.#pending = keep;
  }
}

interface FanOut {
  /** Per terminal event: time from the engine's event until the last subscriber had it (ms). */
  lastReceipt: number[];
  /** Per terminal event and subscriber: time until that subscriber had it (ms). */
  eachReceipt: number[];
  /** Subscribers whose events were not exactly the expected ones, each once. */
  wrong: number;
  expectedPerSubscriber: number;
  sampleMessageBytes: number;
  timedOut?: string;
}

async function flotillaFanOut(
  base: string,
  key: string,
  published: Map<string, number>,
  subscribers: number,
  tasks: number,
  waiter: Waiter,
): Promise<FanOut> {
  const headers = { "x-api-key": key };
  const wsUrl = `${base.replace("http", "ws")}${PREFIX}/ws/events?types=task`;
  const counts: Array<Map<string, number>> = Array.from({ length: subscribers }, () => new Map());
  const receivedBy = new Map<string, number>();
  const lastAt = new Map<string, number>();
  const each: number[] = [];
  let sampleMessageBytes = 0;
  const sockets = await subscribe(wsUrl, headers, subscribers, (sub, text) => {
    const at = nowMs();
    const env = JSON.parse(text) as { type: string; task_id?: string };
    const k = `${env.task_id}|${env.type}`;
    const m = counts[sub]!;
    m.set(k, (m.get(k) ?? 0) + 1);
    receivedBy.set(k, (receivedBy.get(k) ?? 0) + 1);
    lastAt.set(k, at);
    if (TERMINAL.has(env.type.slice(5))) {
      sampleMessageBytes = text.length;
      const p = published.get(k);
      if (p !== undefined) each.push(at - p);
    }
    waiter.poke();
  });
  const ids: string[] = [];
  let timedOut: string | undefined;
  try {
    for (let i = 0; i < tasks; i++) {
      const res = await fetch(`${base}${PREFIX}/tasks/submit`, {
        method: "POST",
        headers: { ...headers, ...JSON_HEADERS },
        body: JSON.stringify({ type: "noop", payload: { fanout: i } }),
      });
      const id = ((await res.json()) as { task_id: string }).task_id;
      ids.push(id);
      await waiter.wait(
        () => (receivedBy.get(`${id}|task:succeeded`) ?? 0) >= subscribers,
        10_000,
        `task ${id}'s terminal event at ${subscribers} subscribers`,
      );
    }
    // Let anything sent twice arrive before counting.
    await new Promise((r) => setTimeout(r, 100));
  } catch (err) {
    timedOut = (err as Error).message;
  }
  await closeSockets(sockets);
  // The events the engine emitted for these tasks, each expected exactly once per subscriber.
  const expected = [...published.keys()].filter((k) => ids.includes(k.split("|")[0]!));
  let wrong = 0;
  for (const m of counts) {
    const mine = [...m].filter(([k]) => ids.includes(k.split("|")[0]!));
    const ok =
      mine.length === expected.length &&
      mine.every(([k, c]) => c === 1 && published.has(k)) &&
      expected.every((k) => m.get(k) === 1);
    if (!ok) wrong++;
  }
  const lastReceipt = ids
    .map((id) => `${id}|task:succeeded`)
    .filter((k) => lastAt.has(k) && published.has(k))
    .map((k) => lastAt.get(k)! - published.get(k)!);
  return {
    lastReceipt,
    eachReceipt: each,
    wrong,
    expectedPerSubscriber: expected.length,
    sampleMessageBytes,
    ...(timedOut ? { timedOut } : {}),
  };
}

/**
 * The fan-out ceiling: a bare `ws` server broadcasting, per task, as many messages as the
 * engine emits for one task, the last (the "terminal" one) timed; every message as large as
 * a terminal event.
 */
async function bareFanOut(
  subscribers: number,
  tasks: number,
  perTask: number,
  bytes: number,
): Promise<{ lastReceipt: number[]; eachReceipt: number[] }> {
  const server = createServer();
  const wss = new WebSocketServer({ server, perMessageDeflate: false });
  wss.on("connection", (ws) => ws.send("hello"));
  server.listen(0, "127.0.0.1");
  const url = (await listening(server)).replace("http", "ws");
  const received = new Map<number, number>();
  const lastAt = new Map<number, number>();
  const sentAt = new Map<number, number>();
  const each: number[] = [];
  const waiter = new Waiter();
  const sockets = await subscribe(url, {}, subscribers, (_sub, text) => {
    if (text.startsWith("-")) return; // not the timed message
    const at = nowMs();
    const seq = Number(text.slice(0, text.indexOf("|")));
    received.set(seq, (received.get(seq) ?? 0) + 1);
    lastAt.set(seq, at);
    each.push(at - sentAt.get(seq)!);
    waiter.poke();
  });
  const pad = "x".repeat(Math.max(0, bytes - 12));
  for (let seq = 0; seq < tasks; seq++) {
    sentAt.set(seq, nowMs());
    for (let m = 1; m <= perTask; m++) {
      const msg = m < perTask ? `-|${pad}` : `${seq}|${pad}`;
      for (const client of wss.clients) client.send(msg);
    }
    await waiter.wait(() => (received.get(seq) ?? 0) >= subscribers, 10_000, "bare broadcast");
  }
  await closeSockets(sockets);
  await new Promise<void>((resolve) => wss.close(() => resolve()));
  await closeServer(server);
  return {
    lastReceipt: [...lastAt].map(([seq, at]) => at - sentAt.get(seq)!),
    eachReceipt: each,
  };
}

export const httpScenario: Scenario = {
  name: "http",
  title: NAME,
  async run(ctx: BenchContext) {
    const n = ctx.smoke ? 200 : 2000;
    const concurrency = 32;
    const runs = ctx.smoke ? 1 : 3;
    const subscribers = ctx.smoke ? 50 : 1000;
    const fanTasks = ctx.smoke ? 5 : 50;

    // The engine's own record of each task event, taken before the server relays it.
    const published = new Map<string, number>();
    const finished = new Map<string, number>();
    const waiter = new Waiter();
    const orchestrator = new Orchestrator({ concurrency: 64 });
    orchestrator.on("task:transition", (ev) => {
      published.set(`${ev.taskId}|task:${ev.to}`, nowMs());
      if (TERMINAL.has(ev.to)) {
        finished.set(ev.taskId, (finished.get(ev.taskId) ?? 0) + 1);
        waiter.poke();
      }
    });
    await orchestrator.register(
      new FunctionWorker({
        id: "noop",
        taskTypes: ["noop"],
        maxConcurrency: 64,
        fn: async () => null,
      }),
    );
    await orchestrator.start();
    const key = generateApiKey();
    const app = createFlotillaApp({ orchestrator, auth: { keys: [key] } });
    const server = await serveFlotilla(app, { host: "127.0.0.1", port: 0 });
    const base = server.url;
    const headers = { "x-api-key": key };

    try {
      const ids: string[] = [];
      const submit = (i: number) =>
        fetch(`${base}${PREFIX}/tasks/submit`, {
          method: "POST",
          headers: { ...headers, ...JSON_HEADERS },
          body: JSON.stringify({ type: "noop", payload: { i } }),
        }).then(async (r) => {
          const body = (await r.json()) as { task_id?: string };
          if (r.status !== 200 || !body.task_id) return false;
          ids.push(body.task_id);
          return true;
        });
      const status = (i: number) => {
        const id = ids[i % ids.length]!;
        return fetch(`${base}${PREFIX}/tasks/${id}`, { headers }).then(async (r) => {
          const body = (await r.json()) as { task_id?: string; id?: string };
          return r.status === 200 && (body.task_id ?? body.id) === id;
        });
      };

      const caseSubmit = `POST submit, ${n} requests, ${concurrency} in flight`;
      const caseStatus = `GET task status, ${n} requests, ${concurrency} in flight`;
      ctx.log(`${NAME}: ${caseSubmit}; ${caseStatus}`);
      if (!ctx.smoke) {
        await load(200, concurrency, submit);
        await load(200, concurrency, status);
      }
      const submits: LoadResult[] = [];
      const statuses: LoadResult[] = [];
      for (let r = 0; r < runs; r++) {
        submits.push(await load(n, concurrency, submit));
        statuses.push(await load(n, concurrency, status));
      }
      const flSubmit = summarise(submits);
      const flStatus = summarise(statuses);
      pushRows(ctx, caseSubmit, "Flotilla", flSubmit);
      pushRows(ctx, caseStatus, "Flotilla", flStatus);
      const total = ids.length;
      check(
        ctx,
        NAME,
        "every submit and status request answered correctly",
        flSubmit.failures === 0 && flStatus.failures === 0,
        `${flSubmit.failures} failed submits, ${flStatus.failures} failed status reads, ${total} tasks submitted`,
      );
      try {
        await waiter.wait(() => finished.size >= total, 30_000, "the submitted tasks to finish");
      } catch {
        // reported by the check below
      }
      const once = ids.every((id) => finished.get(id) === 1);
      check(
        ctx,
        NAME,
        "every submitted task finished exactly once",
        once && finished.size === total,
        `${ids.filter((id) => finished.get(id) === 1).length}/${total} finished once`,
      );

      if (!ctx.smoke) {
        for (const [subject, start] of [
          ["Hono hello-world on @hono/node-server (ceiling)", startHono],
          ["node:http hello-world (ceiling)", startBare],
        ] as const) {
          const s = await start();
          try {
            const r = await helloLoad(s.url, n, concurrency, runs);
            pushRows(ctx, caseSubmit, subject, r.post);
            pushRows(ctx, caseStatus, subject, r.get);
          } finally {
            await s.close();
          }
        }
      }

      const caseFan = `WebSocket fan-out: ${fanTasks} tasks one at a time, ${subscribers} subscribers`;
      ctx.log(`${NAME}: ${caseFan}`);
      const fan = await flotillaFanOut(base, key, published, subscribers, fanTasks, waiter);
      const fanRows = (
        subject: string,
        f: { lastReceipt: number[]; eachReceipt: number[] },
        note?: string,
      ) => {
        const b = { scenario: NAME, case: caseFan, subject };
        ctx.rows.push(
          {
            ...b,
            metric: "terminal event at every subscriber, p50",
            value: percentile(f.lastReceipt, 50),
            unit: "ms",
            better: "lower",
            ...(note ? { note } : {}),
          },
          {
            ...b,
            metric: "terminal event at every subscriber, p99",
            value: percentile(f.lastReceipt, 99),
            unit: "ms",
            better: "lower",
          },
          {
            ...b,
            metric: "per-subscriber delivery, p99",
            value: percentile(f.eachReceipt, 99),
            unit: "ms",
            better: "lower",
          },
        );
      };
      fanRows("Flotilla", fan);
      check(
        ctx,
        NAME,
        "every subscriber got every event exactly once",
        !fan.timedOut && fan.wrong === 0 && fan.expectedPerSubscriber >= fanTasks,
        fan.timedOut ??
          `${subscribers - fan.wrong}/${subscribers} subscribers got exactly the ${fan.expectedPerSubscriber} task events of the ${fanTasks} tasks, each once`,
      );
      if (!ctx.smoke) {
        const perTask = Math.max(1, Math.round(fan.expectedPerSubscriber / fanTasks));
        const bare = await bareFanOut(subscribers, fanTasks, perTask, fan.sampleMessageBytes);
        fanRows(
          "bare ws broadcast (ceiling)",
          bare,
          `${perTask} messages of ${fan.sampleMessageBytes} bytes per task, as the engine sends`,
        );
      }
    } finally {
      await server.close({ graceMs: 1000 });
      await orchestrator.stop();
    }
  },
};
