import { createRouter } from "../router/strategies.js";
import type { TaskSpec } from "../task/schema.js";
import type { EngineState } from "./context.js";
import { assemble } from "./engine.js";
import { record, testContext } from "./parts.test-helpers.js";
import type { Live } from "./taskTable.js";

/** The engine's parts wired around a test context (fake clock, memory store), running. */
export function testEngine(state: EngineState = "running") {
  const t = testContext({ state });
  const parts = assemble(
    t.ctx,
    { routing: createRouter("least-loaded"), random: () => 0 },
    async () => false,
  );
  /** A stored, queued task in the table (as submission leaves it). */
  const queued = async (spec: Partial<TaskSpec> & { id: string }): Promise<Live> => {
    const live: Live = { rec: record(spec, "queued"), finished: false };
    await t.store.insertTasks([live.rec]);
    parts.table.add(live);
    return live;
  };
  return { ...t, parts, queued };
}
