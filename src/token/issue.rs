//! Minting tokens: a token request + one effective view + the signing key in
//! force → a signed JWT whose `cell` claim names the tenant's cell.
//!
//! The cell, its id and region, and `map_version` all come from the one
//! effective view the caller passes in, the same view the DNS answers
//! from, so a token never mixes two versions and always agrees with DNS. The hot path does no file
//! I/O: keys are parsed once ([`super::keys`]) and the JWS header is
//! pre-encoded.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cellns_client::canonical_host;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

use super::keys::KeyRing;
use std::time::UNIX_EPOCH;

use crate::live::View;
use crate::live::moves::Phase;
use crate::route::{self, NoRoute};

/// Longest accepted `subject`, in bytes.
pub const MAX_SUBJECT_LEN: usize = 256;
/// Deepest nesting of the caller's extra claims (the `ext` object is level
/// 1). Verifiers refuse JSON nested deeper than 127 levels; the bound keeps
/// every token cellns issues well inside it.
pub const MAX_CLAIMS_DEPTH: usize = 32;

/// What the issuer puts in every token.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// `iss` claim.
    pub issuer: String,
    /// `aud` claim.
    pub audience: String,
    /// Largest `ttl_seconds` accepted; larger requests are rejected, not
    /// clamped, so a caller never holds a token shorter than it believes.
    pub max_ttl: u64,
}

/// The body of `POST /v1/tokens`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The tenant id (one DNS label; compared case-insensitively).
    pub tenant: String,
    /// The `sub` claim: who the token is for (e.g. a user id).
    pub subject: String,
    /// Lifetime in seconds, 1..=max_ttl.
    pub ttl_seconds: u64,
    /// Extra claims, carried under the `ext` claim so they can never
    /// override a registered or cellns claim.
    #[serde(default)]
    pub claims: Option<serde_json::Map<String, serde_json::Value>>,
}

/// The answer to a token request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Issued {
    /// The JWT (compact serialisation).
    pub token: String,
    /// The tenant's serving cell hostname: lowercase, no trailing dot. The
    /// same value as the token's `cell` claim.
    pub cell: String,
    /// The name the client connects to: the tenant's own DNS name
    /// (`<tenant>.<zone>`, no trailing dot), which resolves to the cell and
    /// follows the tenant when it moves.
    pub endpoint: String,
    /// When the token expires (`exp`), RFC 3339 UTC.
    pub expires_at: String,
    /// The version of the map the cell was taken from.
    pub map_version: String,
    /// Set when the token lives shorter than `ttl_seconds` asked: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_shortened: Option<Shortened>,
    /// The serving cell's id (for the caller's bookkeeping; not sent).
    #[serde(skip)]
    pub cell_id: String,
    /// `exp`, Unix seconds (not sent: `expires_at` says it).
    #[serde(skip)]
    pub exp: u64,
}

/// Why a token lives shorter than asked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Shortened {
    /// `tenant_move`: the tenant moves to another cell; the token expires
    /// at the flip, so the client fetches a new one, naming the new cell.
    pub reason: String,
    /// The lifetime asked for.
    pub requested_ttl_seconds: u64,
    /// The lifetime given.
    pub ttl_seconds: u64,
    /// When the tenant moves (RFC 3339 UTC): the token's `exp`.
    pub move_at: String,
    /// The cell id the tenant moves to.
    pub move_to: String,
    /// In words.
    pub message: String,
}

/// Why a token was not issued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IssueError {
    /// The tenant id is not a valid DNS label.
    #[error("{0}")]
    InvalidTenant(NoRoute),
    /// The tenant gets no cell in the map in force.
    #[error("{0}")]
    UnknownTenant(NoRoute),
    /// `ttl_seconds` is 0 or above the configured maximum.
    #[error("ttl_seconds must be between 1 and {max} (--token-max-ttl), got {requested}")]
    InvalidTtl {
        /// What was asked.
        requested: u64,
        /// The cap.
        max: u64,
    },
    /// `subject` is empty, too long or has control characters.
    #[error("subject must be 1 to {MAX_SUBJECT_LEN} bytes without control characters")]
    InvalidSubject,
    /// The extra `claims` are nested too deep for verifiers.
    #[error("claims are nested more than {MAX_CLAIMS_DEPTH} levels deep")]
    InvalidClaims,
    /// Every key file was removed from the key directory.
    #[error("no signing key: the key directory is empty")]
    NoSigningKey,
}

/// Mints tokens.
#[derive(Debug)]
pub struct Issuer {
    cfg: IssuerConfig,
    keys: Arc<KeyRing>,
}

/// The JWT payload, borrowed from the request and the view.
#[derive(Serialize)]
struct Payload<'a> {
    iss: &'a str,
    aud: &'a str,
    sub: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    tenant: &'a str,
    cell: &'a str,
    cell_id: &'a str,
    region: &'a str,
    map_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ext: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl Issuer {
    /// An issuer signing with the keys of `keys`.
    pub fn new(cfg: IssuerConfig, keys: Arc<KeyRing>) -> Self {
        Self { cfg, keys }
    }

    /// The configuration.
    pub fn config(&self) -> &IssuerConfig {
        &self.cfg
    }

    /// The key ring.
    pub fn keys(&self) -> &Arc<KeyRing> {
        &self.keys
    }

    /// Mints a token for `req` from `view`, valid from `now` (Unix seconds).
    pub fn issue(&self, view: &View, req: &TokenRequest, now: u64) -> Result<Issued, IssueError> {
        if req.ttl_seconds == 0 || req.ttl_seconds > self.cfg.max_ttl {
            return Err(IssueError::InvalidTtl {
                requested: req.ttl_seconds,
                max: self.cfg.max_ttl,
            });
        }
        if req.subject.is_empty()
            || req.subject.len() > MAX_SUBJECT_LEN
            || req.subject.chars().any(char::is_control)
        {
            return Err(IssueError::InvalidSubject);
        }
        if req
            .claims
            .as_ref()
            .is_some_and(|c| depth(c.values()) >= MAX_CLAIMS_DEPTH)
        {
            return Err(IssueError::InvalidClaims);
        }
        let route = route::explain(view, &req.tenant).map_err(|e| match e {
            NoRoute::InvalidTenant(..) => IssueError::InvalidTenant(e),
            NoRoute::Unknown(..) => IssueError::UnknownTenant(e),
        })?;
        let keys = self.keys.load();
        let key = keys.signing().ok_or(IssueError::NoSigningKey)?;

        let snap = view.map();
        let mut serving = route.serving;
        let mut exp = now.saturating_add(req.ttl_seconds);
        let mut ttl_shortened = None;
        if let Some((i, state)) = route.planned
            && let Some(m) = snap.moves.get(i)
            && state.phase != Phase::Moved
        {
            let at = m.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            if now >= at {
                // The flip is due and the timer is publishing it: name the
                // new cell already rather than a token dead on arrival.
                serving = view.serving(m.to);
            } else if exp > at {
                // Expire at the flip: the client then fetches a token
                // naming the new cell.
                exp = at;
                let to = &view.cell(m.to).id;
                ttl_shortened = Some(Shortened {
                    reason: "tenant_move".to_owned(),
                    requested_ttl_seconds: req.ttl_seconds,
                    ttl_seconds: at - now,
                    move_at: rfc3339(at),
                    move_to: to.clone(),
                    message: format!(
                        "tenant `{}` moves to cell `{to}` at {}: the token expires then, so the client fetches a new one naming the new cell",
                        m.tenant,
                        rfc3339(at)
                    ),
                });
            }
        }
        let cell = view.cell(serving);
        let cell_host = canonical_host(&cell.hostname.to_ascii());
        let tenant = req.tenant.to_ascii_lowercase();
        let jti = new_jti();
        let payload = Payload {
            iss: &self.cfg.issuer,
            aud: &self.cfg.audience,
            sub: &req.subject,
            iat: now,
            nbf: now,
            exp,
            jti: &jti,
            tenant: &tenant,
            cell: &cell_host,
            cell_id: &cell.id,
            region: &cell.region,
            map_version: &snap.version,
            ext: req.claims.as_ref(),
        };
        // Serialising borrowed strings, integers and a JSON map cannot fail.
        let json = serde_json::to_vec(&payload).unwrap_or_default();

        let mut token = String::with_capacity(key.header_b64_dot().len() + json.len() * 4 / 3 + 92);
        token.push_str(key.header_b64_dot());
        URL_SAFE_NO_PAD.encode_string(&json, &mut token);
        let sig = key.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(sig, &mut token);

        let origin = snap.zone.origin.to_ascii();
        Ok(Issued {
            token,
            endpoint: format!("{tenant}.{}", canonical_host(&origin)),
            cell: cell_host,
            expires_at: rfc3339(exp),
            map_version: snap.version.clone(),
            ttl_shortened,
            cell_id: cell.id.clone(),
            exp,
        })
    }
}

/// How deep the deepest of `values` nests (a scalar is 0, `[]` or `{}` 1).
/// Iterative, so no input can exhaust the stack.
fn depth<'a>(values: impl Iterator<Item = &'a serde_json::Value>) -> usize {
    let mut deepest = 0;
    let mut stack: Vec<(&serde_json::Value, usize)> = values.map(|v| (v, 0)).collect();
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
}

/// A random 128-bit token id, base64url.
fn new_jti() -> String {
    let mut b = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut b);
    URL_SAFE_NO_PAD.encode(b)
}

/// Unix seconds as RFC 3339 UTC (`2026-01-02T03:04:05Z`), as the audit
/// log writes times.
fn rfc3339(unix: u64) -> String {
    crate::live::audit::rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::keys::{Alg, SigningKey};

    fn issuer(alg: Alg) -> Issuer {
        Issuer::new(
            IssuerConfig {
                issuer: "cellns".into(),
                audience: "cells".into(),
                max_ttl: 3600,
            },
            Arc::new(KeyRing::fixed(vec![Arc::new(SigningKey::generate(alg))])),
        )
    }

    fn req(tenant: &str, ttl: u64) -> TokenRequest {
        TokenRequest {
            tenant: tenant.into(),
            subject: "user-42".into(),
            ttl_seconds: ttl,
            claims: None,
        }
    }

    fn example() -> View {
        View::of_map(std::sync::Arc::new(crate::map::load_example().unwrap()))
    }

    #[test]
    fn token_carries_the_snapshot_cell() {
        let snap = example();
        for alg in [Alg::EdDSA, Alg::ES256] {
            let out = issuer(alg).issue(&snap, &req("ACME", 900), 1_000).unwrap();
            assert_eq!(out.cell, "use1-a.cells.example.com");
            assert_eq!(out.endpoint, "acme.cells.example.com");
            assert_eq!(out.map_version, snap.map().version);
            assert_eq!(out.expires_at, "1970-01-01T00:31:40Z");
            assert_eq!(out.token.split('.').count(), 3);
        }
        // A down cell's tenant gets the cell that serves it.
        let out = issuer(Alg::EdDSA)
            .issue(&snap, &req("hooli", 60), 0)
            .unwrap();
        assert_eq!(out.cell, "use1-b.cells.example.com");
    }

    #[test]
    fn a_pending_move_shortens_the_token_to_the_flip() {
        let text = crate::map::EXAMPLE_MAP.to_owned()
            + "\n[moves.acme]\nto = \"use1-b\"\nat = \"1970-01-01T00:16:40Z\"\n";
        let snap = crate::map::load_str(crate::map::Source {
            text: &text,
            format: crate::map::Format::Toml,
            name: "m.toml",
        })
        .expect("valid map");
        let map = std::sync::Arc::new(snap);
        let i = issuer(Alg::EdDSA);
        let at_time = |s: u64| {
            View::new_at(
                map.clone(),
                &crate::live::Conditions::default(),
                1,
                UNIX_EPOCH + std::time::Duration::from_secs(s),
            )
        };
        // Before the flip (at 1000): the old cell, exp at the flip.
        let out = i.issue(&at_time(100), &req("acme", 3600), 100).unwrap();
        assert_eq!(out.cell, "use1-a.cells.example.com");
        assert_eq!(out.exp, 1000);
        let s = out.ttl_shortened.expect("shortened");
        assert_eq!((s.requested_ttl_seconds, s.ttl_seconds), (3600, 900));
        assert_eq!(s.reason, "tenant_move");
        assert_eq!(s.move_to, "use1-b");
        // Short enough already: unchanged.
        let out = i.issue(&at_time(100), &req("acme", 60), 100).unwrap();
        assert_eq!((out.exp, out.ttl_shortened), (160, None));
        // The flip is due but not yet published: the new cell.
        let out = i.issue(&at_time(999), &req("acme", 60), 1000).unwrap();
        assert_eq!(out.cell, "use1-b.cells.example.com");
        // After the flip: the new cell, the full lifetime.
        let out = i.issue(&at_time(1000), &req("acme", 600), 1000).unwrap();
        assert_eq!(out.cell, "use1-b.cells.example.com");
        assert_eq!((out.exp, out.ttl_shortened), (1600, None));
        // Other tenants are untouched.
        let out = i.issue(&at_time(100), &req("globex", 3600), 100).unwrap();
        assert_eq!(out.ttl_shortened, None);
    }

    #[test]
    fn rejects_bad_requests() {
        let snap = example();
        let i = issuer(Alg::EdDSA);
        assert!(matches!(
            i.issue(&snap, &req("acme", 0), 0),
            Err(IssueError::InvalidTtl { .. })
        ));
        assert!(matches!(
            i.issue(&snap, &req("acme", 3601), 0),
            Err(IssueError::InvalidTtl { .. })
        ));
        assert!(matches!(
            i.issue(&snap, &req("nobody", 60), 0),
            Err(IssueError::UnknownTenant(_))
        ));
        assert!(matches!(
            i.issue(&snap, &req("a.b", 60), 0),
            Err(IssueError::InvalidTenant(_))
        ));
        let mut r = req("acme", 60);
        r.subject = String::new();
        assert!(matches!(
            i.issue(&snap, &r, 0),
            Err(IssueError::InvalidSubject)
        ));
        // Extra claims nested within the bound pass; deeper ones do not.
        let nested = |levels: usize| {
            let mut v = serde_json::json!(1);
            for _ in 0..levels {
                v = serde_json::json!({ "x": v });
            }
            let mut r = req("acme", 60);
            r.claims = Some(serde_json::Map::from_iter([("k".to_owned(), v)]));
            r
        };
        assert!(i.issue(&snap, &nested(MAX_CLAIMS_DEPTH - 1), 0).is_ok());
        assert!(matches!(
            i.issue(&snap, &nested(MAX_CLAIMS_DEPTH), 0),
            Err(IssueError::InvalidClaims)
        ));
        let empty = Issuer::new(i.cfg.clone(), Arc::new(KeyRing::fixed(vec![])));
        assert!(matches!(
            empty.issue(&snap, &req("acme", 60), 0),
            Err(IssueError::NoSigningKey)
        ));
    }
}
