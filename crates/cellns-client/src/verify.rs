//! Verifying tokens as a cell does: [`Verifier`].
//!
//! A cell builds one `Verifier` for its own hostname, from the issuer's
//! JWKS URL (fetched, cached, refetched when a token names an unknown key,
//! at most once per [`REFETCH_FLOOR`]) or from a fixed [`PublicKeySet`].
//!
//! The checks run in this order; the first that fails decides the error,
//! each with its own [`VerifyError`] variant and stable code (docs/tokens.md
//! has the same list, which SDKs in other languages follow):
//!
//! 1. `too_large`: longer than [`MAX_TOKEN_LEN`] bytes;
//! 2. the structure and the header, before any key is looked at (which
//!    defeats algorithm confusion): three base64url parts, the header a
//!    JSON object in which no object has a member name twice (`malformed`); `alg` is `none` in any case (`alg_none`);
//!    `alg` is not exactly `EdDSA` or `ES256` (`disallowed_algorithm`); a
//!    `crit` member, or no string `kid` (`malformed`);
//! 3. `kid` names a published key (`unknown_kid`) of the header's algorithm
//!    (`disallowed_algorithm`);
//! 4. the signature: not base64url (`malformed`), the wrong length or not
//!    valid (`bad_signature`); an ES256 signature whose S is above n/2 (the
//!    second valid encoding of the same token, see RFC 6979 and BIP 62),
//!    `non_canonical_signature`;
//! 5. the payload: base64url JSON with the claims of [`Claims`], no member
//!    name twice in any object, a `cell` not empty in canonical form
//!    (`malformed`);
//! 6. times, with the leeway: `exp` (`expired`), `nbf` (`not_yet_valid`),
//!    `iat` (`issued_in_future`), then `exp - iat` against the maximum
//!    lifetime (`lifetime_too_long`);
//! 7. `iss` (`wrong_issuer`), `aud` (`wrong_audience`), and last that `cell`
//!    names this cell (`wrong_cell`).
//!
//! `jwks_unavailable` is the error of fetching or parsing the key set.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Deserializer, Serialize};

use crate::claims::{MAX_TOKEN_LEN, json_object, numeric_date};
use crate::host::canonical_host;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds, unless
/// [`Expectations::with_leeway_secs`] says otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// The largest leeway [`Expectations`] accepts: five minutes. More would
/// keep expired tokens alive; clocks that far apart need fixing, not
/// tolerating.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// The longest token lifetime (`exp - iat`) accepted unless
/// [`Expectations::with_max_lifetime_secs`] says otherwise: one day.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 86_400;
/// Shortest interval between two JWKS fetches triggered by unknown key ids,
/// so a flood of tokens with made-up `kid`s cannot hammer the issuer.
pub const REFETCH_FLOOR: Duration = Duration::from_secs(10);
/// Age after which a cached JWKS is refreshed on the next verification
/// (a failed refresh keeps the cached keys).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// The claims of a verified cellns token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer (`--issuer`).
    pub iss: String,
    /// Audience (`--audience`).
    pub aud: String,
    /// Subject: who the token was issued for.
    pub sub: String,
    /// Issued at, Unix seconds (at most [`crate::MAX_NUMERIC_DATE`]).
    #[serde(deserialize_with = "numeric_date")]
    pub iat: u64,
    /// Not before, Unix seconds (= `iat`; at most [`crate::MAX_NUMERIC_DATE`]).
    #[serde(deserialize_with = "numeric_date")]
    pub nbf: u64,
    /// Expiry, Unix seconds (at most [`crate::MAX_NUMERIC_DATE`]).
    #[serde(deserialize_with = "numeric_date")]
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
    /// Any other members of the payload, as they are (cellns issues none;
    /// another issuer's additions reach the cell unchanged, as in the
    /// verifiers of the other SDKs, which return the whole payload).
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// Why a token was rejected. Each check has its own variant so a client can
/// react: `WrongCell` means "refresh the token and reconnect", the others
/// mean "get a new token" or "this token is forged". The module docs give
/// the order of the checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Longer than [`MAX_TOKEN_LEN`] bytes: refused before it is parsed.
    #[error("token of {len} bytes is longer than the {max} bytes accepted")]
    TooLarge {
        /// The token's length.
        len: usize,
        /// The largest accepted.
        max: usize,
    },
    /// Not a JWS compact serialisation, or a header or claim is missing or
    /// of the wrong type, or a member is given twice, or the `cell` claim
    /// is empty (in canonical form).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is `none`: an unsigned token.
    #[error("unsigned token (alg none) refused")]
    AlgNone,
    /// `alg` is not EdDSA or ES256 (e.g. HS256: algorithm confusion), or
    /// does not match the key `kid` names.
    #[error("algorithm {0} is not allowed")]
    DisallowedAlgorithm(String),
    /// No published key has this `kid` (also after a JWKS refetch), or the
    /// key set publishes it more than once.
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// The signature does not match the header and payload.
    #[error("bad signature: the token was tampered with or signed by another key")]
    BadSignature,
    /// A valid ES256 signature with S above n/2: the second encoding of a
    /// signature (anyone can make it from the first), refused so that a
    /// token has exactly one valid form.
    #[error("non-canonical signature (ES256 with high S)")]
    NonCanonicalSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token issued in the future")]
    IssuedInFuture,
    /// `exp - iat` is longer than the maximum lifetime of the
    /// [`Expectations`].
    #[error(
        "token lifetime (exp - iat) of {lifetime_secs} s is longer than the {max_secs} s accepted"
    )]
    LifetimeTooLong {
        /// `exp - iat`, seconds.
        lifetime_secs: u64,
        /// The largest accepted.
        max_secs: u64,
    },
    /// `iss` is not this verifier's issuer.
    #[error("wrong issuer (expected {expected:?})")]
    WrongIssuer {
        /// The issuer this verifier accepts.
        expected: String,
    },
    /// `aud` is not this verifier's audience.
    #[error("wrong audience (expected {expected:?})")]
    WrongAudience {
        /// The audience this verifier accepts.
        expected: String,
    },
    /// The token is for another cell: the tenant moved, or the client
    /// connected to the wrong cell. Refresh the token and reconnect to the
    /// cell it names.
    #[error("token is for cell {got:?}, this is {expected:?}: refresh the token")]
    WrongCell {
        /// This cell's hostname.
        expected: String,
        /// The token's `cell` claim.
        got: String,
    },
    /// The JWKS could not be fetched or parsed.
    #[error("JWKS: {0}")]
    Jwks(String),
}

impl VerifyError {
    /// A stable machine-readable name of the failure (docs/tokens.md).
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Malformed(_) => "malformed",
            Self::AlgNone => "alg_none",
            Self::DisallowedAlgorithm(_) => "disallowed_algorithm",
            Self::UnknownKid(_) => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::NonCanonicalSignature => "non_canonical_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::IssuedInFuture => "issued_in_future",
            Self::LifetimeTooLong { .. } => "lifetime_too_long",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::WrongAudience { .. } => "wrong_audience",
            Self::WrongCell { .. } => "wrong_cell",
            Self::Jwks(_) => "jwks_unavailable",
        }
    }
}

/// Why [`Expectations`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpectationsError {
    /// The issuer, audience or cell is empty: a verifier expecting an empty
    /// value would accept tokens that carry one.
    #[error("the expected {0} is empty")]
    Empty(&'static str),
    /// The leeway is above [`MAX_LEEWAY_SECS`].
    #[error("leeway of {secs} s is above the {max} s allowed")]
    LeewayTooLarge {
        /// What was asked.
        secs: u64,
        /// The largest allowed.
        max: u64,
    },
    /// A maximum lifetime of 0 would refuse every token.
    #[error("the maximum token lifetime must be at least 1 s")]
    ZeroMaxLifetime,
}

/// What a cell expects of a token. Built only through checked
/// constructors: nothing empty, a bounded leeway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectations {
    issuer: String,
    audience: String,
    /// Canonical ([`canonical_host`]).
    cell: String,
    leeway_secs: u64,
    max_lifetime_secs: u64,
}

impl Expectations {
    /// Expectations of `iss`, `aud` and this cell's hostname (compared in
    /// canonical form: case-insensitive, a trailing dot ignored), with the
    /// default leeway ([`DEFAULT_LEEWAY_SECS`]) and maximum lifetime
    /// ([`DEFAULT_MAX_LIFETIME_SECS`]). Fails if any of the three is empty.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        cell: impl AsRef<str>,
    ) -> Result<Self, ExpectationsError> {
        let (issuer, audience) = (issuer.into(), audience.into());
        let cell = canonical_host(cell.as_ref());
        for (what, value) in [
            ("issuer", &issuer),
            ("audience", &audience),
            ("cell", &cell),
        ] {
            if value.is_empty() {
                return Err(ExpectationsError::Empty(what));
            }
        }
        Ok(Self {
            issuer,
            audience,
            cell,
            leeway_secs: DEFAULT_LEEWAY_SECS,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
        })
    }

    /// The same with a leeway of `secs` on `exp`, `nbf` and `iat` (at most
    /// [`MAX_LEEWAY_SECS`]).
    pub fn with_leeway_secs(mut self, secs: u64) -> Result<Self, ExpectationsError> {
        if secs > MAX_LEEWAY_SECS {
            return Err(ExpectationsError::LeewayTooLarge {
                secs,
                max: MAX_LEEWAY_SECS,
            });
        }
        self.leeway_secs = secs;
        Ok(self)
    }

    /// The same with a maximum token lifetime (`exp - iat`) of `secs`.
    pub fn with_max_lifetime_secs(mut self, secs: u64) -> Result<Self, ExpectationsError> {
        if secs == 0 {
            return Err(ExpectationsError::ZeroMaxLifetime);
        }
        self.max_lifetime_secs = secs;
        Ok(self)
    }

    /// The required `iss`.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The required `aud`.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// This cell's hostname, canonical.
    pub fn cell(&self) -> &str {
        &self.cell
    }

    /// The leeway on `exp`, `nbf` and `iat`, seconds.
    pub fn leeway_secs(&self) -> u64 {
        self.leeway_secs
    }

    /// The longest `exp - iat` accepted, seconds.
    pub fn max_lifetime_secs(&self) -> u64 {
        self.max_lifetime_secs
    }
}

/// The signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    EdDSA,
    ES256,
}

impl Alg {
    /// Exact match, as RFC 7515 requires.
    fn from_jose(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }
}

/// A published key, ready to verify.
#[derive(Clone)]
enum PublicKey {
    Ed25519(ed25519_dalek::VerifyingKey),
    P256(p256::ecdsa::VerifyingKey),
}

impl PublicKey {
    fn alg(&self) -> Alg {
        match self {
            Self::Ed25519(_) => Alg::EdDSA,
            Self::P256(_) => Alg::ES256,
        }
    }
}

/// Public keys by `kid`.
#[derive(Clone, Default)]
pub struct PublicKeySet {
    keys: HashMap<String, PublicKey>,
}

impl std::fmt::Debug for PublicKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.keys.keys()).finish()
    }
}

impl PublicKeySet {
    /// Parses a JWKS document (RFC 7517): a JSON object with a `keys` array.
    ///
    /// Entries cellns cannot use are skipped, as RFC 7517 §5 asks: not an
    /// object; no string `kid`; `kty`/`crv` (strings) other than
    /// `OKP`/`Ed25519` or `EC`/`P-256`; a `use` other than absent, `null` or
    /// `"sig"`; an `alg` other than absent, `null` or the curve's algorithm
    /// (a `use` or `alg` that is not a string is "other" too).
    ///
    /// A usable-looking key with bad material (`x` or `y` missing, not
    /// strict base64url of 32 bytes, a P-256 point not on the curve or with
    /// a coordinate not below p, an Ed25519 key that is not the RFC 8032
    /// encoding of a point or is of small order) is skipped too, and
    /// logged: the issuer publishes something broken, but one broken key
    /// must not take the others down (issue 15). A `kid` that appears on
    /// more than one entry (usable or not) is ambiguous: every entry with
    /// it is dropped (and logged), so tokens naming it get `unknown_kid`.
    /// Only a document that is not a JSON object with a `keys` array (or
    /// is larger than 1 MiB) is an error. Every SDK reads a key set this
    /// way (sdk/vectors/jwks.json).
    pub fn from_jwks(json: &[u8]) -> Result<Self, VerifyError> {
        let bad = |m: String| VerifyError::Jwks(m);
        if json.len() > MAX_JWKS_BYTES {
            return Err(bad(format!(
                "document of {} bytes, more than the {MAX_JWKS_BYTES} accepted",
                json.len()
            )));
        }
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| bad(format!("not JSON: {e}")))?;
        let list = doc
            .as_object()
            .and_then(|d| d.get("keys"))
            .and_then(|k| k.as_array())
            .ok_or_else(|| bad("not an object with a \"keys\" array".into()))?;
        fn kid_of(k: &serde_json::Value) -> Option<&str> {
            k.get("kid").and_then(|v| v.as_str())
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for kid in list.iter().filter_map(kid_of) {
            *seen.entry(kid).or_default() += 1;
        }
        let mut keys = HashMap::new();
        for k in list {
            let s = |name: &str| k.get(name).and_then(|v| v.as_str());
            // Absent or null, or exactly `want` (a string).
            let absent_or = |name: &str, want: &str| {
                k.get(name)
                    .is_none_or(|v| v.is_null() || v.as_str() == Some(want))
            };
            let (Some(kid), Some(kty), Some(crv)) = (kid_of(k), s("kty"), s("crv")) else {
                continue;
            };
            let alg = match (kty, crv) {
                ("OKP", "Ed25519") => Alg::EdDSA,
                ("EC", "P-256") => Alg::ES256,
                _ => continue,
            };
            if !absent_or("use", "sig") || !absent_or("alg", alg.as_str()) {
                continue;
            }
            // Dropped whatever it holds (logged below, once per kid).
            if seen.get(kid).is_some_and(|n| *n > 1) {
                continue;
            }
            let key = match alg {
                Alg::EdDSA => s("x").and_then(ed25519_public),
                Alg::ES256 => s("x").zip(s("y")).and_then(|(x, y)| p256_public(x, y)),
            };
            let Some(key) = key else {
                let want = match alg {
                    Alg::EdDSA => {
                        "x strict base64url of 32 bytes encoding a point not of small order"
                    }
                    Alg::ES256 => "x and y strict base64url of 32 bytes, a point of the curve",
                };
                tracing::warn!(
                    kid,
                    crv,
                    "JWKS: key skipped, not a valid public key ({want})"
                );
                continue;
            };
            keys.insert(kid.to_owned(), key);
        }
        for (kid, n) in seen {
            if n > 1 {
                tracing::warn!(
                    kid,
                    copies = n,
                    "JWKS: key id published more than once; ambiguous, every copy dropped"
                );
            }
        }
        Ok(Self { keys })
    }

    /// The algorithm (`EdDSA` or `ES256`) of the key `kid`, if the set has it.
    pub fn algorithm(&self, kid: &str) -> Option<&'static str> {
        self.keys.get(kid).map(|k| k.alg().as_str())
    }

    /// The key ids in the set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies `token` against these keys and `expect` (see the module
    /// docs), at the current time.
    pub fn verify(&self, token: &str, expect: &Expectations) -> Result<Claims, VerifyError> {
        self.verify_at(token, expect, unix_now())
    }

    /// [`PublicKeySet::verify`] at `now_unix`, Unix seconds, instead of the
    /// system clock: for tests (a cell's, or the shared SDK vectors), and
    /// for checking a token as of a recorded time.
    pub fn verify_at(
        &self,
        token: &str,
        expect: &Expectations,
        now_unix: u64,
    ) -> Result<Claims, VerifyError> {
        let parsed = parse(token)?;
        let key = self
            .keys
            .get(&parsed.kid)
            .ok_or_else(|| VerifyError::UnknownKid(parsed.kid.clone()))?;
        check(&parsed, key, expect, now_unix)
    }
}

/// The current time, Unix seconds (0 if the clock is before 1970).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Decodes a base64url Ed25519 public key, checking it is the canonical
/// encoding of a curve point (RFC 8032 §5.1.3: dalek would also read a y
/// of p or more, reduced, which the other SDKs refuse) that is not of
/// small order (a weak key would let forged signatures verify).
fn ed25519_public(x: &str) -> Option<PublicKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).ok()?.try_into().ok()?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
    let canonical = key.to_edwards().compress().to_bytes() == bytes;
    (canonical && !key.is_weak()).then_some(PublicKey::Ed25519(key))
}

/// Decodes base64url P-256 coordinates, checking they are a curve point.
fn p256_public(x: &str, y: &str) -> Option<PublicKey> {
    let xb = URL_SAFE_NO_PAD.decode(x).ok()?;
    let yb = URL_SAFE_NO_PAD.decode(y).ok()?;
    if xb.len() != 32 || yb.len() != 32 {
        return None;
    }
    let mut sec1 = Vec::with_capacity(65);
    sec1.push(4u8);
    sec1.extend_from_slice(&xb);
    sec1.extend_from_slice(&yb);
    p256::ecdsa::VerifyingKey::from_sec1_bytes(&sec1)
        .ok()
        .map(PublicKey::P256)
}

/// A token whose size, structure and header passed (checks 1 and 2).
struct Parsed<'a> {
    alg: Alg,
    kid: String,
    /// `header.payload`, what the signature covers.
    signing_input: &'a str,
    payload: &'a str,
    signature: &'a str,
}

/// The header members the verifier reads ([`json_object`] has already
/// refused a member given twice: JSON parsers disagree on which copy wins,
/// so an ambiguous header is malformed).
#[derive(Deserialize)]
struct RawHeader {
    #[serde(default, deserialize_with = "present")]
    alg: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    kid: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "present")]
    crit: Option<serde_json::Value>,
}

/// `Some` for a member that is present, even as `null`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Checks the token's size, shape and its header's `alg`, `crit` and `kid`
/// before any key is chosen.
fn parse(token: &str) -> Result<Parsed<'_>, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::TooLarge {
            len: token.len(),
            max: MAX_TOKEN_LEN,
        });
    }
    let malformed = |m: &str| VerifyError::Malformed(m.to_owned());
    let mut parts = token.split('.');
    let (Some(h), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("not three base64url parts separated by dots"));
    };
    let raw = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| malformed("header is not base64url"))?;
    let header: RawHeader = json_object(&raw)
        .map_err(|e| VerifyError::Malformed(format!("header is not a JSON object: {e}")))?;
    let alg = header
        .alg
        .as_ref()
        .and_then(|a| a.as_str())
        .ok_or_else(|| malformed("header has no alg"))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(VerifyError::AlgNone);
    }
    let alg =
        Alg::from_jose(alg).ok_or_else(|| VerifyError::DisallowedAlgorithm(alg.to_owned()))?;
    // RFC 7515 §4.1.11: critical extensions we do not understand must be refused.
    if header.crit.is_some() {
        return Err(malformed(
            "header has critical extensions (crit), none are supported",
        ));
    }
    let kid = header
        .kid
        .as_ref()
        .and_then(|k| k.as_str())
        .ok_or_else(|| malformed("header has no kid"))?;
    Ok(Parsed {
        alg,
        kid: kid.to_owned(),
        signing_input: &token[..h.len() + 1 + payload.len()],
        payload,
        signature,
    })
}

/// Checks 3 (the key's algorithm) to 7: signature, payload, times, then
/// issuer, audience and cell.
fn check(
    t: &Parsed<'_>,
    key: &PublicKey,
    expect: &Expectations,
    now: u64,
) -> Result<Claims, VerifyError> {
    if key.alg() != t.alg {
        return Err(VerifyError::DisallowedAlgorithm(format!(
            "{} (key {:?} is a {} key)",
            t.alg.as_str(),
            t.kid,
            key.alg().as_str()
        )));
    }
    check_signature(t, key)?;

    let json = URL_SAFE_NO_PAD
        .decode(t.payload)
        .map_err(|_| VerifyError::Malformed("payload is not base64url".into()))?;
    let claims: Claims = json_object(&json)
        .map_err(|e| VerifyError::Malformed(format!("payload is not the claims object: {e}")))?;
    let cell = canonical_host(&claims.cell);
    if cell.is_empty() {
        return Err(VerifyError::Malformed("the cell claim is empty".into()));
    }

    let leeway = expect.leeway_secs;
    // Inclusive, as in every SDK (sdk/vectors): `exp + leeway` itself is
    // the last second the token is accepted.
    if now > claims.exp.saturating_add(leeway) {
        return Err(VerifyError::Expired);
    }
    if claims.nbf > now.saturating_add(leeway) {
        return Err(VerifyError::NotYetValid);
    }
    if claims.iat > now.saturating_add(leeway) {
        return Err(VerifyError::IssuedInFuture);
    }
    let lifetime_secs = claims.exp.saturating_sub(claims.iat);
    if lifetime_secs > expect.max_lifetime_secs {
        return Err(VerifyError::LifetimeTooLong {
            lifetime_secs,
            max_secs: expect.max_lifetime_secs,
        });
    }

    if claims.iss != expect.issuer {
        return Err(VerifyError::WrongIssuer {
            expected: expect.issuer.clone(),
        });
    }
    if claims.aud != expect.audience {
        return Err(VerifyError::WrongAudience {
            expected: expect.audience.clone(),
        });
    }
    if cell != expect.cell {
        return Err(VerifyError::WrongCell {
            expected: expect.cell.clone(),
            got: claims.cell,
        });
    }
    Ok(claims)
}

/// Check 4: the signature, and for ES256 that it is the low-S encoding.
fn check_signature(t: &Parsed<'_>, key: &PublicKey) -> Result<(), VerifyError> {
    let sig = URL_SAFE_NO_PAD
        .decode(t.signature)
        .map_err(|_| VerifyError::Malformed("signature is not base64url".into()))?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| VerifyError::BadSignature)?;
    let input = t.signing_input.as_bytes();
    match key {
        PublicKey::Ed25519(k) => {
            let sig = ed25519_dalek::Signature::from_bytes(&sig);
            // Strict: also refuses non-canonical S and small-order R.
            k.verify_strict(input, &sig)
                .map_err(|_| VerifyError::BadSignature)
        }
        PublicKey::P256(k) => {
            use p256::ecdsa::signature::Verifier as _;
            // Refuses r or s of zero or not below n.
            let sig =
                p256::ecdsa::Signature::from_slice(&sig).map_err(|_| VerifyError::BadSignature)?;
            k.verify(input, &sig)
                .map_err(|_| VerifyError::BadSignature)?;
            // ECDSA's (r, s) and (r, n - s) both verify; only the low one
            // is accepted, so a token has one valid encoding.
            match sig.normalize_s() {
                Some(_) => Err(VerifyError::NonCanonicalSignature),
                None => Ok(()),
            }
        }
    }
}

/// How a [`Verifier`] caches a remote JWKS.
#[derive(Debug, Clone, Copy)]
pub struct JwksOptions {
    /// Shortest interval between refetches caused by unknown key ids.
    pub refetch_floor: Duration,
    /// Age after which the cached set is refreshed.
    pub max_age: Duration,
    /// Timeout of one fetch.
    pub timeout: Duration,
}

impl Default for JwksOptions {
    fn default() -> Self {
        Self {
            refetch_floor: REFETCH_FLOOR,
            max_age: JWKS_MAX_AGE,
            timeout: Duration::from_secs(5),
        }
    }
}

/// Keys fetched from a JWKS URL.
struct Remote {
    url: String,
    client: reqwest::Client,
    opts: JwksOptions,
    set: ArcSwap<PublicKeySet>,
    /// When the set was last fetched; the lock also serialises fetches.
    fetched: tokio::sync::Mutex<Instant>,
}

impl Remote {
    async fn fetch(&self) -> Result<PublicKeySet, VerifyError> {
        let err = |e: reqwest::Error| VerifyError::Jwks(format!("{}: {e}", self.url));
        let too_large = || VerifyError::Jwks(format!("{}: document too large", self.url));
        let mut resp = self
            .client
            .get(&self.url)
            .send()
            .await
            .map_err(err)?
            .error_for_status()
            .map_err(err)?;
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err(too_large());
        }
        // Read by chunks, so a server that lies about (or omits) the
        // length cannot make us buffer more than the cap.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(err)? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        PublicKeySet::from_jwks(&body)
    }

    /// Refetches if the last fetch is older than `min_age`; a failure keeps
    /// the cached set (a JWKS outage must not stop cells verifying).
    async fn refresh(&self, min_age: Duration) {
        let mut fetched = self.fetched.lock().await;
        if fetched.elapsed() < min_age {
            return;
        }
        *fetched = Instant::now();
        match self.fetch().await {
            Ok(set) => self.set.store(Arc::new(set)),
            Err(e) => tracing::warn!(error = %e, "JWKS refresh failed; keeping the cached keys"),
        }
    }
}

enum Keys {
    Fixed(PublicKeySet),
    Remote(Remote),
}

/// Verifies tokens for one cell. See the module docs for what is checked.
pub struct Verifier {
    expect: Expectations,
    keys: Keys,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let source = match &self.keys {
            Keys::Fixed(_) => "fixed key set",
            Keys::Remote(r) => r.url.as_str(),
        };
        f.debug_struct("Verifier")
            .field("expect", &self.expect)
            .field("keys", &source)
            .finish()
    }
}

impl Verifier {
    /// A verifier over a fixed key set.
    pub fn from_key_set(keys: PublicKeySet, expect: Expectations) -> Self {
        Self {
            expect,
            keys: Keys::Fixed(keys),
        }
    }

    /// A verifier that fetches the keys from `url` now (failing if it
    /// cannot), then caches them: refreshed after [`JWKS_MAX_AGE`], and
    /// refetched when a token names an unknown `kid`, at most once per
    /// [`REFETCH_FLOOR`].
    pub async fn from_jwks_url(url: &str, expect: Expectations) -> Result<Self, VerifyError> {
        Self::from_jwks_url_with(url, expect, JwksOptions::default()).await
    }

    /// As [`Verifier::from_jwks_url`], with explicit cache settings.
    pub async fn from_jwks_url_with(
        url: &str,
        expect: Expectations,
        opts: JwksOptions,
    ) -> Result<Self, VerifyError> {
        let client = reqwest::Client::builder()
            .timeout(opts.timeout)
            .build()
            .map_err(|e| VerifyError::Jwks(e.to_string()))?;
        let remote = Remote {
            url: url.to_owned(),
            client,
            opts,
            set: ArcSwap::from_pointee(PublicKeySet::default()),
            fetched: tokio::sync::Mutex::new(Instant::now()),
        };
        remote.set.store(Arc::new(remote.fetch().await?));
        Ok(Self {
            expect,
            keys: Keys::Remote(remote),
        })
    }

    /// What this verifier expects.
    pub fn expectations(&self) -> &Expectations {
        &self.expect
    }

    /// Verifies `token`; the claims when it is valid for this cell.
    pub async fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        match &self.keys {
            Keys::Fixed(set) => set.verify(token, &self.expect),
            Keys::Remote(remote) => {
                let parsed = parse(token)?;
                let max_age = remote.opts.max_age;
                if remote
                    .fetched
                    .try_lock()
                    .is_ok_and(|t| t.elapsed() >= max_age)
                {
                    remote.refresh(max_age).await;
                }
                let mut set = remote.set.load_full();
                if !set.keys.contains_key(&parsed.kid) {
                    remote.refresh(remote.opts.refetch_floor).await;
                    set = remote.set.load_full();
                }
                let key = set
                    .keys
                    .get(&parsed.kid)
                    .ok_or_else(|| VerifyError::UnknownKid(parsed.kid.clone()))?;
                check(&parsed, key, &self.expect, unix_now())
            }
        }
    }
}

#[cfg(test)]
mod tests;
