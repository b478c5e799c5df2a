//! Tokens: JWT issue, signing keys, JWKS.
//!
//! - [`keys`]: signing keys from a key directory (PEM), the newest signs,
//!   all are published; rotation by adding/removing files; `cellns keygen`.
//! - [`issue`]: token request + one map snapshot → a signed JWT naming the
//!   tenant's cell.
//!
//! Tokens are JWS compact serialisations signed with EdDSA (Ed25519,
//! default) or ES256 (always the low-S form), `kid` = RFC 7638 thumbprint of
//! the public key. Their claims are [`cellns_client::Claims`]; cells verify
//! them with [`cellns_client::Verifier`], which lives in the client crate so
//! that cells link none of the server.

pub mod issue;
pub mod keys;

pub use issue::{Issued, Issuer, IssuerConfig, TokenRequest};
pub use keys::{Alg, KeyRing, SigningKey};

#[cfg(test)]
mod tests;
