/**
 * Reads `path` (dot-separated; numeric segments index arrays) from `value`.
 * Returns `undefined` when any step is missing.
 *
 * @example
 * ```ts
 * getPath({ a: [{ b: 1 }] }, "a.0.b"); // 1
 * ```
 */
export function getPath(value: unknown, path: string | readonly string[]): unknown {
  const parts = typeof path === "string" ? (path === "" ? [] : path.split(".")) : path;
  let cur: unknown = value;
  for (const part of parts) {
    if (cur === null || cur === undefined) return undefined;
    if (typeof cur !== "object" && typeof cur !== "function") return undefined;
    if (!Object.hasOwn(cur as object, part)) return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}
