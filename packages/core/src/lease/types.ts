import { z } from "zod";
import type { Lease, TaskRecord } from "../task/types.js";
import type { WorkerTask } from "../worker/types.js";

/**
 * A free slot of a remote holder asking for work (a node's poll).
 *
 * @example
 * ```ts
 * ClaimSlotSchema.parse({ holderId: "node-7", taskTypes: ["remote_compute"], labels: { gpu: "a100" } });
 * ```
 */
export const ClaimSlotSchema = z.object({
  /** The node or worker id that will hold the lease. A registered worker with this id (kind `remote-node`) is matched by its own declaration. */
  holderId: z.string().min(1).max(256),
  /** Task types the slot runs; `"*"` for any. @default ["*"] */
  taskTypes: z.array(z.string().min(1)).min(1).optional(),
  capabilities: z.array(z.string().min(1)).optional(),
  labels: z.record(z.string(), z.string()).optional(),
  /** Name matched by `target.name` globs. @default holderId */
  name: z.string().min(1).max(256).optional(),
});
export type ClaimSlot = z.input<typeof ClaimSlotSchema>;

/**
 * Options of a claim.
 *
 * @example
 * ```ts
 * await orchestrator.claim(slot, { leaseMs: 120_000 });
 * ```
 */
export const ClaimOptionsSchema = z.object({
  /** How long the lease lasts unless renewed. @default the orchestrator's `leaseMs` (60 000) */
  leaseMs: z.number().int().positive().optional(),
});
export type ClaimOptions = z.input<typeof ClaimOptionsSchema>;

/**
 * What a successful claim returns: the task as a worker sees it, its lease, and its record.
 *
 * @example
 * ```ts
 * const claim: Claim | null = await orchestrator.claim({ holderId: "node-7" });
 * if (claim) await orchestrator.completeLease(claim.task.id, claim.lease.id, { output: 1 });
 * ```
 */
export interface Claim {
  lease: Lease;
  /** Payload with templates resolved, dependency outputs and inputs filled in. */
  task: WorkerTask;
  /** A copy of the task's record after the claim. */
  record: TaskRecord;
}
