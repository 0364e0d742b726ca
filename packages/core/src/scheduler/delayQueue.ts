import { type HeapNode, IndexedHeap } from "../util/heap.js";

interface Delayed<T> extends HeapNode {
  at: number;
  seq: number;
  value: T;
}

/**
 * Values that become due at a time (retry backoff, `runAt`), earliest first. The owner
 * keeps one clock timer for `nextAt()`.
 *
 * @example
 * ```ts
 * const dq = new DelayQueue<string>();
 * dq.add("task-1", 1_000);
 * dq.takeDue(1_000); // ["task-1"]
 * ```
 */
export class DelayQueue<T> {
  readonly #heap = new IndexedHeap<Delayed<T>>((a, b) =>
    a.at !== b.at ? a.at < b.at : a.seq < b.seq,
  );
  readonly #byValue = new Map<T, Delayed<T>>();
  #seq = 0;

  get size(): number {
    return this.#heap.size;
  }

  /**
   * Schedules `value` for time `at` (ms); a value already queued moves to the new time.
   *
   * @example
   * ```ts
   * dq.add("task-1", clock.now() + 5_000);
   * ```
   */
  add(value: T, at: number): void {
    this.remove(value);
    const node: Delayed<T> = { heapIndex: -1, at, seq: this.#seq++, value };
    this.#byValue.set(value, node);
    this.#heap.push(node);
  }

  /**
   * Unschedules `value`; returns whether it was queued.
   *
   * @example
   * ```ts
   * dq.remove("task-1"); // true
   * ```
   */
  remove(value: T): boolean {
    const node = this.#byValue.get(value);
    if (!node) return false;
    this.#byValue.delete(value);
    this.#heap.remove(node);
    return true;
  }

  /**
   * Whether `value` is scheduled.
   *
   * @example
   * ```ts
   * dq.has("task-1");
   * ```
   */
  has(value: T): boolean {
    return this.#byValue.has(value);
  }

  /**
   * When the earliest value is due, if any.
   *
   * @example
   * ```ts
   * const at = dq.nextAt();
   * if (at !== undefined) setTimeout(() => dq.takeDue(Date.now()), at - Date.now());
   * ```
   */
  nextAt(): number | undefined {
    return this.#heap.peek()?.at;
  }

  /**
   * Removes and returns every value due at `now`, earliest first.
   *
   * @example
   * ```ts
   * dq.add("a", 100);
   * dq.add("b", 200);
   * dq.takeDue(150); // ["a"]
   * ```
   */
  takeDue(now: number): T[] {
    const out: T[] = [];
    for (;;) {
      const top = this.#heap.peek();
      if (!top || top.at > now) break;
      this.#heap.pop();
      this.#byValue.delete(top.value);
      out.push(top.value);
    }
    return out;
  }

  /**
   * Every scheduled value, in insertion order (not by time).
   *
   * @example
   * ```ts
   * const waiting = [...dq.values()];
   * ```
   */
  values(): IterableIterator<T> {
    return this.#byValue.keys();
  }

  /**
   * Unschedules everything.
   *
   * @example
   * ```ts
   * dq.clear();
   * dq.size; // 0
   * ```
   */
  clear(): void {
    this.#heap.clear();
    this.#byValue.clear();
  }
}
