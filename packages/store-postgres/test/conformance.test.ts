import { describeStoreConformance } from "@flotilla/testing/vitest";
import { PostgresStore } from "../src/index.js";
import { dropSchema, freshSchema, pgUrl } from "./pg-env.js";

const url = pgUrl();

if (url) {
  describeStoreConformance(
    "PostgresStore",
    ({ clock }) => new PostgresStore({ connectionString: url, schema: freshSchema(), clock }),
    {
      reopen: (closed, { clock }) =>
        new PostgresStore({
          connectionString: url,
          schema: (closed as PostgresStore).schema,
          clock,
        }),
      cleanup: (store) => dropSchema(url, (store as PostgresStore).schema),
    },
  );
}
