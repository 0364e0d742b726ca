import { statSync } from "node:fs";
import { dirname } from "node:path";
import type { DatabaseSync } from "node:sqlite";
import type { Clock } from "../clock.js";
import { FlotillaError } from "../errors.js";
import type { Logger } from "../logger.js";
import { APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION } from "./sqlite-schema.js";

/** How `prepareFile` sets up a database file. @internal */
export interface FileOptions {
  path: string;
  verify: boolean;
  exclusive: boolean;
  synchronous: "full" | "normal";
  clock: Clock;
  logger: Logger;
}

/** A SQLite failure as a `STORE_ERROR` naming the file, the problem and its likely cause. */
export function sqliteError(path: string, problem: string, err: unknown): FlotillaError {
  if (err instanceof FlotillaError) return err;
  const e = err as { errcode?: number; errstr?: string; message?: string; code?: string };
  const primary = typeof e?.errcode === "number" ? e.errcode & 0xff : undefined;
  const why =
    primary === 26
      ? "not a SQLite database, or the file is corrupt"
      : primary === 11
        ? "the database file is corrupt"
        : primary === 8
          ? "the database is read-only (check file and directory permissions)"
          : primary === 14
            ? "unable to open the file (check the path exists and is writable)"
            : primary === 5 || primary === 6
              ? "the database is locked by another process or connection"
              : primary === 13
                ? "the disk is full"
                : primary === 10
                  ? "an I/O error"
                  : undefined;
  const detail = e?.message ?? String(err);
  return new FlotillaError(
    "STORE_ERROR",
    `${path}: ${problem}: ${why ? `${why} (${detail})` : detail}`,
    { cause: err, details: { path: path, sqliteCode: e?.errcode } },
  );
}

/** Clear messages (STORE_ERROR) for paths SQLite would only call "unable to open database file". */
export function checkPath(path: string): void {
  if (path === ":memory:") return;
  let stat: ReturnType<typeof statSync>;
  try {
    stat = statSync(path, { throwIfNoEntry: false });
  } catch (err) {
    throw sqliteError(path, "cannot reach the file", err);
  }
  if (stat?.isDirectory()) {
    throw new FlotillaError("STORE_ERROR", `${path}: is a directory, not a database file`, {
      details: { path: path },
    });
  }
  if (stat && !stat.isFile()) {
    throw new FlotillaError("STORE_ERROR", `${path}: is not a regular file`, {
      details: { path: path },
    });
  }
  if (!stat) {
    const dir = dirname(path);
    let dirStat: ReturnType<typeof statSync>;
    try {
      dirStat = statSync(dir, { throwIfNoEntry: false });
    } catch (err) {
      throw sqliteError(path, `cannot reach the directory ${dir}`, err);
    }
    if (!dirStat) {
      throw new FlotillaError("STORE_ERROR", `${path}: the directory ${dir} does not exist`, {
        details: { path: path },
      });
    }
    if (!dirStat.isDirectory()) {
      throw new FlotillaError("STORE_ERROR", `${path}: ${dir} is not a directory`, {
        details: { path: path },
      });
    }
  }
}

/**
 * Checks that the file is ours (or new), intact and not newer than this code (reading only
 * until then), then sets WAL, locking and synchronous mode and runs the migrations. @internal
 */
export function prepareFile(db: DatabaseSync, o: FileOptions): void {
  const { path } = o;
  // Only reads until the file is known to be ours: a foreign, corrupt or newer file is
  // left exactly as it was.
  const appId = pragma(db, "application_id");
  const version = pragma(db, "user_version");
  const tables = (
    db
      .prepare(
        "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name",
      )
      .all() as Array<{ name: string }>
  ).map((r) => r.name);
  const fresh = appId === 0 && version === 0 && tables.length === 0;
  if (!fresh && appId !== APPLICATION_ID) {
    const shown = tables.slice(0, 5).join(", ") + (tables.length > 5 ? ", …" : "");
    throw new FlotillaError(
      "STORE_ERROR",
      `${path}: not a Flotilla database (application_id ${appId}, tables: ${shown || "none"}); refusing to use or change it`,
      { details: { path: path, applicationId: appId, tables } },
    );
  }
  if (version > SCHEMA_VERSION) {
    throw new FlotillaError(
      "STORE_ERROR",
      `${path}: schema version ${version} is newer than this version of Flotilla supports (${SCHEMA_VERSION}); upgrade Flotilla to open it`,
      { details: { path: path, schemaVersion: version, supported: SCHEMA_VERSION } },
    );
  }

  if (o.verify && !fresh) {
    const problems = (db.prepare("PRAGMA quick_check(5)").all() as Array<Record<string, unknown>>)
      .map((r) => String(Object.values(r)[0]))
      .filter((m) => m !== "ok");
    if (problems.length > 0) {
      throw new FlotillaError(
        "STORE_ERROR",
        `${path}: the database file is corrupt (${problems.join("; ")}); restore a backup or recover it with the sqlite3 tool's .recover`,
        { details: { path: path, problems } },
      );
    }
  }

  // A new file gives space back as history is deleted (`compact()`); it must be set before
  // the first table exists.
  if (fresh) db.exec("PRAGMA auto_vacuum = INCREMENTAL");
  if (o.exclusive) db.exec("PRAGMA locking_mode = EXCLUSIVE");
  const mode = (db.prepare("PRAGMA journal_mode = WAL").get() as { journal_mode?: string })
    ?.journal_mode;
  if (path !== ":memory:" && mode !== "wal") {
    throw new FlotillaError(
      "STORE_ERROR",
      `${path}: cannot switch to write-ahead logging (journal_mode is ${String(mode)}); is the directory writable?`,
      { details: { path: path } },
    );
  }
  db.exec(`PRAGMA synchronous = ${o.synchronous.toUpperCase()}`);
  db.exec("PRAGMA foreign_keys = OFF");

  db.exec("BEGIN IMMEDIATE");
  try {
    if (fresh) db.exec(`PRAGMA application_id = ${APPLICATION_ID}`);
    for (let v = version; v < SCHEMA_VERSION; v++) {
      o.logger.info({ path: path, from: v, to: v + 1 }, "migrating flotilla database");
      MIGRATIONS[v]!(db);
    }
    if (version !== SCHEMA_VERSION) db.exec(`PRAGMA user_version = ${SCHEMA_VERSION}`);
    // A real write, so a read-only file fails here rather than at the first task.
    db.prepare("INSERT OR REPLACE INTO meta (key, value) VALUES ('opened_at', ?)").run(
      String(o.clock.now()),
    );
    db.exec("COMMIT");
  } catch (err) {
    try {
      db.exec("ROLLBACK");
    } catch {
      // the transaction may already be gone
    }
    throw err;
  }
  o.logger.debug({ path: path, schemaVersion: SCHEMA_VERSION }, "store opened");
}

function pragma(db: DatabaseSync, name: string): number {
  const row = db.prepare(`PRAGMA ${name}`).get() as Record<string, unknown> | undefined;
  return Number(row?.[name] ?? 0);
}
