import { EventEmitter } from "eventemitter3";
import { silentLogger } from "../logger.js";
import { WorkerRegistry } from "../registry/registry.js";
import { MemoryStore } from "../store/memory.js";
import type { Store } from "../store/types.js";
import type { OrchestratorEvents } from "../task/events.js";
import { normalizeTaskSpec } from "../task/normalize.js";
import type { TaskSpec } from "../task/schema.js";
import type { TaskRecord } from "../task/types.js";
import { FakeClock } from "../testing/index.js";
import { EngineContext } from "./context.js";
import { OrchestratorTimers } from "./timers.js";

/** An engine context on a fake clock, for testing one part alone (running unless told). */
export function testContext(o: { store?: Store; state?: EngineContext["state"] } = {}) {
  const clock = new FakeClock();
  const store = o.store ?? new MemoryStore({ clock });
  const events = new EventEmitter<OrchestratorEvents>();
  const errors: Error[] = [];
  events.on("error", (e) => errors.push(e));
  const ctx = new EngineContext(
    clock,
    silentLogger,
    store,
    undefined,
    new WorkerRegistry({ clock }),
    new OrchestratorTimers(clock, false),
    events,
  );
  ctx.state = o.state ?? "running";
  return { clock, store, events, errors, ctx };
}

/** A normalized record with the given status, as submission would build it. */
export function record(
  spec: Partial<TaskSpec> & { id: string },
  status: TaskRecord["status"] = "queued",
): TaskRecord {
  const rec = normalizeTaskSpec(
    { type: "t", ...spec },
    { now: 0, seq: 0, defaults: {}, where: "task" },
  );
  rec.status = status;
  return rec;
}
