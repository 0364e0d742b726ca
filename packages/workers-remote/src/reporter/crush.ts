import { existsSync } from "node:fs";
import { homedir } from "node:os";
import { join } from "node:path";
import type { SessionLog } from "../fleet/schemas.js";

/**
 * Where a Crush database is looked for, in order: `<home>/.crush/crush.db`, `./.crush/crush.db`, `$XDG_DATA_HOME/crush/crush.db`.
 *
 * @example
 * ```ts
 * const db = findCrushDb(); // e.g. "/home/me/Victoria/.crush/crush.db", or undefined
 * if (db) console.log(readCrushSessions(db).length, "sessions");
 * ```
 */
export function findCrushDb(
  victoriaHome: string = process.env.VICTORIA_HOME ?? join(homedir(), "Victoria"),
): string | undefined {
  const xdg = process.env.XDG_DATA_HOME ?? join(homedir(), ".local", "share");
  const candidates = [
    join(victoriaHome, ".crush", "crush.db"),
    join(process.cwd(), ".crush", "crush.db"),
    join(xdg, "crush", "crush.db"),
  ];
  return candidates.find((p) => existsSync(p));
}

interface SqliteModule {
  DatabaseSync: new (
    path: string,
    options?: { readOnly?: boolean },
  ) => {
    prepare(sql: string): { all(...args: unknown[]): Array<Record<string, unknown>> };
    close(): void;
  };
}

/**
 * Reads Crush sessions (newest first, top-level only) with their messages, as the fleet's
 * `POST /logs` carries them (`parts` becomes `content`). Read-only; an empty list when the
 * file has no such tables.
 *
 * @example
 * ```ts
 * const [latest] = readCrushSessions("/home/me/Victoria/.crush/crush.db");
 * if (latest) await client.uploadLogs(taskId, latest);
 * ```
 */
export function readCrushSessions(dbPath: string): SessionLog[] {
  // node:sqlite is loaded lazily: only the reporter needs it.
  const mod = (process as unknown as { getBuiltinModule(id: string): unknown }).getBuiltinModule(
    "node:sqlite",
  ) as SqliteModule | undefined;
  if (!mod) throw new Error("node:sqlite is not available in this Node.js (22.5+ needed)");
  const { DatabaseSync } = mod;
  const db = new DatabaseSync(dbPath, { readOnly: true });
  try {
    let rows: Array<Record<string, unknown>>;
    const cols = "id, title, prompt_tokens, completion_tokens, cost, created_at, updated_at";
    try {
      rows = db
        .prepare(
          `SELECT ${cols} FROM sessions WHERE parent_session_id IS NULL ORDER BY updated_at DESC`,
        )
        .all();
    } catch {
      try {
        rows = db.prepare(`SELECT ${cols} FROM sessions ORDER BY updated_at DESC`).all();
      } catch {
        return [];
      }
    }
    const messages = db.prepare(
      "SELECT id, role, parts, model, provider, created_at, finished_at FROM messages WHERE session_id = ? ORDER BY created_at ASC",
    );
    return rows.map((r) => ({
      id: String(r.id),
      title: (r.title as string | null) ?? null,
      prompt_tokens: (r.prompt_tokens as number | null) ?? null,
      completion_tokens: (r.completion_tokens as number | null) ?? null,
      cost: (r.cost as number | null) ?? null,
      created_at: (r.created_at as number | null) ?? null,
      updated_at: (r.updated_at as number | null) ?? null,
      messages: messages.all(r.id).map((m) => ({
        id: String(m.id),
        role: String(m.role),
        content: String(m.parts ?? ""),
        model: (m.model as string | null) ?? null,
        provider: (m.provider as string | null) ?? null,
        created_at: (m.created_at as number | null) ?? null,
        finished_at: (m.finished_at as number | null) ?? null,
      })),
    }));
  } finally {
    db.close();
  }
}
