import type { TaskRecord } from "../task/types.js";
import type { Entry } from "./entry.js";

const labelKey = (key: string, value: string) => `${key}\u0000${value}`;

function addTo<K>(index: Map<K, Set<Entry>>, key: K, entry: Entry): void {
  let set = index.get(key);
  if (set === undefined) {
    set = new Set();
    index.set(key, set);
  }
  set.add(entry);
}

function removeFrom<K>(index: Map<K, Set<Entry>>, key: K, entry: Entry): void {
  const set = index.get(key);
  if (set === undefined) return;
  set.delete(entry);
  if (set.size === 0) index.delete(key);
}

/**
 * Registered workers indexed by task type (and the wildcard `"*"`), capability and label,
 * so that "who may run this task" starts from the smallest candidate set instead of scanning
 * every worker of a large fleet. @internal
 */
export class WorkerIndex {
  readonly #byType = new Map<string, Set<Entry>>();
  /** Workers whose task types include `"*"`. */
  readonly #anyType = new Set<Entry>();
  readonly #byCapability = new Map<string, Set<Entry>>();
  readonly #byLabel = new Map<string, Set<Entry>>();

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

  /** The workers `keep` accepts among those indexed for `task`, in registration order. */
  candidates(task: TaskRecord, keep: (entry: Entry) => boolean): Entry[] {
    const typed = this.#byType.get(task.type);
    let narrowest: Set<Entry> | undefined;
    let size = (typed?.size ?? 0) + this.#anyType.size;
    if (size === 0) return [];
    for (const cap of task.requirements?.capabilities ?? []) {
      const set = this.#byCapability.get(cap);
      if (set === undefined) return [];
      if (set.size < size) {
        narrowest = set;
        size = set.size;
      }
    }
    for (const pairs of [task.requirements?.labels, task.target?.tags]) {
      if (pairs === undefined) continue;
      for (const key in pairs) {
        const set = this.#byLabel.get(labelKey(key, pairs[key]!));
        if (set === undefined) return [];
        if (set.size < size) {
          narrowest = set;
          size = set.size;
        }
      }
    }
    const out: Entry[] = [];
    if (narrowest !== undefined) {
      for (const entry of narrowest) if (keep(entry)) out.push(entry);
      return out;
    }
    const a: Entry[] = [];
    if (typed !== undefined) for (const entry of typed) if (keep(entry)) a.push(entry);
    if (this.#anyType.size === 0) return a;
    const b: Entry[] = [];
    for (const entry of this.#anyType) if (keep(entry)) b.push(entry);
    if (a.length === 0) return b;
    if (b.length === 0) return a;
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
