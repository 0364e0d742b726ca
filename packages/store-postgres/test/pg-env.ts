import { randomBytes } from "node:crypto";
import pg from "pg";
import { describe, it } from "vitest";

/**
 * The test database (`FLOTILLA_TEST_PG_URL`, written by `bash scripts/test-env.sh up`, which
 * `npm test` runs). Without it, a failing test says how to get one: these tests never skip.
 */
export function pgUrl(): string | undefined {
  const url = process.env.FLOTILLA_TEST_PG_URL;
  if (url) return url;
  describe("PostgreSQL", () => {
    it("is configured", () => {
      throw new Error(
        "FLOTILLA_TEST_PG_URL is not set: these tests need a real PostgreSQL server (run `bash scripts/test-env.sh up`, or `npm test`, which does it)",
      );
    });
  });
  return undefined;
}

/** A schema name no other test uses. */
export function freshSchema(prefix = "t"): string {
  return `${prefix}_${process.pid}_${randomBytes(5).toString("hex")}`;
}

/** Runs SQL on the test database with a connection of its own. */
export async function sql<R extends pg.QueryResultRow = pg.QueryResultRow>(
  url: string,
  text: string,
  values: unknown[] = [],
): Promise<R[]> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

/** Drops a test schema and everything in it. */
export async function dropSchema(url: string, schema: string): Promise<void> {
  await sql(url, `DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
}
