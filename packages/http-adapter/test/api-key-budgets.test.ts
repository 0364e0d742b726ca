import { createHash } from "node:crypto";
import { ResourceManager } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { type Harness, KEY, startHarness } from "./helpers.js";

let h: Harness | undefined;
afterEach(async () => {
  await h?.close();
  h = undefined;
});

describe("API key budgets over HTTP", () => {
  it("count the tasks each key submits, whatever route it uses; the task shows its key", async () => {
    const me = `key:${createHash("sha256").update(KEY).digest("hex").slice(0, 12)}`;
    const resources = new ResourceManager({
      budgets: [{ name: "per-key", scope: "apiKey", requests: 2, policy: "fail" }],
    });
    h = await startHarness({ resources, gates: resources.gates });
    const submit = async (body: unknown, path = "/tasks/execute") =>
      (await (await h!.req(path, { method: "POST", json: body })).json()) as Record<
        string,
        unknown
      >;
    const echo = { type: "tool_call", payload: { tool_name: "echo", tool_input: "x" } };
    const first = await submit(echo);
    expect(first.status).toBe("succeeded");
    const view = (await (await h.req(`/tasks/${first.task_id}`)).json()) as { api_key: string };
    expect(view.api_key).toBe(me);
    // The second request of this key, through another route.
    expect((await submit({ tool_name: "echo", tool_input: "y" }, "/tools/execute")).success).toBe(
      true,
    );
    const third = await submit(echo);
    expect(third.status).toBe("failed");
    expect(third.error_code).toBe("QUOTA_EXCEEDED");
    expect(String(third.error)).toContain(`apiKey "${me}"`);
    const stats = resources.budgets.stats().find((b) => b.subject === me);
    expect(stats?.used.requests).toBe(2);
  });
});
