import { type EngineApi, ERROR_CODES, FlotillaError } from "@flotilla/core";
import { afterEach, describe, expect, it } from "vitest";
import { errorResponse, HTTP_STATUS_BY_CODE, httpStatusOf } from "../src/errors.js";
import { toHttpError } from "../src/fleet/util.js";
import { ADMIN_KEY, type FleetUnderTest, removeDir, startFleet } from "./fleet/harness.js";

describe("one error table for every route family", () => {
  it("maps every code but INTERNAL to a deliberate 4xx or 503", () => {
    for (const code of ERROR_CODES) {
      const status = HTTP_STATUS_BY_CODE[code];
      if (code === "INTERNAL") {
        expect(status).toBe(500);
        continue;
      }
      expect(status === 503 || (status >= 400 && status < 500), `${code} → ${status}`).toBe(true);
    }
  });

  it("the Vera routes and the fleet routes answer the same status for the same error", async () => {
    for (const code of ERROR_CODES) {
      const err = new FlotillaError(code, `it was ${code}`);
      expect(errorResponse(err).status).toBe(httpStatusOf(err));
      const fleet = toHttpError(err);
      expect(fleet.status).toBe(httpStatusOf(err));
      expect(fleet.detail).toBe(code === "INTERNAL" ? "internal server error" : `it was ${code}`);
    }
    expect(httpStatusOf(new Error("boom"))).toBe(500);
  });

  it("a 429 or 503 that knows when to retry says so on both families", () => {
    const err = new FlotillaError("RATE_LIMITED", "slow down", {
      details: { retryAfterMs: 1_500 },
    });
    expect(errorResponse(err).headers.get("retry-after")).toBe("2");
    expect(toHttpError(err).headers).toEqual({ "retry-after": "2" });
  });
});

describe("fleet routes answer engine errors by the table, not 500", () => {
  let f: FleetUnderTest | undefined;
  afterEach(async () => {
    await f?.stop();
    if (f) await removeDir(f.dir);
    f = undefined;
  });

  it.each([
    ["QUOTA_EXCEEDED", 429],
    ["NO_ELIGIBLE_WORKER", 422],
    ["CYCLE_DETECTED", 400],
    ["WORKER_LOST", 503],
  ] as const)("POST /tasks when the engine refuses with %s → %i", async (code, status) => {
    f = await startFleet({
      engine: (o): EngineApi =>
        new Proxy(o, {
          get(target, prop, receiver) {
            if (prop === "submit") {
              return () => Promise.reject(new FlotillaError(code, `refused: ${code}`));
            }
            const v = Reflect.get(target, prop, receiver);
            return typeof v === "function" ? v.bind(target) : v;
          },
        }),
    });
    const res = await f.admin("POST", "/tasks", { prompt: "hello" }, ADMIN_KEY);
    expect(res.status).toBe(status);
    expect(res.json).toEqual({ detail: `refused: ${code}` });
  });
});
