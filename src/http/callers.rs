//! Who may call the API: the API key file (`--api-keys`), the [`Callers`]
//! it lists, each with its own rate limit and [`Scopes`], and
//! [`authorize`], the check every `/v1/` handler runs first (client
//! certificate, bearer key, rate, scope).
//!
//! The file is re-read when it changes ([`CallerSet::rescan`], every
//! second): a caller added, removed or given other scopes takes effect
//! without a restart, and one whose line is unchanged keeps its rate-limit
//! bucket. A file that cannot be read or parsed keeps the callers read
//! before, and is logged (once per content) and shown by
//! `cellns_api_keys_last_reload_success`.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
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
    /// A line is not `NAME sha256:HEX [scopes=...]`.
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

/// What a caller may do. A line of the API key file without `scopes=`
/// has [`Scopes::DEFAULT`] (tokens and read: the rights every caller had
/// before scopes existed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Scopes(u8);

/// One right a route asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Scope {
    /// `POST /v1/tokens`.
    Tokens,
    /// The `GET /v1/` views.
    Read,
    /// Operator overrides (`PUT`/`DELETE /v1/cells/{id}/status`).
    Admin,
}

impl Scope {
    const ALL: [Scope; 3] = [Scope::Tokens, Scope::Read, Scope::Admin];

    /// The word used in the API key file.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Tokens => "tokens",
            Self::Read => "read",
            Self::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Self::Tokens => 1,
            Self::Read => 2,
            Self::Admin => 4,
        }
    }
}

impl Scopes {
    /// `tokens,read`: a line without `scopes=`.
    pub(super) const DEFAULT: Scopes = Scopes(1 | 2);

    /// Whether `scope` is granted.
    pub(super) fn has(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// `scopes=` value: comma-separated scope words, at least one.
    fn parse(list: &str) -> Result<Self, String> {
        let mut bits = 0;
        for word in list.split(',') {
            let Some(s) = Scope::ALL.iter().find(|s| s.as_str() == word) else {
                return Err(format!(
                    "unknown scope {word:?} (the scopes are tokens, read, admin, comma-separated)"
                ));
            };
            bits |= s.bit();
        }
        Ok(Self(bits))
    }

    /// The granted scopes, as words.
    pub(super) fn words(self) -> Vec<&'static str> {
        Scope::ALL
            .iter()
            .filter(|s| self.has(**s))
            .map(|s| s.as_str())
            .collect()
    }
}

/// One authenticated caller (typically an auth service).
pub(super) struct Caller {
    /// The caller's name from the API key file (logs, rate limits, metrics).
    pub(super) name: String,
    key_hash: [u8; 32],
    /// What it may do.
    pub(super) scopes: Scopes,
    /// Shared by the versions of the caller across re-reads of the file.
    limiter: Option<Arc<DefaultDirectRateLimiter>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("name", &self.name)
            .field("scopes", &self.scopes.words())
            .finish_non_exhaustive()
    }
}

/// The callers allowed to use the API, each with its own token bucket.
#[derive(Debug, Default)]
pub(super) struct Callers {
    list: Vec<Arc<Caller>>,
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
    /// Parses an API key file: one caller a line, `NAME sha256:HEX
    /// [scopes=LIST]` where HEX is the SHA-256 of the bearer key the caller
    /// sends and LIST is comma-separated scopes (`tokens`, `read`,
    /// `admin`; default `tokens,read`); `#` starts a comment; blank lines
    /// are ignored. Names and keys must be unique.
    pub(super) fn parse(text: &str, path: &Path, limit: RateLimit) -> Result<Self, ApiKeyError> {
        Self::parse_keeping(text, path, limit, &Self::default())
    }

    /// As [`Callers::parse`]; a caller with the same name and key as one of
    /// `previous` keeps its rate-limit bucket.
    fn parse_keeping(
        text: &str,
        path: &Path,
        limit: RateLimit,
        previous: &Callers,
    ) -> Result<Self, ApiKeyError> {
        let mut list: Vec<Arc<Caller>> = Vec::new();
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
            let (Some(name), Some(hash), scopes, None) =
                (fields.next(), fields.next(), fields.next(), fields.next())
            else {
                return Err(err(
                    "expected `NAME sha256:HEX [scopes=tokens,read,admin]`".into()
                ));
            };
            let scopes = match scopes {
                None => Scopes::DEFAULT,
                Some(s) => {
                    let list = s.strip_prefix("scopes=").ok_or_else(|| {
                        err(format!(
                            "{s:?}: the third field must be `scopes=LIST` (tokens, read, admin)"
                        ))
                    })?;
                    Scopes::parse(list).map_err(err)?
                }
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
            let kept = previous
                .list
                .iter()
                .find(|c| c.name == name && c.key_hash == key_hash)
                .and_then(|c| c.limiter.clone());
            list.push(Arc::new(Caller {
                name: name.to_owned(),
                key_hash,
                scopes,
                limiter: kept.or_else(|| {
                    limit.per_second.map(|r| {
                        Arc::new(RateLimiter::direct(
                            Quota::per_second(r).allow_burst(limit.burst),
                        ))
                    })
                }),
            }));
        }
        Ok(Self { list })
    }

    /// True when no caller is configured (every token request is refused).
    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The caller whose key is `presented`. The SHA-256 of the presented
    /// key is compared with every stored hash in constant time, and the
    /// scan does not stop at a match, so timing reveals nothing about which
    /// caller (if any) matched.
    pub(super) fn authenticate(&self, presented: &[u8]) -> Option<&Arc<Caller>> {
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

/// Largest API key file read (a line a caller: thousands of callers fit).
const MAX_KEY_FILE: u64 = 1024 * 1024;

/// The callers in force, re-read from the API key file when it changes.
#[derive(Debug)]
pub(super) struct CallerSet {
    current: ArcSwap<Callers>,
    path: Option<PathBuf>,
    limit: RateLimit,
    /// SHA-256 of the content last seen (loaded or rejected).
    seen: Mutex<Option<[u8; 32]>>,
}

impl CallerSet {
    /// The callers of the file at `path` (an error when it is bad: at start
    /// there is nothing to fall back to), or none without a file.
    pub(super) fn load(path: Option<&Path>, limit: RateLimit) -> Result<Self, ApiKeyError> {
        let (callers, seen) = match path {
            None => (Callers::default(), None),
            Some(p) => {
                let text = read_key_file(p)?;
                let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
                (Callers::parse(&text, p, limit)?, Some(hash))
            }
        };
        Ok(Self {
            current: ArcSwap::from_pointee(callers),
            path: path.map(Path::to_owned),
            limit,
            seen: Mutex::new(seen),
        })
    }

    /// The callers in force.
    pub(super) fn load_current(&self) -> Arc<Callers> {
        self.current.load_full()
    }

    /// The API key file, if any.
    pub(super) fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Re-reads the file; swaps in its callers when its content changed
    /// and is good. Returns whether the callers changed.
    pub(super) fn rescan(&self) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let text = match read_key_file(path) {
            Ok(t) => t,
            Err(e) => {
                // Logged once until the file changes again.
                if *seen != Some([0; 32]) {
                    tracing::error!(error = %e, "cannot re-read the API key file; the callers read before keep their rights");
                    crate::metrics::api_keys_reload(false);
                    *seen = Some([0; 32]);
                }
                return false;
            }
        };
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if *seen == Some(hash) {
            return false;
        }
        *seen = Some(hash);
        match Callers::parse_keeping(&text, path, self.limit, &self.current.load()) {
            Ok(callers) => {
                tracing::info!(
                    file = %path.display(),
                    callers = callers.list.len(),
                    "API key file reloaded"
                );
                self.current.store(Arc::new(callers));
                crate::metrics::api_keys_reload(true);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "the API key file is invalid; the callers read before keep their rights");
                crate::metrics::api_keys_reload(false);
                false
            }
        }
    }
}

/// Reads an API key file of at most [`MAX_KEY_FILE`] bytes.
fn read_key_file(path: &Path) -> Result<String, ApiKeyError> {
    use std::io::Read as _;
    let io = |source| ApiKeyError::Io {
        path: path.to_owned(),
        source,
    };
    let f = std::fs::File::open(path).map_err(io)?;
    let mut text = String::new();
    f.take(MAX_KEY_FILE + 1)
        .read_to_string(&mut text)
        .map_err(io)?;
    if text.len() as u64 > MAX_KEY_FILE {
        return Err(ApiKeyError::Line {
            path: path.to_owned(),
            line: 0,
            message: format!("the file is larger than {MAX_KEY_FILE} bytes"),
        });
    }
    Ok(text)
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
/// (401), a token left in that caller's bucket (429), and `scope` granted
/// to it (403).
pub(super) fn authorize(
    callers: &Callers,
    require_client_cert: bool,
    headers: &HeaderMap,
    extensions: &Extensions,
    scope: Scope,
) -> Result<Arc<Caller>, ApiError> {
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
    if !caller.scopes.has(scope) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!(
                "caller {:?} lacks the `{}` scope (it has: {}); grant it with `scopes=` on its line of the API key file",
                caller.name,
                scope.as_str(),
                caller.scopes.words().join(", ")
            ),
        ));
    }
    Ok(caller.clone())
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
        assert_eq!(c.list[0].scopes, Scopes::DEFAULT);
        assert_eq!(c.authenticate(b"k1").unwrap().name, "auth-service");
        assert_eq!(c.authenticate(b"k2").unwrap().name, "batch");
        assert!(c.authenticate(b"k3").is_none());
        assert!(c.authenticate(b"").is_none());
        assert!(Callers::default().authenticate(b"k1").is_none());
    }

    #[test]
    fn api_key_file_errors_name_the_line() {
        for (text, needle) in [
            ("a sha256:00\n".to_owned(), "64 hex"),
            ("\n\na b c d\n".to_owned(), "expected"),
            ("a md5:00\n".to_owned(), "sha256:"),
            ("a/b sha256:00\n".to_owned(), "caller name"),
            (format!("a sha256:{} admin\n", hash("k")), "scopes=LIST"),
            (
                format!("a sha256:{} scopes=root\n", hash("k")),
                "unknown scope \"root\"",
            ),
            (
                format!("a sha256:{} scopes=\n", hash("k")),
                "unknown scope \"\"",
            ),
            (
                format!("a sha256:{} scopes=read x\n", hash("k")),
                "expected",
            ),
        ] {
            let e = Callers::parse(&text, Path::new("f"), limit()).unwrap_err();
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

    #[test]
    fn scopes_default_to_tokens_and_read() {
        let text = format!(
            "a sha256:{}\nb sha256:{} scopes=admin\nc sha256:{} scopes=tokens,read,admin # all\n",
            hash("ka"),
            hash("kb"),
            hash("kc")
        );
        let unlimited = RateLimit {
            per_second: None,
            burst: NonZeroU32::new(1).unwrap(),
        };
        let c = Callers::parse(&text, Path::new("f"), unlimited).unwrap();
        let (a, b, all) = (
            c.authenticate(b"ka").unwrap(),
            c.authenticate(b"kb").unwrap(),
            c.authenticate(b"kc").unwrap(),
        );
        assert!(
            a.scopes.has(Scope::Tokens) && a.scopes.has(Scope::Read) && !a.scopes.has(Scope::Admin)
        );
        assert!(
            !b.scopes.has(Scope::Tokens)
                && !b.scopes.has(Scope::Read)
                && b.scopes.has(Scope::Admin)
        );
        assert_eq!(all.scopes.words(), ["tokens", "read", "admin"]);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer ka"));
        let e = authorize(&c, false, &h, &Extensions::new(), Scope::Admin).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, "insufficient_scope")
        );
        assert!(
            e.message
                .contains("lacks the `admin` scope (it has: tokens, read)"),
            "{}",
            e.message
        );
        assert!(authorize(&c, false, &h, &Extensions::new(), Scope::Read).is_ok());
    }

    #[test]
    fn the_key_file_is_reread_when_it_changes_and_a_bad_one_keeps_the_callers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        std::fs::write(&path, format!("a sha256:{}\n", hash("ka"))).unwrap();
        let set = CallerSet::load(Some(&path), limit()).unwrap();
        let before = set
            .load_current()
            .authenticate(b"ka")
            .unwrap()
            .limiter
            .clone();
        assert!(!set.rescan(), "unchanged content");
        std::fs::write(
            &path,
            format!(
                "a sha256:{}\nops sha256:{} scopes=admin\n",
                hash("ka"),
                hash("ko")
            ),
        )
        .unwrap();
        assert!(set.rescan());
        let now = set.load_current();
        assert!(now.authenticate(b"ko").unwrap().scopes.has(Scope::Admin));
        // The unchanged caller kept its bucket.
        let after = now.authenticate(b"ka").unwrap().limiter.clone();
        assert!(Arc::ptr_eq(&before.unwrap(), &after.unwrap()));
        // A bad file, a missing file: the callers stay.
        std::fs::write(&path, "garbage\n").unwrap();
        assert!(!set.rescan());
        std::fs::remove_file(&path).unwrap();
        assert!(!set.rescan());
        assert!(set.load_current().authenticate(b"ko").is_some());
        // Revoked.
        std::fs::write(&path, format!("a sha256:{}\n", hash("ka"))).unwrap();
        assert!(set.rescan());
        assert!(set.load_current().authenticate(b"ko").is_none());
    }
}
