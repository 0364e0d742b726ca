import { FunctionWorker } from "@flotilla/core";
import { FakeClock } from "@flotilla/core/testing";
import { afterEach, describe, expect, it, vi } from "vitest";
import { type Harness, KEY, startHarness } from "./helpers.js";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

interface SseEvent {
  id?: string;
  event?: string;
  data?: Record<string, unknown>;
  comment?: string;
}

/** Reads a text/event-stream response one event at a time. */
function sseReader(res: Response) {
  const reader = res.body!.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  let done = false;
  const next = async (): Promise<SseEvent | undefined> => {
    for (;;) {
      const cut = buf.indexOf("\n\n");
      if (cut >= 0) {
        const block = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        const ev: SseEvent = {};
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) ev.comment = line.slice(1).trim();
          else if (line.startsWith("id: ")) ev.id = line.slice(4);
          else if (line.startsWith("event: ")) ev.event = line.slice(7);
          else if (line.startsWith("data: ")) ev.data = JSON.parse(line.slice(6));
        }
        return ev;
      }
      if (done) return undefined;
      const r = await reader.read();
      if (r.done) done = true;
      else buf += decoder.decode(r.value, { stream: true });
    }
  };
  return {
    next,
    /** Events (not comments) until `stop` says so or the stream ends. */
    async until(stop: (e: SseEvent) => boolean): Promise<SseEvent[]> {
      const out: SseEvent[] = [];
      for (;;) {
        const e = await next();
        if (!e) return out;
        if (e.comment !== undefined && !e.event) continue;
        out.push(e);
        if (stop(e)) return out;
      }
    },
    cancel: () => reader.cancel(),
  };
}

/** A worker that writes tokens when told to, and finishes when told to. */
function tokenWorker() {
  const steps: Array<() => void> = [];
  let waiting: (() => void) | undefined;
  const step = () =>
    new Promise<void>((resolve) => {
      steps.push(resolve);
      waiting?.();
    });
  const worker = new FunctionWorker({
    id: "writer",
    taskTypes: ["llm_request", "write"],
    fn: async (_p, ctx) => {
      let text = "";
      for (const piece of ["Hel", "lo", " wor", "ld"]) {
        await step();
        text += piece;
        ctx.progress({ type: "token", text: piece });
      }
      await step();
      return { text };
    },
  });
  /** Lets the worker take its next step (waits until it asks for one). */
  const advance = async () => {
    while (steps.length === 0) await new Promise<void>((r) => (waiting = r));
    steps.shift()!();
  };
  return { worker, advance };
}

const headers = { "x-api-key": KEY, "content-type": "application/json" };

describe("Server-Sent Events", () => {
  it("streams a task's lifecycle and tokens until it ends, and resumes from Last-Event-ID without gaps or repeats", async () => {
    const { worker, advance } = tokenWorker();
    h = await startHarness({ workers: [worker] });
    const { task_id } = (await (
      await fetch(`${h.api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({ type: "write" }),
      })
    ).json()) as { task_id: string };

    const listeners = () => h!.orchestrator.listenerCount("task:transition");
    const base = listeners();
    const first = await fetch(`${h.api}/tasks/${task_id}/events`, {
      headers: { "x-api-key": KEY },
    });
    expect(first.status).toBe(200);
    expect(first.headers.get("content-type")).toContain("text/event-stream");
    const a = sseReader(first);
    const untilRunning = await a.until((e) => e.event === "task:running");
    expect(untilRunning.map((e) => e.event)).toContain("task:queued");
    await advance();
    await advance();
    const tokens = await a.until((e) => e.event === "token" && e.data?.text === "lo");
    expect(tokens.map((e) => e.data?.text)).toEqual(["Hel", "lo"]);
    const lastSeen = tokens.at(-1)!.id!;
    expect(listeners()).toBe(base + 1);
    await a.cancel(); // the client goes away: the server lets go of the engine
    await vi.waitFor(() => expect(listeners()).toBe(base));

    await advance(); // " wor" while nobody listens
    const second = await fetch(`${h.api}/tasks/${task_id}/events`, {
      headers: { "x-api-key": KEY, "last-event-id": lastSeen },
    });
    const b = sseReader(second);
    const missed = await b.until((e) => e.event === "token");
    expect(missed.map((e) => [e.event, e.data?.text])).toEqual([["token", " wor"]]);
    await advance();
    await advance();
    const rest = await b.until(() => false); // to the end of the stream
    expect(rest.map((e) => e.event)).toEqual(["token", "task:succeeded"]);
    expect(rest[0]?.data?.text).toBe("ld");
    const end = rest[1]!.data as { status: string; task: { result: unknown } };
    expect(end.status).toBe("succeeded");
    expect(end.task.result).toEqual({ text: "Hello world" });
    // Ids only grow, so a client can resume from any of them.
    const ids = [...missed, ...rest].map((e) => e.id!);
    expect(ids.every((id) => /^\d+\.\d+$/.test(id))).toBe(true);

    // A client arriving after the end gets the whole history, then the stream closes.
    const late = sseReader(await fetch(`${h.api}/tasks/${task_id}/events`, { headers }));
    const all = await late.until(() => false);
    expect(all.filter((e) => e.event === "token").map((e) => e.data?.text)).toEqual([
      "Hel",
      "lo",
      " wor",
      "ld",
    ]);
    expect(all.at(-1)?.event).toBe("task:succeeded");
    expect(all.findIndex((e) => e.event === "task:running")).toBeLessThan(
      all.findIndex((e) => e.event === "token"),
    );
  });

  it("replays events of the same instant in order: running before its tokens, the end after them", async () => {
    const worker = new FunctionWorker({
      id: "quick",
      taskTypes: ["write"],
      fn: async (_p, ctx) => {
        ctx.progress({ type: "token", text: "a" });
        ctx.progress({ type: "token", text: "b" });
        return { text: "ab" };
      },
    });
    // The engine's time never moves: every event of the task has the same time.
    h = await startHarness({ workers: [worker], engineClock: new FakeClock() });
    const handle = await h.orchestrator.submit({ type: "write" });
    await handle.result();
    const all = await sseReader(
      await fetch(`${h.api}/tasks/${handle.id}/events`, { headers }),
    ).until(() => false);
    const events = all.map((e) => (e.event === "token" ? `token ${e.data?.text}` : e.event));
    expect(events.at(-1)).toBe("task:succeeded");
    expect(events.indexOf("task:running")).toBeLessThan(events.indexOf("token a"));
    expect(events.filter((e) => e?.startsWith("token"))).toEqual(["token a", "token b"]);
  });

  it("sends keep-alive comments on an idle stream, and 404 for an unknown task", async () => {
    const { worker, advance } = tokenWorker();
    h = await startHarness({ workers: [worker], sse: { keepAliveMs: 50 } });
    const { task_id } = (await (
      await fetch(`${h.api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({ type: "write" }),
      })
    ).json()) as { task_id: string };
    const r = sseReader(await fetch(`${h.api}/tasks/${task_id}/events`, { headers }));
    let e = await r.next();
    while (e && e.comment === undefined) e = await r.next();
    expect(e?.comment).toBe("keep-alive");
    await r.cancel();
    for (let i = 0; i < 5; i++) await advance();
    expect((await fetch(`${h.api}/tasks/nope/events`, { headers })).status).toBe(404);
  });

  it("POST /llm/request with stream: true answers with tokens, then the usual answer as a result event", async () => {
    const { worker, advance } = tokenWorker();
    h = await startHarness({ workers: [worker] });
    const res = await fetch(`${h.api}/llm/request`, {
      method: "POST",
      headers,
      body: JSON.stringify({ prompt: "Say hello", stream: true }),
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const r = sseReader(res);
    const driving = (async () => {
      for (let i = 0; i < 5; i++) await advance();
    })();
    const events = await r.until(() => false);
    await driving;
    expect(
      events
        .filter((e) => e.event === "token")
        .map((e) => e.data?.text)
        .join(""),
    ).toBe("Hello world");
    const result = events.at(-1)!;
    expect(result.event).toBe("result");
    expect(result.data).toMatchObject({ success: true, response: "Hello world", error_code: null });
    const bad = await fetch(`${h.api}/llm/request`, {
      method: "POST",
      headers,
      body: JSON.stringify({ prompt: "x", stream: "yes" }),
    });
    expect(bad.status).toBe(400);
  });
});
