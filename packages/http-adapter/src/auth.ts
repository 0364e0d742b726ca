import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import type { Logger } from "@flotilla/core";

/**
 * How the adapter authenticates callers.
 * - `{ mode: "keys", keys?, keyHashes? }` (the default mode): admin keys, given in plain text
 *   (hashed at once and the plain text dropped) or as `sha256:<hex>` hashes.
 * - `{ mode: "open" }`: no authentication. Only for local use; logged loudly at start.
 *
 * @example
 * ```ts
 * createFlotillaApp({ orchestrator, auth: { keyHashes: [hashApiKey(process.env.ADMIN_KEY!)] } });
 * ```
 */
export type AuthOptions =
  | { mode: "open" }
  | {
      mode?: "keys";
      /** Plain-text admin keys; hashed in memory right away. */
      keys?: readonly string[];
      /** Hashed admin keys (`sha256:<hex>`, as {@link hashApiKey} returns). */
      keyHashes?: readonly string[];
      /**
       * Extra check for keys the adapter does not know (e.g. keys kept in the fleet's key
       * store: `verify: (k, what) => fleet.verifyAdminKey(k, what)`). Called on every request
       * whose key is not one of `keys`/`keyHashes`; `what` names the request (`GET /path`).
       */
      verify?: (key: string, what: string) => boolean | Promise<boolean>;
    };

/**
 * Hashes an API key for storage: `sha256:<hex>`. Keys are random and long, so a fast hash is enough.
 *
 * @example
 * ```ts
 * createFlotillaApp({ orchestrator, auth: { keyHashes: [hashApiKey(key)] } });
 * ```
 */
export function hashApiKey(key: string): string {
  return `sha256:${hash("sha256", key, "hex")}`;
}

/**
 * Generates a new random admin key (`flt_` + 32 random bytes, base64url).
 *
 * @example
 * ```ts
 * const key = generateApiKey(); // show it once, store hashApiKey(key)
 * ```
 */
export function generateApiKey(): string {
  return `flt_${randomBytes(32).toString("base64url")}`;
}

/**
 * Checks presented keys against stored hashes in constant time (`crypto.timingSafeEqual`
 * on SHA-256 digests, every stored digest compared).
 *
 * @example
 * ```ts
 * const verifier = new KeyVerifier({ keys: ["s3cret-admin-key"] });
 * await verifier.check(keyFromHeaders(request.headers)); // true or false
 * ```
 */
export class KeyVerifier {
  readonly open: boolean;
  readonly #digests: Buffer[];
  readonly #verify: ((key: string, what: string) => boolean | Promise<boolean>) | undefined;

  constructor(options: AuthOptions, logger?: Logger) {
    if (options.mode === "open") {
      this.open = true;
      this.#digests = [];
      this.#verify = undefined;
      logger?.warn(
        { auth: "open" },
        "AUTHENTICATION IS DISABLED (open mode): anyone who can reach this server can run tasks",
      );
      return;
    }
    this.open = false;
    const hashes = [...(options.keyHashes ?? []), ...(options.keys ?? []).map(hashApiKey)];
    this.#digests = hashes.map((h) => {
      const hex = h.startsWith("sha256:") ? h.slice(7) : h;
      if (!/^[0-9a-f]{64}$/i.test(hex))
        throw new Error(`invalid key hash: expected sha256:<64 hex>`);
      return Buffer.from(hex, "hex");
    });
    this.#verify = options.verify;
  }

  /**
   * Whether `key` is accepted. Compares every stored digest (constant time per digest), then
   * asks the `verify` hook, if any. `what` (e.g. `GET /path`) is handed to the hook.
   *
   * @example
   * ```ts
   * const ok = await verifier.check(keyFromHeaders(req.headers), "GET /api/v2/orchestrator/status");
   * if (!ok) return new Response("unauthorized", { status: 401 });
   * ```
   */
  async check(key: string | undefined | null, what = ""): Promise<boolean> {
    if (this.open) return true;
    if (!key || key.length > 4096) return false;
    const digest = hash("sha256", key, "buffer");
    let ok = false;
    for (const d of this.#digests) {
      if (timingSafeEqual(d, digest)) ok = true;
    }
    if (!ok && this.#verify) ok = await this.#verify(key, what);
    return ok;
  }
}

/**
 * Extracts a presented key from `X-API-Key` or `Authorization: Bearer`.
 *
 * @example
 * ```ts
 * keyFromHeaders(new Headers({ authorization: "Bearer abc" })); // "abc"
 * ```
 */
export function keyFromHeaders(headers: {
  get(name: string): string | null | undefined;
}): string | undefined {
  const x = headers.get("x-api-key");
  if (x) return x.trim();
  const auth = headers.get("authorization");
  if (auth) {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (m?.[1]) return m[1].trim();
  }
  return undefined;
}
