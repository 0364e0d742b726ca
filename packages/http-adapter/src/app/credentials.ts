import { createCipheriv, createDecipheriv, randomBytes, scryptSync } from "node:crypto";
import { FlotillaError } from "@flotilla/core";

/** Seals credentials (provider API keys, remote tokens) before they are stored, and opens them. */
export interface CredentialSealer {
  /** Encrypts `plain`, bound to `context` (e.g. the worker id): only the same context opens it. */
  seal(plain: string, context: string): string;
  /** Decrypts what {@link CredentialSealer.seal} made; throws when the secret or context differs. */
  open(sealed: string, context: string): string;
}

const VERSION = "v1";
/** Shortest server secret accepted. */
export const MIN_SECRET_LENGTH = 16;

/**
 * A {@link CredentialSealer} using AES-256-GCM with a key derived by scrypt from the server
 * secret the operator provides: every value gets a random IV, and the context (the worker
 * id) is authenticated with it, so a sealed value cannot be moved to another worker. The
 * stored form is `v1:<iv>:<tag>:<ciphertext>` (base64url); the secret itself is never stored.
 *
 * @example
 * ```ts
 * const sealer = createCredentialSealer(process.env.FLOTILLA_SECRET_KEY!);
 * const stored = sealer.seal("sk-live-…", "openai-1");
 * sealer.open(stored, "openai-1"); // "sk-live-…"
 * ```
 */
export function createCredentialSealer(secret: string): CredentialSealer {
  if (typeof secret !== "string" || secret.length < MIN_SECRET_LENGTH) {
    throw new FlotillaError(
      "VALIDATION",
      `secret key: expected at least ${MIN_SECRET_LENGTH} characters`,
    );
  }
  const key = scryptSync(secret, "flotilla/credentials/v1", 32);
  return {
    seal(plain, context) {
      const iv = randomBytes(12);
      const cipher = createCipheriv("aes-256-gcm", key, iv);
      cipher.setAAD(Buffer.from(context, "utf8"));
      const ct = Buffer.concat([cipher.update(plain, "utf8"), cipher.final()]);
      const tag = cipher.getAuthTag();
      return [VERSION, iv, tag, ct]
        .map((p) => (typeof p === "string" ? p : p.toString("base64url")))
        .join(":");
    },
    open(sealed, context) {
      const parts = sealed.split(":");
      if (parts.length !== 4 || parts[0] !== VERSION) {
        throw new FlotillaError("VALIDATION", "stored credential: unknown format");
      }
      const [iv, tag, ct] = parts.slice(1).map((p) => Buffer.from(p, "base64url"));
      try {
        const decipher = createDecipheriv("aes-256-gcm", key, iv!);
        decipher.setAAD(Buffer.from(context, "utf8"));
        decipher.setAuthTag(tag!);
        return Buffer.concat([decipher.update(ct!), decipher.final()]).toString("utf8");
      } catch {
        throw new FlotillaError(
          "VALIDATION",
          "stored credential cannot be decrypted: the server secret key differs from the one it was stored with",
        );
      }
    },
  };
}
