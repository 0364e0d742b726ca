// Temporary stand-in for the core Orchestrator's lease API, used only while it is being built.
import { randomUUID } from "node:crypto";
import type { Clock, Store, TaskRecord, TaskSpec, Worker } from "@flotilla/core";
import { FlotillaError, PRIORITY_VALUES, TERMINAL_STATUSES } from "@flotilla/core";

export class StubOrchestrator {
  workers = new Map<string, Worker>();
  #seq = 0;
  constructor(
    readonly store: Store,
    readonly clock: Clock,
  ) {}

  async submit(spec: TaskSpec) {
    const now = this.clock.now();
    const rec: TaskRecord = {
      id: spec.id ?? randomUUID(),
      type: spec.type,
      payload: spec.payload,
      priority:
        typeof spec.priority === "number"
          ? spec.priority
          : PRIORITY_VALUES[spec.priority ?? "normal"],
      seq: ++this.#seq,
      status: "queued",
      dependsOn: [],
      onDependencyFailure: "skip",
      target: spec.target,
      timeoutMs: spec.timeoutMs,
      retry: {
        maxAttempts: spec.retry?.maxAttempts ?? 1,
        initialDelayMs: 0,
        maxDelayMs: 0,
        factor: 2,
        jitter: 0,
      },
      rateLimitKeys: [],
      approval: "none",
      runAt: spec.runAt,
      metadata: spec.metadata ?? {},
      attempt: 0,
      createdAt: now,
      updatedAt: now,
      version: 1,
    };
    await this.store.insertTasks([rec]);
    return { id: rec.id };
  }
  async get(id: string) {
    const t = await this.store.getTask(id);
    if (t?.lease && t.lease.expiresAt <= this.clock.now() && !TERMINAL_STATUSES.has(t.status)) {
      t.lease = undefined;
      t.status = t.attempt >= t.retry.maxAttempts ? "failed" : "queued";
      await this.#save(t);
    }
    return t;
  }
  async list() {
    return this.store.listTasks({});
  }
  async cancel(id: string) {
    const t = await this.get(id);
    if (!t) throw new FlotillaError("NOT_FOUND", "no task");
    t.status = "cancelled";
    t.lease = undefined;
    await this.#save(t);
  }
  async claim(
    slot: {
      holderId: string;
      taskTypes: readonly string[];
      labels: Record<string, string>;
      name: string;
    },
    o: { leaseMs: number },
  ) {
    const all = await this.store.listTasks({
      status: ["queued", "leased", "running"],
      newestFirst: false,
    });
    for (const id of all.map((t) => t.id)) await this.get(id);
    const ready = (await this.store.listTasks({ status: "queued", newestFirst: false }))
      .filter((t) => slot.taskTypes.includes(t.type) || slot.taskTypes.includes("*"))
      .filter((t) => (t.runAt ?? 0) <= this.clock.now())
      .filter((t) => !t.target?.workerId || t.target.workerId === slot.holderId)
      .filter(
        (t) =>
          !t.target?.name || new RegExp(`^${t.target.name.replace(/\*/g, ".*")}$`).test(slot.name),
      )
      .filter((t) => Object.entries(t.target?.tags ?? {}).every(([k, v]) => slot.labels[k] === v))
      .sort((a, b) => b.priority - a.priority || a.seq - b.seq);
    const t = ready[0];
    if (!t) return null;
    const now = this.clock.now();
    t.status = "leased";
    t.attempt += 1;
    t.workerId = slot.holderId;
    t.lease = {
      id: randomUUID(),
      holder: slot.holderId,
      acquiredAt: now,
      expiresAt: now + o.leaseMs,
    };
    await this.#save(t);
    return { lease: t.lease, task: { id: t.id }, record: t };
  }
  async #held(taskId: string, leaseId: string) {
    const t = await this.get(taskId);
    if (!t?.lease || t.lease.id !== leaseId) throw new FlotillaError("INVALID_STATE", "lease lost");
    return t;
  }
  async renewLease(taskId: string, leaseId: string, ms: number) {
    const t = await this.#held(taskId, leaseId);
    t.status = "running";
    t.lease!.expiresAt = this.clock.now() + ms;
    await this.#save(t);
  }
  async completeLease(taskId: string, leaseId: string, r: { output: unknown }) {
    const t = await this.#held(taskId, leaseId);
    t.status = "succeeded";
    t.result = {
      taskId,
      status: "succeeded",
      output: r.output,
      attempts: t.attempt,
      workerId: t.lease!.holder,
      timings: { createdAt: t.createdAt, finishedAt: this.clock.now() },
    };
    t.lease = undefined;
    await this.#save(t);
  }
  async failLease(taskId: string, leaseId: string, e: FlotillaError) {
    const t = await this.#held(taskId, leaseId);
    t.status = e.code === "TIMEOUT" ? "timed_out" : "failed";
    t.result = {
      taskId,
      status: t.status,
      error: e.toJSON(),
      attempts: t.attempt,
      workerId: t.lease!.holder,
      timings: { createdAt: t.createdAt },
    };
    t.lease = undefined;
    await this.#save(t);
  }
  async releaseLease(taskId: string, leaseId: string) {
    const t = await this.#held(taskId, leaseId);
    t.status = "queued";
    t.lease = undefined;
    await this.#save(t);
  }
  register(w: Worker) {
    this.workers.set(w.id, w);
  }
  unregister(id: string) {
    this.workers.delete(id);
  }
  async #save(t: TaskRecord) {
    t.updatedAt = this.clock.now();
    t.version += 1;
    await this.store.saveTask(t);
  }
}
