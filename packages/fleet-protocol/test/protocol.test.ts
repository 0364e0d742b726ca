import { describe, expect, it } from "vitest";
import {
  HeartbeatBodySchema,
  LogsBodySchema,
  PollResponseSchema,
  RegisterBodySchema,
  StatusBodySchema,
  TaskAssignmentSchema,
} from "../src/index.js";

describe("fleet protocol schemas", () => {
  it("keep fields they do not know (unmodified runners send some)", () => {
    const hb = HeartbeatBodySchema.parse({ status: "idle", runner_version: "1.2", load: 0.3 });
    expect(hb).toMatchObject({ status: "idle", runner_version: "1.2", load: 0.3 });
    const reg = RegisterBodySchema.parse({ hostname: "h", extra: true });
    expect(reg).toMatchObject({ hostname: "h", os_type: "unknown", extra: true });
  });

  it("refuse what a side could not act on, naming the field", () => {
    const status = StatusBodySchema.safeParse({ status: "success" });
    expect(status.success).toBe(false);
    expect(status.error?.issues[0]).toMatchObject({
      path: ["task_id"],
      message: "task_id (or job_id) is required",
    });
    expect(StatusBodySchema.safeParse({ task_id: "t", status: "done" }).success).toBe(false);
    expect(HeartbeatBodySchema.safeParse({ status: "sleeping" }).success).toBe(false);
    expect(RegisterBodySchema.safeParse({ hostname: "h", slots: 0 }).success).toBe(false);
    expect(TaskAssignmentSchema.safeParse({ task_id: "t", prompt: "p" }).success).toBe(false);
  });

  it("accept the aliases Victoria's runner and agents use", () => {
    expect(StatusBodySchema.parse({ job_id: "t", status: "running" }).job_id).toBe("t");
    const logs = LogsBodySchema.parse({ job_id: "t", session: { id: null, title: null } });
    expect(logs.session.messages).toEqual([]);
  });

  it("a poll answers an assignment or null", () => {
    expect(PollResponseSchema.parse(null)).toBeNull();
    expect(
      PollResponseSchema.parse({ task_id: "t", prompt: "p", orchestrator_url: "http://x" })
        ?.task_id,
    ).toBe("t");
  });
});
