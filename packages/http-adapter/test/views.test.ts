import { describe, expect, it } from "vitest";
import { jsonSafe } from "../src/views.js";

describe("jsonSafe", () => {
  it("returns a value JSON carries as it is, without copying it", () => {
    const value = { a: 1, b: ["x", { c: null, d: true }], e: { f: "g" } };
    expect(jsonSafe(value)).toBe(value);
  });

  it("copies only what changes: non-finite numbers, bigints, dates, maps, sets, functions", () => {
    const kept = { same: [1, 2] };
    const value = {
      kept,
      nan: Number.NaN,
      inf: [1, Number.POSITIVE_INFINITY],
      big: 12n,
      at: new Date(0),
      map: new Map([["k", 1]]),
      set: new Set(["s"]),
      fn: () => 1,
    };
    const safe = jsonSafe(value) as Record<string, unknown>;
    expect(safe).not.toBe(value);
    expect(safe).toEqual({
      kept: { same: [1, 2] },
      nan: null,
      inf: [1, null],
      big: "12",
      at: "1970-01-01T00:00:00.000Z",
      map: { k: 1 },
      set: ["s"],
    });
    expect(safe.kept).toBe(kept);
    // The original is untouched.
    expect(value.nan).toBeNaN();
    expect(value.inf[1]).toBe(Number.POSITIVE_INFINITY);
  });

  it("turns an instance of a class into a plain object of its own fields", () => {
    class Point {
      constructor(
        readonly x: number,
        readonly y: number,
      ) {}
      norm() {
        return Math.hypot(this.x, this.y);
      }
    }
    const safe = jsonSafe({ p: new Point(3, 4) }) as { p: unknown };
    expect(Object.getPrototypeOf(safe.p)).toBe(Object.prototype);
    expect(safe.p).toEqual({ x: 3, y: 4 });
  });
});
