/**
 * cellns-client: the client side of services routed by cellns, for Node
 * (>= 20) and browsers. The protocol is docs/sdk.md of the cellns repository.
 *
 * - {@link readClaims}: a token's routing claims (`cell`: where to connect), read without verifying it;
 * - {@link WrongCell}: the wrong-cell signal (HTTP 421 + `wrong_cell`; gRPC 9 + `cellns-wrong-cell`);
 * - {@link Refresher}, {@link Backoff}: the refresh rule with bounded, jittered backoff;
 * - {@link createCellFetch}: a `fetch` that follows the tenant's cell.
 *
 * Cells: `cellns-client/verify` (Verifier, jose) and `cellns-client/express`
 * (middleware). Node: `cellns-client/dns`.
 */

export {
  ClaimsError,
  MAX_TOKEN_BYTES,
  MAX_TOKEN_LIFETIME,
  canonicalHost,
  isHostname,
  readClaims,
  type ClaimsErrorKind,
  type TokenClaims,
} from "./claims.js";
export {
  GRPC_WRONG_CELL_STATUS,
  GRPC_WRONG_CELL_TRAILER,
  WRONG_CELL_CODE,
  WRONG_CELL_STATUS,
  WrongCell,
  type Trailers,
} from "./signal.js";
export { Backoff, Refresher, SplitMix64, refreshLeadMs, type Action, type CurrentToken } from "./refresh.js";
export { NoCellAccepts, createCellFetch, type CellFetch, type CellFetchOptions } from "./fetch.js";
