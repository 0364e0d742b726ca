import type { TaskRecord } from "../task/types.js";
import type { Entry } from "./entry.js";

const labelKey = (key: string, value: string) => `${key}\u0000${value}`;

/**
 * The workers under one index key, in registration order, with the position a windowed
 * scan starts from next. @internal
 */
class Bucket {
  readonly members = new Set<Entry>();
  #list: Entry[] | undefined;
  /** Where the next windowed scan starts (see {@link WorkerIndex.candidates}). */
  cursor = 0;

  add(entry: Entry): void {
    this.members.add(entry);
    this.#list = undefined;
  }

  delete(entry: Entry): void {
    if (this.members.delete(entry)) this.#list = undefined;
  }

  get size(): number {
    return this.members.size;
  }

  /** The members as an array, rebuilt only after membership changed. */
  get list(): Entry[] {
    this.#list ??= [...this.members];
    return this.#list;
  }
}

function addTo<K>(index: Map<K, Bucket>, key: K, entry: Entry): void {
  let bucket = index.get(key);
  if (bucket === undefined) {
    bucket = new Bucket();
    index.set(key, bucket);
  }
  bucket.add(entry);
}

function removeFrom<K>(index: Map<K, Bucket>, key: K, entry: Entry): void {
  const bucket = index.get(key);
  if (bucket === undefined) return;
  bucket.delete(entry);
  if (bucket.size === 0) index.delete(key);
}

/**
 * The members of `bucket` that `keep` accepts, appended to `out`: all of them, in
 * registration order, unless `window` is given and more than `window` members are
 * indexed — then at most `window`, scanned from where the previous windowed scan of this
 * bucket stopped (wrapping round), so that successive scans take turns through the bucket
 * and the cost of one does not grow with the bucket.
 */
function collect(
  bucket: Bucket,
  keep: (entry: Entry) => boolean,
  out: Entry[],
  window: number | undefined,
): Entry[] {
  if (window === undefined || bucket.size <= window) {
    for (const entry of bucket.members) if (keep(entry)) out.push(entry);
    return out;
  }
  const list = bucket.list;
  const n = list.length;
  let i = bucket.cursor % n;
  let kept = 0;
  for (let seen = 0; seen < n && kept < window; seen++) {
    const entry = list[i]!;
    if (keep(entry)) {
      out.push(entry);
      kept++;
    }
    i = i + 1 === n ? 0 : i + 1;
  }
  bucket.cursor = i;
  return out;
}

/**
 * Registered workers indexed by task type (and the wildcard `"*"`), capability and label,
 * so that "who may run this task" starts from the smallest candidate set instead of scanning
 * every worker of a large fleet. @internal
 */
export class WorkerIndex {
  readonly #byType = new Map<string, Bucket>();
  /** Workers whose task types include `"*"`. */
  readonly #anyType = new Bucket();
  readonly #byCapability = new Map<string, Bucket>();
  readonly #byLabel = new Map<string, Bucket>();

  add(entry: Entry): void {
    const worker = entry.worker;
    // The keys are kept so that remove() undoes exactly what add() indexed.
    entry.indexed = {
      types: [...new Set(worker.taskTypes)],
      capabilities: [...new Set(worker.capabilities ?? [])],
      labels: Object.entries(worker.labels ?? {}).map(([k, v]) => labelKey(k, v)),
    };
    for (const type of entry.indexed.types) {
      if (type === "*") this.#anyType.add(entry);
      else addTo(this.#byType, type, entry);
    }
    for (const cap of entry.indexed.capabilities) addTo(this.#byCapability, cap, entry);
    for (const key of entry.indexed.labels) addTo(this.#byLabel, key, entry);
  }

  remove(entry: Entry): void {
    this.#anyType.delete(entry);
    for (const type of entry.indexed.types) removeFrom(this.#byType, type, entry);
    for (const cap of entry.indexed.capabilities) removeFrom(this.#byCapability, cap, entry);
    for (const key of entry.indexed.labels) removeFrom(this.#byLabel, key, entry);
  }

  /**
   * The workers `keep` accepts among those indexed for `task`, in registration order.
   * With `window`, a set of more than `window` indexed workers yields at most `window` of
   * them per set scanned, taking turns through the set from one call to the next (see
   * {@link collect}); sets of at most `window` workers are returned whole.
   */
  candidates(task: TaskRecord, keep: (entry: Entry) => boolean, window?: number): Entry[] {
    const typed = this.#byType.get(task.type);
    let narrowest: Bucket | undefined;
    let size = (typed?.size ?? 0) + this.#anyType.size;
    if (size === 0) return [];
    for (const cap of task.requirements?.capabilities ?? []) {
      const bucket = this.#byCapability.get(cap);
      if (bucket === undefined) return [];
      if (bucket.size < size) {
        narrowest = bucket;
        size = bucket.size;
      }
    }
    for (const pairs of [task.requirements?.labels, task.target?.tags]) {
      if (pairs === undefined) continue;
      for (const key in pairs) {
        const bucket = this.#byLabel.get(labelKey(key, pairs[key]!));
        if (bucket === undefined) return [];
        if (bucket.size < size) {
          narrowest = bucket;
          size = bucket.size;
        }
      }
    }
    if (narrowest !== undefined) return collect(narrowest, keep, [], window);
    const a = typed === undefined ? [] : collect(typed, keep, [], window);
    if (this.#anyType.size === 0) return a;
    const b = collect(this.#anyType, keep, [], window);
    if (a.length === 0) return b;
    if (b.length === 0) return a;
    const out: Entry[] = [];
    let i = 0;
    let j = 0;
    while (i < a.length && j < b.length) out.push(a[i]!.seq < b[j]!.seq ? a[i++]! : b[j++]!);
    while (i < a.length) out.push(a[i++]!);
    while (j < b.length) out.push(b[j++]!);
    return out;
  }
}

function isEmpty(record: Readonly<Record<string, string>> | undefined): boolean {
  if (record === undefined) return true;
  for (const _ in record) return false;
  return true;
}

/** True when nothing but the task type constrains which workers may run `task`. @internal */
export function isUnconstrained(task: TaskRecord): boolean {
  const req = task.requirements;
  const target = task.target;
  return (
    (req === undefined || ((req.capabilities?.length ?? 0) === 0 && isEmpty(req.labels))) &&
    (target === undefined ||
      (target.workerId === undefined && target.name === undefined && isEmpty(target.tags)))
  );
}
