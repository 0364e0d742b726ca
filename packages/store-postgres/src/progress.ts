import {
  type Clock,
  type Logger,
  type Orchestrator,
  type ProgressEvent,
  TERMINAL_STATUSES,
  type TransitionEvent,
} from "@flotilla/core";
import type { Notifications } from "./notifications.js";

/** How often a watcher says again which tasks it watches, and how long a word holds. */
const WATCH_EVERY_MS = 5000;
const WATCH_FOR_MS = 15_000;
/** Reports of one task run are sent together, at most this often. */
const FLUSH_MS = 50;
/** The largest message (NOTIFY payloads stay under 8000 bytes). */
const MAX_MESSAGE = 6800;

/**
 * What relays its progress reports (`PostgresStore.relayProgress`): an `Orchestrator`.
 *
 * @example
 * ```ts
 * const source: ProgressSource = orchestrator;
 * const shared = new PostgresStore({ connectionString: process.env.DATABASE_URL, exclusive: false });
 * shared.relayProgress(source);
 * ```
 */
export type ProgressSource = Pick<Orchestrator, "on" | "off">;

/**
 * Progress reports (streamed tokens, samples) of tasks one instance runs, relayed to the
 * instances whose clients watch them, over LISTEN/NOTIFY: a watcher says which tasks it
 * watches (at once, then every 5 s); the instance running one sends its reports while the
 * word holds (15 s), at most one message per 50 ms. Best effort, like every notification: a
 * report sent while a listener reconnects is lost, and one over ~6.5 KB is not relayed.
 * Made by `PostgresStore`. @internal
 */
export class ProgressRelay {
  readonly #messages: Notifications;
  readonly #origin: string;
  readonly #clock: Clock;
  readonly #logger: Logger;
  /** Watcher side: listeners by task. */
  readonly #watchers = new Map<string, Set<(reports: readonly ProgressEvent[]) => void>>();
  #announcing: ReturnType<typeof setInterval> | undefined;
  /** Holder side: tasks watched elsewhere, until when. */
  readonly #watched = new Map<string, number>();
  #outbox: string[] = [];
  #sending: Promise<void> = Promise.resolve();
  #flushing: ReturnType<typeof setTimeout> | undefined;
  readonly #offs: Array<() => void> = [];

  constructor(messages: Notifications, origin: string, clock: Clock, logger: Logger) {
    this.#messages = messages;
    this.#origin = origin;
    this.#clock = clock;
    this.#logger = logger;
    this.#offs.push(
      messages.on("watch", (payload) => this.#onWatch(payload)),
      messages.on("progress", (payload) => this.#onProgress(payload)),
    );
  }

  /** Calls `listener` with the reports of `taskId` that another instance relays. */
  watch(taskId: string, listener: (reports: readonly ProgressEvent[]) => void): () => void {
    let set = this.#watchers.get(taskId);
    if (!set) {
      set = new Set();
      this.#watchers.set(taskId, set);
      this.#announce([taskId]);
    }
    set.add(listener);
    this.#announcing ??= setInterval(
      () => this.#announce([...this.#watchers.keys()]),
      WATCH_EVERY_MS,
    );
    this.#announcing.unref?.();
    return () => {
      set.delete(listener);
      if (set.size === 0 && this.#watchers.get(taskId) === set) this.#watchers.delete(taskId);
      if (this.#watchers.size === 0 && this.#announcing !== undefined) {
        clearInterval(this.#announcing);
        this.#announcing = undefined;
      }
    };
  }

  /** Sends `source`'s reports of the tasks watched elsewhere. Returns what stops it. */
  relay(source: ProgressSource): () => void {
    const onReport = (ev: ProgressEvent) => {
      const until = this.#watched.get(ev.taskId);
      if (until === undefined) return;
      if (until < this.#clock.now()) {
        this.#watched.delete(ev.taskId);
        return;
      }
      let item: string;
      try {
        item = JSON.stringify([ev.taskId, ev.attempt, ev.at, ev.data ?? null]);
      } catch {
        return; // not JSON: the holder's own clients still get it
      }
      if (Buffer.byteLength(item) > MAX_MESSAGE - 100) {
        this.#logger.debug({ taskId: ev.taskId }, "progress report too large to relay");
        return;
      }
      this.#outbox.push(item);
      this.#flushing ??= setTimeout(() => this.#flush(), FLUSH_MS);
    };
    // A watched task that ends: its last reports go at once, ahead of its end's event.
    const onTransition = (ev: TransitionEvent) => {
      if (this.#flushing === undefined || !this.#watched.has(ev.taskId)) return;
      if (!TERMINAL_STATUSES.has(ev.to)) return;
      clearTimeout(this.#flushing);
      this.#flush();
    };
    source.on("task:progress", onReport);
    source.on("task:transition", onTransition);
    const off = () => {
      source.off("task:progress", onReport);
      source.off("task:transition", onTransition);
    };
    this.#offs.push(off);
    return off;
  }

  /** Stops watching, relaying and announcing. */
  close(): void {
    for (const off of this.#offs.splice(0)) off();
    if (this.#announcing !== undefined) clearInterval(this.#announcing);
    if (this.#flushing !== undefined) clearTimeout(this.#flushing);
    this.#announcing = undefined;
    this.#flushing = undefined;
    this.#watchers.clear();
    this.#watched.clear();
    this.#outbox = [];
  }

  #announce(ids: string[]): void {
    for (const part of this.#pack(ids.map((id) => JSON.stringify(id)))) {
      this.#messages
        .notify("watch", `{"by":${JSON.stringify(this.#origin)},"t":[${part}]}`)
        .catch(() => {});
    }
  }

  #flush(): void {
    this.#flushing = undefined;
    const items = this.#outbox;
    this.#outbox = [];
    // One after another: messages sent at once over several connections may arrive out of order.
    for (const part of this.#pack(items)) {
      const message = `{"by":${JSON.stringify(this.#origin)},"p":[${part}]}`;
      this.#sending = this.#sending
        .then(() => this.#messages.notify("progress", message))
        .catch((err: unknown) => this.#logger.debug({ err: String(err) }, "progress not relayed"));
    }
  }

  /** JSON items joined into runs that fit one message each. */
  #pack(items: string[]): string[] {
    const out: string[] = [];
    let run = "";
    for (const item of items) {
      if (run !== "" && run.length + item.length + 1 > MAX_MESSAGE - 200) {
        out.push(run);
        run = "";
      }
      run = run === "" ? item : `${run},${item}`;
    }
    if (run !== "") out.push(run);
    return out;
  }

  #onWatch(payload: string): void {
    try {
      const m = JSON.parse(payload) as { by?: unknown; t?: unknown };
      if (m.by === this.#origin || !Array.isArray(m.t)) return;
      const until = this.#clock.now() + WATCH_FOR_MS;
      for (const id of m.t) if (typeof id === "string") this.#watched.set(id, until);
    } catch {
      // not a message of this version: ignored
    }
  }

  #onProgress(payload: string): void {
    if (this.#watchers.size === 0) return;
    try {
      const m = JSON.parse(payload) as { by?: unknown; p?: unknown };
      if (m.by === this.#origin || !Array.isArray(m.p)) return;
      const byTask = new Map<string, ProgressEvent[]>();
      for (const item of m.p) {
        if (!Array.isArray(item) || typeof item[0] !== "string") continue;
        const [taskId, attempt, at, data] = item as [string, unknown, unknown, unknown];
        if (!this.#watchers.has(taskId)) continue;
        const reports = byTask.get(taskId) ?? [];
        reports.push({
          taskId,
          attempt: typeof attempt === "number" ? attempt : 0,
          at: typeof at === "number" ? at : this.#clock.now(),
          data,
        });
        byTask.set(taskId, reports);
      }
      for (const [taskId, reports] of byTask) {
        for (const l of [...(this.#watchers.get(taskId) ?? [])]) {
          try {
            l(reports);
          } catch (err) {
            this.#logger.error({ err: String(err) }, "a progress watcher threw");
          }
        }
      }
    } catch {
      // not a message of this version: ignored
    }
  }
}
