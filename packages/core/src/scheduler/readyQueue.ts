import type { TaskRecord } from "../task/types.js";
import { type HeapNode, IndexedHeap } from "../util/heap.js";
import { FairShare } from "./fairness.js";
import { laneSignature } from "./signature.js";

/** A queued task as the ready queue holds it. */
export interface QueueEntry extends HeapNode {
  readonly task: TaskRecord;
  /** Static ordering key: priority, minus age credit when aging is on. Higher first. */
  readonly score: number;
  /** Priority band for fairness: tasks in one band are shared fairly between tenants. */
  readonly band: number;
  readonly lane: Lane;
  /** When it was enqueued (for the queue reading). */
  readonly enqueuedAt: number;
}

/** Queued tasks of one type: a count, and entries in enqueue order (removed ones skipped lazily). */
interface TypeQueue {
  count: number;
  fifo: QueueEntry[];
  head: number;
}

/** Why a lane is out of the running for push dispatch. */
export type ParkReason = "worker" | "gate";

/** All active lanes of one tenant, best head first. */
class TenantNode implements HeapNode {
  heapIndex = -1;
  readonly lanes = new IndexedHeap<Lane>(laneBefore);
  constructor(readonly tenant: string) {}
}

/**
 * All queued tasks with one constraint signature, best first. Obtained from
 * `ReadyQueue.popLane()`:
 *
 * @example
 * ```ts
 * const lane = queue.popLane();
 * if (lane) console.log(lane.key, lane.head?.task.id, lane.entries.size);
 * ```
 * Lanes are the unit the
 * dispatcher skips: when the head of a lane cannot go (no free worker can run it, or a
 * gate holds it), nothing behind it can either, so the whole lane waits without losing its
 * place and without costing a scan per dispatch.
 */
export class Lane implements HeapNode {
  heapIndex = -1;
  readonly entries = new IndexedHeap<QueueEntry>(entryBefore);
  parked: ParkReason | undefined;
  /** Last block key a gate gave for this lane's head. */
  blockKey: string | undefined;
  /** @internal The gate group (block key) this lane is parked in. */
  gateGroup: string | undefined;
  /** Pending wake-up timer when parked by a gate with a retry time. */
  timer: unknown;
  retryAt: number | undefined;
  /** @internal */
  node: TenantNode | undefined;
  constructor(
    readonly key: string,
    readonly tenant: string,
    readonly type: string,
  ) {}

  get head(): QueueEntry | undefined {
    return this.entries.peek();
  }
}

function laneBefore(a: Lane, b: Lane): boolean {
  const ha = a.head;
  const hb = b.head;
  if (!ha || !hb) return ha !== undefined;
  if (ha.band !== hb.band) return ha.band > hb.band;
  if (ha.score !== hb.score) return ha.score > hb.score;
  return ha.task.seq < hb.task.seq;
}

function entryBefore(a: QueueEntry, b: QueueEntry): boolean {
  if (a.score !== b.score) return a.score > b.score;
  return a.task.seq < b.task.seq;
}

/** Options of {@link ReadyQueue}. */
export interface ReadyQueueOptions {
  /**
   * Priority aging: a queued task gains one priority point per `agingIntervalMs` it has
   * waited, relative to newer tasks, so low priorities cannot starve. The key stays static
   * (score = priority − enqueuedAt / interval), so aging costs no re-sorting.
   * @default undefined (no aging)
   */
  agingIntervalMs?: number;
  /** Weights for fair sharing between tenants at equal priority. @default 1 each */
  tenantWeights?: Record<string, number>;
  /** Origin for aging scores (keeps numbers small). @default 0 */
  epoch?: number;
  /** Called when a lane empties and is dropped (to clear its timer). */
  onLaneDropped?: (lane: Lane) => void;
}

/**
 * The ready queue: tasks whose dependencies, approvals and delays are behind them, ordered
 * by priority (with optional aging), then fair share between tenants, then FIFO. Every
 * operation is O(log n) in the number of tasks (plus O(log L) in the number of lanes).
 *
 * @example
 * ```ts
 * const q = new ReadyQueue();
 * q.enqueue(task, Date.now());
 * const lane = q.popLane(); // best lane; inspect lane.head, then q.take(lane) or q.park(lane, "worker")
 * ```
 */
export class ReadyQueue {
  readonly fair: FairShare;
  readonly #lanes = new Map<string, Lane>();
  readonly #tenants = new Map<string, TenantNode>();
  /** Tenants with active lanes: best head band first, then smallest virtual time. */
  readonly #active: IndexedHeap<TenantNode>;
  readonly #byId = new Map<string, QueueEntry>();
  /** Parked lanes by reason, so waking one kind never walks the other. */
  readonly #parked: Record<ParkReason, Set<Lane>> = { worker: new Set(), gate: new Set() };
  /** Gate-parked lanes by block key ("" for none), longest parked first. */
  readonly #gateGroups = new Map<string, Set<Lane>>();
  readonly #tenantQueued = new Map<string, number>();
  readonly #byPriority = new Map<number, number>();
  /** Per task type: how many are queued and which was enqueued first. */
  readonly #byType = new Map<string, TypeQueue>();
  readonly #aging: number | undefined;
  readonly #epoch: number;
  readonly #onLaneDropped: ((lane: Lane) => void) | undefined;

  constructor(options: ReadyQueueOptions = {}) {
    this.fair = new FairShare(
      options.tenantWeights === undefined ? {} : { weights: options.tenantWeights },
    );
    const aging = options.agingIntervalMs;
    this.#aging = aging !== undefined && aging > 0 ? aging : undefined;
    this.#epoch = options.epoch ?? 0;
    this.#onLaneDropped = options.onLaneDropped;
    this.#active = new IndexedHeap<TenantNode>((a, b) => this.#tenantBefore(a, b));
  }

  /** Queued tasks. */
  get size(): number {
    return this.#byId.size;
  }

  /** Lanes (distinct constraint signatures) with queued tasks. */
  get laneCount(): number {
    return this.#lanes.size;
  }

  /**
   * Whether a task is queued.
   *
   * @example
   * ```ts
   * if (q.has("t1")) q.remove("t1");
   * ```
   */
  has(taskId: string): boolean {
    return this.#byId.has(taskId);
  }

  /**
   * Queued tasks by numeric priority.
   *
   * @example
   * ```ts
   * for (const [priority, n] of q.depthByPriority()) console.log(priority, n);
   * ```
   */
  depthByPriority(): Map<number, number> {
    return new Map(this.#byPriority);
  }

  /**
   * Adds a ready task. `enqueuedAt` fixes its aging score for good.
   *
   * @example
   * ```ts
   * const entry = q.enqueue(task, Date.now());
   * console.log(entry.lane.key, entry.score);
   * ```
   */
  enqueue(task: TaskRecord, enqueuedAt: number): QueueEntry {
    const existing = this.#byId.get(task.id);
    if (existing) return existing;
    const key = laneSignature(task);
    let lane = this.#lanes.get(key);
    const tenant = task.tenant ?? "";
    if (!lane) {
      lane = new Lane(key, tenant, task.type);
      this.#lanes.set(key, lane);
    }
    const queued = this.#tenantQueued.get(tenant) ?? 0;
    if (queued === 0) this.fair.activate(tenant);
    this.#tenantQueued.set(tenant, queued + 1);
    const score =
      this.#aging === undefined
        ? task.priority
        : task.priority - (enqueuedAt - this.#epoch) / this.#aging;
    const entry: QueueEntry = {
      heapIndex: -1,
      task,
      score,
      band: this.#aging === undefined ? score : Math.floor(score),
      lane,
      enqueuedAt,
    };
    const oldHead = lane.head;
    lane.entries.push(entry);
    this.#byId.set(task.id, entry);
    let ofType = this.#byType.get(task.type);
    if (!ofType) {
      ofType = { count: 0, fifo: [], head: 0 };
      this.#byType.set(task.type, ofType);
    }
    ofType.count++;
    ofType.fifo.push(entry);
    if (ofType.fifo.length > 2 * ofType.count + 1024) {
      // Drop dequeued entries (amortised O(1): runs after as many removals as live entries).
      ofType.fifo = ofType.fifo.slice(ofType.head).filter((e) => this.#byId.get(e.task.id) === e);
      ofType.head = 0;
    }
    this.#byPriority.set(task.priority, (this.#byPriority.get(task.priority) ?? 0) + 1);
    if (lane.parked === undefined) {
      if (lane.node) {
        if (lane.head !== oldHead) this.#laneChanged(lane);
      } else this.#activate(lane);
    }
    return entry;
  }

  /**
   * Removes a queued task (cancelled, failed by a gate).
   *
   * @example
   * ```ts
   * const removed = q.remove("t1"); // undefined when it was not queued
   * ```
   */
  remove(taskId: string): TaskRecord | undefined {
    const entry = this.#byId.get(taskId);
    if (!entry) return undefined;
    const lane = entry.lane;
    const wasHead = lane.head === entry;
    lane.entries.remove(entry);
    this.#forget(entry);
    if (lane.entries.size === 0) this.#dropLane(lane);
    else if (wasHead && lane.node) this.#laneChanged(lane);
    return entry.task;
  }

  /**
   * Pops the best lane that is not parked (it leaves the active set until `restore`,
   * `take` or `park`). Returns `undefined` when none is left. O(log L).
   *
   * @example
   * ```ts
   * const lane = q.popLane();
   * if (lane) console.log(lane.head?.task.id); // then q.take(lane), q.restore(lane) or q.park(lane, "worker")
   * ```
   */
  popLane(): Lane | undefined {
    const node = this.#active.peek();
    if (!node) return undefined;
    const lane = node.lanes.peek();
    if (!lane) {
      this.#active.remove(node);
      return this.popLane();
    }
    this.#deactivate(lane);
    return lane;
  }

  /**
   * Puts a popped lane back among the active ones.
   *
   * @example
   * ```ts
   * const lane = q.popLane();
   * if (lane) q.restore(lane); // looked, but did not dispatch
   * ```
   */
  restore(lane: Lane): void {
    if (lane.entries.size === 0 || lane.node || lane.parked !== undefined) return;
    if (this.#lanes.get(lane.key) !== lane) return;
    this.#activate(lane);
  }

  /**
   * Takes the head task of `lane` for dispatch, charging its tenant, and restores the lane.
   *
   * @example
   * ```ts
   * const lane = q.popLane();
   * const task = lane ? q.take(lane) : undefined;
   * ```
   */
  take(lane: Lane): TaskRecord | undefined {
    const entry = lane.entries.pop();
    if (!entry) return undefined;
    this.#forget(entry);
    this.fair.charge(lane.tenant);
    const node = this.#tenants.get(lane.tenant);
    if (node && this.#active.has(node)) this.#active.update(node);
    if (lane.entries.size === 0) this.#dropLane(lane);
    else if (lane.node) this.#laneChanged(lane);
    else if (lane.parked === undefined) this.restore(lane);
    return entry.task;
  }

  /**
   * Takes a specific queued task (a pull claim takes the head of the lane it walks).
   *
   * @example
   * ```ts
   * const claimed = q.takeTask("t1");
   * ```
   */
  takeTask(taskId: string): TaskRecord | undefined {
    const entry = this.#byId.get(taskId);
    if (!entry) return undefined;
    const lane = entry.lane;
    if (lane.head === entry) return this.take(lane);
    const task = this.remove(taskId);
    if (task) this.fair.charge(lane.tenant);
    return task;
  }

  /**
   * Parks a popped (or active) lane: push dispatch skips it until `unpark`.
   *
   * @example
   * ```ts
   * const lane = q.popLane();
   * if (lane) q.park(lane, "worker"); // no free worker can run its head
   * ```
   */
  park(lane: Lane, reason: ParkReason): void {
    this.#deactivate(lane);
    if (lane.entries.size === 0) return;
    this.#unlinkParked(lane);
    lane.parked = reason;
    this.#parked[reason].add(lane);
    if (reason === "gate") {
      const key = lane.blockKey ?? "";
      let group = this.#gateGroups.get(key);
      if (!group) {
        group = new Set();
        this.#gateGroups.set(key, group);
      }
      group.add(lane);
      lane.gateGroup = key;
    }
  }

  /**
   * Returns a parked lane to the active set.
   *
   * @example
   * ```ts
   * for (const lane of q.parkedLanes("gate")) q.unpark(lane);
   * ```
   */
  unpark(lane: Lane): void {
    if (lane.parked === undefined) return;
    this.#unlinkParked(lane);
    this.restore(lane);
  }

  /**
   * Unparks every lane parked for `reason` (optionally only those `filter` accepts). Returns how many.
   *
   * @example
   * ```ts
   * const woken = q.unparkAll("worker", (lane) => lane.type === "summarize");
   * ```
   */
  unparkAll(reason: ParkReason, filter?: (lane: Lane) => boolean): number {
    const set = this.#parked[reason];
    if (set.size === 0) return 0;
    let n = 0;
    for (const lane of [...set]) {
      if (filter && !filter(lane)) continue;
      this.unpark(lane);
      n++;
    }
    return n;
  }

  /**
   * Returns the gate-parked lane waiting longest on `key` (`undefined`: the lanes held
   * without one key) to the active set; true when there was one.
   *
   * @example
   * ```ts
   * if (q.unparkGateHead(undefined)) schedulePump(); // a slot freed
   * ```
   */
  unparkGateHead(key: string | undefined): boolean {
    const first = this.#gateGroups
      .get(key ?? "")
      ?.values()
      .next().value;
    if (first === undefined) return false;
    this.unpark(first);
    return true;
  }

  /**
   * Returns every lane gate-parked on `key` (`undefined`: held without one key) to the
   * active set. Returns how many.
   *
   * @example
   * ```ts
   * q.unparkGateGroup("openai"); // the "openai" limit has room again
   * ```
   */
  unparkGateGroup(key: string | undefined): number {
    const group = this.#gateGroups.get(key ?? "");
    if (!group) return 0;
    let n = 0;
    for (const lane of [...group]) {
      this.unpark(lane);
      n++;
    }
    return n;
  }

  /** The oldest entry still queued; entries dequeued since are dropped from the front (amortised O(1)). */
  #oldest(q: TypeQueue): QueueEntry | undefined {
    const fifo = q.fifo;
    while (q.head < fifo.length && this.#byId.get(fifo[q.head]!.task.id) !== fifo[q.head]) q.head++;
    if (q.head > 1024 && q.head * 2 > fifo.length) {
      q.fifo = fifo.slice(q.head);
      q.head = 0;
    }
    return q.fifo[q.head];
  }

  #unlinkParked(lane: Lane): void {
    if (lane.parked === undefined) return;
    this.#parked[lane.parked].delete(lane);
    if (lane.gateGroup !== undefined) {
      const group = this.#gateGroups.get(lane.gateGroup);
      if (group?.delete(lane) && group.size === 0) this.#gateGroups.delete(lane.gateGroup);
      lane.gateGroup = undefined;
    }
    lane.parked = undefined;
  }

  /**
   * Lanes parked for `reason` (for the dispatcher's bookkeeping).
   *
   * @example
   * ```ts
   * console.log(q.parkedLanes("worker").size, "lanes wait for a worker");
   * ```
   */
  parkedLanes(reason: ParkReason): ReadonlySet<Lane> {
    return this.#parked[reason];
  }

  /**
   * Every lane with queued tasks, best head first (active and parked): the order a pull
   * claim walks. O(L log L) in the number of lanes.
   *
   * @example
   * ```ts
   * for (const lane of q.lanesInOrder()) console.log(lane.key, lane.entries.size);
   * ```
   */
  lanesInOrder(): Lane[] {
    const lanes = [...this.#lanes.values()].filter((l) => l.entries.size > 0);
    const key = (l: Lane) => this.fair.vt(l.tenant);
    return lanes.sort((a, b) => {
      const ha = a.head!;
      const hb = b.head!;
      if (ha.band !== hb.band) return hb.band - ha.band;
      if (a.tenant !== b.tenant) {
        const d = key(a) - key(b);
        if (d !== 0) return d;
      }
      if (ha.score !== hb.score) return hb.score - ha.score;
      return ha.task.seq - hb.task.seq;
    });
  }

  /**
   * How many tasks are queued (of `types`, or all) and since when the oldest has waited.
   * O(number of types asked for).
   *
   * @example
   * ```ts
   * const { depth, oldestAt } = queue.reading(["llm_request"]);
   * ```
   */
  reading(types?: readonly string[]): { depth: number; oldestAt: number | undefined } {
    let depth = 0;
    let oldestAt: number | undefined;
    const visit = (ofType: TypeQueue | undefined) => {
      if (!ofType || ofType.count === 0) return;
      depth += ofType.count;
      const first = this.#oldest(ofType);
      if (first && (oldestAt === undefined || first.enqueuedAt < oldestAt)) {
        oldestAt = first.enqueuedAt;
      }
    };
    if (types === undefined) for (const ofType of this.#byType.values()) visit(ofType);
    else for (const type of new Set(types)) visit(this.#byType.get(type));
    return { depth, oldestAt };
  }

  /**
   * Every queued task, in no particular order.
   *
   * @example
   * ```ts
   * const ids = [...q.tasks()].map((t) => t.id);
   * ```
   */
  *tasks(): IterableIterator<TaskRecord> {
    for (const entry of this.#byId.values()) yield entry.task;
  }

  /**
   * Drops every queued task and lane (calling `onLaneDropped` for each lane).
   *
   * @example
   * ```ts
   * q.clear();
   * console.log(q.size); // 0
   * ```
   */
  clear(): void {
    for (const lane of this.#lanes.values()) this.#onLaneDropped?.(lane);
    this.#lanes.clear();
    this.#tenants.clear();
    this.#active.clear();
    this.#byId.clear();
    this.#parked.worker.clear();
    this.#parked.gate.clear();
    this.#gateGroups.clear();
    this.#tenantQueued.clear();
    this.#byPriority.clear();
    this.#byType.clear();
  }

  #activate(lane: Lane): void {
    let node = this.#tenants.get(lane.tenant);
    if (!node) {
      node = new TenantNode(lane.tenant);
      this.#tenants.set(lane.tenant, node);
    }
    lane.node = node;
    node.lanes.push(lane);
    if (this.#active.has(node)) this.#active.update(node);
    else this.#active.push(node);
  }

  #deactivate(lane: Lane): void {
    const node = lane.node;
    if (!node) return;
    lane.node = undefined;
    node.lanes.remove(lane);
    if (node.lanes.size === 0) {
      this.#active.remove(node);
      this.#tenants.delete(node.tenant);
    } else this.#active.update(node);
  }

  #laneChanged(lane: Lane): void {
    const node = lane.node;
    if (!node) return;
    node.lanes.update(lane);
    this.#active.update(node);
  }

  #forget(entry: QueueEntry): void {
    this.#byId.delete(entry.task.id);
    const ofType = this.#byType.get(entry.task.type);
    if (ofType && --ofType.count === 0) this.#byType.delete(entry.task.type);
    const p = entry.task.priority;
    const n = (this.#byPriority.get(p) ?? 1) - 1;
    if (n <= 0) this.#byPriority.delete(p);
    else this.#byPriority.set(p, n);
    const tenant = entry.lane.tenant;
    const t = (this.#tenantQueued.get(tenant) ?? 1) - 1;
    if (t <= 0) this.#tenantQueued.delete(tenant);
    else this.#tenantQueued.set(tenant, t);
  }

  #dropLane(lane: Lane): void {
    this.#deactivate(lane);
    this.#unlinkParked(lane);
    if (this.#lanes.get(lane.key) === lane) this.#lanes.delete(lane.key);
    this.#onLaneDropped?.(lane);
  }

  /** Best head band first; at equal band the tenant with the smaller virtual time; then score and FIFO. */
  #tenantBefore(a: TenantNode, b: TenantNode): boolean {
    const la = a.lanes.peek();
    const lb = b.lanes.peek();
    if (!la || !lb) return la !== undefined;
    const ha = la.head!;
    const hb = lb.head!;
    if (ha.band !== hb.band) return ha.band > hb.band;
    const va = this.fair.vt(a.tenant);
    const vb = this.fair.vt(b.tenant);
    if (va !== vb) return va < vb;
    if (ha.score !== hb.score) return ha.score > hb.score;
    return ha.task.seq < hb.task.seq;
  }
}
