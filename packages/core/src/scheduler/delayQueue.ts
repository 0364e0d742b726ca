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

  add(value: T, at: number): void {
    this.remove(value);
    const node: Delayed<T> = { heapIndex: -1, at, seq: this.#seq++, value };
    this.#byValue.set(value, node);
    this.#heap.push(node);
  }

  remove(value: T): boolean {
    const node = this.#byValue.get(value);
    if (!node) return false;
    this.#byValue.delete(value);
    this.#heap.remove(node);
    return true;
  }

  has(value: T): boolean {
    return this.#byValue.has(value);
  }

  /** When the earliest value is due, if any. */
  nextAt(): number | undefined {
    return this.#heap.peek()?.at;
  }

  /** Removes and returns every value due at `now`, earliest first. */
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

  values(): IterableIterator<T> {
    return this.#byValue.keys();
  }

  clear(): void {
    this.#heap.clear();
    this.#byValue.clear();
  }
}
