import type { z } from "zod";
import { FlotillaError } from "../errors.js";

function formatPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const p of path) {
    if (typeof p === "number") out += `[${p}]`;
    else if (typeof p === "string" && /^[A-Za-z_$][\w$]*$/.test(p)) out += `.${p}`;
    else out += `[${JSON.stringify(String(p))}]`;
  }
  return out;
}

/**
 * Parses `input` with `schema`, or throws a `FlotillaError` with code `VALIDATION` whose
 * message names every offending field (`limits.openai[1]: unknown time unit "fortnight" …`).
 *
 * @example
 * ```ts
 * const cfg = parseConfig(RateLimitsConfigSchema, { openai: "500/min" }, "limits");
 * ```
 */
export function parseConfig<S extends z.ZodType>(
  schema: S,
  input: unknown,
  what: string,
): z.output<S> {
  const res = schema.safeParse(input);
  if (res.success) return res.data;
  const message = res.error.issues
    .map((i) => `${what}${formatPath(i.path)}: ${i.message}`)
    .join("; ");
  throw new FlotillaError("VALIDATION", message, { details: res.error.issues });
}
