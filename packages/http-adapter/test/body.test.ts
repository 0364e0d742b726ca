import { Hono } from "hono";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { jsonLimit, parseInput, readJson } from "../src/http/body.js";

const req = (body: string) => new Request("http://x/", { method: "POST", body });

describe("the one body reader every route family uses", () => {
  it("reads JSON, names malformed or empty bodies, and lets a family read empty as {}", async () => {
    expect(await readJson(req('{"a":1}'))).toEqual({ a: 1 });
    await expect(readJson(req("{"))).rejects.toMatchObject({
      code: "VALIDATION",
      message: expect.stringMatching(/^body: malformed JSON/),
    });
    await expect(readJson(req("  "))).rejects.toMatchObject({
      code: "VALIDATION",
      message: "body: empty: expected a JSON object",
    });
    expect(await readJson(req(""), { empty: {} })).toEqual({});
  });

  it("validates naming each field under its place", () => {
    const schema = z.object({ type: z.string(), limit: z.number().int() });
    expect(() => parseInput(schema, { type: 1, limit: 1.5 }, "query")).toThrow(
      /query\.type: .*; query\.limit: /,
    );
    expect(parseInput(schema, { type: "t", limit: 2 }, "body")).toEqual({ type: "t", limit: 2 });
  });

  it("answers a body over the limit in the family's own shape", async () => {
    const app = new Hono();
    app.post(
      "/x",
      jsonLimit(8, (message) => Response.json({ detail: message }, { status: 413 })),
      (c) => c.text("ok"),
    );
    const small = await app.request("/x", { method: "POST", body: "1234" });
    expect(await small.text()).toBe("ok");
    const big = await app.request("/x", { method: "POST", body: "123456789" });
    expect(big.status).toBe(413);
    expect(await big.json()).toEqual({ detail: "request body exceeds 8 bytes" });
  });
});
