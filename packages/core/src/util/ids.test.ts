import { describe, expect, it } from "vitest";
import { newId } from "./ids.js";

const V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

describe("newId", () => {
  it("gives RFC 9562 version-4 UUIDs, all different, across refills of its random pool", () => {
    const ids = Array.from({ length: 20_000 }, () => newId());
    for (const id of ids) expect(id).toMatch(V4);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("every random hex position takes every value (no position stuck or biased to a few)", () => {
    const seen = Array.from({ length: 36 }, () => new Set<string>());
    for (let i = 0; i < 5_000; i++) {
      const id = newId();
      for (let p = 0; p < 36; p++) seen[p]!.add(id[p]!);
    }
    for (let p = 0; p < 36; p++) {
      const expected =
        p === 8 || p === 13 || p === 18 || p === 23 ? 1 : p === 14 ? 1 : p === 19 ? 4 : 16;
      expect(seen[p]!.size, `position ${p}`).toBe(expected);
    }
  });
});
