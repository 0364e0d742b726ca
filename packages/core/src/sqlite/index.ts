export { SqliteStore, type SqliteStoreOptions } from "../store/sqlite.js";
export { APPLICATION_ID, SCHEMA_VERSION } from "../store/sqlite-schema.js";
