import type { EventFeed, StoredEvent } from "@flotilla/core";
import { FakeClock } from "@flotilla/testing";
import { afterEach, describe, expect, it } from "vitest";
import WebSocket from "ws";
import type { EventEnvelope } from "../src/index.js";
import { type Harness, KEY, startHarness } from "./helpers.js";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}

const wsUrl = (h: Harness, path: string) => `${h.api.replace(/^http/, "ws")}${path}`;

/** Opens a socket and collects its messages. */
function open(url: string, opts: WebSocket.ClientOptions = {}, protocols?: string[]) {
  const ws = new WebSocket(url, protocols ?? [], { headers: { "x-api-key": KEY }, ...opts });
  const messages: EventEnvelope[] = [];
  const waiters: Array<() => void> = [];
  ws.on("message", (d) => {
    messages.push(JSON.parse(d.toString()) as EventEnvelope);
    for (const w of waiters.splice(0)) w();
  });
  const closed = new Promise<{ code: number; reason: string }>((resolve) =>
    ws.on("close", (code, reason) => resolve({ code, reason: reason.toString() })),
  );
  const opened = new Promise<void>((resolve, reject) => {
    ws.once("open", () => resolve());
    ws.once("error", reject);
    ws.once("unexpected-response", (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  const until = async (pred: (m: EventEnvelope[]) => boolean, ms = 5000) => {
    const end = Date.now() + ms;
    while (!pred(messages)) {
      if (Date.now() > end)
        throw new Error(`timeout; got ${messages.map((m) => m.type).join(",")}`);
      await new Promise<void>((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
  };
  return { ws, messages, closed, opened, until };
}

describe("WebSocket", () => {
  it("/ws/status sends versioned status snapshots on an interval", async () => {
    const clock = new FakeClock();
    h = await startHarness({ websocket: { statusIntervalMs: 100 }, clock });
    const c = open(wsUrl(h, "/ws/status"));
    await c.opened;
    await c.until((m) => m.filter((x) => x.type === "status").length === 1); // sent on connect
    await clock.advance(99);
    await new Promise((r) => setTimeout(r, 50));
    expect(c.messages.filter((x) => x.type === "status")).toHaveLength(1);
    await clock.advance(1);
    await c.until((m) => m.filter((x) => x.type === "status").length === 2);
    await clock.advance(100);
    await c.until((m) => m.filter((x) => x.type === "status").length === 3);
    const hello = c.messages[0]!;
    expect(hello).toMatchObject({
      v: 1,
      type: "hello",
      data: { stream: "status", status_interval_ms: 100 },
    });
    const snap = c.messages.find((m) => m.type === "status")!;
    expect(snap.v).toBe(1);
    expect(Date.parse(snap.ts)).toBeGreaterThan(0);
    expect(snap.data).toMatchObject({
      is_running: true,
      metrics: expect.any(Object),
      workers: expect.any(Object),
    });
    c.ws.close();
  });

  it("/ws/events relays task and worker events, filterable by type and task id", async () => {
    h = await startHarness();
    const all = open(wsUrl(h, "/ws/events"));
    const onlyDone = open(wsUrl(h, "/ws/events?types=task:succeeded"));
    await Promise.all([all.opened, onlyDone.opened]);
    const a = (await (
      await h.req("/tasks/submit", {
        json: { type: "tool_call", payload: { tool_name: "echo", tool_input: 1 } },
      })
    ).json()) as { task_id: string };
    const byTask = open(wsUrl(h, `/ws/events?task_id=${a.task_id}`));
    await byTask.opened;
    await all.until((m) => m.some((x) => x.type === "task:succeeded" && x.task_id === a.task_id));
    await onlyDone.until((m) => m.some((x) => x.type === "task:succeeded"));
    const types = all.messages.map((m) => m.type);
    expect(types).toEqual(
      expect.arrayContaining(["task:queued", "task:running", "task:succeeded"]),
    );
    const done = all.messages.find((m) => m.type === "task:succeeded")!;
    expect(done.data).toMatchObject({
      task_id: a.task_id,
      status: "succeeded",
      task: { result: 1 },
    });
    expect(
      onlyDone.messages.filter((m) => m.type !== "hello").every((m) => m.type === "task:succeeded"),
    ).toBe(true);
    const b = (await (
      await h.req("/tasks/submit", { json: { type: "tool_call", payload: { tool_name: "echo" } } })
    ).json()) as { task_id: string };
    await all.until((m) => m.some((x) => x.type === "task:succeeded" && x.task_id === b.task_id));
    expect(byTask.messages.filter((m) => m.task_id === b.task_id)).toEqual([]);
    // worker events
    const { FunctionWorker } = await import("@flotilla/core");
    await h.orchestrator.register(
      new FunctionWorker({ id: "late", taskTypes: ["late"], fn: async () => 1 }),
    );
    await all.until((m) =>
      m.some((x) => x.type === "worker:registered" && (x.data as { id: string }).id === "late"),
    );
    for (const c of [all, onlyDone, byTask]) c.ws.close();
  });

  it("/ws/events says why a ready task waits (task:waiting)", async () => {
    h = await startHarness();
    const c = open(wsUrl(h, "/ws/events?types=task:waiting"));
    await c.opened;
    // No worker of the server runs this type (an embedder's task, submitted in-process).
    const { id: task_id } = await h.orchestrator.submit({ type: "transcribe" });
    await c.until((m) => m.some((x) => x.type === "task:waiting"));
    const waiting = c.messages.find((x) => x.type === "task:waiting")!;
    expect(waiting.task_id).toBe(task_id);
    expect(waiting.data).toEqual({
      task_id,
      kind: "no_worker",
      gate: null,
      key: null,
      reason: null,
      until: null,
    });
    c.ws.close();
  });

  it("/ws/tasks/{id} streams one task and closes with 1000 when it ends", async () => {
    h = await startHarness();
    const { task_id } = (await (
      await h.req("/tasks/submit", { json: { type: "custom", payload: { ms: 300 } } })
    ).json()) as { task_id: string };
    const c = open(wsUrl(h, `/ws/tasks/${task_id}`));
    await c.opened;
    await c.until((m) => m.some((x) => x.type === "task:snapshot"));
    // Another event about the task that carries a finished status does not end the stream.
    h.app.flotilla.hub.publish("resource:cost", { status: "succeeded" }, task_id);
    const closed = await c.closed;
    expect(closed.code).toBe(1000);
    expect(c.messages.some((m) => m.type === "task:snapshot")).toBe(true);
    expect(c.messages.at(-1)).toMatchObject({ type: "task:succeeded", task_id });
    // an already finished task: snapshot then close 1000
    const again = open(wsUrl(h, `/ws/tasks/${task_id}`));
    expect((await again.closed).code).toBe(1000);
    expect(again.messages.map((m) => m.type)).toEqual(["hello", "task:snapshot"]);
    const unknown = open(wsUrl(h, "/ws/tasks/nope"));
    expect((await unknown.closed).code).toBe(4404);
  });

  it("authenticates: 401 without key; ?api_key= and subprotocol work", async () => {
    h = await startHarness();
    const none = open(wsUrl(h, "/ws/events"), { headers: {} });
    await expect(none.opened).rejects.toThrow(/401/);
    const bad = open(wsUrl(h, "/ws/events?api_key=wrong"), { headers: {} });
    await expect(bad.opened).rejects.toThrow(/401/);
    const q = open(wsUrl(h, `/ws/events?api_key=${KEY}`), { headers: {} });
    await q.opened;
    const p = open(wsUrl(h, "/ws/events"), { headers: {} }, ["flotilla.v1", `flotilla-key.${KEY}`]);
    await p.opened;
    expect(p.ws.protocol).toBe("flotilla.v1");
    const notARoute = open(wsUrl(h, "/ws/nope"));
    await expect(notARoute.opened).rejects.toThrow(/404/);
    q.ws.close();
    p.ws.close();
  });

  it("ping/pong keep-alive: answering clients stay, silent ones are dropped", async () => {
    const clock = new FakeClock();
    h = await startHarness({ websocket: { pingIntervalMs: 100 }, clock });
    const live = open(wsUrl(h, "/ws/events"));
    const silent = open(wsUrl(h, "/ws/events"), { autoPong: false });
    let pings = 0;
    let silentPings = 0;
    live.ws.on("ping", () => pings++);
    silent.ws.on("ping", () => silentPings++);
    await Promise.all([live.opened, silent.opened]);
    await clock.advance(100); // first ping to both
    await until(() => pings === 1 && silentPings === 1);
    await new Promise((r) => setTimeout(r, 50)); // the live client's pong reaches the server
    expect(silent.ws.readyState).toBe(WebSocket.OPEN);
    await clock.advance(100); // no pong from the silent one: dropped; the live one pinged again
    const closed = await silent.closed;
    expect(closed.code).toBe(1006); // terminated without a close frame
    await until(() => pings === 2);
    expect(live.ws.readyState).toBe(WebSocket.OPEN);
    expect(h.app.flotilla.hub.clientCount).toBe(1);
    live.ws.close();
  });

  it("a slow consumer is disconnected once its buffer passes the cap (bounded memory)", async () => {
    h = await startHarness({ websocket: { maxBufferedBytes: 256 * 1024 } });
    const slow = open(wsUrl(h, "/ws/events"));
    const fast = open(wsUrl(h, "/ws/events?types=custom"));
    await Promise.all([slow.opened, fast.opened]);
    // Stop reading: the kernel buffers fill, then the server's send buffer grows.
    (slow.ws as unknown as { _socket: { pause(): void } })._socket.pause();
    const big = "x".repeat(64 * 1024);
    for (let i = 0; i < 400 && h.app.flotilla.hub.clientCount > 1; i++) {
      h.app.flotilla.hub.publish("custom:big", { big, i });
      await new Promise((r) => setImmediate(r));
    }
    expect(h.app.flotilla.hub.slowConsumerEvents).toBeGreaterThan(0);
    expect(h.app.flotilla.hub.clientCount).toBe(1);
    await fast.until((m) => m.filter((x) => x.type === "custom:big").length > 10);
    fast.ws.close();
  });

  it("slowConsumer: 'drop' skips messages and tells the client how many", async () => {
    h = await startHarness({ websocket: { maxBufferedBytes: 128 * 1024, slowConsumer: "drop" } });
    const slow = open(wsUrl(h, "/ws/events"));
    await slow.opened;
    const sock = (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
    sock.pause();
    const big = "x".repeat(64 * 1024);
    for (let i = 0; i < 300 && h.app.flotilla.hub.slowConsumerEvents < 5; i++) {
      h.app.flotilla.hub.publish("custom:big", { big, i });
      await new Promise((r) => setImmediate(r));
    }
    expect(h.app.flotilla.hub.slowConsumerEvents).toBeGreaterThanOrEqual(5);
    expect(h.app.flotilla.hub.clientCount).toBe(1);
    sock.resume();
    await new Promise((r) => setTimeout(r, 200));
    h.app.flotilla.hub.publish("custom:after", {});
    await slow.until((m) => m.some((x) => x.type === "custom:after"));
    expect(slow.messages.some((m) => m.type === "dropped")).toBe(true);
    slow.ws.close();
  });

  it("garbage from clients never hurts the server", async () => {
    h = await startHarness({ websocket: { maxPayloadBytes: 1024 } });
    const c = open(wsUrl(h, "/ws/events"));
    await c.opened;
    for (const m of ["", "{", "null", '{"type":"ping"}', "\u0000\u0001", "x".repeat(500)])
      c.ws.send(m);
    c.ws.send(Buffer.from([0xff, 0xfe, 0x00]));
    await c.until((m) => m.some((x) => x.type === "pong"));
    c.ws.send("y".repeat(5000)); // over maxPayloadBytes: the server closes with 1009
    expect((await c.closed).code).toBe(1009);
    for (const path of ["/ws/tasks/", "/ws/tasks/%E0%A4%A", "/ws/statusx", "/ws/tasks/a/b"]) {
      const bad = open(wsUrl(h, path));
      await expect(bad.opened, path).rejects.toThrow();
    }
    expect((await fetch(`${h.url}/health`)).status).toBe(200);
    const again = open(wsUrl(h, "/ws/events"));
    await again.opened;
    again.ws.close();
  });

  it("graceful shutdown closes sockets with 1001 and refuses new work", async () => {
    h = await startHarness();
    const c = open(wsUrl(h, "/ws/events"));
    await c.opened;
    h.app.flotilla.beginShutdown();
    expect((await c.closed).code).toBe(1001);
    const res = await h.req("/tasks/submit", {
      json: { type: "tool_call", payload: { tool_name: "echo" } },
    });
    expect(res.status).toBe(503);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe("SHUTTING_DOWN");
    expect((await fetch(`${h.url}/health`)).status).toBe(503);
  });

  it("relays the events other servers sharing the store commit, following them only while a client is connected", async () => {
    const followers = new Set<(events: readonly StoredEvent[]) => void>();
    const sharedEvents: EventFeed = {
      followEvents(listener) {
        followers.add(listener);
        return { ready: Promise.resolve(), close: () => followers.delete(listener) };
      },
    };
    h = await startHarness({ sharedEvents });
    expect(followers.size).toBe(0); // nobody to tell: the log is not read
    const c = open(wsUrl(h, "/ws/events"));
    await c.opened;
    const d = open(wsUrl(h, "/ws/events"));
    await d.opened;
    expect(followers.size).toBe(1); // one subscription for all the hub's clients
    for (const l of followers) {
      l([
        {
          seq: 7,
          type: "task:running",
          taskId: "run-elsewhere",
          at: Date.parse("2026-01-02T03:04:05Z"),
          data: { from: "queued", to: "running", attempt: 1, workerId: "w-on-b" },
        },
      ]);
    }
    await c.until((m) => m.some((x) => x.type === "task:running"));
    const ev = c.messages.find((x) => x.type === "task:running")!;
    expect(ev.task_id).toBe("run-elsewhere");
    expect(ev.data).toMatchObject({
      task_id: "run-elsewhere",
      from: "queued",
      status: "running",
      attempt: 1,
      worker_id: "w-on-b",
      at: "2026-01-02T03:04:05.000Z",
      task: null, // not in this test's store
    });
    c.ws.close();
    await c.closed;
    expect(followers.size).toBe(1);
    d.ws.close();
    await d.closed;
    await until(() => followers.size === 0);
  });
});
