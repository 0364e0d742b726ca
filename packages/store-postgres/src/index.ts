export { POSTGRES_SCHEMA_VERSION } from "./schema.js";
export { PostgresStore, type PostgresStoreOptions } from "./store.js";
