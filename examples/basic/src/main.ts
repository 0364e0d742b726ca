/**
 * The basic example: a small DAG of function-worker tasks with priorities, one failure
 * with its skipped dependents, a retry, a timeout and a cancellation. Prints what happened
 * and exits non-zero if the outcome is not the expected one.
 *
 * Run it with `npm start` in this folder (or `npm run examples` at the repository root).
 */
import {
  FunctionWorker,
  Orchestrator,
  type TaskResult,
  type TransitionEvent,
  UnrecoverableError,
} from "@flotilla/core";

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      reject(signal.reason);
    });
  });

async function main(): Promise<number> {
  const orchestrator = new Orchestrator({ concurrency: 4 });
  const started = Date.now();
  const log = (line: string) =>
    console.log(`${String(Date.now() - started).padStart(5)} ms  ${line}`);
  orchestrator.on("task:transition", (e: TransitionEvent) => {
    if (e.from === null) return;
    const extra = e.error
      ? ` (${e.error.code}: ${e.error.message})`
      : e.reason
        ? ` (${e.reason})`
        : "";
    log(`${e.taskId.padEnd(10)} ${e.from} → ${e.to}${extra}`);
  });

  let flakyCalls = 0;
  await orchestrator.register(
    new FunctionWorker({
      id: "text-worker",
      taskTypes: ["fetch", "summarize", "translate", "publish", "flaky", "slow"],
      maxConcurrency: 2,
      fn: async (payload: Record<string, unknown>, ctx, task) => {
        switch (task.type) {
          case "fetch":
            await sleep(20, ctx.signal);
            return { title: "Flotilla", body: "an orchestration library for AI-agent workloads" };
          case "summarize":
            ctx.progress("summarizing…");
            return `summary of "${payload.text}"`;
          case "translate":
            if (payload.lang === "xx") throw new UnrecoverableError("unknown language xx");
            return `[${payload.lang}] ${payload.text}`;
          case "publish":
            return `published: ${JSON.stringify(task.dependencies)}`;
          case "flaky":
            flakyCalls++;
            if (flakyCalls === 1) throw new Error("temporary glitch");
            return "worked on the second try";
          case "slow":
            await sleep(10_000, ctx.signal);
            return "never";
          default:
            throw new UnrecoverableError(`unknown type ${task.type}`);
        }
      },
    }),
  );
  await orchestrator.start();

  const handles = await orchestrator.submitBatch([
    { id: "fetch", type: "fetch", priority: "high" },
    {
      id: "summary",
      type: "summarize",
      dependsOn: ["fetch"],
      payload: { text: "{{fetch.body}}" },
    },
    {
      id: "fr",
      type: "translate",
      dependsOn: ["summary"],
      payload: { lang: "fr", text: "{{summary}}" },
    },
    {
      id: "xx",
      type: "translate",
      dependsOn: ["summary"],
      payload: { lang: "xx", text: "{{summary}}" },
      retry: { maxAttempts: 3 },
    },
    { id: "publish-xx", type: "publish", dependsOn: ["xx"] },
    { id: "announce", type: "publish", dependsOn: ["publish-xx"] },
    { id: "publish-fr", type: "publish", dependsOn: ["fr"], priority: "critical" },
    { id: "flaky", type: "flaky", priority: "low", retry: { maxAttempts: 3, initialDelayMs: 50 } },
    { id: "slow", type: "slow", priority: "background", timeoutMs: 200 },
    { id: "doomed", type: "slow", priority: "background" },
  ]);
  const byId = new Map(handles.map((h) => [h.id, h]));
  // Cancel one while it runs.
  setTimeout(() => void byId.get("doomed")?.cancel("no longer needed"), 100);

  const results = new Map<string, TaskResult>();
  for (const h of handles) results.set(h.id, await h.result());
  await orchestrator.stop();

  console.log("\nOutcome:");
  for (const [id, r] of results) {
    const what =
      r.status === "succeeded" ? JSON.stringify(r.output) : `${r.error?.code}: ${r.error?.message}`;
    console.log(`  ${id.padEnd(10)} ${r.status.padEnd(9)} attempts=${r.attempts}  ${what}`);
  }

  const expected: Record<string, string> = {
    fetch: "succeeded",
    summary: "succeeded",
    fr: "succeeded",
    xx: "failed",
    "publish-xx": "skipped",
    announce: "skipped",
    "publish-fr": "succeeded",
    flaky: "succeeded",
    slow: "timed_out",
    doomed: "cancelled",
  };
  const problems: string[] = [];
  for (const [id, status] of Object.entries(expected)) {
    if (results.get(id)?.status !== status)
      problems.push(`${id}: expected ${status}, got ${results.get(id)?.status}`);
  }
  if (results.get("flaky")?.attempts !== 2) problems.push("flaky: expected 2 attempts");
  if (results.get("xx")?.attempts !== 1)
    problems.push("xx: an UnrecoverableError must not be retried");
  if (
    results.get("fr")?.output !==
    '[fr] summary of "an orchestration library for AI-agent workloads"'
  ) {
    problems.push(`fr: unexpected output ${JSON.stringify(results.get("fr")?.output)}`);
  }
  if (problems.length > 0) {
    console.error(`\nUnexpected outcome:\n  ${problems.join("\n  ")}`);
    return 1;
  }
  console.log("\nEverything happened as expected.");
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
