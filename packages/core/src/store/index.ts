/**
 * Building blocks for writing a `Store` (`@flotilla/core/store`): the checks every store
 * makes at its boundary and the record transformations every store must agree on, so a new
 * store (a database server shared by several instances, say) behaves as the built-in ones.
 * Run `@flotilla/testing/vitest`'s `describeStoreConformance` against it.
 */
export {
  attemptFromRow,
  attemptOf,
  attemptRowValues,
  checkClaim,
  checkEventQuery,
  checkKv,
  checkPaging,
  checkRecord,
  checkRetention,
  claimable,
  claimedRecord,
  finishedAt,
  isTerminal,
  jsonCopy,
  partitionFilter,
  queryStatuses,
  selectForRetention,
  toJson,
  usageFromRow,
} from "./common.js";
