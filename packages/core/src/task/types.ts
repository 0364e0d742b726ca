import type { SerializedError } from "../errors.js";
import type { Estimate, Requirements, RetryPolicy, Target, TaskStatus, Usage } from "./schema.js";

/** A lease: time-bounded ownership of a task by one worker slot or remote node. */
export interface Lease {
  id: string;
  /** The worker or node id holding the task. */
  holder: string;
  acquiredAt: number;
  expiresAt: number;
}

/** Timings of a task, ms since epoch. */
export interface TaskTimings {
  createdAt: number;
  queuedAt?: number;
  startedAt?: number;
  finishedAt?: number;
  /** finishedAt - startedAt of the last attempt. */
  durationMs?: number;
  /** startedAt - first queuedAt. */
  queueWaitMs?: number;
}

/**
 * The outcome of a task. A worker that returns a failure makes the task `failed`, never
 * `succeeded`.
 */
export interface TaskResult<TOutput = unknown> {
  taskId: string;
  status: TaskStatus;
  output?: TOutput;
  error?: SerializedError;
  usage?: Usage;
  workerId?: string;
  attempts: number;
  timings: TaskTimings;
}

/** An approval decision on a task that requires one. */
export interface ApprovalDecision {
  decision: "approved" | "rejected";
  by?: string;
  comment?: string;
  at: number;
}

/**
 * The stored state of a task. This is what a `Store` persists and what `get`/`list` return.
 */
export interface TaskRecord {
  id: string;
  type: string;
  payload: unknown;
  /** Numeric priority (names are mapped through `PRIORITY_VALUES`); higher first. */
  priority: number;
  /** Monotonic submission order, for FIFO within a priority. */
  seq: number;
  status: TaskStatus;
  dependsOn: string[];
  onDependencyFailure: "skip" | "run";
  inputs?: Record<string, string>;
  requirements?: Requirements;
  target?: Target;
  timeoutMs?: number;
  retry: RetryPolicy;
  rateLimitKeys: string[];
  estimate?: Estimate;
  approval: "none" | "before_run" | "after_run";
  approvalDecision?: ApprovalDecision;
  idempotencyKey?: string;
  tenant?: string;
  /** The API key (its id) that submitted it, when the server knows it. */
  apiKey?: string;
  runAt?: number;
  metadata: Record<string, unknown>;
  /** Attempts started so far. */
  attempt: number;
  /** Earliest time the next attempt may start (retry backoff). */
  notBefore?: number;
  /**
   * Attempts cut off because the orchestrator itself stopped (a crash, a kill): they are
   * not the task's fault and do not count against `retry.maxAttempts`.
   */
  interruptions?: number;
  /**
   * Attempts that ended without failing (handed back by a remote holder, handed over with
   * its partition to another orchestrator, cut off by a draining stop): they do not count
   * against `retry.maxAttempts`. Stored with the task, so the count goes with it.
   */
  freeAttempts?: number;
  /**
   * The partition the task is scheduled in when several orchestrators share one store
   * (`partitions` option): set at submission, the same for every task of one batch, so a
   * DAG is scheduled by one orchestrator. Absent otherwise.
   */
  partition?: number;
  lease?: Lease;
  workerId?: string;
  result?: TaskResult;
  /** Last progress reported by the worker. */
  progress?: unknown;
  createdAt: number;
  updatedAt: number;
  /** Incremented on every saved change; stores use it for compare-and-set. */
  version: number;
}
