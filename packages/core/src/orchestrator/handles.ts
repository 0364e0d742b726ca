import type { TimerHandle } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { EventFeed, EventFollow, StoredEvent } from "../store/types.js";
import { isTerminalStatus } from "../task/lifecycle.js";
import type { TaskRecord, TaskResult } from "../task/types.js";
import type { EngineContext } from "./context.js";
import { resultPromise, settleResult, TaskHandle, type TaskState } from "./handle.js";
import type { Live, TaskTable } from "./taskTable.js";
import { buildResult } from "./transitions.js";

/**
 * Makes handles: on live or cached tasks (sharing their state), on finished tasks known
 * only from the store, and on unfinished tasks known only from the store ("foreign": before
 * the first start, recovery turns them into the live task's handle; otherwise the store is
 * read every `recheckMs` until the task has finished — and at once when a store shared with
 * other processes that can follow their events (an `EventFeed`) reports the task's end).
 * @internal
 */
export class Handles {
  readonly #ctx: EngineContext;
  readonly #table: TaskTable;
  readonly #cancel: (id: string, reason?: string) => Promise<boolean>;
  readonly #recheckMs: number;
  /** States of handles on unfinished tasks known only from the store, by id. */
  readonly #foreign = new Map<string, TaskState>();
  #timer: TimerHandle | undefined;
  /** Following the other processes' events while foreign handles wait (a shared store). */
  #follow: EventFollow | undefined;
  /** Foreign tasks whose end was reported, read at the next microtask. */
  readonly #ended = new Set<string>();
  /** Whether recovery has run (foreign handles are polled only after it). */
  recovered = false;

  constructor(
    ctx: EngineContext,
    table: TaskTable,
    cancel: (id: string, reason?: string) => Promise<boolean>,
    recheckMs: number,
  ) {
    this.#ctx = ctx;
    this.#table = table;
    this.#cancel = cancel;
    this.#recheckMs = recheckMs;
  }

  /** A handle on a live or cached task. */
  of(live: TaskState): TaskHandle {
    return new TaskHandle(live, this.#cancel);
  }

  /** A handle on a task this process has just stored. */
  ofStored(id: string): TaskHandle {
    const live = this.#table.known(id);
    if (!live) throw new FlotillaError("INTERNAL", `task ${id} vanished after submit`);
    return this.of(live);
  }

  /** A handle on a task read from the store (live, finished or foreign). */
  forRecord(rec: TaskRecord): TaskHandle {
    const live = this.#table.known(rec.id);
    if (live) return this.of(live);
    if (!isTerminalStatus(rec.status)) return this.#foreignHandle(rec);
    const state: TaskState = {
      rec,
      finished: true,
      final: structuredClone(
        rec.result ?? buildResult(rec, undefined, rec.status, rec.updatedAt, {}),
      ),
    };
    return this.of(state);
  }

  /**
   * A task this process no longer runs (its partition went elsewhere): handles on it read
   * the store from now on, until it finishes or this process adopts it again.
   */
  detach(state: TaskState): void {
    if (state.finished) return;
    this.#foreign.set(state.rec.id, state);
    if (this.recovered) this.arm();
  }

  /** The state a handle taken before the first start shares with the recovered task. */
  take(id: string): TaskState | undefined {
    const state = this.#foreign.get(id);
    this.#foreign.delete(id);
    return state;
  }

  #foreignHandle(rec: TaskRecord): TaskHandle {
    let state = this.#foreign.get(rec.id);
    if (!state) {
      state = { rec, finished: false };
      this.#foreign.set(rec.id, state);
      if (this.recovered) this.arm();
    }
    return this.of(state);
  }

  /** Arms the poll of foreign handles (when any is waiting and the engine runs). */
  arm(): void {
    if (this.#foreign.size === 0) {
      this.#follow?.close();
      this.#follow = undefined;
      return;
    }
    if (!this.#ctx.running) return;
    this.#followEnds();
    if (this.#timer !== undefined) return;
    this.#timer = this.#ctx.timers.set(() => {
      this.#timer = undefined;
      void this.#poll();
    }, this.#recheckMs);
  }

  clearTimer(): void {
    this.#ctx.timers.clear(this.#timer);
    this.#timer = undefined;
    this.#follow?.close();
    this.#follow = undefined;
  }

  /** With a store that follows the others' events: a foreign task's end is read at once. */
  #followEnds(): void {
    const store = this.#ctx.store as Partial<EventFeed>;
    if (this.#follow || typeof store.followEvents !== "function") return;
    this.#follow = store.followEvents.call(this.#ctx.store, (events: readonly StoredEvent[]) => {
      for (const ev of events) {
        const id = ev.taskId;
        if (id === undefined || !this.#foreign.has(id)) continue;
        if (!isTerminalStatus(ev.type.slice("task:".length) as TaskRecord["status"])) continue;
        if (this.#ended.size === 0) {
          queueMicrotask(() => {
            const ids = new Set(this.#ended);
            this.#ended.clear();
            void this.#poll(ids);
          });
        }
        this.#ended.add(id);
      }
    });
  }

  /** Reads the foreign tasks (`only` these, when told they ended) and settles the finished. */
  async #poll(only?: ReadonlySet<string>): Promise<void> {
    for (const [id, state] of [...this.#foreign]) {
      if (only && !only.has(id)) continue;
      const live: Live | undefined = this.#table.known(id);
      let rec: TaskRecord | undefined = live?.rec;
      if (!rec) {
        try {
          rec = await this.#ctx.store.getTask(id);
        } catch (err) {
          this.#ctx.internalError(err, `store failed to read task ${id}`);
          continue;
        }
        // Taken in meanwhile (its partition adopted here): the state is a live task's now,
        // and this read may be older than what it has done since.
        if (this.#foreign.get(id) !== state) continue;
      }
      if (live) {
        this.#foreign.delete(id);
        resultPromise(live).then((r) => finishForeign(state, r));
        continue;
      }
      if (!rec) continue;
      state.rec = rec;
      if (!isTerminalStatus(rec.status)) continue;
      this.#foreign.delete(id);
      finishForeign(
        state,
        rec.result ?? buildResult(rec, undefined, rec.status, rec.updatedAt, {}),
      );
    }
    if (!only || this.#foreign.size === 0) this.arm(); // (re)arms, or stops following
  }
}

function finishForeign(state: TaskState, result: TaskResult): void {
  state.finished = true;
  settleResult(state, { ...result, timings: { ...result.timings } });
  if (state.subscribers) {
    for (const ch of state.subscribers) ch.close();
    state.subscribers.clear();
  }
}
