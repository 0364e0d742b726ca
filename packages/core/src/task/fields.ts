import { z } from "zod";

/**
 * The known name closest to `name` when it is a likely typo (edit distance at most 1 for
 * short names, a third of the length for longer ones), else `undefined`.
 *
 * @example
 * ```ts
 * closestName("priorty", ["priority", "payload"]); // "priority"
 * closestName("colour", ["priority"]); // undefined
 * ```
 */
export function closestName(name: string, known: readonly string[]): string | undefined {
  const limit = Math.max(1, Math.floor(name.length / 3));
  let best: string | undefined;
  let bestDistance = limit + 1;
  const lower = name.toLowerCase();
  for (const candidate of known) {
    const d = distance(lower, candidate.toLowerCase(), bestDistance);
    if (d < bestDistance) {
      best = candidate;
      bestDistance = d;
    }
  }
  return best;
}

/** Levenshtein distance (transpositions count 1), giving up above `cap`. */
function distance(a: string, b: string, cap: number): number {
  if (Math.abs(a.length - b.length) >= cap) return cap;
  let prev2: number[] = [];
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(prev[j]! + 1, row[j - 1]! + 1, prev[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, prev2[j - 2]! + 1);
      }
      row.push(d);
      rowMin = Math.min(rowMin, d);
    }
    if (rowMin >= cap) return cap;
    prev2 = prev;
    prev = row;
  }
  return prev[b.length]!;
}

/**
 * The message for fields an object does not know: `unknown field "priorty" (did you mean
 * "priority"?)`, naming each with its likely intent.
 *
 * @example
 * ```ts
 * unknownFieldsMessage(["priorty"], ["type", "priority"]); // 'unknown field "priorty" (did you mean "priority"?)'
 * ```
 */
export function unknownFieldsMessage(keys: readonly string[], known: readonly string[]): string {
  const named = keys.map((k) => {
    const hint = closestName(k, known);
    return hint ? `"${k}" (did you mean "${hint}"?)` : `"${k}"`;
  });
  return `unknown field${keys.length === 1 ? "" : "s"} ${named.join(", ")}: expected only ${known.join(", ")}`;
}

/**
 * A zod object that refuses fields it does not know, naming each and the known field it
 * most likely meant — a typo must never be dropped silently (a misspelt `approval` would run
 * a task without its approval).
 *
 * @example
 * ```ts
 * const Spec = strictObject({ type: z.string(), priority: z.string().optional() });
 * Spec.safeParse({ type: "t", priorty: "high" }); // fails: unknown field "priorty" (did you mean "priority"?)
 * ```
 */
export function strictObject<T extends z.ZodRawShape>(shape: T) {
  const known = Object.keys(shape);
  return z.strictObject(shape, {
    error: (issue) =>
      issue.code === "unrecognized_keys" ? unknownFieldsMessage(issue.keys, known) : undefined,
  });
}
