//! Who may call the API: the API key file (`--api-keys`), the [`Callers`]
//! it lists, each with its own rate limit, and [`authorize`], the check
//! every `/v1/` handler runs first (client certificate, bearer key, rate).

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::http::{Extensions, HeaderMap, StatusCode, header};
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

use super::error::ApiError;

/// A bad `--api-keys` file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiKeyError {
    /// The file could not be read.
    #[error("API key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A line is not `NAME sha256:HEX`.
    #[error("{path}:{line}: {message}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

/// One authenticated caller (typically an auth service).
pub(super) struct Caller {
    /// The caller's name from the API key file (logs, rate limits, metrics).
    pub(super) name: String,
    key_hash: [u8; 32],
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// The callers allowed to request tokens, each with its own token bucket.
#[derive(Debug, Default)]
pub(super) struct Callers {
    list: Vec<Caller>,
}

/// The rate limit of each caller: `per_second` refill (`None`: unlimited)
/// and `burst` bucket size.
#[derive(Debug, Clone, Copy)]
pub(super) struct RateLimit {
    /// Requests per second (bucket refill); `None` disables limiting.
    pub(super) per_second: Option<NonZeroU32>,
    /// Bucket size.
    pub(super) burst: NonZeroU32,
}

impl Callers {
    /// Parses an API key file: one caller a line, `NAME sha256:HEX` where
    /// HEX is the SHA-256 of the bearer key the caller sends; `#` starts a
    /// comment; blank lines are ignored. Names and keys must be unique.
    pub(super) fn parse(text: &str, path: &Path, limit: RateLimit) -> Result<Self, ApiKeyError> {
        let mut list: Vec<Caller> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let err = |message: String| ApiKeyError::Line {
                path: path.to_owned(),
                line: i + 1,
                message,
            };
            let line = raw.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(name), Some(hash), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(err("expected `NAME sha256:HEX`".into()));
            };
            if !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
            {
                return Err(err(format!(
                    "caller name {name:?} may only hold letters, digits and - _ . @"
                )));
            }
            let hex = hash
                .strip_prefix("sha256:")
                .ok_or_else(|| err(format!("{hash:?} must start with `sha256:`")))?;
            let mut key_hash = [0u8; 32];
            hex::decode_to_slice(hex, &mut key_hash).map_err(|_| {
                err("the hash must be 64 hex digits (the SHA-256 of the bearer key)".into())
            })?;
            if list.iter().any(|c| c.name == name) {
                return Err(err(format!("caller {name:?} is listed twice")));
            }
            if list.iter().any(|c| c.key_hash == key_hash) {
                return Err(err(format!(
                    "caller {name:?} has the same key as another caller"
                )));
            }
            list.push(Caller {
                name: name.to_owned(),
                key_hash,
                limiter: limit
                    .per_second
                    .map(|r| RateLimiter::direct(Quota::per_second(r).allow_burst(limit.burst))),
            });
        }
        Ok(Self { list })
    }

    /// Reads and parses an API key file.
    pub(super) fn load(path: &Path, limit: RateLimit) -> Result<Self, ApiKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiKeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, limit)
    }

    /// True when no caller is configured (every token request is refused).
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The caller whose key is `presented`. The SHA-256 of the presented
    /// key is compared with every stored hash in constant time, and the
    /// scan does not stop at a match, so timing reveals nothing about which
    /// caller (if any) matched.
    pub(super) fn authenticate(&self, presented: &[u8]) -> Option<&Caller> {
        let h: [u8; 32] = Sha256::digest(presented).into();
        let mut found = u32::MAX;
        for (i, c) in self.list.iter().enumerate() {
            let i = u32::try_from(i).unwrap_or(u32::MAX);
            found = u32::conditional_select(&found, &i, c.key_hash.ct_eq(&h));
        }
        self.list.get(found as usize)
    }
}

impl Caller {
    /// Takes one request from the caller's bucket; the wait until the next
    /// one is allowed when the bucket is empty.
    fn take(&self) -> Result<(), Duration> {
        match &self.limiter {
            None => Ok(()),
            Some(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(l.clock().now())),
        }
    }
}

/// Per-connection fact inserted into each request's extensions by the TLS
/// server: the client presented a certificate that chains to `--client-ca`
/// (rustls has verified it during the handshake).
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientCertVerified;

/// The bearer token of an `Authorization` header (RFC 6750 §2.1; the
/// scheme is case-insensitive).
fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let key = rest.trim_ascii();
    (!key.is_empty()).then_some(key)
}

/// The caller of a request to a `/v1/` route: a client certificate when
/// `require_client_cert` (`--client-ca`) (401), a key of one of `callers`
/// (401), and a token left in that caller's bucket (429).
pub(super) fn authorize<'a>(
    callers: &'a Callers,
    require_client_cert: bool,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Result<&'a Caller, ApiError> {
    if require_client_cert && extensions.get::<ClientCertVerified>().is_none() {
        return Err(ApiError::unauthorized(
            "client_certificate_required",
            "requests to /v1/ need a client certificate issued by the configured CA (mTLS)",
            r#"Bearer realm="cellns""#,
        ));
    }
    let Some(key) = bearer(headers) else {
        return Err(ApiError::unauthorized(
            "unauthenticated",
            "send the caller's API key as `Authorization: Bearer KEY`",
            r#"Bearer realm="cellns""#,
        ));
    };
    let Some(caller) = callers.authenticate(key) else {
        return Err(ApiError::unauthorized(
            "invalid_api_key",
            "the API key is not valid",
            r#"Bearer realm="cellns", error="invalid_token""#,
        ));
    };
    if let Err(wait) = caller.take() {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("caller {:?} is over its rate limit", caller.name),
        )
        .with_retry_after(secs.max(1)));
    }
    Ok(caller)
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn limit() -> RateLimit {
        RateLimit {
            per_second: NonZeroU32::new(10),
            burst: NonZeroU32::new(1).unwrap(),
        }
    }

    fn hash(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    #[test]
    fn api_key_file_parses_and_authenticates() {
        let text = format!(
            "# callers\n\nauth-service sha256:{}   # the main one\nbatch sha256:{}\n",
            hash("k1"),
            hash("k2")
        );
        let c = Callers::parse(&text, Path::new("keys"), limit()).unwrap();
        assert_eq!(c.list.len(), 2);
        assert_eq!(c.authenticate(b"k1").unwrap().name, "auth-service");
        assert_eq!(c.authenticate(b"k2").unwrap().name, "batch");
        assert!(c.authenticate(b"k3").is_none());
        assert!(c.authenticate(b"").is_none());
        assert!(Callers::default().authenticate(b"k1").is_none());
    }

    #[test]
    fn api_key_file_errors_name_the_line() {
        for (text, needle) in [
            ("a sha256:00\n", "64 hex"),
            ("\n\na b c\n", "expected"),
            ("a md5:00\n", "sha256:"),
            ("a/b sha256:00\n", "caller name"),
        ] {
            let e = Callers::parse(text, Path::new("f"), limit()).unwrap_err();
            let s = e.to_string();
            assert!(s.contains(needle), "{s}");
            assert!(s.starts_with("f:"), "{s}");
        }
        let dup = format!("a sha256:{}\na sha256:{}\n", hash("x"), hash("y"));
        assert!(
            Callers::parse(&dup, Path::new("f"), limit())
                .unwrap_err()
                .to_string()
                .starts_with("f:2:")
        );
        let same = format!("a sha256:{}\nb sha256:{}\n", hash("x"), hash("x"));
        assert!(Callers::parse(&same, Path::new("f"), limit()).is_err());
    }

    #[test]
    fn bucket_limits_each_caller() {
        // One request a second, burst one: a refill needs a whole second,
        // so of many calls in a row some are refused however slowly the
        // test runs (each would have to take a second for none to be).
        let one_a_second = RateLimit {
            per_second: NonZeroU32::new(1),
            burst: NonZeroU32::new(1).unwrap(),
        };
        let text = format!("a sha256:{}\nb sha256:{}\n", hash("ka"), hash("kb"));
        let c = Callers::parse(&text, Path::new("f"), one_a_second).unwrap();
        let a = c.authenticate(b"ka").unwrap();
        assert!(a.take().is_ok(), "the first request fits the burst");
        let wait = (0..1000)
            .find_map(|_| a.take().err())
            .expect("a 1/s bucket refused none of 1000 requests in a row");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "the wait is at most one refill: {wait:?}"
        );
        // Another caller has its own bucket.
        assert!(c.authenticate(b"kb").unwrap().take().is_ok());
    }

    #[test]
    fn bearer_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  abc "),
        );
        assert_eq!(bearer(&h), Some(&b"abc"[..]));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(bearer(&h), None);
    }
}
