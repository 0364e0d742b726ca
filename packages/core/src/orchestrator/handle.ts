import type { ProgressEvent } from "../task/events.js";
import type { TaskStatus } from "../task/schema.js";
import type { TaskRecord, TaskResult } from "../task/types.js";
import { Channel } from "../util/channel.js";
import { type Deferred, deferred } from "../util/deferred.js";

/** The orchestrator's live state of one task, shared with its handles. @internal */
export interface TaskState {
  rec: TaskRecord;
  /** The result's promise; made on the first wait for it (many handles are never awaited). */
  done?: Deferred<TaskResult>;
  /** The result, once the task has finished (the first one given wins). */
  final?: TaskResult;
  finished: boolean;
  /** Progress listeners; made on the first `progress()` (most tasks never have one). */
  subscribers?: Set<Channel<ProgressEvent>>;
}

/** The promise of a task's result, made on first demand. @internal */
export function resultPromise(state: TaskState): Promise<TaskResult> {
  if (!state.done) {
    state.done = deferred<TaskResult>();
    if (state.final !== undefined) state.done.resolve(state.final);
  }
  return state.done.promise;
}

/** Gives a task its result (once; later calls are ignored) and wakes who waits for it. @internal */
export function settleResult(state: TaskState, result: TaskResult): void {
  if (state.final !== undefined) return;
  state.final = result;
  state.done?.resolve(result);
}

/**
 * A caller's view of a submitted task.
 *
 * `result()` resolves (never rejects) once the task reaches a terminal status —
 * `succeeded`, `failed`, `cancelled`, `timed_out`, `rejected` or `skipped` — with a
 * `TaskResult` whose `status` says which; `error` (with a code such as `TIMEOUT`,
 * `CANCELLED`, `DEPENDENCY_FAILED`, `REJECTED`, `WORKER_ERROR`) is set for every status but
 * `succeeded`.
 *
 * @example
 * ```ts
 * const handle = await orchestrator.submit({ type: "summarize", payload: { text } });
 * for await (const p of handle.progress()) process.stdout.write(String(p.data));
 * const result = await handle.result();
 * if (result.status === "succeeded") console.log(result.output);
 * ```
 */
export class TaskHandle<TOutput = unknown> {
  readonly id: string;
  readonly #state: TaskState;
  readonly #cancel: (id: string, reason?: string) => Promise<boolean>;

  /** @internal Created by the orchestrator. */
  constructor(state: TaskState, cancel: (id: string, reason?: string) => Promise<boolean>) {
    this.id = state.rec.id;
    this.#state = state;
    this.#cancel = cancel;
  }

  /** The task's current status. */
  get status(): TaskStatus {
    return this.#state.rec.status;
  }

  /**
   * Resolves with the task's result once it reaches a terminal status (whatever it is).
   *
   * @example
   * ```ts
   * const { status, output, error } = await handle.result();
   * ```
   */
  result(): Promise<TaskResult<TOutput>> {
    return resultPromise(this.#state) as Promise<TaskResult<TOutput>>;
  }

  /**
   * Cancels the task (aborting the worker's signal when it is running). Resolves `true` if
   * this call cancelled it, `false` when it had already finished.
   *
   * @example
   * ```ts
   * await handle.cancel("user pressed stop");
   * ```
   */
  cancel(reason?: string): Promise<boolean> {
    return this.#cancel(this.id, reason);
  }

  /**
   * Progress reported by the worker from now on (streamed tokens, percentages, log lines),
   * ending when the task ends.
   *
   * @example
   * ```ts
   * for await (const { data } of handle.progress()) console.log(data);
   * ```
   */
  progress(): AsyncIterableIterator<ProgressEvent> {
    const channel = new Channel<ProgressEvent>();
    if (this.#state.finished) channel.close();
    else {
      this.#state.subscribers ??= new Set();
      const subscribers = this.#state.subscribers;
      subscribers.add(channel);
      void resultPromise(this.#state).then(() => {
        subscribers.delete(channel);
        channel.close();
      });
    }
    const it = channel[Symbol.asyncIterator]();
    return {
      next: () => it.next(),
      return: async () => {
        this.#state.subscribers?.delete(channel);
        channel.close();
        return { value: undefined as never, done: true };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
  }
}
