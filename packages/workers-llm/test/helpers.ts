import { type ExecutionContext, systemClock, type Usage, type WorkerTask } from "@flotilla/core";

export interface TestCtx extends ExecutionContext {
  events: unknown[];
  logs: unknown[];
  reported: Usage[];
  controller: AbortController;
}

/** An execution context that records progress, logs and reported usage. */
export function makeCtx(): TestCtx {
  const controller = new AbortController();
  const events: unknown[] = [];
  const logs: unknown[] = [];
  const reported: Usage[] = [];
  const log = (...args: unknown[]) => {
    logs.push(args);
  };
  const logger = { trace: log, debug: log, info: log, warn: log, error: log, child: () => logger };
  return {
    signal: controller.signal,
    progress: (d) => events.push(d),
    reportUsage: (u) => reported.push(u),
    logger,
    clock: systemClock,
    events,
    logs,
    reported,
    controller,
  };
}

let n = 0;
export function task(payload: unknown, extra: Partial<WorkerTask> = {}): WorkerTask {
  return {
    id: `t${++n}`,
    type: "llm_request",
    payload,
    priority: 20,
    attempt: 1,
    metadata: {},
    dependencies: {},
    inputs: {},
    ...extra,
  };
}

export async function rejection(p: Promise<unknown>): Promise<any> {
  try {
    await p;
  } catch (err) {
    return err;
  }
  throw new Error("expected a rejection");
}
