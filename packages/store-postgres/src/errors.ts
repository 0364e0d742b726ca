import { FlotillaError } from "@flotilla/core";

/**
 * A PostgreSQL failure as a `FlotillaError`: the caller's own `FlotillaError`s pass through;
 * a unique violation is `CONFLICT`; anything else is `STORE_ERROR` naming the database
 * (never its password) and what failed. @internal
 */
export function pgError(where: string, what: string, err: unknown): FlotillaError {
  if (err instanceof FlotillaError) return err;
  const e = err as { code?: string; message?: string } | undefined;
  const reason = e?.message ? `: ${e.message}` : "";
  return new FlotillaError("STORE_ERROR", `${where}: ${what}${reason}`, {
    cause: err,
    details: { database: where, ...(e?.code ? { pgCode: e.code } : {}) },
  });
}

/** A unique violation on the tasks table as `CONFLICT` naming the id or key; `undefined` otherwise. @internal */
export function conflictError(
  err: unknown,
  task: { id: string; idempotencyKey?: string | undefined },
): FlotillaError | undefined {
  const e = err as { code?: string; constraint?: string } | undefined;
  if (e?.code !== "23505") return undefined;
  if (String(e.constraint).includes("idempotency")) {
    return new FlotillaError(
      "CONFLICT",
      `idempotency key "${task.idempotencyKey}" is already used`,
      {
        details: { idempotencyKey: task.idempotencyKey },
      },
    );
  }
  return new FlotillaError("CONFLICT", `task ${task.id} already exists`, {
    details: { id: task.id },
  });
}

/** `postgres://user:secret@host/db` as `postgres://user@host/db` (for messages). @internal */
export function describeDatabase(connectionString: string | undefined, schema: string): string {
  if (!connectionString) return `PostgreSQL (schema "${schema}")`;
  try {
    const url = new URL(connectionString);
    url.password = "";
    const text = url.toString().replace(/\?.*$/, "");
    return `${text} (schema "${schema}")`;
  } catch {
    return `PostgreSQL (schema "${schema}")`;
  }
}
