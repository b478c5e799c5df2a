//! Who may read `GET /metrics`: anyone (the default), or only sources in
//! an allow-list (`--metrics-allow PREFIX`, repeatable) and/or callers
//! presenting a bearer key whose SHA-256 is in `--metrics-key-file`
//! (`sha256:HEX`, one a line, `#` comments: the format of the API key file
//! without names). With both, both must pass. The probes (`/healthz`,
//! `/readyz`) stay open whatever is set: orchestrators call them
//! without credentials.
//!
//! The check runs before any route (in the listener's `dispatch`), during
//! start-up as after, so that nothing of the metrics (cell names, tenant
//! counts, token rates) reaches a client that may not see it.

use std::net::IpAddr;
use std::path::Path;

use axum::http::{HeaderMap, StatusCode, header};
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use crate::dns::xfr::Prefix;

/// The path it guards.
pub(super) const PATH: &str = "/metrics";

/// The `/metrics` access rule.
#[derive(Debug, Clone, Default)]
pub(super) struct MetricsAccess {
    allow: Vec<Prefix>,
    keys: Option<Vec<[u8; 32]>>,
}

impl MetricsAccess {
    /// The rule of `--metrics-allow` (prefixes) and `--metrics-key-file`.
    /// A bad prefix, an unreadable file or a bad line is an error naming it.
    pub(super) fn load(allow: &[String], key_file: Option<&Path>) -> Result<Self, String> {
        let allow = allow
            .iter()
            .map(|p| {
                p.parse::<Prefix>()
                    .map_err(|e| format!("--metrics-allow {p:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let keys = key_file
            .map(|path| {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("--metrics-key-file {}: {e}", path.display()))?;
                let keys = parse_keys(&text)
                    .map_err(|e| format!("--metrics-key-file {}: {e}", path.display()))?;
                if keys.is_empty() {
                    return Err(format!(
                        "--metrics-key-file {}: no key in it (a line `sha256:HEX`)",
                        path.display()
                    ));
                }
                Ok(keys)
            })
            .transpose()?;
        Ok(Self { allow, keys })
    }

    /// Whether anything is required.
    pub(super) fn is_open(&self) -> bool {
        self.allow.is_empty() && self.keys.is_none()
    }

    /// Admits a request to `/metrics` from `peer` with `headers`, or says
    /// why not: 403 for an address outside the allow-list, 401 for a
    /// missing or wrong key.
    pub(super) fn check(&self, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<(), ApiError> {
        if !self.allow.is_empty()
            && !peer.is_some_and(|ip| self.allow.iter().any(|p| p.contains(ip)))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this address may not read the metrics (--metrics-allow)",
            ));
        }
        if let Some(keys) = &self.keys {
            let presented = headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|k| <[u8; 32]>::from(Sha256::digest(k.trim().as_bytes())));
            let ok = presented.is_some_and(|h| {
                keys.iter()
                    .fold(false, |found, k| found | bool::from(k.ct_eq(&h)))
            });
            if !ok {
                return Err(ApiError::unauthorized(
                    "invalid_api_key",
                    "the metrics need the scrape key (Authorization: Bearer KEY)",
                    "Bearer realm=\"cellns-metrics\"",
                ));
            }
        }
        Ok(())
    }
}

/// `sha256:HEX` lines; blank lines and `#` comments skipped.
fn parse_keys(text: &str) -> Result<Vec<[u8; 32]>, String> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |what: &str| format!("line {}: {what}", n + 1);
        let hex = line
            .strip_prefix("sha256:")
            .ok_or_else(|| bad("expected `sha256:HEX` (the SHA-256 of the key, hex)"))?;
        let bytes = hex::decode(hex).map_err(|_| bad("not hex"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| bad("a SHA-256 is 64 hex digits"))?;
        keys.push(key);
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn with_key(k: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {k}")).expect("header"),
        );
        h
    }

    fn rule(allow: &[&str], keys: Option<&str>) -> MetricsAccess {
        let dir = tempfile::tempdir().expect("dir");
        let file = keys.map(|k| {
            let p = dir.path().join("keys");
            std::fs::write(&p, k).expect("write");
            p
        });
        let allow: Vec<String> = allow.iter().map(|s| (*s).to_owned()).collect();
        MetricsAccess::load(&allow, file.as_deref()).expect("valid rule")
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn open_by_default() {
        let r = rule(&[], None);
        assert!(r.is_open());
        assert!(r.check(None, &HeaderMap::new()).is_ok());
    }

    #[test]
    fn allow_list_and_key_each_and_together() {
        let r = rule(&["10.0.0.0/8", "::1"], None);
        assert!(r.check(ip("10.1.2.3"), &HeaderMap::new()).is_ok());
        assert!(r.check(ip("::1"), &HeaderMap::new()).is_ok());
        let e = r
            .check(ip("192.0.2.1"), &HeaderMap::new())
            .expect_err("outside");
        assert_eq!(e.status, StatusCode::FORBIDDEN);

        let hash = hex::encode(Sha256::digest(b"scrape-secret"));
        let r = rule(&[], Some(&format!("# prometheus\nsha256:{hash}\n")));
        assert!(r.check(ip("192.0.2.1"), &with_key("scrape-secret")).is_ok());
        for h in [HeaderMap::new(), with_key("wrong")] {
            let e = r.check(ip("192.0.2.1"), &h).expect_err("no key");
            assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        }

        let r = rule(&["10.0.0.0/8"], Some(&format!("sha256:{hash}")));
        assert!(r.check(ip("10.0.0.1"), &with_key("scrape-secret")).is_ok());
        assert!(r.check(ip("10.0.0.1"), &HeaderMap::new()).is_err());
        assert!(
            r.check(ip("192.0.2.1"), &with_key("scrape-secret"))
                .is_err()
        );
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let e = MetricsAccess::load(&["10.0.0.1/8".into()], None).expect_err("host bits");
        assert!(
            e.contains("--metrics-allow") && e.contains("host bits"),
            "{e}"
        );
        let dir = tempfile::tempdir().expect("dir");
        for (text, why) in [
            ("", "no key"),
            ("sha256:zz\n", "not hex"),
            ("sha256:00\n", "64 hex"),
            ("md5:00\n", "sha256:"),
        ] {
            let p = dir.path().join("k");
            std::fs::write(&p, text).expect("write");
            let e = MetricsAccess::load(&[], Some(&p)).expect_err(why);
            assert!(e.contains(why), "{text:?}: {e}");
        }
        let missing = dir.path().join("missing");
        assert!(MetricsAccess::load(&[], Some(&missing)).is_err());
    }
}
