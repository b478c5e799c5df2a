//! Verifying tokens as a cell does: [`Verifier`].
//!
//! A cell builds one `Verifier` for its own hostname, from the issuer's
//! JWKS URL (fetched, cached, refetched when a token names an unknown key,
//! at most once per [`REFETCH_FLOOR`]) or from a fixed [`PublicKeySet`].
//!
//! Checks, in order, each failing with its own [`VerifyError`] variant:
//! the structure; the header's `alg` (only EdDSA and ES256; `none`, HMAC
//! and everything else are refused before any key is looked at, which is
//! what defeats algorithm confusion); `kid` names a published key of that
//! algorithm; the signature; `exp` and `nbf` with a small leeway; `iss`;
//! `aud`; and last that `cell` names this cell. Signature and registered
//! claims are checked by the `jsonwebtoken` crate; the header is screened
//! here first so each failure gets a distinct error.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::Claims;
use super::keys::{Alg, SigningKey};

/// Clock skew tolerated on `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// Shortest interval between two JWKS fetches triggered by unknown key ids,
/// so a flood of tokens with made-up `kid`s cannot hammer the issuer.
pub const REFETCH_FLOOR: Duration = Duration::from_secs(10);
/// Age after which a cached JWKS is refreshed on the next verification
/// (a failed refresh keeps the cached keys).
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(300);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Why a token was rejected. Each check has its own variant so a client can
/// react: `WrongCell` means "refresh the token and reconnect", the others
/// mean "get a new token" or "this token is forged".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyError {
    /// Not a JWS compact serialisation, or a header or claim is missing or
    /// of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg` is `none`: an unsigned token.
    #[error("unsigned token (alg none) refused")]
    AlgNone,
    /// `alg` is not EdDSA or ES256 (e.g. HS256: algorithm confusion), or
    /// does not match the key `kid` names.
    #[error("algorithm {0} is not allowed")]
    DisallowedAlgorithm(String),
    /// No published key has this `kid` (also after a JWKS refetch).
    #[error("unknown key id {0:?}")]
    UnknownKid(String),
    /// The signature does not match the header and payload.
    #[error("bad signature: the token was tampered with or signed by another key")]
    BadSignature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` is not this verifier's audience.
    #[error("wrong audience (expected {expected:?})")]
    WrongAudience {
        /// The audience this verifier accepts.
        expected: String,
    },
    /// `iss` is not this verifier's issuer.
    #[error("wrong issuer (expected {expected:?})")]
    WrongIssuer {
        /// The issuer this verifier accepts.
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
    /// A stable machine-readable name of the failure.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::AlgNone => "alg_none",
            Self::DisallowedAlgorithm(_) => "disallowed_algorithm",
            Self::UnknownKid(_) => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience { .. } => "wrong_audience",
            Self::WrongIssuer { .. } => "wrong_issuer",
            Self::WrongCell { .. } => "wrong_cell",
            Self::Jwks(_) => "jwks_unavailable",
        }
    }
}

/// What a cell expects of a token.
#[derive(Debug, Clone)]
pub struct Expectations {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// This cell's hostname; `cell` must equal it (case-insensitive, a
    /// trailing dot ignored).
    pub cell: String,
    /// Leeway on `exp`/`nbf`, seconds.
    pub leeway_secs: u64,
}

impl Expectations {
    /// Expectations with the default leeway.
    pub fn new(
        issuer: impl Into<String>,
        audience: impl Into<String>,
        cell: impl Into<String>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audience: audience.into(),
            cell: cell.into(),
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// A published key, ready to verify.
#[derive(Clone)]
struct PublicKey {
    alg: Alg,
    key: DecodingKey,
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
    /// Parses a JWKS document (RFC 7517). Keys cellns cannot use (other key
    /// types or curves, no `kid`, encryption keys) are skipped, as RFC 7517
    /// §5 asks; a usable-looking key with a bad value is an error.
    pub fn from_jwks(json: &[u8]) -> Result<Self, VerifyError> {
        let bad = |m: String| VerifyError::Jwks(m);
        let doc: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| bad(format!("not JSON: {e}")))?;
        let list = doc
            .get("keys")
            .and_then(|k| k.as_array())
            .ok_or_else(|| bad("no \"keys\" array".into()))?;
        let mut keys = HashMap::new();
        for k in list {
            let s = |name: &str| k.get(name).and_then(|v| v.as_str());
            let (Some(kid), Some(kty)) = (s("kid"), s("kty")) else {
                continue;
            };
            if s("use").is_some_and(|u| u != "sig") {
                continue;
            }
            let alg = match (kty, s("crv")) {
                ("OKP", Some("Ed25519")) => Alg::EdDSA,
                ("EC", Some("P-256")) => Alg::ES256,
                _ => continue,
            };
            if s("alg").is_some_and(|a| a != alg.as_str()) {
                continue;
            }
            let x = s("x").ok_or_else(|| bad(format!("key {kid:?} has no x")))?;
            let key = match alg {
                Alg::EdDSA => ed25519_public(x),
                Alg::ES256 => {
                    let y = s("y").ok_or_else(|| bad(format!("key {kid:?} has no y")))?;
                    p256_public(x, y)
                }
            }
            .ok_or_else(|| bad(format!("key {kid:?} is not a valid {alg} public key")))?;
            keys.insert(kid.to_owned(), PublicKey { alg, key });
        }
        Ok(Self { keys })
    }

    /// The public halves of signing keys (their JWKs), by kid.
    pub fn from_signing_keys<'a>(keys: impl IntoIterator<Item = &'a Arc<SigningKey>>) -> Self {
        let mut out = HashMap::new();
        for k in keys {
            let jwk = k.public_jwk();
            let key = match k.alg() {
                Alg::EdDSA => ed25519_public(&jwk.x),
                Alg::ES256 => p256_public(&jwk.x, jwk.y.as_deref().unwrap_or_default()),
            };
            if let Some(key) = key {
                out.insert(k.kid().to_owned(), PublicKey { alg: k.alg(), key });
            }
        }
        Self { keys: out }
    }

    /// The key ids in the set.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Verifies `token` against these keys and `expect` (see the module docs).
    pub fn verify(&self, token: &str, expect: &Expectations) -> Result<Claims, VerifyError> {
        let header = screen_header(token)?;
        let key = self
            .keys
            .get(&header.kid)
            .ok_or_else(|| VerifyError::UnknownKid(header.kid.clone()))?;
        check(token, &header, key, expect)
    }
}

/// Decodes a base64url Ed25519 public key, checking it is a curve point.
fn ed25519_public(x: &str) -> Option<DecodingKey> {
    let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(x).ok()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()?;
    DecodingKey::from_ed_components(x).ok()
}

/// Decodes base64url P-256 coordinates, checking they are a curve point.
fn p256_public(x: &str, y: &str) -> Option<DecodingKey> {
    let mut sec1 = vec![4u8];
    let xb = URL_SAFE_NO_PAD.decode(x).ok()?;
    let yb = URL_SAFE_NO_PAD.decode(y).ok()?;
    if xb.len() != 32 || yb.len() != 32 {
        return None;
    }
    sec1.extend_from_slice(&xb);
    sec1.extend_from_slice(&yb);
    p256::PublicKey::from_sec1_bytes(&sec1).ok()?;
    DecodingKey::from_ec_components(x, y).ok()
}

/// What the header screening found.
struct Header {
    alg: Alg,
    kid: String,
}

/// Checks the token's shape and its header's `alg`, `kid` and `crit`
/// before any key is chosen.
fn screen_header(token: &str) -> Result<Header, VerifyError> {
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(VerifyError::Malformed(
            "not three base64url parts separated by dots".into(),
        ));
    };
    let raw = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| VerifyError::Malformed("header is not base64url".into()))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&raw)
        .map_err(|_| VerifyError::Malformed("header is not a JSON object".into()))?;
    let alg = header
        .get("alg")
        .and_then(|a| a.as_str())
        .ok_or_else(|| VerifyError::Malformed("header has no alg".into()))?;
    if alg.eq_ignore_ascii_case("none") {
        return Err(VerifyError::AlgNone);
    }
    let alg =
        Alg::from_jose(alg).ok_or_else(|| VerifyError::DisallowedAlgorithm(alg.to_owned()))?;
    // RFC 7515 §4.1.11: critical extensions we do not understand must be refused.
    if header.contains_key("crit") {
        return Err(VerifyError::Malformed(
            "header has critical extensions (crit), none are supported".into(),
        ));
    }
    let kid = header
        .get("kid")
        .and_then(|k| k.as_str())
        .ok_or_else(|| VerifyError::Malformed("header has no kid".into()))?;
    Ok(Header {
        alg,
        kid: kid.to_owned(),
    })
}

/// Signature, registered claims, then the cell.
fn check(
    token: &str,
    header: &Header,
    key: &PublicKey,
    expect: &Expectations,
) -> Result<Claims, VerifyError> {
    if key.alg != header.alg {
        return Err(VerifyError::DisallowedAlgorithm(format!(
            "{} (key {:?} is a {} key)",
            header.alg, header.kid, key.alg
        )));
    }
    let mut v = Validation::new(match header.alg {
        Alg::EdDSA => Algorithm::EdDSA,
        Alg::ES256 => Algorithm::ES256,
    });
    v.leeway = expect.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    v.set_issuer(&[&expect.issuer]);
    v.set_audience(&[&expect.audience]);
    let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &v)
        .map_err(|e| match e.into_kind() {
            ErrorKind::InvalidSignature => VerifyError::BadSignature,
            ErrorKind::ExpiredSignature => VerifyError::Expired,
            ErrorKind::ImmatureSignature => VerifyError::NotYetValid,
            ErrorKind::InvalidAudience => VerifyError::WrongAudience {
                expected: expect.audience.clone(),
            },
            ErrorKind::InvalidIssuer => VerifyError::WrongIssuer {
                expected: expect.issuer.clone(),
            },
            ErrorKind::InvalidAlgorithm => VerifyError::DisallowedAlgorithm(header.alg.to_string()),
            other => VerifyError::Malformed(format!("{other:?}")),
        })?
        .claims;
    if !same_host(&claims.cell, &expect.cell) {
        return Err(VerifyError::WrongCell {
            expected: super::issue::hostname_claim(&expect.cell),
            got: claims.cell,
        });
    }
    Ok(claims)
}

/// Hostnames compared as DNS does: ASCII case-insensitive, trailing dot ignored.
fn same_host(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
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
        let resp = self
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
            return Err(VerifyError::Jwks(format!(
                "{}: document too large",
                self.url
            )));
        }
        let body = resp.bytes().await.map_err(err)?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(VerifyError::Jwks(format!(
                "{}: document too large",
                self.url
            )));
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
                let header = screen_header(token)?;
                let max_age = remote.opts.max_age;
                if remote
                    .fetched
                    .try_lock()
                    .is_ok_and(|t| t.elapsed() >= max_age)
                {
                    remote.refresh(max_age).await;
                }
                let mut set = remote.set.load_full();
                if !set.keys.contains_key(&header.kid) {
                    remote.refresh(remote.opts.refetch_floor).await;
                    set = remote.set.load_full();
                }
                let key = set
                    .keys
                    .get(&header.kid)
                    .ok_or_else(|| VerifyError::UnknownKid(header.kid.clone()))?;
                check(token, &header, key, &self.expect)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::issue::{Issuer, IssuerConfig, TokenRequest};
    use crate::token::keys::KeyRing;

    const CELL: &str = "use1-a.cells.example.com";

    struct Fixture {
        key: Arc<SigningKey>,
        issuer: Issuer,
        keys: PublicKeySet,
        snap: crate::live::View,
    }

    fn fixture(alg: Alg) -> Fixture {
        let key = Arc::new(SigningKey::generate(alg));
        let ring = Arc::new(KeyRing::fixed(vec![key.clone()]));
        let issuer = Issuer::new(
            IssuerConfig {
                issuer: "cellns".into(),
                audience: "cells".into(),
                max_ttl: 3600,
            },
            ring,
        );
        let keys = PublicKeySet::from_signing_keys([&key]);
        Fixture {
            key,
            issuer,
            keys,
            snap: crate::live::View::of_map(Arc::new(crate::map::load_example().unwrap())),
        }
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn expect() -> Expectations {
        Expectations::new("cellns", "cells", CELL)
    }

    impl Fixture {
        fn mint_at(&self, tenant: &str, iat: u64, ttl: u64) -> String {
            let req = TokenRequest {
                tenant: tenant.into(),
                subject: "user-42".into(),
                ttl_seconds: ttl,
                claims: None,
            };
            self.issuer.issue(&self.snap, &req, iat).unwrap().token
        }

        fn mint(&self) -> String {
            self.mint_at("acme", now(), 600)
        }

        /// Signs arbitrary header and payload JSON with the fixture's key.
        fn sign_raw(&self, header: &serde_json::Value, payload: &serde_json::Value) -> String {
            let mut t = URL_SAFE_NO_PAD.encode(header.to_string());
            t.push('.');
            t.push_str(&URL_SAFE_NO_PAD.encode(payload.to_string()));
            let sig = self.key.sign(t.as_bytes());
            t.push('.');
            t.push_str(&URL_SAFE_NO_PAD.encode(sig));
            t
        }

        fn payload(&self) -> serde_json::Value {
            let n = now();
            serde_json::json!({
                "iss": "cellns", "aud": "cells", "sub": "u", "iat": n, "nbf": n,
                "exp": n + 600, "jti": "j", "tenant": "acme", "cell": CELL,
                "cell_id": "use1-a", "region": "us-east-1", "map_version": "v"
            })
        }

        fn header(&self) -> serde_json::Value {
            serde_json::json!({"alg": self.key.alg().as_str(), "typ": "JWT", "kid": self.key.kid()})
        }
    }

    #[test]
    fn valid_tokens_verify_for_both_algorithms() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let f = fixture(alg);
            let claims = f.keys.verify(&f.mint(), &expect()).unwrap();
            assert_eq!(claims.cell, CELL);
            assert_eq!(claims.tenant, "acme");
            assert_eq!(claims.cell_id, "use1-a");
            assert_eq!(claims.region, "us-east-1");
            assert_eq!(claims.jti.len(), 22, "128 bits, base64url");
            // Case and a trailing dot do not matter.
            let e = Expectations::new("cellns", "cells", "USE1-A.cells.example.com.");
            f.keys.verify(&f.mint(), &e).unwrap();
            // The raw signer agrees with itself.
            f.keys
                .verify(&f.sign_raw(&f.header(), &f.payload()), &expect())
                .unwrap();
        }
    }

    #[test]
    fn rejects_alg_none() {
        let f = fixture(Alg::EdDSA);
        let mut h = f.header();
        h["alg"] = "none".into();
        let t = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(h.to_string()),
            URL_SAFE_NO_PAD.encode(f.payload().to_string())
        );
        assert_eq!(f.keys.verify(&t, &expect()), Err(VerifyError::AlgNone));
        h["alg"] = "NONE".into();
        let t = f.sign_raw(&h, &f.payload());
        assert_eq!(f.keys.verify(&t, &expect()), Err(VerifyError::AlgNone));
    }

    #[test]
    fn rejects_hs256_signed_with_the_public_key() {
        // Algorithm confusion: an attacker HMACs a token with the published
        // public key as the secret, hoping the verifier uses it as one.
        let f = fixture(Alg::EdDSA);
        let public = URL_SAFE_NO_PAD.decode(&f.key.public_jwk().x).unwrap();
        let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
        header.kid = Some(f.key.kid().to_owned());
        let t = jsonwebtoken::encode(
            &header,
            &f.payload(),
            &jsonwebtoken::EncodingKey::from_secret(&public),
        )
        .unwrap();
        assert_eq!(
            f.keys.verify(&t, &expect()),
            Err(VerifyError::DisallowedAlgorithm("HS256".into()))
        );
        // The JWK JSON as the secret, the other classic variant.
        let jwk = serde_json::to_vec(f.key.public_jwk()).unwrap();
        let t = jsonwebtoken::encode(
            &header,
            &f.payload(),
            &jsonwebtoken::EncodingKey::from_secret(&jwk),
        )
        .unwrap();
        assert!(matches!(
            f.keys.verify(&t, &expect()),
            Err(VerifyError::DisallowedAlgorithm(_))
        ));
    }

    #[test]
    fn rejects_alg_that_does_not_match_the_key() {
        let f = fixture(Alg::EdDSA);
        let mut h = f.header();
        h["alg"] = "ES256".into();
        assert!(matches!(
            f.keys.verify(&f.sign_raw(&h, &f.payload()), &expect()),
            Err(VerifyError::DisallowedAlgorithm(_))
        ));
    }

    #[test]
    fn rejects_expired() {
        let f = fixture(Alg::EdDSA);
        let t = f.mint_at("acme", now() - 1000, 60);
        assert_eq!(f.keys.verify(&t, &expect()), Err(VerifyError::Expired));
        // Within the leeway it still verifies.
        let t = f.mint_at("acme", now() - 70, 60);
        f.keys.verify(&t, &expect()).unwrap();
    }

    #[test]
    fn rejects_not_yet_valid() {
        let f = fixture(Alg::EdDSA);
        let t = f.mint_at("acme", now() + 600, 600);
        assert_eq!(f.keys.verify(&t, &expect()), Err(VerifyError::NotYetValid));
        let t = f.mint_at("acme", now() + 10, 600);
        f.keys.verify(&t, &expect()).unwrap();
    }

    #[test]
    fn rejects_wrong_audience_and_issuer() {
        let f = fixture(Alg::EdDSA);
        let t = f.mint();
        let e = Expectations::new("cellns", "other-cells", CELL);
        assert_eq!(
            f.keys.verify(&t, &e),
            Err(VerifyError::WrongAudience {
                expected: "other-cells".into()
            })
        );
        let e = Expectations::new("someone-else", "cells", CELL);
        assert_eq!(
            f.keys.verify(&t, &e),
            Err(VerifyError::WrongIssuer {
                expected: "someone-else".into()
            })
        );
    }

    #[test]
    fn rejects_unknown_kid() {
        let f = fixture(Alg::EdDSA);
        let other = fixture(Alg::EdDSA);
        assert_eq!(
            other.keys.verify(&f.mint(), &expect()),
            Err(VerifyError::UnknownKid(f.key.kid().to_owned()))
        );
    }

    #[test]
    fn rejects_tampered_payload() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let f = fixture(alg);
            let t = f.mint();
            let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
            let mut claims: serde_json::Value =
                serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
            claims["tenant"] = "globex".into();
            parts[1] = URL_SAFE_NO_PAD.encode(claims.to_string());
            assert_eq!(
                f.keys.verify(&parts.join("."), &expect()),
                Err(VerifyError::BadSignature)
            );
        }
    }

    #[test]
    fn rejects_wrong_cell() {
        let f = fixture(Alg::EdDSA);
        let t = f.mint_at("globex", now(), 600);
        assert_eq!(
            f.keys.verify(&t, &expect()),
            Err(VerifyError::WrongCell {
                expected: CELL.into(),
                got: "use1-b.cells.example.com".into()
            })
        );
    }

    #[test]
    fn rejects_malformed() {
        let f = fixture(Alg::EdDSA);
        for t in ["", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30.AAAA"] {
            assert!(
                matches!(f.keys.verify(t, &expect()), Err(VerifyError::Malformed(_))),
                "{t:?}"
            );
        }
        let mut p = f.payload();
        p.as_object_mut().unwrap().remove("cell");
        assert!(matches!(
            f.keys.verify(&f.sign_raw(&f.header(), &p), &expect()),
            Err(VerifyError::Malformed(_))
        ));
        let mut h = f.header();
        h["crit"] = serde_json::json!(["exp"]);
        assert!(matches!(
            f.keys.verify(&f.sign_raw(&h, &f.payload()), &expect()),
            Err(VerifyError::Malformed(_))
        ));
    }

    /// A JWKS server whose document the test swaps; counts fetches.
    async fn jwks_server(
        doc: Arc<std::sync::Mutex<axum::body::Bytes>>,
        fetches: Arc<std::sync::atomic::AtomicUsize>,
    ) -> String {
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let doc = doc.clone();
                let fetches = fetches.clone();
                async move {
                    fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    doc.lock().unwrap().clone()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks")
    }

    #[tokio::test]
    async fn remote_jwks_refetches_on_unknown_kid_within_the_floor() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let old = fixture(Alg::EdDSA);
        let new = fixture(Alg::ES256);
        let doc = Arc::new(std::sync::Mutex::new(
            crate::token::keys::KeySet::new(vec![old.key.clone()])
                .jwks_json()
                .clone(),
        ));
        let fetches = Arc::new(AtomicUsize::new(0));
        let url = jwks_server(doc.clone(), fetches.clone()).await;

        // A long floor: an unknown kid is not refetched yet.
        let slow = Verifier::from_jwks_url_with(
            &url,
            expect(),
            JwksOptions {
                refetch_floor: Duration::from_secs(3600),
                ..JwksOptions::default()
            },
        )
        .await
        .unwrap();
        // No floor: an unknown kid triggers a refetch.
        let eager = Verifier::from_jwks_url_with(
            &url,
            expect(),
            JwksOptions {
                refetch_floor: Duration::ZERO,
                ..JwksOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        eager.verify(&old.mint()).await.unwrap();
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            2,
            "known kid: served from cache"
        );

        // Rotation: the issuer publishes the new key.
        *doc.lock().unwrap() =
            crate::token::keys::KeySet::new(vec![old.key.clone(), new.key.clone()])
                .jwks_json()
                .clone();
        let t_new = new.mint();
        assert_eq!(
            slow.verify(&t_new).await,
            Err(VerifyError::UnknownKid(new.key.kid().to_owned()))
        );
        assert_eq!(fetches.load(Ordering::SeqCst), 2, "the floor holds");
        eager.verify(&t_new).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
        // A made-up kid refetches (floor zero) and is still refused.
        let mut h = old.header();
        h["kid"] = "made-up".into();
        let forged = old.sign_raw(&h, &old.payload());
        assert_eq!(
            eager.verify(&forged).await,
            Err(VerifyError::UnknownKid("made-up".into()))
        );
    }

    #[tokio::test]
    async fn remote_jwks_unreachable_is_an_error() {
        let e = Verifier::from_jwks_url("http://127.0.0.1:1/jwks", expect())
            .await
            .unwrap_err();
        assert_eq!(e.code(), "jwks_unavailable");
    }

    #[test]
    fn jwks_round_trip_and_bad_keys() {
        let a = Arc::new(SigningKey::generate(Alg::EdDSA));
        let b = Arc::new(SigningKey::generate(Alg::ES256));
        let set = crate::token::keys::KeySet::new(vec![a.clone(), b.clone()]);
        let parsed = PublicKeySet::from_jwks(set.jwks_json()).unwrap();
        let mut kids: Vec<&str> = parsed.kids().collect();
        kids.sort();
        let mut want = vec![a.kid(), b.kid()];
        want.sort();
        assert_eq!(kids, want);
        // A short Ed25519 key must be refused, not crash the verifier.
        let bad = br#"{"keys":[{"kty":"OKP","crv":"Ed25519","x":"AAAA","kid":"k"}]}"#;
        assert!(matches!(
            PublicKeySet::from_jwks(bad),
            Err(VerifyError::Jwks(_))
        ));
        // Unknown key types are skipped.
        let other = br#"{"keys":[{"kty":"RSA","n":"AQAB","e":"AQAB","kid":"r"}]}"#;
        assert_eq!(PublicKeySet::from_jwks(other).unwrap().kids().count(), 0);
    }
}
