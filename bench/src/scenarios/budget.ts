/**
 * Scenario 4: token and request budgets with reconciliation and an injected 429. One key
 * carries a request limit and a token limit per window; tasks carry token estimates and
 * the worker reports actual usage that differs from them (some above, some below); one call
 * answers "429, Retry-After". Measured: the actual tokens started in any sliding window
 * against the limit, the time from the end of the Retry-After pause to the next start, and
 * the achieved throughput. The windows are scaled down (60 s → 5 s, 1 s in smoke runs) so a
 * run takes seconds; call durations are scaled with them.
 */
import {
  type DispatchGate,
  FunctionWorker,
  Orchestrator,
  ResourceManager,
  RetryAfterError,
} from "@flotilla/core";
import Bottleneck from "bottleneck";
import { type BenchContext, check, type Scenario } from "../report.js";
import { maxInSlidingWindow, nowMs } from "../stats.js";

const NAME = "4. Token and request budgets";
const KEY = "provider";

interface Plan {
  windowMs: number;
  requestLimit: number;
  tokenLimit: number;
  concurrency: number;
  /** Estimated and actual tokens and simulated call duration of each task. */
  tasks: Array<{ estimate: number; actual: number; durationMs: number }>;
  /** The task whose first attempt answers 429. */
  retryAfterTask: number;
  retryAfterMs: number;
}

/** Deterministic pseudo-random numbers (mulberry32). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function plan(smoke: boolean): Plan {
  const windowMs = smoke ? 1000 : 5000;
  const n = smoke ? 30 : 60;
  const rand = rng(42);
  // Actual usage relative to the estimate: under- and over-estimates alike.
  const factors = [0.6, 1.3, 0.8, 1.5, 1.0, 0.7, 1.2, 0.9, 1.4, 0.5];
  const tasks = Array.from({ length: n }, (_, i) => {
    // Mostly short prompts with some long ones, so either limit can be the one that binds.
    const estimate = Math.round(rand() < 0.6 ? 150 + rand() * 250 : 1500 + rand() * 2500);
    const actual = Math.round(estimate * factors[i % factors.length]!);
    const durationMs = Math.round(smoke ? 30 + rand() * 50 : 150 + rand() * 250);
    return { estimate, actual, durationMs };
  });
  return {
    windowMs,
    requestLimit: 20,
    tokenLimit: smoke ? 8000 : 20_000,
    concurrency: 8,
    tasks,
    retryAfterTask: Math.floor(n / 4),
    // As long as the window: when it ends, nothing but the pause held the key.
    retryAfterMs: windowMs,
  };
}

interface Attempt {
  task: number;
  /** Admission time on the limiter's clock (ms). */
  t: number;
  estimate: number;
  /** Tokens the provider really processed (0 for the 429). */
  actual: number;
  /** Index of the gate event that admitted it. */
  event: number;
  /** Index of the gate event after which the limiter knew the actual usage (undefined: never, it stays at the estimate). */
  settledAt?: number;
}

interface BudgetRun {
  attempts: Attempt[];
  /** Times (ms, real clock) of the call starts and ends. */
  firstStart: number;
  lastEnd: number;
  /** Successful completions per task. */
  completions: number[];
  allSucceeded: boolean;
  /** End of the Retry-After pause, on the limiter's clock and on the real clock. */
  pauseEnd: number;
  pauseEndReal: number;
  /** Starts (limiter clock) after the 429 answered. */
  startsAfter429: Array<{ t: number; real: number; task: number }>;
  /** When the 429'd call was tried again (real clock). */
  retriedAtReal: number;
}

async function flotillaBudget(p: Plan): Promise<BudgetRun> {
  const unit = `${p.windowMs / 1000}s`;
  const resources = new ResourceManager({
    limits: { [KEY]: [`${p.requestLimit} requests/${unit}`, `${p.tokenLimit} tokens/${unit}`] },
  });
  const attempts: Attempt[] = [];
  const open = new Map<string, Attempt>();
  let events = 0;
  let pauseEnd = Number.NaN;
  let pauseEndReal = Number.NaN;
  let thrownAtReal = Number.NaN;
  let answered429 = false;
  const startsAfter429: BudgetRun["startsAfter429"] = [];
  // Observes what the limiter decided, with the limiter's own timestamps and order of events.
  const probe: DispatchGate = {
    name: "bench-probe",
    check: () => ({ ok: true }),
    onDispatch(task, _worker, now) {
      events++;
      const index = (task.payload as { index: number }).index;
      const a: Attempt = {
        task: index,
        t: now,
        event: events,
        estimate: p.tasks[index]!.estimate,
        actual: 0,
      };
      attempts.push(a);
      open.set(task.id, a);
      if (answered429) startsAfter429.push({ t: now, real: nowMs(), task: index });
    },
    onSettle(task, _worker, outcome, now) {
      events++;
      const a = open.get(task.id);
      open.delete(task.id);
      if (!a) return;
      const total = outcome.usage?.totalTokens;
      if (total !== undefined) {
        a.actual = total;
        a.settledAt = events;
      }
      if (outcome.retryAfterMs !== undefined) {
        answered429 = true;
        pauseEnd = now + outcome.retryAfterMs;
        // The provider's pause runs from its answer (the throw), not from this later settle.
        pauseEndReal = thrownAtReal + outcome.retryAfterMs;
      }
    },
  };
  const orchestrator = new Orchestrator({
    concurrency: p.concurrency,
    gates: [...resources.gates, probe],
  });
  const completions = p.tasks.map(() => 0);
  let firstStart = Number.POSITIVE_INFINITY;
  let lastEnd = 0;
  let retriedAtReal = Number.NaN;
  const tried = new Set<number>();
  await orchestrator.register(
    new FunctionWorker({
      id: "llm",
      taskTypes: ["llm_call"],
      maxConcurrency: p.concurrency,
      fn: async (payload, ctx) => {
        const { index } = payload as { index: number };
        const spec = p.tasks[index]!;
        const start = nowMs();
        firstStart = Math.min(firstStart, start);
        if (index === p.retryAfterTask) {
          if (!tried.has(index)) {
            tried.add(index);
            await sleep(10);
            thrownAtReal = nowMs();
            throw new RetryAfterError(p.retryAfterMs, "429 Too Many Requests");
          }
          retriedAtReal = start;
        }
        await sleep(spec.durationMs);
        ctx.reportUsage({ totalTokens: spec.actual });
        completions[index]!++;
        lastEnd = Math.max(lastEnd, nowMs());
        return null;
      },
    }),
  );
  await orchestrator.start();
  const handles = await orchestrator.submitBatch(
    p.tasks.map((t, index) => ({
      type: "llm_call",
      rateLimitKey: KEY,
      estimate: { tokens: t.estimate },
      payload: { index },
      retry: { maxAttempts: 2, initialDelayMs: 0, jitter: 0 },
    })),
  );
  const results = await Promise.all(handles.map((h) => h.result()));
  await orchestrator.stop();
  resources.stop();
  return {
    attempts,
    firstStart,
    lastEnd,
    completions,
    allSucceeded: results.every((r) => r.status === "succeeded"),
    pauseEnd,
    pauseEndReal,
    startsAfter429,
    retriedAtReal,
  };
}

class RetryAfter extends Error {
  constructor(readonly ms: number) {
    super("429 Too Many Requests");
  }
}

/**
 * bottleneck: a token reservoir refilled every window (job weight = the estimate), a request
 * reservoir behind it, and the 429'd call retried through the `failed` event after the
 * Retry-After delay. It has no way to correct a reservoir with the actual usage, nor to hold
 * the other jobs during a Retry-After.
 */
async function bottleneckBudget(p: Plan): Promise<BudgetRun> {
  // A job's weight also counts against maxConcurrent, so the slots live on the request limiter.
  const tokens = new Bottleneck({
    reservoir: p.tokenLimit,
    reservoirRefreshAmount: p.tokenLimit,
    reservoirRefreshInterval: p.windowMs,
  });
  const requests = new Bottleneck({
    maxConcurrent: p.concurrency,
    reservoir: p.requestLimit,
    reservoirRefreshAmount: p.requestLimit,
    reservoirRefreshInterval: p.windowMs,
  });
  let pauseEnd = Number.NaN;
  let pauseEndReal = Number.NaN;
  let answered429 = false;
  requests.on("failed", (err, info) => {
    if (err instanceof RetryAfter && info.retryCount === 0) {
      answered429 = true;
      pauseEnd = Date.now() + err.ms;
      pauseEndReal = nowMs() + err.ms;
      return err.ms;
    }
    return undefined;
  });
  const attempts: Attempt[] = [];
  const completions = p.tasks.map(() => 0);
  const startsAfter429: BudgetRun["startsAfter429"] = [];
  let firstStart = Number.POSITIVE_INFINITY;
  let lastEnd = 0;
  let retriedAtReal = Number.NaN;
  const tried = new Set<number>();
  const results = await Promise.allSettled(
    p.tasks.map((spec, index) =>
      tokens.schedule({ weight: spec.estimate }, () =>
        requests.schedule(async () => {
          const start = nowMs();
          const t = Date.now();
          firstStart = Math.min(firstStart, start);
          if (answered429) startsAfter429.push({ t, real: start, task: index });
          const a: Attempt = { task: index, t, event: 0, estimate: spec.estimate, actual: 0 };
          attempts.push(a);
          if (index === p.retryAfterTask) {
            if (!tried.has(index)) {
              tried.add(index);
              await sleep(10);
              throw new RetryAfter(p.retryAfterMs);
            }
            retriedAtReal = start;
          }
          await sleep(spec.durationMs);
          a.actual = spec.actual;
          completions[index]!++;
          lastEnd = Math.max(lastEnd, nowMs());
        }),
      ),
    ),
  );
  await tokens.stop({ dropWaitingJobs: false });
  await requests.stop({ dropWaitingJobs: false });
  return {
    attempts,
    firstStart,
    lastEnd,
    completions,
    allSucceeded: results.every((r) => r.status === "fulfilled"),
    pauseEnd,
    pauseEndReal,
    startsAfter429,
    retriedAtReal,
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** The most tokens (by `weight`) started in any sliding window of `windowMs`. */
function maxWeightInWindow(
  items: ReadonlyArray<{ t: number; w: number }>,
  windowMs: number,
): number {
  const s = [...items].sort((a, b) => a.t - b.t);
  let best = 0;
  let sum = 0;
  let lo = 0;
  for (let hi = 0; hi < s.length; hi++) {
    sum += s[hi]!.w;
    while (s[hi]!.t - s[lo]!.t >= windowMs) sum -= s[lo++]!.w;
    best = Math.max(best, sum);
  }
  return best;
}

/**
 * Replays the limiter's view: at each admission, the tokens charged in the window ending
 * there (estimates of calls not yet settled, actual usage of settled ones) must fit the limit;
 * and the actual tokens of every window may exceed the limit only by the under-estimates of
 * calls still in flight at the window's last admission.
 */
function replay(p: Plan, attempts: readonly Attempt[]) {
  let worstCharged = 0;
  let chargedOk = true;
  let boundOk = true;
  let worstActual = 0;
  let worstBound = 0;
  // Attempts are in admission order.
  for (let k = 0; k < attempts.length; k++) {
    const tk = attempts[k]!.t;
    let charged = 0;
    let actual = 0;
    let inFlightUnder = 0;
    for (let j = 0; j <= k; j++) {
      const a = attempts[j]!;
      if (a.t <= tk - p.windowMs) continue;
      const settled = a.settledAt !== undefined && a.settledAt < attempts[k]!.event;
      charged += settled ? a.actual : a.estimate;
      actual += a.actual;
      if (!settled) inFlightUnder += Math.max(0, a.actual - a.estimate);
    }
    if (charged > p.tokenLimit + 1e-6) chargedOk = false;
    if (actual > p.tokenLimit + inFlightUnder + 1e-6) boundOk = false;
    worstCharged = Math.max(worstCharged, charged);
    if (actual > worstActual) {
      worstActual = actual;
      worstBound = p.tokenLimit + inFlightUnder;
    }
  }
  return { chargedOk, boundOk, worstCharged, worstActual, worstBound };
}

function record(ctx: BenchContext, caseName: string, subject: string, p: Plan, run: BudgetRun) {
  const tokenItems = run.attempts.map((a) => ({ t: a.t, w: a.actual }));
  const peak = maxWeightInWindow(tokenItems, p.windowMs);
  const peakRequests = maxInSlidingWindow(
    run.attempts.map((a) => a.t),
    p.windowMs,
  );
  const seconds = (run.lastEnd - run.firstStart) / 1000;
  const actualTotal = run.attempts.reduce((s, a) => s + a.actual, 0);
  const during = run.startsAfter429.filter((s) => s.t < run.pauseEnd);
  const after = run.startsAfter429.filter((s) => s.t >= run.pauseEnd);
  const resume =
    subject === "Flotilla"
      ? (after[0]?.real ?? Number.NaN) - run.pauseEndReal
      : run.retriedAtReal - run.pauseEndReal;
  const base = { scenario: NAME, case: caseName, subject };
  ctx.rows.push(
    {
      ...base,
      metric: "peak actual tokens in any window",
      value: (peak / p.tokenLimit) * 100,
      unit: "% of limit",
      better: "lower",
    },
    {
      ...base,
      metric: "peak requests in any window",
      value: peakRequests,
      unit: `(limit ${p.requestLimit})`,
      better: "lower",
    },
    {
      ...base,
      metric: "starts during the Retry-After pause",
      value: during.length,
      unit: "",
      better: "lower",
      ...(subject === "Flotilla" ? {} : { note: "no key-wide pause" }),
    },
    {
      ...base,
      metric: "resume after the pause",
      // The limiter's clock counts whole milliseconds, so a start may read a fraction early.
      value: Math.max(0, resume),
      unit: "ms",
      better: "lower",
      ...(subject === "Flotilla" ? {} : { note: "the retried job" }),
    },
    {
      ...base,
      metric: "achieved throughput",
      value: actualTotal / seconds,
      unit: "tokens/s",
      better: "higher",
      note: `${(p.tasks.length / seconds).toFixed(2)} tasks/s${subject === "Flotilla" ? ", pause included" : ""}`,
    },
  );
  return { peak, peakRequests, during, after, resume };
}

export const budgetScenario: Scenario = {
  name: "budget",
  title: NAME,
  async run(ctx: BenchContext) {
    const p = plan(ctx.smoke);
    const w = p.windowMs / 1000;
    const caseName = `${p.requestLimit} requests and ${p.tokenLimit / 1000}k tokens per ${w} s (a 60 s window scaled ${60 / w}×), ${p.tasks.length} tasks, one 429 with Retry-After ${w} s`;
    ctx.log(`${NAME}: ${caseName}`);

    const run = await flotillaBudget(p);
    const m = record(ctx, caseName, "Flotilla", p, run);
    const r = replay(p, run.attempts);
    check(
      ctx,
      NAME,
      "charged tokens never exceed the limit in any window",
      r.chargedOk,
      `at every admission the window held at most ${r.worstCharged} of ${p.tokenLimit} tokens (estimates of calls in flight, actual usage of settled ones, refunds included)`,
    );
    const under = p.tasks.reduce((s, t) => s + Math.max(0, t.actual - t.estimate), 0);
    check(
      ctx,
      NAME,
      "actual overshoot only from under-estimates of calls in flight",
      r.boundOk,
      `peak actual ${r.worstActual} tokens in a window vs limit ${p.tokenLimit} + in-flight under-estimates = ${r.worstBound}; reconciliation charges each under-estimate as debt when its call settles, so later calls wait for it (total under-estimated: ${under} tokens)`,
    );
    check(
      ctx,
      NAME,
      "requests never exceed the limit in any window",
      m.peakRequests <= p.requestLimit,
      `max ${m.peakRequests} attempts (the 429 included) in any ${w} s window, limit ${p.requestLimit}`,
    );
    check(
      ctx,
      NAME,
      "nothing starts during the Retry-After pause",
      m.during.length === 0 && m.after.length > 0,
      `${m.during.length} starts before the pause ended, ${m.after.length} after`,
    );
    // A timer on a shared machine fires a little late; smoke runs share the CPU with other
    // tests (CI runs them with both cores busy: 61 ms seen). A missed wake-up would show as
    // the next recheck, 1000 ms.
    const tick = ctx.smoke ? 250 : 20;
    check(
      ctx,
      NAME,
      "resumed within one tick after the Retry-After pause",
      m.resume >= 0 && m.resume <= tick,
      `first start ${m.resume.toFixed(1)} ms after the pause ended, measured from the 429 (allowed ≤ ${tick} ms)`,
    );
    const once = run.completions.every((c) => c === 1);
    check(
      ctx,
      NAME,
      "every task completed exactly once",
      once && run.allSucceeded && !Number.isNaN(run.retriedAtReal),
      `${run.completions.filter((c) => c === 1).length}/${p.tasks.length} completed once; the 429'd task was retried and succeeded`,
    );

    if (!ctx.smoke) {
      const b = await bottleneckBudget(p);
      record(ctx, caseName, "bottleneck (weight = estimate, reservoirs)", p, b);
      ctx.log(
        "  bottleneck cannot reconcile a weight with the actual usage and has no key-wide pause",
      );
    }
  },
};
