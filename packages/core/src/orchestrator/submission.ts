import { orderBatch } from "../dag/validate.js";
import { FlotillaError, type SerializedError } from "../errors.js";
import { toJson } from "../store/common.js";
import { isTerminalStatus } from "../task/lifecycle.js";
import { normalizeTaskSpec, type TaskDefaults } from "../task/normalize.js";
import type { TaskSpec, TaskStatus } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import { deferred } from "../util/deferred.js";
import type { EngineContext } from "./context.js";
import type { Dependencies } from "./dependencies.js";
import type { Dispatcher } from "./dispatcher.js";
import type { TaskHandle } from "./handle.js";
import type { Handles } from "./handles.js";
import type { Ownership } from "./ownership.js";
import type { Persistence } from "./persistence.js";
import type { Live, TaskTable } from "./taskTable.js";
import { buildResult, type Transitions } from "./transitions.js";

/** The collaborators submission talks to. */
export interface SubmissionParts {
  table: TaskTable;
  transitions: Transitions;
  dependencies: Dependencies;
  dispatcher: Dispatcher;
  persistence: Persistence;
  handles: Handles;
  ownership: Ownership;
}

/**
 * Takes tasks in: normalizes and validates specs, resolves idempotency keys (reserving a
 * key at once, so a concurrent submit with the same key gets the same task), stores a batch
 * all-or-nothing, decides each task's first status from its dependencies and approval,
 * wires it into the DAG and queues what is ready. @internal
 */
export class Submission {
  readonly #ctx: EngineContext;
  readonly #p: SubmissionParts;
  readonly #defaults: TaskDefaults;
  readonly #maxPayloadBytes: number;
  #seq = 0;

  constructor(
    ctx: EngineContext,
    parts: SubmissionParts,
    options: { defaults: TaskDefaults; maxPayloadBytes: number },
  ) {
    this.#ctx = ctx;
    this.#p = parts;
    this.#defaults = options.defaults;
    this.#maxPayloadBytes = options.maxPayloadBytes;
  }

  /** Keeps FIFO numbers above those of recovered tasks. */
  seenSeq(seq: number): void {
    this.#seq = Math.max(this.#seq, seq);
  }

  async submit(specs: readonly TaskSpec[], where: string): Promise<TaskHandle[]> {
    if (this.#ctx.state === "stopping") {
      throw new FlotillaError("SHUTTING_DOWN", "submit: the orchestrator is stopping");
    }
    const { table, handles } = this.#p;
    const now = this.#ctx.clock.now();
    const records = specs.map((spec, i) =>
      normalizeTaskSpec(spec, {
        now,
        seq: 0,
        defaults: this.#defaults,
        where: where === "task" ? "task" : `${where}[${i}]`,
      }),
    );
    // Idempotency: a key already used returns the existing task.
    const out: Array<TaskHandle | Promise<TaskHandle> | undefined> = new Array(records.length);
    const fresh: TaskRecord[] = [];
    const batchKeys = new Set<string>();
    for (let i = 0; i < records.length; i++) {
      const rec = records[i]!;
      const key = rec.idempotencyKey;
      if (key !== undefined) {
        const existing = table.reservation(key);
        if (existing) {
          out[i] = existing;
          continue;
        }
        if (batchKeys.has(key)) {
          throw new FlotillaError(
            "CONFLICT",
            `idempotency key "${key}" appears twice in the batch`,
          );
        }
        batchKeys.add(key);
      }
      fresh.push(rec);
    }
    // Reserve the keys at once, so a concurrent submit with the same key waits for this one.
    const reserved = new Map<string, ReturnType<typeof deferred<TaskHandle>>>();
    for (const rec of fresh) {
      const key = rec.idempotencyKey;
      if (key === undefined) continue;
      const d = deferred<TaskHandle>();
      d.promise.catch(() => {});
      reserved.set(key, d);
      table.reserve(key, d.promise);
    }
    try {
      const storedByKey = new Map<string, TaskRecord>();
      await Promise.all(
        [...reserved.keys()].map(async (key) => {
          const found = await this.#ctx.store.getTaskByIdempotencyKey(key);
          if (found) storedByKey.set(key, found);
        }),
      );
      const toInsert: TaskRecord[] = [];
      for (let i = 0; i < records.length; i++) {
        if (out[i] !== undefined) continue;
        const rec = records[i]!;
        const prior = rec.idempotencyKey ? storedByKey.get(rec.idempotencyKey) : undefined;
        if (prior) {
          const handle = handles.forRecord(prior);
          out[i] = handle;
          reserved.get(rec.idempotencyKey!)?.resolve(handle);
          if (isTerminalStatus(prior.status)) table.release(rec.idempotencyKey!);
          continue;
        }
        toInsert.push(rec);
      }
      if (toInsert.length > 0) await this.#insert(toInsert);
      for (let i = 0; i < records.length; i++) {
        if (out[i] !== undefined) continue;
        const rec = records[i]!;
        // A task of a partition held elsewhere is its holder's: this handle reads the store.
        const here = table.known(rec.id) !== undefined;
        const handle = here ? handles.ofStored(rec.id) : handles.forRecord(rec);
        out[i] = handle;
        if (rec.idempotencyKey !== undefined) {
          reserved.get(rec.idempotencyKey)?.resolve(handle);
          if (!here || isTerminalStatus(rec.status)) table.release(rec.idempotencyKey);
        }
      }
    } catch (err) {
      for (const [key, d] of reserved) {
        table.release(key, d.promise);
        d.reject(err);
      }
      throw err;
    }
    return Promise.all(out as Array<TaskHandle | Promise<TaskHandle>>);
  }

  async #insert(batch: TaskRecord[]): Promise<void> {
    const { table, transitions, dependencies, dispatcher } = this.#p;
    const ids = new Set<string>();
    for (const rec of batch) {
      if (ids.has(rec.id) || table.known(rec.id)) {
        throw new FlotillaError("CONFLICT", `task ${rec.id} already exists`, {
          details: { taskId: rec.id },
        });
      }
      ids.add(rec.id);
    }
    // Dependencies outside the batch: live in memory, or finished (cache or store).
    const external = new Map<string, TaskRecord>();
    const missing: string[] = [];
    for (const rec of batch) {
      for (const dep of rec.dependsOn) {
        if (ids.has(dep) || external.has(dep)) continue;
        const known = table.known(dep);
        if (known) external.set(dep, known.rec);
        else missing.push(dep);
      }
    }
    await Promise.all(
      [...new Set(missing)].map(async (dep) => {
        const found = await this.#ctx.store.getTask(dep);
        if (found) external.set(dep, found);
      }),
    );
    this.#p.ownership.assign(batch, external);
    const ordered = orderBatch(batch, (id) => external.has(id));
    // FIFO follows submission order, whatever order the dependency sort produced.
    for (const rec of batch) rec.seq = ++this.#seq;
    // Initial status in dependency order.
    const batchStatus = new Map<string, TaskStatus>();
    const statusOf = (id: string): TaskStatus | undefined =>
      table.live(id)?.rec.status ??
      batchStatus.get(id) ??
      table.finished(id)?.rec.status ??
      external.get(id)?.status;
    const now = this.#ctx.clock.now();
    for (const rec of ordered) {
      const initial = initialStatus(rec, statusOf);
      transitions.initial(rec, initial.status);
      if (initial.status === "skipped") {
        rec.result = buildResult(rec, undefined, "skipped", now, { error: initial.error! });
      }
      if (initial.status === "queued" && rec.runAt !== undefined && rec.runAt > now) {
        rec.notBefore = rec.runAt;
      }
      batchStatus.set(rec.id, initial.status);
    }
    // The free-form parts go through JSON once when the store keeps what it is given: what
    // JSON cannot hold is refused (VALIDATION), and the record no longer shares objects with
    // the caller, so later writes need no copy. (Every other field was built from the spec.)
    const owned = this.#ctx.owned !== undefined;
    for (const rec of ordered) {
      const json = owned ? detach(rec) : payloadJson(rec);
      if (json !== undefined) checkPayloadSize(rec.id, json, this.#maxPayloadBytes);
    }
    await this.#p.persistence.insert(ordered);
    // Register in memory. Statuses of outside dependencies may have moved during the write.
    // A batch of a partition held elsewhere is only announced: its holder adopts it.
    const here = this.#p.ownership.owns(ordered[0]!);
    const lives: Live[] = [];
    for (const rec of ordered) {
      // Not here, or taken in from the store meanwhile (its partition was adopted while the
      // write was under way): the live state is its holder's, never a second one here.
      if (!here || table.known(rec.id)) {
        transitions.announce(rec);
        continue;
      }
      const live: Live = { rec, finished: false };
      table.add(live);
      lives.push(live);
    }
    const follow: Array<Promise<void>> = [];
    for (const live of lives) {
      const rec = live.rec;
      transitions.announce(rec);
      if (rec.status === "skipped") {
        follow.push(dependencies.onTerminal(live));
        continue;
      }
      if (rec.dependsOn.length === 0) {
        if (rec.status === "queued") {
          live.firstQueuedAt = now;
          dispatcher.enqueue(live);
        } else if (rec.status === "pending") {
          follow.push(dependencies.makeReady(live, "dependencies done"));
        }
        continue;
      }
      const unresolved = rec.dependsOn.filter((d) => {
        const s = statusOf(d);
        return s === undefined || !isTerminalStatus(s);
      });
      const failed = rec.dependsOn.filter((d) => {
        const s = statusOf(d);
        return s !== undefined && isTerminalStatus(s) && s !== "succeeded";
      });
      if (failed.length > 0 && rec.onDependencyFailure === "skip") {
        // A dependency failed while this batch was being written.
        follow.push(dependencies.skip(live, failed[0]!));
        continue;
      }
      dependencies.wait(rec.id, unresolved);
      if (rec.status === "queued") {
        live.firstQueuedAt = now;
        dispatcher.enqueue(live);
      } else if (rec.status === "pending" && unresolved.length === 0) {
        follow.push(dependencies.makeReady(live, "dependencies done"));
      }
    }
    dispatcher.schedule();
    await Promise.all(follow);
  }
}

/** A new task's first status: skipped (a dependency failed), awaiting approval, pending or queued. */
function initialStatus(
  rec: TaskRecord,
  statusOf: (id: string) => TaskStatus | undefined,
): { status: TaskStatus; error?: SerializedError } {
  let unresolved = 0;
  for (const dep of rec.dependsOn) {
    const s = statusOf(dep);
    if (s === undefined || !isTerminalStatus(s)) {
      unresolved++;
      continue;
    }
    if (s !== "succeeded" && rec.onDependencyFailure === "skip") {
      return {
        status: "skipped",
        error: {
          code: "DEPENDENCY_FAILED",
          message: `dependency ${dep} ended ${s}`,
          details: { dependency: dep, status: s },
        },
      };
    }
  }
  if (rec.approval === "before_run") return { status: "awaiting_approval" };
  return { status: unresolved > 0 ? "pending" : "queued" };
}

/**
 * Replaces a new record's payload and metadata by JSON copies (refusing what JSON cannot
 * hold); returns the payload's JSON when it was serialized (objects), else `undefined`.
 */
function detach(rec: TaskRecord): string | undefined {
  const p = rec.payload;
  let json: string | undefined;
  if (p !== null && (typeof p === "object" || typeof p === "bigint")) {
    json = toJson(p, `task ${rec.id}: payload`);
    rec.payload = JSON.parse(json);
  } else if (typeof p === "string") json = p;
  const m = rec.metadata;
  if (m !== null && typeof m === "object") {
    for (const _ in m) {
      rec.metadata = JSON.parse(toJson(m, `task ${rec.id}: metadata`));
      break;
    }
  }
  return json;
}

/** The payload's JSON when it may be large (an object or a string), for the size check. */
function payloadJson(rec: TaskRecord): string | undefined {
  const p = rec.payload;
  if (typeof p === "string") return p;
  if (p === null || (typeof p !== "object" && typeof p !== "bigint")) return undefined;
  return toJson(p, `task ${rec.id}: payload`);
}

/** Refuses a payload over `limit` bytes (UTF-8); counts bytes only when the length is close. */
function checkPayloadSize(id: string, json: string, limit: number): void {
  if (json.length * 3 <= limit) return; // even all 3-byte characters would fit
  const bytes = Buffer.byteLength(json);
  if (bytes <= limit) return;
  throw new FlotillaError(
    "VALIDATION",
    `task ${id}: payload is ${bytes} bytes, over the limit of ${limit} bytes (maxPayloadBytes); pass large inputs by reference`,
    { details: { field: "payload", bytes, limit } },
  );
}
