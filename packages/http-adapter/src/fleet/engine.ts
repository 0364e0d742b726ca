import type {
  Lease,
  TaskQuery,
  TaskRecord,
  TaskSpec,
  Worker,
  WorkerInfo,
  WorkerResult,
} from "@flotilla/core";
import { FlotillaError } from "@flotilla/core";

/** A remote slot asking for work: one poll of one node. */
export interface FleetSlot {
  holderId: string;
  taskTypes: string[];
  capabilities: string[];
  labels: Record<string, string>;
  name: string;
}

/** A task handed to a slot together with its lease. */
export interface FleetClaim {
  task: TaskRecord;
  lease: Lease;
}

/**
 * The part of the orchestrator the fleet routes drive: submit/get/list/cancel and the
 * pull-dispatch lease API for remote slots. `Orchestrator` from `@flotilla/core` satisfies it.
 */
export interface FleetOrchestrator {
  submit(spec: TaskSpec): unknown;
  get(id: string): Promise<TaskRecord | undefined> | TaskRecord | undefined;
  list?(query?: TaskQuery): Promise<TaskRecord[]> | TaskRecord[];
  cancel(id: string, reason?: string): unknown;
  status?(): unknown;
  claim(slot: FleetSlot, options: { leaseMs: number }): Promise<unknown> | unknown;
  renewLease(taskId: string, leaseId: string, extendMs?: number): unknown;
  reportProgress?(taskId: string, leaseId: string, data?: unknown): unknown;
  completeLease(taskId: string, leaseId: string, result: WorkerResult): unknown;
  failLease(taskId: string, leaseId: string, error: unknown): unknown;
  releaseLease(taskId: string, leaseId: string, reason?: string): unknown;
  registerWorker?(worker: Worker): unknown;
  register?(worker: Worker): unknown;
  unregisterWorker?(id: string, options?: unknown): unknown;
  unregister?(id: string, options?: unknown): unknown;
  listWorkers?(): WorkerInfo[];
  workers?(): WorkerInfo[];
}

/** Thin, defensive wrapper around the orchestrator's methods. */
export class FleetEngine {
  readonly #o: FleetOrchestrator;

  constructor(orchestrator: FleetOrchestrator) {
    for (const m of ["submit", "get", "cancel", "claim", "renewLease", "completeLease"] as const) {
      if (typeof (orchestrator as unknown as Record<string, unknown>)[m] !== "function") {
        throw new FlotillaError(
          "VALIDATION",
          `orchestrator: expected a method "${m}" (the pull-dispatch lease API)`,
        );
      }
    }
    this.#o = orchestrator;
  }

  async submit(spec: TaskSpec): Promise<string> {
    const handle = (await this.#o.submit(spec)) as { id?: string } | string | undefined;
    const id = typeof handle === "string" ? handle : handle?.id;
    if (!id) throw new FlotillaError("INTERNAL", "orchestrator.submit returned no task id");
    return id;
  }

  async get(id: string): Promise<TaskRecord | undefined> {
    try {
      return (await this.#o.get(id)) ?? undefined;
    } catch (err) {
      if (err instanceof FlotillaError && err.code === "NOT_FOUND") return undefined;
      throw err;
    }
  }

  async list(query: TaskQuery): Promise<TaskRecord[] | undefined> {
    if (typeof this.#o.list !== "function") return undefined;
    return await this.#o.list(query);
  }

  async cancel(id: string, reason: string): Promise<void> {
    await this.#o.cancel(id, reason);
  }

  async claim(slot: FleetSlot, leaseMs: number): Promise<FleetClaim | null> {
    const got = (await this.#o.claim(slot, { leaseMs })) as
      | FleetClaim
      | TaskRecord
      | null
      | undefined;
    if (!got) return null;
    const c = got as { lease?: Lease; record?: TaskRecord; task?: unknown };
    if (c.lease && c.record) return { task: c.record, lease: c.lease };
    if (c.lease && c.task && (c.task as TaskRecord).version !== undefined) {
      return { task: c.task as TaskRecord, lease: c.lease };
    }
    const task = got as TaskRecord;
    if (!task.lease) throw new FlotillaError("INTERNAL", "orchestrator.claim returned no lease");
    return { task, lease: task.lease };
  }

  async renew(taskId: string, leaseId: string, extendMs: number): Promise<void> {
    await this.#o.renewLease(taskId, leaseId, extendMs);
  }

  /** Renews the lease and marks the task running (progress), where the orchestrator can. */
  async progress(taskId: string, leaseId: string, data: unknown, extendMs: number): Promise<void> {
    if (typeof this.#o.reportProgress === "function") {
      await this.#o.reportProgress(taskId, leaseId, data);
    } else {
      await this.#o.renewLease(taskId, leaseId, extendMs);
    }
  }

  async complete(taskId: string, leaseId: string, result: WorkerResult): Promise<void> {
    await this.#o.completeLease(taskId, leaseId, result);
  }

  async fail(taskId: string, leaseId: string, error: Error): Promise<void> {
    await this.#o.failLease(taskId, leaseId, error);
  }

  async release(taskId: string, leaseId: string, reason: string): Promise<void> {
    await this.#o.releaseLease(taskId, leaseId, reason);
  }

  async registerWorker(worker: Worker): Promise<void> {
    const o = this.#o;
    if (typeof o.registerWorker === "function") await o.registerWorker(worker);
    else if (typeof o.register === "function") await o.register(worker);
  }

  async unregisterWorker(id: string): Promise<void> {
    const o = this.#o;
    try {
      if (typeof o.unregisterWorker === "function")
        await o.unregisterWorker(id, { mode: "handback" });
      else if (typeof o.unregister === "function") await o.unregister(id, { mode: "handback" });
    } catch (err) {
      if (!(err instanceof FlotillaError && err.code === "NOT_FOUND")) throw err;
    }
  }

  workers(): WorkerInfo[] {
    const o = this.#o;
    if (typeof o.listWorkers === "function") return o.listWorkers();
    if (typeof o.workers === "function") return o.workers();
    return [];
  }
}
