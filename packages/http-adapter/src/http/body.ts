import type { IncomingMessage } from "node:http";
import { FlotillaError } from "@flotilla/core";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import type { ZodType } from "zod";
import { validationError } from "../errors.js";
import { header } from "./request.js";

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
  const early = readEarly.get(request);
  const text = early ?? (await request.text());
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
  const refuse = (c: Context) => {
    const env = c.env as { outgoing?: { setHeader?(k: string, v: string): void } } | undefined;
    env?.outgoing?.setHeader?.("connection", "close");
    return tooLarge(`request body exceeds ${bytes} bytes`, c);
  };
  const limited = bodyLimit({ maxSize: bytes, onError: refuse });
  return async (c, next) => {
    // A JSON body on Node is read straight from the socket's stream (no web stream, no
    // Request built for it); anything else (uploads, other servers) goes through Hono's.
    const req = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
    // A Node request without a body (a GET, most often) has nothing to limit.
    if (req?.socket && !hasBody(req)) return next();
    const type = header(c, "content-type") ?? "";
    if (!req?.socket || !JSON_TYPE.test(type) || req.readableEnded || !hasBody(req)) {
      return limited(c, next);
    }
    if (Number(req.headers["content-length"] ?? 0) > bytes) return refuse(c);
    const text = await readNodeBody(req, bytes);
    if (text === undefined) return refuse(c);
    readEarly.set(c.req.raw, text);
    await next();
  };
}

/** Bodies `jsonLimit` read from the Node request, for `readJson` (by the request they came with). */
const readEarly = new WeakMap<Request, string>();
const JSON_TYPE = /^application\/(?:[\w.+-]+\+)?json\b/i;

/** Whether a request says it carries a body (a length above 0, or chunked). */
export function hasBody(req: IncomingMessage): boolean {
  return (
    Number(req.headers["content-length"] ?? 0) > 0 || req.headers["transfer-encoding"] !== undefined
  );
}

/** The body as UTF-8 text, or `undefined` once it is over `limit` bytes (the rest is not read). */
function readNodeBody(req: IncomingMessage, limit: number): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const done = () => {
      req.off("data", onData);
      req.off("end", onEnd);
      req.off("error", onError);
      req.off("close", onClose);
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        done();
        req.pause();
        resolve(undefined);
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      done();
      resolve(Buffer.concat(chunks, size).toString("utf8"));
    };
    const onError = () => {
      done();
      reject(new FlotillaError("VALIDATION", "body: the client broke off while sending it"));
    };
    const onClose = () => {
      if (req.readableEnded) return;
      done();
      reject(
        new FlotillaError(
          "VALIDATION",
          "body: the client closed the connection before sending it all",
        ),
      );
    };
    req.on("data", onData);
    req.once("end", onEnd);
    req.once("error", onError);
    req.once("close", onClose);
  });
}
