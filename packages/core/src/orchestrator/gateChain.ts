import type { FlotillaError } from "../errors.js";
import type { WorkerEntry } from "../registry/types.js";
import type { DispatchGate, GateDecision, SettleOutcome } from "../resources/gate.js";
import type { TaskRecord } from "../task/types.js";
import type { EngineContext } from "./context.js";

/** What the gates say about one task and a set of candidate workers. */
export interface GateCheck {
  /** The candidates every gate lets through now. */
  passing: WorkerEntry[];
  /** A gate refuses the task for good: it fails with this error. */
  fail?: FlotillaError;
  /** When none passes: the earliest time a gate may let it through. */
  retryAt?: number;
  /**
   * When none passes and one key holds it for every candidate: that key (lanes held by one
   * key wait together, and are woken only when that key frees up or its time comes).
   */
  blockKey?: string;
  reason?: string;
  /** When none passes: the name of the gate that held it first. */
  gate?: string;
}

const NO_GATES: readonly DispatchGate[] = Object.freeze([]);

/** The waiting kind of each built-in gate, by gate name. @internal */
export const GATE_KINDS: Record<string, "rate_limit" | "budget" | "concurrency_cap" | "admission"> =
  {
    "rate-limit": "rate_limit",
    budget: "budget",
    concurrency: "concurrency_cap",
    admission: "admission",
  };

/** The most recent usage restored line by line; older usage comes rolled up when the store can. */
const RAW_USAGE_MS = 3_600_000;

/** How far back the usage ledger is replayed into the gates at start. */
export const USAGE_REPLAY_MS = 48 * 3_600_000;

/**
 * The `DispatchGate`s in their order (limits, budgets, fairness caps, admission), asked
 * before every dispatch and told of each attempt's dispatch, start and settle. A gate that
 * throws is isolated: the error is reported, the task is held for `recheckMs`, the engine
 * goes on. @internal
 */
export class GateChain {
  readonly #ctx: EngineContext;
  readonly #gates: readonly DispatchGate[];
  readonly #recheckMs: number;

  constructor(ctx: EngineContext, gates: readonly DispatchGate[], recheckMs: number) {
    this.#ctx = ctx;
    this.#gates = gates;
    this.#recheckMs = recheckMs;
  }

  /**
   * Which of `entries` (the free workers that could run `task`) every gate lets run it now.
   * A gate's refusal for good fails the task only when it holds for every worker that could
   * run it: when one of `others` (the eligible workers, looked up when not given) would not be refused, the task
   * waits for it instead — a worker over its own budget does not fail work another could do.
   */
  check(task: TaskRecord, entries: WorkerEntry[], others?: readonly WorkerEntry[]): GateCheck {
    if (this.#gates.length === 0) return { passing: entries };
    const now = this.#ctx.clock.now();
    const passing: WorkerEntry[] = [];
    let retryAt: number | undefined;
    let blockKey: string | undefined;
    let mixedKeys = false;
    let reason: string | undefined;
    let gate: string | undefined;
    let fail: FlotillaError | undefined;
    for (const entry of entries) {
      const d = this.#decide(task, entry, now);
      if (d.ok) {
        passing.push(entry);
        continue;
      }
      if (d.fail) {
        fail ??= d.fail;
        continue;
      }
      const at = d.retryAt;
      if (at !== undefined) retryAt = retryAt === undefined ? at : Math.min(retryAt, at);
      if (!mixedKeys) {
        if (d.blockKey === undefined || (blockKey !== undefined && blockKey !== d.blockKey)) {
          mixedKeys = true;
          blockKey = undefined;
        } else blockKey = d.blockKey;
      }
      reason ??= d.reason;
      gate ??= d.gate;
    }
    if (passing.length > 0) return { passing };
    if (fail !== undefined && retryAt === undefined && reason === undefined) {
      // Every worker that could run it (asked only here, on the rare refusal for good).
      const all = others ?? this.#ctx.registry.eligible(task);
      const spare = all.some((o) => {
        if (entries.includes(o)) return false;
        const d = this.#decide(task, o, now);
        return d.ok || d.fail === undefined;
      });
      if (!spare) return { passing: [], fail };
      return { passing: [], reason: fail.message, retryAt: now + this.#recheckMs };
    }
    const out: GateCheck = { passing };
    if (retryAt !== undefined) out.retryAt = retryAt;
    if (blockKey !== undefined) out.blockKey = blockKey;
    if (reason !== undefined) out.reason = reason;
    if (gate !== undefined) out.gate = gate;
    return out;
  }

  /** The first refusal of `entry` by a gate, in gate order (a throwing gate holds the task). */
  #decide(
    task: TaskRecord,
    entry: WorkerEntry,
    now: number,
  ):
    | { ok: true }
    | {
        ok: false;
        fail?: FlotillaError;
        retryAt?: number;
        blockKey?: string;
        reason?: string;
        gate?: string;
      } {
    for (const gate of this.#gates) {
      let d: GateDecision;
      try {
        d = gate.check(task, entry, now);
      } catch (err) {
        this.#ctx.internalError(err, `gate ${gate.name} threw in check`);
        d = { ok: false, reason: `gate ${gate.name} failed`, retryAt: now + this.#recheckMs };
      }
      if (d.ok) continue;
      if (d.fail) return { ok: false, fail: d.fail };
      // A gate that gives no retry time and cannot wake us is polled instead.
      const at = d.retryAt ?? (gate.subscribe ? undefined : now + this.#recheckMs);
      const out: { ok: false; retryAt?: number; blockKey?: string; reason?: string; gate: string } =
        { ok: false, gate: gate.name };
      if (at !== undefined) out.retryAt = at;
      if (d.blockKey !== undefined) out.blockKey = d.blockKey;
      if (d.reason !== undefined) out.reason = d.reason;
      return out;
    }
    return { ok: true };
  }

  /** An attempt was dispatched: every gate is told; returns the gates to tell of its end. */
  dispatched(task: TaskRecord, entry: WorkerEntry, now: number): readonly DispatchGate[] {
    if (this.#gates.length === 0) return NO_GATES;
    const told: DispatchGate[] = [];
    for (const gate of this.#gates) {
      told.push(gate);
      try {
        gate.onDispatch?.(task, entry, now);
      } catch (err) {
        this.#ctx.internalError(err, `gate ${gate.name} threw in onDispatch`);
      }
    }
    return told;
  }

  /** The attempt really starts now. */
  started(gates: readonly DispatchGate[], task: TaskRecord, entry: WorkerEntry, now: number): void {
    for (const gate of gates) {
      if (gate.onStart === undefined) continue;
      try {
        gate.onStart(task, entry, now);
      } catch (err) {
        this.#ctx.internalError(err, `gate ${gate.name} threw in onStart`);
      }
    }
  }

  /** The attempt ended. */
  settled(
    gates: readonly DispatchGate[],
    task: TaskRecord,
    entry: WorkerEntry,
    outcome: SettleOutcome,
    now: number,
  ): void {
    for (const gate of gates) {
      try {
        gate.onSettle?.(task, entry, outcome, now);
      } catch (err) {
        this.#ctx.internalError(err, `gate ${gate.name} threw in onSettle`);
      }
    }
  }

  /** Subscribes `wake` to every gate that can wake the scheduler; returns the unsubscribes. */
  subscribe(wake: (keys?: readonly string[]) => void): Array<() => void> {
    const out: Array<() => void> = [];
    for (const gate of this.#gates) {
      const unsubscribe = gate.subscribe?.(wake);
      if (unsubscribe) out.push(unsubscribe);
    }
    return out;
  }

  /**
   * Hands every gate that can take it the usage ledger of the last 48 hours, or longer when a
   * gate asks (`restoreSpanMs`, e.g. a monthly budget), at the first start,
   * so rate-limit windows and budgets continue where the previous process left them.
   */
  async restore(): Promise<void> {
    const gates = this.#gates.filter((g) => typeof g.restore === "function");
    if (gates.length === 0) return;
    const now = this.#ctx.clock.now();
    const span = Math.max(USAGE_REPLAY_MS, ...gates.map((g) => g.restoreSpanMs ?? 0));
    const store = this.#ctx.store;
    // The last hour line by line (short rate-limit windows need exact times); before that,
    // summed per 15 minutes at each group's latest time, which only ever counts use longer.
    const entries = store.listUsageRollup
      ? [
          ...(await store.listUsageRollup({ since: now - span, until: now - RAW_USAGE_MS })),
          ...(await store.listUsage({ since: now - RAW_USAGE_MS })),
        ]
      : await store.listUsage({ since: now - span });
    for (const gate of gates) {
      try {
        gate.restore!(entries, now);
      } catch (err) {
        this.#ctx.internalError(err, `gate ${gate.name} threw in restore`);
      }
    }
  }
}
