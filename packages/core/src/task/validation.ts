import type { z } from "zod";
import { FlotillaError } from "../errors.js";

/** Formats a zod path as `a.b[0].c`, prefixed by `root`. */
export function formatPath(root: string, path: readonly PropertyKey[]): string {
  let out = root;
  for (const seg of path) {
    if (typeof seg === "number") out += `[${seg}]`;
    else out += out === "" ? String(seg) : `.${String(seg)}`;
  }
  return out || "(root)";
}

/**
 * Parses `value` with `schema`, or throws `FlotillaError("VALIDATION")` whose message names
 * each failing field path and what was expected.
 *
 * @example
 * ```ts
 * parseOrThrow(TaskSpecSchema, input, "task"); // throws "task.type: Invalid input: expected string, received undefined"
 * ```
 */
export function parseOrThrow<S extends z.ZodType>(
  schema: S,
  value: unknown,
  root: string,
): z.output<S> {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const issues = parsed.error.issues.map((issue) => ({
    path: formatPath(root, issue.path),
    message: issue.message,
  }));
  throw new FlotillaError("VALIDATION", issues.map((i) => `${i.path}: ${i.message}`).join("; "), {
    details: { issues },
  });
}
