//! Tokens: JWT issue, signing keys, JWKS, verification.
//!
//! - [`keys`]: signing keys from a key directory (PEM), the newest signs,
//!   all are published; rotation by adding/removing files; `cellns keygen`.
//! - [`issue`]: token request + one map snapshot → a signed JWT naming the
//!   tenant's cell.
//! - [`verify`]: the [`Verifier`] cells use (JWKS URL or fixed keys), with a
//!   distinct error per failed check.
//!
//! Tokens are JWS compact serialisations signed with EdDSA (Ed25519,
//! default) or ES256, `kid` = RFC 7638 thumbprint of the public key. The
//! claims are [`Claims`].

pub mod issue;
pub mod keys;
pub mod verify;

use serde::{Deserialize, Serialize};

pub use issue::{Issued, Issuer, IssuerConfig, TokenRequest};
pub use keys::{Alg, KeyRing, SigningKey};
pub use verify::{Expectations, JwksOptions, PublicKeySet, Verifier, VerifyError};

/// The claims of a cellns token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`--issuer`).
    pub iss: String,
    /// Audience (`--audience`).
    pub aud: String,
    /// Subject: who the token was issued for.
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds (= `iat`).
    pub nbf: u64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Unique token id: 128 random bits, base64url.
    pub jti: String,
    /// The tenant id, lowercase.
    pub tenant: String,
    /// The serving cell's hostname, lowercase, no trailing dot.
    pub cell: String,
    /// The serving cell's id in the map.
    pub cell_id: String,
    /// The serving cell's region.
    pub region: String,
    /// The version of the map the cell was taken from.
    pub map_version: String,
    /// The caller's extra claims, namespaced so they cannot override these.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ext: Option<serde_json::Map<String, serde_json::Value>>,
}
