import { FlotillaError } from "@flotilla/core";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ZodType } from "zod";
import { validationError } from "../errors.js";

/**
 * Reads a request's JSON body. Malformed JSON is `VALIDATION` naming the problem; an empty
 * body is `VALIDATION` too, unless `empty` says what it stands for (the fleet protocol reads
 * it as `{}`). Every route family reads bodies through this one function.
 *
 * @example
 * ```ts
 * const raw = await readJson(c.req.raw);
 * ```
 */
export async function readJson(
  request: Request,
  options: { empty?: unknown } = {},
): Promise<unknown> {
  const text = await request.text();
  if (!text.trim()) {
    if ("empty" in options) return options.empty;
    throw new FlotillaError("VALIDATION", "body: empty: expected a JSON object");
  }
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new FlotillaError("VALIDATION", `body: malformed JSON (${(err as Error).message})`);
  }
}

/**
 * Validates `value` with `schema`: the parsed value, or `VALIDATION` naming each bad field
 * under `where` (`body.type: …`, `query.limit: …`).
 *
 * @example
 * ```ts
 * const input = parseInput(TaskSubmitSchema, await readJson(c.req.raw), "body");
 * ```
 */
export function parseInput<T>(schema: ZodType<T>, value: unknown, where: string): T {
  const r = schema.safeParse(value);
  if (!r.success) throw validationError(r.error, where);
  return r.data;
}

/**
 * The body-size limit of a route family: over `bytes`, the request is answered with
 * `tooLarge(message)` (each family keeps its contract's body shape) and the connection is
 * closed, since the unread rest of the body makes it unusable.
 *
 * @example
 * ```ts
 * app.use("/api/*", jsonLimit(1_048_576, (message) => Response.json({ detail: message }, { status: 413 })));
 * ```
 */
export function jsonLimit(
  bytes: number,
  tooLarge: (message: string, c: Context) => Response,
): MiddlewareHandler {
  return bodyLimit({
    maxSize: bytes,
    onError: (c) => {
      const env = c.env as { outgoing?: { setHeader?(k: string, v: string): void } } | undefined;
      env?.outgoing?.setHeader?.("connection", "close");
      return tooLarge(`request body exceeds ${bytes} bytes`, c);
    },
  });
}
