import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MemoryStore } from "@flotilla/core";
import { SqliteStore } from "@flotilla/core/sqlite";
import { describeStoreConformance } from "../src/vitest/index.js";

describeStoreConformance("MemoryStore", ({ clock }) => new MemoryStore({ clock }));

const dirs = new Map<SqliteStore, string>();
describeStoreConformance(
  "SqliteStore",
  ({ clock }) => {
    const dir = mkdtempSync(join(tmpdir(), "flotilla-store-"));
    const store = new SqliteStore({ path: join(dir, "flotilla.db"), clock });
    dirs.set(store, dir);
    return store;
  },
  {
    reopen: (closed, { clock }) => {
      const previous = closed as SqliteStore;
      const store = new SqliteStore({ path: previous.path, clock });
      dirs.set(store, dirs.get(previous)!);
      dirs.delete(previous);
      return store;
    },
    cleanup: (store) => {
      const dir = dirs.get(store as SqliteStore);
      dirs.delete(store as SqliteStore);
      if (dir) rmSync(dir, { recursive: true, force: true });
    },
  },
);

describeStoreConformance(
  "SqliteStore in memory",
  ({ clock }) => new SqliteStore({ path: ":memory:", clock }),
);
