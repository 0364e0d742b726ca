import type { RoutingStrategy } from "../router/types.js";
import type { TaskDefaults } from "../task/normalize.js";
import { Attempts } from "./attempts.js";
import type { EngineContext } from "./context.js";
import { Control } from "./control.js";
import { Dependencies } from "./dependencies.js";
import { Dispatcher, type DispatcherOptions } from "./dispatcher.js";
import { GateChain } from "./gateChain.js";
import { Handles } from "./handles.js";
import { LeaseDesk } from "./leaseDesk.js";
import { Lifecycle } from "./lifecycle.js";
import type { OrchestratorOptions } from "./options.js";
import { Ownership } from "./ownership.js";
import { leaveForeign, letGo } from "./partitioning.js";
import { Persistence } from "./persistence.js";
import { Submission } from "./submission.js";
import { TaskTable } from "./taskTable.js";
import { TaskTelemetryLog } from "./telemetry.js";
import { Transitions } from "./transitions.js";

/** Default largest payload of a task: 8 MiB of JSON. */
const DEFAULT_MAX_PAYLOAD_BYTES = 8 * 1024 * 1024;

/** The engine's parts, each with one job (see docs/architecture.md). @internal */
export interface EngineParts {
  table: TaskTable;
  persistence: Persistence;
  transitions: Transitions;
  gates: GateChain;
  dispatcher: Dispatcher;
  dependencies: Dependencies;
  attempts: Attempts;
  handles: Handles;
  submission: Submission;
  control: Control;
  leases: LeaseDesk;
  lifecycle: Lifecycle;
  telemetry: TaskTelemetryLog;
  ownership: Ownership;
  /** How many orchestrator stops a task may be cut off by (see `maxInterruptions`). */
  maxInterruptions: number;
}

/** The options `assemble` reads, with the router and random source resolved. */
export type AssembleOptions = Omit<OrchestratorOptions, "routing" | "random"> & {
  routing: RoutingStrategy;
  random: () => number;
};

/**
 * Builds the engine's parts around one context and wires them: each part gets the narrow
 * set of parts it calls (the dispatcher reaches the attempts and dependencies, built after
 * it, through late-bound targets). `cancel` is what task handles call. @internal
 */
export function assemble(
  ctx: EngineContext,
  options: AssembleOptions,
  cancel: (id: string, reason?: string) => Promise<boolean>,
): EngineParts {
  const recheckMs = options.recheckIntervalMs ?? 1_000;
  const leaseMs = options.leaseMs ?? 60_000;
  const table = new TaskTable(options.finishedCacheSize ?? 10_000);
  const ownership = new Ownership(options.partitions?.count);
  const persistence = new Persistence(ctx, { versioned: options.partitions !== undefined });
  const transitions = new Transitions(ctx, table, persistence);
  const gates = new GateChain(ctx, [...(options.gates ?? [])], recheckMs);
  const queue: DispatcherOptions["queue"] = { epoch: ctx.clock.now() };
  if (options.aging) queue.agingIntervalMs = options.aging.intervalMs;
  if (options.fairness?.weights) queue.tenantWeights = options.fairness.weights;
  let attempts: Attempts | undefined;
  let dependencies: Dependencies | undefined;
  const dispatcher = new Dispatcher(
    ctx,
    table,
    gates,
    transitions,
    {
      inFlight: () => attempts!.inFlight,
      launch: (live, entry) => attempts!.launch(live, entry),
      finished: (live) => dependencies!.onTerminal(live),
      track: (p) => void persistence.track(p),
    },
    {
      concurrency: options.concurrency ?? Number.POSITIVE_INFINITY,
      unroutableTimeoutMs: options.unroutableTimeoutMs,
      routing: options.routing,
      queue,
      ownership,
    },
  );
  dependencies = new Dependencies(ctx, table, transitions, dispatcher);
  const telemetry = new TaskTelemetryLog(options.telemetry);
  attempts = new Attempts(
    ctx,
    {
      transitions,
      gates,
      dispatcher,
      dependencies,
      persistence,
      telemetry,
      leave: (live) => leaveForeign(ctx, parts, live),
    },
    { random: options.random, leaseMs },
  );
  const handles = new Handles(ctx, table, cancel, recheckMs);
  // A copy: defaults are read once (a task's default retry policy is parsed once).
  const d = options.defaults;
  const defaults: TaskDefaults = d ? { ...d, ...(d.retry ? { retry: { ...d.retry } } : {}) } : {};
  const submission = new Submission(
    ctx,
    { table, transitions, dependencies, dispatcher, persistence, handles, ownership },
    { defaults, maxPayloadBytes: options.maxPayloadBytes ?? DEFAULT_MAX_PAYLOAD_BYTES },
  );
  const core = { table, transitions, dependencies, dispatcher, attempts };
  const maxInterruptions = options.maxInterruptions ?? 3;
  const parts: EngineParts = {
    ...core,
    ownership,
    maxInterruptions,
    telemetry,
    persistence,
    gates,
    handles,
    submission,
    control: new Control(ctx, { ...core, ownership }),
    leases: new LeaseDesk(ctx, { ...core, gates, persistence, ownership }, leaseMs),
    lifecycle: new Lifecycle(ctx, {
      ...core,
      gates,
      persistence,
      handles,
      submission,
      ownership,
      maxInterruptions,
    }),
  };
  // Only the record whose write was refused: another one of the same id may be live now.
  persistence.onConflict = (rec) => {
    if (parts.table.live(rec.id)?.rec === rec) letGo(ctx, parts, rec.id);
    else persistence.forget(rec);
  };
  return parts;
}
