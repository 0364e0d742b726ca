export { Notifications } from "./notifications.js";
export {
  type PartitionChange,
  type PartitionLeaseOptions,
  PartitionLeases,
  partitionOf,
  shareOf,
} from "./partitions.js";
export type { ProgressSource } from "./progress.js";
export { POSTGRES_SCHEMA_VERSION } from "./schema.js";
export { PostgresStore, type PostgresStoreOptions } from "./store.js";
