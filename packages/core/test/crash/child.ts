// One life of the crash-test process: opens the orchestrator on a SqliteStore, submits what
// is not yet acknowledged, runs tasks, and is SIGKILLed by the parent at a random moment.
// Usage: node --import tsx child.ts <db> <exec-log> <ack-log> <total>
import { appendFileSync, existsSync, readFileSync } from "node:fs";
import { Orchestrator } from "../../src/orchestrator/index.js";
import { SqliteStore } from "../../src/sqlite/index.js";
import type { TaskSpec } from "../../src/task/schema.js";
import { FunctionWorker } from "../../src/worker/base.js";

const [dbPath, execLog, ackLog, totalArg] = process.argv.slice(2);
if (!dbPath || !execLog || !ackLog || !totalArg) {
  process.stderr.write("usage: child.ts <db> <exec-log> <ack-log> <total>\n");
  process.exit(2);
}
const total = Number(totalArg);
const pid = process.pid;
// appendFileSync is a write(2): it survives SIGKILL (the kernel has it), no fsync needed.
const log = (text: string) => appendFileSync(execLog, `${text} ${pid} ${Date.now()}\n`);

const UNFINISHED = ["pending", "awaiting_approval", "queued", "leased", "running"] as const;
const BATCH = 10;

const store = new SqliteStore({ path: dbPath, busyTimeoutMs: 2_000 });
// Twenty kills may all cut the same task off (a slow, loaded life starts the recovered
// tasks first); this test asks that every task succeeds, so cut-offs never end one here
// (ending a task after `maxInterruptions` cut-offs is tested on its own).
const orchestrator = new Orchestrator({ store, maxInterruptions: 1_000 });
orchestrator.on("error", (err: Error) =>
  process.stderr.write(`orchestrator error: ${err.message}\n`),
);
orchestrator.on("task:succeeded", (ev: { taskId: string; attempt: number }) =>
  log(`completed ${ev.taskId} ${ev.attempt}`),
);

await orchestrator.register(
  new FunctionWorker<{ n: number }>({
    id: "crash-worker",
    taskTypes: ["crash"],
    maxConcurrency: 4,
    fn: async (payload, ctx, task) => {
      log(`start ${task.id} ${task.attempt}`);
      await new Promise<void>((resolve, reject) => {
        const t = setTimeout(resolve, 5 + Math.floor(Math.random() * 25));
        ctx.signal.addEventListener("abort", () => {
          clearTimeout(t);
          reject(ctx.signal.reason);
        });
      });
      log(`end ${task.id} ${task.attempt}`);
      return { n: payload.n, deps: Object.keys(task.dependencies) };
    },
  }),
);
await orchestrator.start();

// The parent plays a remote node over IPC: it claims `remote` tasks, runs them in its own
// process (which survives this one being killed) and completes them, possibly through the
// next life of this process.
type Request =
  | { op: "claim"; reqId: number; holderId: string; leaseMs: number }
  | { op: "complete"; reqId: number; taskId: string; leaseId: string; output: unknown };
process.on("message", (msg: Request) => {
  const reply = (body: Record<string, unknown>) => process.send?.({ reqId: msg.reqId, ...body });
  const work =
    msg.op === "claim"
      ? orchestrator
          .claim({ holderId: msg.holderId, taskTypes: ["remote"] }, { leaseMs: msg.leaseMs })
          .then((c) =>
            reply({
              ok: true,
              claim: c && {
                taskId: c.task.id,
                attempt: c.task.attempt,
                leaseId: c.lease.id,
                expiresAt: c.lease.expiresAt,
                payload: c.task.payload,
              },
            }),
          )
      : orchestrator
          .completeLease(msg.taskId, msg.leaseId, { output: msg.output })
          .then((rec) => reply({ ok: true, status: rec.status }));
  work.catch((err: { code?: string; message?: string }) =>
    reply({ ok: false, code: err.code, message: err.message }),
  );
});
process.stdout.write("ready\n");

const acked = new Set(
  existsSync(ackLog) ? readFileSync(ackLog, "utf8").split("\n").filter(Boolean) : [],
);
for (let start = 0; start < total; start += BATCH) {
  const specs: TaskSpec[] = [];
  for (let i = start; i < Math.min(total, start + BATCH); i++) {
    const id = `t${i}`;
    if (acked.has(id)) continue;
    specs.push({
      id,
      // every fourth task runs on the parent's remote node
      type: i % 4 === 3 ? "remote" : "crash",
      payload: { n: i },
      // chains of five: t0 <- t1 <- t2 <- t3 <- t4, t5 <- t6 …
      dependsOn: i % 5 === 0 ? [] : [`t${i - 1}`],
      idempotencyKey: id,
      retry: { maxAttempts: 100, initialDelayMs: 0, maxDelayMs: 0 },
    });
  }
  if (specs.length === 0) continue;
  await orchestrator.submitBatch(specs);
  appendFileSync(ackLog, `${specs.map((s) => s.id).join("\n")}\n`);
}
process.stdout.write("submitted\n");

for (;;) {
  const left = await store.countTasks({ status: [...UNFINISHED] });
  if (left === 0) break;
  await new Promise((r) => setTimeout(r, 20));
}
await orchestrator.stop();
await store.close();
process.stdout.write("done\n");
process.disconnect?.();
