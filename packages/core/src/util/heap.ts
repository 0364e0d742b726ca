/** An item that can live in an {@link IndexedHeap}: the heap keeps its position here. */
export interface HeapNode {
  /** Position in the heap's array, or -1 when not in a heap. */
  heapIndex: number;
}

/**
 * A binary min-heap ordered by `before(a, b)` ("a comes out first"). Each item records its
 * own position, so `remove` and `update` of an arbitrary item are O(log n) — no linear
 * search, no lazy tombstones.
 *
 * @example
 * ```ts
 * const heap = new IndexedHeap<{ heapIndex: number; n: number }>((a, b) => a.n < b.n);
 * heap.push({ heapIndex: -1, n: 3 });
 * heap.pop(); // { n: 3 }
 * ```
 */
export class IndexedHeap<T extends HeapNode> {
  readonly #items: T[] = [];
  readonly #before: (a: T, b: T) => boolean;

  constructor(before: (a: T, b: T) => boolean) {
    this.#before = before;
  }

  get size(): number {
    return this.#items.length;
  }

  peek(): T | undefined {
    return this.#items[0];
  }

  has(item: T): boolean {
    return item.heapIndex >= 0 && this.#items[item.heapIndex] === item;
  }

  push(item: T): void {
    item.heapIndex = this.#items.length;
    this.#items.push(item);
    this.#up(item.heapIndex);
  }

  pop(): T | undefined {
    const items = this.#items;
    const top = items[0];
    if (top === undefined) return undefined;
    const last = items.pop()!;
    if (items.length > 0) {
      items[0] = last;
      last.heapIndex = 0;
      this.#down(0);
    }
    top.heapIndex = -1;
    return top;
  }

  /** Removes `item` if present. O(log n). */
  remove(item: T): boolean {
    if (!this.has(item)) return false;
    const items = this.#items;
    const i = item.heapIndex;
    const last = items.pop()!;
    if (i < items.length) {
      items[i] = last;
      last.heapIndex = i;
      this.#up(i);
      this.#down(last.heapIndex);
    }
    item.heapIndex = -1;
    return true;
  }

  /** Restores order after `item`'s key changed. O(log n). */
  update(item: T): void {
    if (!this.has(item)) return;
    this.#up(item.heapIndex);
    this.#down(item.heapIndex);
  }

  /** Items in heap (not sorted) order. */
  values(): readonly T[] {
    return this.#items;
  }

  clear(): void {
    for (const item of this.#items) item.heapIndex = -1;
    this.#items.length = 0;
  }

  #up(i: number): void {
    const items = this.#items;
    const item = items[i]!;
    while (i > 0) {
      const parentIndex = (i - 1) >> 1;
      const parent = items[parentIndex]!;
      if (!this.#before(item, parent)) break;
      items[i] = parent;
      parent.heapIndex = i;
      i = parentIndex;
    }
    items[i] = item;
    item.heapIndex = i;
  }

  #down(i: number): void {
    const items = this.#items;
    const n = items.length;
    const item = items[i]!;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      let child = left;
      if (right < n && this.#before(items[right]!, items[left]!)) child = right;
      const c = items[child]!;
      if (!this.#before(c, item)) break;
      items[i] = c;
      c.heapIndex = i;
      i = child;
    }
    items[i] = item;
    item.heapIndex = i;
  }
}
