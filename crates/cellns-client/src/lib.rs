//! cellns-client: what client SDKs and cells link to work with cellns,
//! without the server.
//!
//! The client side (docs/sdk.md):
//! - [`read_claims`]: a token's routing claims, read **without verifying**
//!   it (SDKs hold no keys; the cell verifies);
//! - [`WrongCell`]: the signal a cell sends when a token names another cell
//!   or its tenant moved away (HTTP 421 with the `wrong_cell` code, or gRPC
//!   status 9 with the `cellns-wrong-cell` trailer; docs/sdk.md);
//! - [`Refresher`]: the refresh rule as a state machine that says when to
//!   fetch a token, when to wait and which token to send, with a bounded
//!   exponential [`Backoff`] whose jitter can be seeded ([`Refresher::with_seed`])
//!   so SDKs in other languages can check themselves against the same
//!   sequences ([`SplitMix64`]);
//! - [`Resolver`]: A and AAAA lookups of a tenant or cell hostname from one
//!   DNS server.
//!
//! The cell side (docs/tokens.md):
//! - [`Verifier`]: verifies a cellns token for one cell, with keys from a
//!   JWKS URL or a fixed [`PublicKeySet`]; every failed check has its own
//!   [`VerifyError`] variant and stable [`VerifyError::code`].
//!
//! And [`canonical_host`], the one way hostnames are compared everywhere
//! (the issuer's `cell` claim, the verifier, the client): ASCII lowercase,
//! one trailing dot removed.
//!
//! Nothing here does I/O except [`Resolver`] and a [`Verifier`] built from
//! a JWKS URL. [`Refresher`] takes the current time as an argument, so its
//! tests (and an SDK's) drive it with a fake clock.

#![warn(missing_docs, unreachable_pub)]
// Stronger than denying undocumented unsafe blocks: there are none at all.
#![forbid(unsafe_code)]

mod claims;
mod dns;
mod host;
mod refresh;
mod verify;
mod wrong_cell;

pub use claims::{
    ClaimsError, MAX_NUMERIC_DATE, MAX_TOKEN_LEN, MAX_TOKEN_LIFETIME_SECS, TokenClaims, read_claims,
};
pub use dns::{Lookup, ResolveError, Resolver};
pub use host::canonical_host;
pub use refresh::{Action, Backoff, CurrentToken, Refresher, SplitMix64, refresh_lead};
pub use verify::{
    Claims, DEFAULT_LEEWAY_SECS, DEFAULT_MAX_LIFETIME_SECS, Expectations, ExpectationsError,
    JWKS_MAX_AGE, JwksOptions, MAX_LEEWAY_SECS, PublicKeySet, REFETCH_FLOOR, Verifier, VerifyError,
};
pub use wrong_cell::{
    GRPC_WRONG_CELL_STATUS, GRPC_WRONG_CELL_TRAILER, MAX_SIGNAL_BODY, WRONG_CELL_CODE,
    WRONG_CELL_STATUS, WrongCell,
};
