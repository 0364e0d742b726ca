import { getPath } from "../util/path.js";

const TEMPLATE = /\{\{\s*([^{}]+?)\s*\}\}/g;
const WHOLE = /^\{\{\s*([^{}]+?)\s*\}\}$/;

/**
 * Splits a reference `taskId[.path]` into the dependency id and path, choosing the longest
 * dependency id that prefixes it (ids may contain dots). `undefined` when none does.
 *
 * @example
 * ```ts
 * splitReference("fetch.body.title", new Set(["fetch"])); // ["fetch", ["body", "title"]]
 * ```
 */
export function splitReference(
  ref: string,
  deps: ReadonlySet<string>,
): [string, string[]] | undefined {
  if (deps.has(ref)) return [ref, []];
  const parts = ref.split(".");
  for (let k = parts.length - 1; k >= 1; k--) {
    const id = parts.slice(0, k).join(".");
    if (deps.has(id)) return [id, parts.slice(k)];
  }
  return undefined;
}

/**
 * Reads a reference (`taskId[.path]`) from dependency outputs.
 *
 * @example
 * ```ts
 * readReference("fetch.title", new Map([["fetch", { title: "Hi" }]])); // { found: true, value: "Hi" }
 * ```
 */
export function readReference(
  ref: string,
  outputs: ReadonlyMap<string, unknown>,
): { found: boolean; value: unknown } {
  const split = splitReference(ref, new Set(outputs.keys()));
  if (!split) return { found: false, value: undefined };
  return { found: true, value: getPath(outputs.get(split[0]), split[1]) };
}

/**
 * Resolves `{{taskId}}` and `{{taskId.path}}` in every string of `payload` (deeply, through
 * plain objects and arrays) from dependency outputs. A string that is exactly one template
 * takes the referenced value with its type (a number stays a number, an object an object);
 * a template inside a longer string is replaced by its text (objects as JSON). References
 * that do not start with a dependency id are left untouched, so prompts may contain other
 * `{{…}}` text.
 *
 * @example
 * ```ts
 * resolveTemplates({ n: "{{count}}", msg: "got {{count}} items" }, new Map([["count", 3]]));
 * // { n: 3, msg: "got 3 items" }
 * ```
 */
export function resolveTemplates(payload: unknown, outputs: ReadonlyMap<string, unknown>): unknown {
  if (outputs.size === 0) return payload;
  const deps = new Set(outputs.keys());
  const walk = (value: unknown): unknown => {
    if (typeof value === "string") return resolveString(value, deps, outputs);
    if (Array.isArray(value)) return value.map(walk);
    if (value !== null && typeof value === "object" && isPlain(value)) {
      const out: Record<string, unknown> = {};
      for (const [k, v] of Object.entries(value)) out[k] = walk(v);
      return out;
    }
    return value;
  };
  return walk(payload);
}

function resolveString(
  s: string,
  deps: ReadonlySet<string>,
  outputs: ReadonlyMap<string, unknown>,
): unknown {
  if (!s.includes("{{")) return s;
  const whole = WHOLE.exec(s);
  if (whole) {
    const split = splitReference(whole[1]!, deps);
    if (split) return getPath(outputs.get(split[0]), split[1]);
  }
  return s.replace(TEMPLATE, (match, ref: string) => {
    const split = splitReference(ref, deps);
    if (!split) return match;
    const value = getPath(outputs.get(split[0]), split[1]);
    if (value === undefined) return "";
    if (typeof value === "string") return value;
    if (typeof value === "object") return JSON.stringify(value);
    return String(value);
  });
}

function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value);
  return proto === Object.prototype || proto === null;
}

/**
 * Resolves an `inputs` mapping (`{ name: "taskId[.path]" }`) from dependency outputs.
 *
 * @example
 * ```ts
 * resolveInputs({ title: "fetch.title" }, new Map([["fetch", { title: "Hi" }]])); // { title: "Hi" }
 * ```
 */
export function resolveInputs(
  inputs: Readonly<Record<string, string>> | undefined,
  outputs: ReadonlyMap<string, unknown>,
): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  if (!inputs) return out;
  for (const [name, ref] of Object.entries(inputs)) out[name] = readReference(ref, outputs).value;
  return out;
}
