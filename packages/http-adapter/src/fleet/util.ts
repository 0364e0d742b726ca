import { createHash, randomBytes, randomUUID, timingSafeEqual } from "node:crypto";
import { FlotillaError } from "@flotilla/core";
import { httpStatusOf, retryAfterHeaders } from "../errors.js";

/** Runs async sections one at a time per key (read-modify-write of one stored record). */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<unknown>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const prev = this.#tails.get(key) ?? Promise.resolve();
    const next = prev.then(fn, fn);
    const tail = next.catch(() => undefined);
    this.#tails.set(key, tail);
    try {
      return await next;
    } finally {
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }
}

/** Lowercase hex SHA-256. */
export function sha256Hex(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Compares two hex digests in constant time. */
export function sameDigest(a: string, b: string): boolean {
  const x = Buffer.from(a, "hex");
  const y = Buffer.from(b, "hex");
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y);
}

/** A new random secret with a readable prefix. */
export function newSecret(prefix: string): string {
  return `${prefix}_${randomBytes(32).toString("base64url")}`;
}

export const uuid = (): string => randomUUID();

/** An error with an explicit HTTP status, answered as `{detail}`. */
export class FleetHttpError extends Error {
  constructor(
    readonly status: number,
    readonly detail: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(detail);
  }
}

/** The HTTP status for anything thrown inside a fleet route. */
export function toHttpError(err: unknown): FleetHttpError {
  if (err instanceof FleetHttpError) return err;
  const status = httpStatusOf(err);
  if (err instanceof FlotillaError && status !== 500) {
    return new FleetHttpError(status, err.message, retryAfterHeaders(err, status));
  }
  return new FleetHttpError(500, "internal server error");
}

const matchers = new Map<string, RegExp>();

/**
 * Whether `name` matches the glob `pattern` (`client-acme-*`): `*` is any run of
 * characters, `?` one character, everything else literal (fnmatch-style, case-sensitive).
 */
export function globMatch(pattern: string, name: string): boolean {
  let re = matchers.get(pattern);
  if (!re) {
    const body = pattern
      .split("")
      .map((ch) =>
        ch === "*" ? ".*" : ch === "?" ? "." : ch.replace(/[.+^${}()|[\]\\/-]/g, "\\$&"),
      )
      .join("");
    re = new RegExp(`^${body}$`, "s");
    if (matchers.size > 1000) matchers.clear();
    matchers.set(pattern, re);
  }
  return re.test(name);
}

/** Reduces a file name to its basename (both separators), as nodes do. */
export function baseName(name: string): string {
  const parts = name.split(/[\\/]/);
  return parts[parts.length - 1] ?? "";
}

/** C0/C1 controls, bidi embeddings/overrides/isolates, marks and zero-width characters. */
const UNSAFE_IN_NAMES =
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is its job
  /[\u0000-\u001f\u007f-\u009f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]/g;

/**
 * A name a node can safely create in its work directory: the last path segment, without
 * control or bidirectional-override characters (U+202E would make `txt.exe` look like
 * `exe.txt`); `undefined` when nothing usable is left (empty, `.`, `..`).
 */
export function safeFileName(name: string): string | undefined {
  const cleaned = baseName(name).replace(UNSAFE_IN_NAMES, "").trim();
  if (!cleaned || /^\.+$/.test(cleaned)) return undefined;
  return cleaned.slice(0, 255);
}

/** ISO time or null. */
export const iso = (ms: number | null | undefined): string | null =>
  typeof ms === "number" && Number.isFinite(ms) ? new Date(ms).toISOString() : null;
