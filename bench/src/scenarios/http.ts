/**
 * Scenario 8: HTTP. The real `flotilla serve` (SQLite, `synchronous=full`) in its own
 * process, loaded by autocannon in another (64 keep-alive connections): submit and status,
 * p50/p99 latency and requests/s, against a hello-world on the same server stack (Hono on
 * @hono/node-server), also in its own process, under the same load. Then WebSocket fan-out
 * (in process): many subscribers on the events stream, tasks submitted one at a time, the
 * time until every subscriber got each task's terminal event, and a check that every
 * subscriber got every event exactly once.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { FunctionWorker, Orchestrator } from "@flotilla/core";
import { createFlotillaApp, generateApiKey, serveFlotilla } from "@flotilla/http-adapter";
import { WebSocket, WebSocketServer } from "ws";
import { autocannon, type CannonResult, startFlotillaServe, startHonoHello } from "../processes.js";
import { type BenchContext, check, type Scenario } from "../report.js";
import { median, nowMs, percentile } from "../stats.js";

const NAME = "8. HTTP";
const PREFIX = "/api/v2/orchestrator";
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "timed_out", "rejected", "skipped"]);

interface Summary {
  p50: number;
  p99: number;
  perSecond: number;
  failures: number;
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

const JSON_HEADERS = { "content-type": "application/json" };

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

const SUBMIT_BODY = JSON.stringify({
  type: "tool_call",
  payload: { tool_name: "echo", tool_input: { hello: "world" } },
});

/** What `flotilla serve` counts in `/metrics`: tasks finished, and tasks not finished yet. */
async function taskCounts(url: string, key: string): Promise<{ finished: number; open: number }> {
  const text = await (await fetch(`${url}/metrics`, { headers: { "x-api-key": key } })).text();
  let finished = 0;
  let open = 0;
  for (const m of text.matchAll(/^flotilla_tasks_finished_total\{[^}]*\} (\d+)/gm)) {
    finished += Number(m[1]);
  }
  for (const m of text.matchAll(/^flotilla_tasks\{state="(\w+)"\} (\d+)/gm)) {
    if (!TERMINAL.has(m[1]!)) open += Number(m[2]);
  }
  return { finished, open };
}

/**
 * Submit and status through the real `flotilla serve` against the Hono hello-world, each
 * in its own process, autocannon in a third: medians of `runs` runs after a warm-up.
 */
async function serveLoad(ctx: BenchContext, runs: number): Promise<void> {
  const connections = 64;
  const seconds = ctx.smoke ? 1 : 5;
  const caseSubmit = `flotilla serve (SQLite): POST submit, ${connections} connections`;
  const caseStatus = `flotilla serve (SQLite): GET task, ${connections} connections`;
  ctx.log(`${NAME}: ${caseSubmit}; ${caseStatus}`);
  const key = generateApiKey();
  const headers = { "x-api-key": key, "content-type": "application/json" };
  const serve = await startFlotillaServe(key);
  const summary = (xs: CannonResult[]): Summary => ({
    p50: median(xs.map((x) => x.p50)),
    p99: median(xs.map((x) => x.p99)),
    perSecond: median(xs.map((x) => x.requestsPerSecond)),
    failures: xs.reduce((s, x) => s + x.failures, 0),
  });
  let accepted = 0;
  try {
    const api = `${serve.url}${PREFIX}`;
    const first = await fetch(`${api}/tasks/submit`, {
      method: "POST",
      headers,
      body: SUBMIT_BODY,
    });
    const id = ((await first.json()) as { task_id: string }).task_id;
    accepted++;
    const submit = () =>
      autocannon({
        url: `${api}/tasks/submit`,
        method: "POST",
        headers,
        body: SUBMIT_BODY,
        connections,
        seconds,
      });
    const status = () =>
      autocannon({
        url: `${api}/tasks/${id}`,
        headers: { "x-api-key": key },
        connections,
        seconds,
      });
    if (!ctx.smoke) {
      accepted += (await submit()).requests;
      await status();
    }
    const submits: CannonResult[] = [];
    const statuses: CannonResult[] = [];
    for (let r = 0; r < runs; r++) {
      const s = await submit();
      accepted += s.requests;
      submits.push(s);
      statuses.push(await status());
    }
    pushRows(ctx, caseSubmit, "Flotilla", summary(submits));
    pushRows(ctx, caseStatus, "Flotilla", summary(statuses));
    const failures = summary(submits).failures + summary(statuses).failures;
    check(
      ctx,
      NAME,
      "flotilla serve answered every submit and status request with 2xx",
      failures === 0,
      `${failures} failed requests`,
    );
    // Every accepted submission runs to the end. (autocannon counts the answers it read;
    // requests still in flight when a run ends may be accepted too, so the server has at
    // least as many.)
    const deadline = Date.now() + 60_000;
    let counts = await taskCounts(serve.url, key);
    while ((counts.open > 0 || counts.finished < accepted) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      counts = await taskCounts(serve.url, key);
    }
    check(
      ctx,
      NAME,
      "every task flotilla serve accepted finished",
      counts.open === 0 && counts.finished >= accepted,
      `${counts.finished} finished (${accepted} acknowledged to the client), ${counts.open} not finished`,
    );
  } finally {
    await serve.stop();
  }
  if (ctx.smoke) return;
  const hono = await startHonoHello();
  try {
    const post = () =>
      autocannon({
        url: `${hono.url}/hello`,
        method: "POST",
        headers: { "content-type": "application/json" },
        body: SUBMIT_BODY,
        connections,
        seconds,
      });
    const get = () => autocannon({ url: `${hono.url}/hello`, connections, seconds });
    await post();
    await get();
    const posts: CannonResult[] = [];
    const gets: CannonResult[] = [];
    for (let r = 0; r < runs; r++) {
      posts.push(await post());
      gets.push(await get());
    }
    const subject = "Hono hello-world on @hono/node-server, own process (same stack)";
    pushRows(ctx, caseSubmit, subject, summary(posts));
    pushRows(ctx, caseStatus, subject, summary(gets));
  } finally {
    await hono.stop();
  }
}

export const httpScenario: Scenario = {
  name: "http",
  title: NAME,
  async run(ctx: BenchContext) {
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
    // The subscribers all come from 127.0.0.1: lift the per-address connection cap.
    const server = await serveFlotilla(app, {
      host: "127.0.0.1",
      port: 0,
      limits: { maxConnectionsPerSource: 0 },
    });
    const base = server.url;

    try {
      await serveLoad(ctx, runs);

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
