/**
 * Returns a copy of `value` that `JSON.stringify` renders faithfully and that survives a
 * JSON round trip: non-finite numbers become `null`, bigints strings, `Date`s ISO strings,
 * errors `{ name, message }`; functions, symbols and `undefined` properties are dropped;
 * cycles become `"[Circular]"`; nesting deeper than `maxDepth` becomes `"[Truncated]"`.
 *
 * @example
 * ```ts
 * toJsonSafe({ a: Number.POSITIVE_INFINITY, b: 1n, c: () => 1 }); // { a: null, b: "1" }
 * ```
 */
export function toJsonSafe(value: unknown, maxDepth = 20): unknown {
  return walk(value, new WeakSet(), maxDepth);
}

function walk(value: unknown, seen: WeakSet<object>, depth: number): unknown {
  switch (typeof value) {
    case "number":
      return Number.isFinite(value) ? value : null;
    case "bigint":
      return value.toString();
    case "string":
    case "boolean":
      return value;
    case "object":
      break;
    default:
      return undefined;
  }
  if (value === null) return null;
  if (seen.has(value)) return "[Circular]";
  if (depth <= 0) return "[Truncated]";
  if (value instanceof Date) return Number.isFinite(value.getTime()) ? value.toISOString() : null;
  if (value instanceof Error) return { name: value.name, message: value.message };
  seen.add(value);
  try {
    if (Array.isArray(value)) {
      return value.map((v) => walk(v, seen, depth - 1) ?? null);
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) {
      const safe = walk(v, seen, depth - 1);
      if (safe !== undefined) out[k] = safe;
    }
    return out;
  } finally {
    seen.delete(value);
  }
}
