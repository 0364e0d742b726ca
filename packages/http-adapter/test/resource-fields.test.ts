import { ResourceManager } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { type Harness, startHarness } from "./helpers.js";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

const echo = { tool_name: "echo", tool_input: "hi" };

describe("submissions carry tenant, rate-limit keys and estimates", () => {
  it("a rate_limit_key is spent: the second call on a 1/min key waits, and says why", async () => {
    const resources = new ResourceManager({ limits: { openai: "1/min" } });
    h = await startHarness({ resources, gates: resources.gates });
    const first = await h.req("/tasks/execute", {
      json: { type: "tool_call", payload: echo, tenant: "acme", rate_limit_key: "openai" },
    });
    expect(first.status).toBe(200);
    const done = (await first.json()) as { task_id: string };
    const view = (await (await h.req(`/tasks/${done.task_id}`)).json()) as Record<string, unknown>;
    expect(view).toMatchObject({ tenant: "acme", rate_limit_keys: ["openai"] });

    const second = (await (
      await h.req("/tasks/submit", {
        json: {
          type: "tool_call",
          payload: echo,
          rate_limit_key: ["openai"],
          estimate: { input_tokens: 100, output_tokens: 50 },
        },
      })
    ).json()) as { task_id: string };
    const waiting = new Promise<void>((resolve) =>
      h!.orchestrator.on("task:waiting", (w) => {
        if (w.taskId === second.task_id && w.kind === "rate_limit") resolve();
      }),
    );
    // The dispatch round that parks it may already have run: explain answers either way.
    const reasons = async () =>
      (
        (await (await h!.req(`/tasks/${second.task_id}`)).json()) as {
          waiting_for: Array<{ kind: string; key?: string }>;
        }
      ).waiting_for;
    if ((await reasons())[0]?.kind !== "rate_limit") await waiting;
    expect((await reasons())[0]).toMatchObject({ kind: "rate_limit" });
    expect(JSON.stringify(await reasons())).toContain("openai");
    expect((await h.orchestrator.get(second.task_id))?.estimate).toEqual({
      inputTokens: 100,
      outputTokens: 50,
    });
  });

  it("an estimate field the server does not know is a 400 naming it", async () => {
    h = await startHarness();
    const res = await h.req("/tasks/submit", {
      json: { type: "tool_call", payload: echo, estimate: { input_tokns: 5 } },
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { detail: string }).detail).toContain(
      'unknown field "input_tokns" (did you mean "input_tokens"?)',
    );
  });
});
