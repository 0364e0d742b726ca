import type { EventEmitter } from "eventemitter3";
import type { Claim, ClaimOptions, ClaimSlot } from "../lease/types.js";
import type { WorkerInfo } from "../registry/types.js";
import type { StoredEvent, TaskQuery, UsageEntry } from "../store/types.js";
import type { OrchestratorEvents } from "../task/events.js";
import type { TaskSpec } from "../task/schema.js";
import type { Lease, TaskRecord } from "../task/types.js";
import type { HealthReport, Worker, WorkerResult } from "../worker/types.js";
import type { TaskExplanation } from "./explain.js";
import type { TaskHandle } from "./handle.js";
import type { OrchestratorStatus, UnregisterOptions } from "./options.js";
import type { TaskTelemetry } from "./telemetry.js";

/** The name of an engine event. */
export type EngineEventName = EventEmitter.EventNames<OrchestratorEvents>;

/** The listener of engine event `E`. */
export type EngineListener<E extends EngineEventName> = EventEmitter.EventListener<
  OrchestratorEvents,
  E
>;

/**
 * The engine as every adapter sees it: the HTTP routes, the fleet protocol, worker pools and
 * the CLI depend on this interface and on nothing else of the engine. `Orchestrator`
 * implements it. Adapters read the engine's state through it (`get`, `list`, `status`,
 * `queueReading`, `listWorkers`) and keep no copy of it.
 *
 * @example
 * ```ts
 * import type { EngineApi } from "@flotilla/core";
 *
 * async function runAndWait(engine: EngineApi, type: string, payload: unknown) {
 *   const handle = await engine.submit({ type, payload });
 *   return handle.result();
 * }
 * ```
 */
export interface EngineApi {
  /** `idle`, `running`, `stopping` or `stopped`. */
  readonly state: OrchestratorStatus["state"];

  /** Validates and stores one task; see `Orchestrator.submit`. */
  submit<TOutput = unknown>(spec: TaskSpec): Promise<TaskHandle<TOutput>>;
  /** Stores several tasks all-or-nothing; see `Orchestrator.submitBatch`. */
  submitBatch(specs: readonly TaskSpec[]): Promise<TaskHandle[]>;
  /** A copy of the task's record, or `undefined` when unknown. */
  get(id: string): Promise<TaskRecord | undefined>;
  /**
   * `render` called at once with the task's record (not a copy: read it, neither keep nor
   * change it); its answer, or `undefined` when the task is unknown. For answers built from
   * a task right away (an API's view of it), without the copy `get` makes.
   */
  view<T>(id: string, render: (rec: Readonly<TaskRecord>) => T): Promise<T | undefined>;
  /** A handle on an existing task, or `undefined` when unknown. */
  handle(id: string): Promise<TaskHandle | undefined>;
  /** Why a task is not running now (its status and the reasons). */
  explain(id: string): Promise<TaskExplanation>;
  /** Tasks matching a query, from the store. */
  list(query?: TaskQuery): Promise<TaskRecord[]>;
  /** Cancels a task; `true` if this call cancelled it. */
  cancel(id: string, reason?: string): Promise<boolean>;
  /** Approves a task awaiting approval. */
  approve(id: string, decision?: { by?: string; comment?: string }): Promise<TaskRecord>;
  /** Rejects a task awaiting approval. */
  reject(id: string, decision?: { by?: string; comment?: string }): Promise<TaskRecord>;

  /** A synchronous snapshot: counts, queue depth, workers, uptime. */
  status(): OrchestratorStatus;
  /** Ready tasks of `taskTypes` (or all) and the oldest one's wait. */
  queueReading(taskTypes?: string[]): { depth: number; oldestWaitMs: number };
  /** Replaces the tenants' fair-share weights (tenants not named get weight 1). */
  setTenantWeights(weights: Record<string, number>): void;
  /** A task's lifecycle history from the store (written up to the call), oldest first. */
  history(taskId: string): Promise<StoredEvent[]>;
  /** What a task's worker reported as progress (CPU, memory, tool, step), bounded, in memory. */
  telemetry(taskId: string): TaskTelemetry | undefined;
  /** The tenants' fair-share weights in force. */
  tenantWeights(): Record<string, number>;
  /** The usage ledger (one line per attempt that reported usage), oldest first. */
  usage(query?: { since?: number; until?: number }): Promise<UsageEntry[]>;

  /** Registers a worker and starts it. */
  register(worker: Worker): Promise<WorkerInfo>;
  /** Unregisters a worker (drain or hand back its tasks); `false` for an unknown id. */
  unregister(id: string, options?: UnregisterOptions): Promise<boolean>;
  /** Snapshots of every registered worker. */
  listWorkers(): WorkerInfo[];
  /** Feeds a health report obtained elsewhere (a node's liveness) into a worker's health. */
  reportHealth(id: string, report: HealthReport): boolean;

  /** A remote slot asks for work: the best task it can run, leased, or `null`. */
  claim(slot: ClaimSlot, options?: ClaimOptions): Promise<Claim | null>;
  /** Extends a lease. */
  renewLease(taskId: string, leaseId: string, extendMs?: number): Promise<Lease>;
  /** Progress of a leased task (renews the lease, marks it running). */
  reportProgress(taskId: string, leaseId: string, data?: unknown): Promise<TaskRecord>;
  /** Completes a leased task with its result. */
  completeLease(taskId: string, leaseId: string, result: WorkerResult): Promise<TaskRecord>;
  /** Fails a leased task's attempt. */
  failLease(taskId: string, leaseId: string, error: unknown): Promise<TaskRecord>;
  /** Gives a leased task back to the queue. */
  releaseLease(taskId: string, leaseId: string, reason?: string): Promise<TaskRecord>;

  /** Listens to an engine event. */
  on<E extends EngineEventName>(event: E, listener: EngineListener<E>): unknown;
  /** Stops listening. */
  off<E extends EngineEventName>(event: E, listener: EngineListener<E>): unknown;
}
