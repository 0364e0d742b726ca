import { request as httpRequest } from "node:http";
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
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

  it("on Node, reads a JSON body from the socket with the same limit and errors", async () => {
    const app = new Hono();
    app.post(
      "/x",
      jsonLimit(64, (message) => Response.json({ detail: message }, { status: 413 })),
      async (c) => c.json({ got: await readJson(c.req.raw) }),
    );
    app.onError((err, c) => c.json({ code: (err as { code?: string }).code }, 400));
    const server = serve({ fetch: app.fetch, hostname: "127.0.0.1", port: 0 });
    await new Promise<void>((r) => (server.listening ? r() : server.once("listening", () => r())));
    const port = (server.address() as AddressInfo).port;
    const post = (body: string | string[], headers: Record<string, string> = {}) =>
      new Promise<{ status: number; text: string }>((resolve, reject) => {
        const r = httpRequest(
          {
            host: "127.0.0.1",
            port,
            path: "/x",
            method: "POST",
            headers: { "content-type": "application/json", ...headers },
          },
          (res) => {
            let text = "";
            res.on("data", (d) => {
              text += d;
            });
            res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          },
        );
        r.on("error", reject);
        for (const piece of Array.isArray(body) ? body : [body]) r.write(piece);
        r.end();
      });
    try {
      expect(await post('{"a":"é"}')).toEqual({ status: 200, text: '{"got":{"a":"é"}}' });
      // chunked, in pieces: read whole
      expect(await post(['{"a":', "[1,", "2]}"])).toEqual({
        status: 200,
        text: '{"got":{"a":[1,2]}}',
      });
      const big = JSON.stringify({ a: "x".repeat(100) });
      expect((await post(big)).status).toBe(413); // by its content-length
      expect((await post([big.slice(0, 50), big.slice(50)])).status).toBe(413); // chunked: by its bytes
      expect(await post("{")).toEqual({ status: 400, text: '{"code":"VALIDATION"}' });
      // A client that goes away mid-body leaves the server answering.
      await new Promise<void>((resolve) => {
        const r = httpRequest({
          host: "127.0.0.1",
          port,
          path: "/x",
          method: "POST",
          headers: { "content-type": "application/json", "content-length": "50" },
        });
        r.on("error", () => resolve());
        r.write('{"a":');
        setTimeout(() => {
          r.destroy();
          resolve();
        }, 50);
      });
      expect(await post("{}")).toEqual({ status: 200, text: '{"got":{}}' });
    } finally {
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});
