import { FunctionWorker } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { type Harness, KEY, startHarness } from "./helpers.js";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("GET {prefix}/tasks/{id}/telemetry", () => {
  it("serves what the worker reported: CPU, memory in MB, current tool, token counts", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    let reported!: () => void;
    const sampled = new Promise<void>((r) => {
      reported = r;
    });
    h = await startHarness({
      workers: [
        new FunctionWorker({
          id: "agent",
          taskTypes: ["agent_job"],
          fn: async (_p, ctx) => {
            ctx.progress({ type: "stats", cpuPercent: 87.5, memoryBytes: 300 * 1024 * 1024 });
            ctx.progress({ tool: "web_search", step: "looking things up" });
            ctx.progress({ type: "token", text: "Hel" });
            ctx.progress({ type: "token", text: "lo" });
            reported();
            await held;
            return "Hello";
          },
        }),
      ],
    });
    const headers = { "x-api-key": KEY, "content-type": "application/json" };
    const sub = (await (
      await fetch(`${h.api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({ type: "agent_job" }),
      })
    ).json()) as { task_id: string };
    await sampled;
    const live = await fetch(`${h.api}/tasks/${sub.task_id}/telemetry`, { headers });
    expect(live.status).toBe(200);
    const body = (await live.json()) as {
      samples: Array<Record<string, unknown>>;
      latest: Record<string, unknown>;
      token_chunks: number;
    };
    expect(body.samples).toHaveLength(2);
    expect(body.samples[0]).toMatchObject({ kind: "stats", cpu_percent: 87.5, memory_mb: 300 });
    expect(body.samples[1]).toMatchObject({ tool: "web_search", step: "looking things up" });
    expect(typeof body.samples[0]?.at).toBe("string");
    expect(body.latest).toMatchObject({ cpu_percent: 87.5, memory_mb: 300, tool: "web_search" });
    expect(body.token_chunks).toBe(2);
    release();

    const quiet = (await (
      await fetch(`${h.api}/tasks/submit`, {
        method: "POST",
        headers,
        body: JSON.stringify({ type: "tool_call", payload: { tool_name: "echo" } }),
      })
    ).json()) as { task_id: string };
    const none = (await (
      await fetch(`${h.api}/tasks/${quiet.task_id}/telemetry`, { headers })
    ).json()) as { samples: unknown[]; latest: unknown };
    expect(none).toMatchObject({ samples: [], latest: {}, dropped: 0 });
    const missing = await fetch(`${h.api}/tasks/nope/telemetry`, { headers });
    expect(missing.status).toBe(404);
  });
});
