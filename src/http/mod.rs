//! The HTTP API: the token endpoint, the JWKS, the OpenAPI document, and
//! the server that binds and runs them (plain HTTP or HTTPS, optionally
//! with client certificates).
//!
//! Owns: caller authentication (bearer API keys, [`Callers`]), per-caller
//! rate limiting, the JSON error format ([`ApiError`]), and the route table.
//!
//! Adding a route: add one `.add(...)` line to [`routes`] and document the
//! path in `openapi/cellns.yaml`; a test fails when the two disagree. State
//! a handler needs goes into [`App`]. The probes, `/metrics` and the admin
//! views live in [`admin`].
//!
//! Start-up: [`HttpServer::bind`] binds before the map is loaded, so that
//! `/healthz` and `/readyz` (503) answer while a large map loads; the full
//! API is switched on by [`Gate::attach`] once there is a snapshot.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use governor::clock::Clock as _;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};
use tokio_util::sync::CancellationToken;

mod admin;

pub use admin::Readiness;

use crate::live::Current;
use crate::token::issue::IssueError;
use crate::token::keys::{Alg, KeyError, KeyRing};
use crate::token::{Issuer, IssuerConfig, TokenRequest};

/// Largest accepted request body (token requests are a few hundred bytes).
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// `Cache-Control` of the JWKS: short, so a removed key stops verifying soon
/// after its file is removed, and a new key is seen quickly.
pub const JWKS_CACHE_CONTROL: &str = "public, max-age=60";
/// How often the key directory is rescanned for added or removed keys.
pub const KEY_RESCAN_INTERVAL: Duration = Duration::from_secs(1);
/// How long shutdown waits for in-flight requests before closing.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The OpenAPI document, served at `GET /openapi.yaml`.
pub const OPENAPI_YAML: &str = include_str!("../../openapi/cellns.yaml");

/// Why the HTTP API could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The listen address could not be bound.
    #[error("cannot bind HTTP on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The signing keys could not be loaded.
    #[error("signing keys: {0}")]
    Keys(#[from] KeyError),
    /// The API key file is bad.
    #[error(transparent)]
    ApiKeys(#[from] ApiKeyError),
    /// The development key was asked to serve a non-loopback address.
    #[error(
        "refusing to issue tokens signed with an ephemeral development key on non-loopback address {0}: \
         give --signing-keys DIR (create a key with `cellns keygen --out DIR`), or --allow-dev-key"
    )]
    DevKeyNotLoopback(SocketAddr),
    /// A flag value is out of range.
    #[error("{0}")]
    Config(String),
    /// TLS set-up failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// Serving failed.
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

// ---------------------------------------------------------------------------
// Callers: API keys and rate limits.

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
pub struct Caller {
    /// The caller's name from the API key file (logs, rate limits, metrics).
    pub name: String,
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
pub struct Callers {
    list: Vec<Caller>,
}

/// The rate limit of each caller: `per_second` refill (`None`: unlimited)
/// and `burst` bucket size.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    /// Requests per second (bucket refill); `None` disables limiting.
    pub per_second: Option<NonZeroU32>,
    /// Bucket size.
    pub burst: NonZeroU32,
}

impl Callers {
    /// Parses an API key file: one caller a line, `NAME sha256:HEX` where
    /// HEX is the SHA-256 of the bearer key the caller sends; `#` starts a
    /// comment; blank lines are ignored. Names and keys must be unique.
    pub fn parse(text: &str, path: &Path, limit: RateLimit) -> Result<Self, ApiKeyError> {
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
    pub fn load(path: &Path, limit: RateLimit) -> Result<Self, ApiKeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| ApiKeyError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path, limit)
    }

    /// Number of callers.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when no caller is configured (every token request is refused).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The caller whose key is `presented`. The SHA-256 of the presented
    /// key is compared with every stored hash in constant time, and the
    /// scan does not stop at a match, so timing reveals nothing about which
    /// caller (if any) matched.
    pub fn authenticate(&self, presented: &[u8]) -> Option<&Caller> {
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

// ---------------------------------------------------------------------------
// Errors.

/// An API error: a status and `{"error": {"code", "message"}}`. The codes
/// are stable (documented in openapi/cellns.yaml); messages are for people.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human explanation.
    pub message: String,
    /// `Retry-After` seconds (429).
    retry_after: Option<u64>,
    /// `WWW-Authenticate` value (401).
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    fn unauthorized(code: &'static str, message: &str, challenge: &'static str) -> Self {
        Self {
            www_authenticate: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, code, message)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let body = serde_json::to_vec(&Outer {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        })
        .unwrap_or_default();
        let mut resp = (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self.www_authenticate {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        let (status, code) = match &e {
            IssueError::InvalidTenant(_) => (StatusCode::BAD_REQUEST, "invalid_tenant"),
            IssueError::UnknownTenant(_) => (StatusCode::NOT_FOUND, "unknown_tenant"),
            IssueError::InvalidTtl { .. } => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            IssueError::InvalidSubject => (StatusCode::BAD_REQUEST, "invalid_subject"),
            IssueError::NoSigningKey => (StatusCode::SERVICE_UNAVAILABLE, "no_signing_key"),
        };
        Self::new(status, code, e.to_string())
    }
}

// ---------------------------------------------------------------------------
// Application state and routes.

/// What the handlers share.
#[derive(Debug)]
pub struct App {
    /// The effective view in force (what DNS answers from).
    pub store: Arc<dyn Current>,
    /// Token minting (holds the key ring).
    pub issuer: Issuer,
    /// Who may request tokens.
    pub callers: Callers,
    /// Token requests must come over a connection that presented a client
    /// certificate verified against `--client-ca` (in addition to the API key).
    pub require_client_cert: bool,
    /// Start-up progress, for `/readyz`.
    pub readiness: Arc<Readiness>,
}

/// Per-connection fact inserted into each request's extensions by the TLS
/// server: the client presented a certificate that chains to `--client-ca`
/// (rustls has verified it during the handshake).
#[derive(Debug, Clone, Copy)]
pub struct ClientCertVerified;

/// One row of the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: Method,
    /// Path (axum syntax, `{param}` as in OpenAPI).
    pub path: &'static str,
}

/// A router that remembers its routes, so the OpenAPI test can check that
/// every route is documented.
pub struct Routes<S> {
    router: Router<S>,
    table: Vec<RouteInfo>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Adds `handler` for `method path`.
    pub fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("route {method} {path}: not a routable method"));
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(RouteInfo { method, path });
        self
    }

    /// The routes, in the order they were added.
    pub fn table(&self) -> &[RouteInfo] {
        &self.table
    }
}

/// Every route of the API.
pub fn routes() -> Routes<Arc<App>> {
    Routes::new()
        .add(Method::POST, "/v1/tokens", issue_token)
        .add(Method::GET, "/.well-known/jwks.json", jwks)
        .add(Method::GET, "/openapi.yaml", openapi)
        .add(Method::GET, "/healthz", admin::healthz)
        .add(Method::GET, "/readyz", admin::readyz)
        .add(Method::GET, "/metrics", admin::metrics)
        .add(Method::GET, "/v1/map", admin::map_info)
        .add(Method::GET, "/v1/cells", admin::cells)
        .add(Method::GET, "/v1/tenants/{tenant}", admin::tenant)
}

/// The routes as `(method, path)`, for documentation checks.
pub fn route_table() -> Vec<RouteInfo> {
    routes().table
}

/// The router over `app`, with JSON 404/405 answers; every request's
/// latency is recorded (by route template and status).
pub fn router(app: Arc<App>) -> Router {
    routes()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(admin::track))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}

/// `GET /openapi.yaml`.
async fn openapi() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/yaml"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        OPENAPI_YAML,
    )
}

/// `GET /.well-known/jwks.json`: every key of the key directory.
async fn jwks(State(app): State<Arc<App>>) -> Response {
    let body = app.issuer.keys().load().jwks_json().clone();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, JWKS_CACHE_CONTROL),
        ],
        body,
    )
        .into_response()
}

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
/// `--client-ca` requires one (401), a known API key (401), and a token
/// left in the caller's bucket (429).
pub fn authorize<'a>(
    app: &'a App,
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
) -> Result<&'a Caller, ApiError> {
    if app.require_client_cert && extensions.get::<ClientCertVerified>().is_none() {
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
    let Some(caller) = app.callers.authenticate(key) else {
        return Err(ApiError::unauthorized(
            "invalid_api_key",
            "the API key is not valid",
            r#"Bearer realm="cellns", error="invalid_token""#,
        ));
    };
    if let Err(wait) = caller.take() {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Err(ApiError {
            retry_after: Some(secs.max(1)),
            ..ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("caller {:?} is over its rate limit", caller.name),
            )
        });
    }
    Ok(caller)
}

/// `POST /v1/tokens`: [`mint`], counted (tokens issued per cell, errors by
/// code). Per-request logs are at debug level, for throughput.
async fn issue_token(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let result = mint(&app, req).await;
    if let Err(e) = &result {
        crate::metrics::token_error(e.code);
    }
    result
}

/// Issues a token. Checks run in this order: caller (401), rate (429),
/// content type (415), size (413), JSON (400), then the request itself
/// (400/404/503), so nothing about tenants or the map is revealed to an
/// unauthenticated caller.
async fn mint(app: &App, req: axum::extract::Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let caller = authorize(app, &headers, &parts.extensions)?;
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let bytes = read_body(&headers, body).await?;
    let req: TokenRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // One view for the whole decision: cell, region and map version agree,
    // and agree with what DNS answers from the same view.
    let view = app.store.view();
    let issued = app.issuer.issue(&view, &req, now).map_err(|e| {
        tracing::debug!(caller = %caller.name, tenant = %req.tenant, error = %e, "token refused");
        ApiError::from(e)
    })?;
    tracing::debug!(caller = %caller.name, tenant = %req.tenant, cell = %issued.cell, "token issued");
    // The same decision `issue` made, on the same view (no allocation).
    if let Some(cell) = crate::route::lookup(&view, req.tenant.as_bytes()) {
        crate::metrics::token_issued(&view.cell(cell).id);
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_vec(&issued).unwrap_or_default(),
    )
        .into_response())
}

/// `Content-Type: application/json`, parameters (charset) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (by the declared
/// length up front, and while reading a body without one).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
            while let Some(e) = src {
                if e.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                src = e.source();
            }
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("cannot read the body: {inner}"),
            )
        })
}

// ---------------------------------------------------------------------------
// Server.

/// HTTPS settings: the certificate chain and key, and the CA that client
/// certificates must chain to (mTLS) when given.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// `--tls-cert`.
    pub cert: PathBuf,
    /// `--tls-key`.
    pub key: PathBuf,
    /// `--client-ca`.
    pub client_ca: Option<PathBuf>,
}

/// The HTTP API's settings (built by the serve wiring from the flags).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// HTTPS, when set.
    pub tls: Option<TlsConfig>,
    /// Directory of PEM signing keys; none: an ephemeral development key.
    pub signing_keys: Option<PathBuf>,
    /// Allow the development key on a non-loopback address.
    pub allow_dev_key: bool,
    /// The API key file.
    pub api_keys: Option<PathBuf>,
    /// What issued tokens carry.
    pub tokens: IssuerConfig,
    /// Token requests per second per caller; 0: unlimited.
    pub rate_limit: u32,
    /// Token bucket size per caller.
    pub rate_burst: u32,
}

/// The HTTP API, bound and ready to run.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    keys: Arc<KeyRing>,
    gate: Arc<Gate>,
}

/// Switches the HTTP API from its start-up answers (probes and metrics
/// only, see [`admin::starting`]) to the full API once a map is loaded.
#[derive(Debug)]
pub struct Gate {
    /// What the [`App`] is made of, until [`Gate::attach`] takes it.
    pending: Mutex<Option<Pending>>,
    router: OnceLock<Router>,
    readiness: Arc<Readiness>,
}

#[derive(Debug)]
struct Pending {
    issuer: Issuer,
    callers: Callers,
    require_client_cert: bool,
}

impl Gate {
    /// Serves the full API over `store` from now on, and marks the map
    /// loaded. The first call wins; later ones return `None`.
    pub fn attach(&self, store: Arc<dyn Current>) -> Option<Arc<App>> {
        let p = self.pending.lock().ok()?.take()?;
        let app = Arc::new(App {
            store,
            issuer: p.issuer,
            callers: p.callers,
            require_client_cert: p.require_client_cert,
            readiness: self.readiness.clone(),
        });
        let _ = self.router.set(router(app.clone()));
        self.readiness.set_map_loaded();
        Some(app)
    }

    /// Start-up progress (`/readyz`).
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }
}

/// The service the listener runs: the full router once attached, the
/// start-up answers before.
async fn dispatch(State(gate): State<Arc<Gate>>, req: axum::extract::Request) -> Response {
    use tower::Service as _;
    match gate.router.get() {
        // A Router is always ready; `call` needs no `poll_ready`.
        Some(r) => match r.clone().call(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        },
        None => admin::starting(&gate.readiness, req).await,
    }
}

impl HttpServer {
    /// Loads keys and callers and binds the listen address; needs no map
    /// (attach one with [`Gate::attach`]). Development mode (no signing key
    /// directory) refuses a non-loopback address unless `allow_dev_key`.
    pub async fn bind(cfg: &HttpConfig) -> Result<Self, HttpError> {
        let tls = match &cfg.tls {
            Some(t) => Some(tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref())?),
            None => None,
        };
        let keys = match &cfg.signing_keys {
            Some(dir) => {
                let ring = KeyRing::from_dir(dir)?;
                if let Some(k) = ring.load().signing() {
                    tracing::info!(
                        dir = %dir.display(),
                        signing_kid = k.kid(),
                        signing_key = k.source(),
                        alg = %k.alg(),
                        published = ring.load().keys().len(),
                        "signing keys loaded"
                    );
                }
                ring
            }
            None => {
                if !cfg.listen.ip().is_loopback() && !cfg.allow_dev_key {
                    return Err(HttpError::DevKeyNotLoopback(cfg.listen));
                }
                let ring = KeyRing::ephemeral(Alg::EdDSA);
                tracing::warn!(
                    kid = ring
                        .load()
                        .signing()
                        .map(|k| k.kid().to_owned())
                        .unwrap_or_default(),
                    "DEVELOPMENT SIGNING KEY: no --signing-keys given, tokens are signed with an \
                     ephemeral key and die with this process; do not use in production"
                );
                ring
            }
        };
        let burst = NonZeroU32::new(cfg.rate_burst)
            .ok_or_else(|| HttpError::Config("--rate-burst must be at least 1".into()))?;
        let limit = RateLimit {
            per_second: NonZeroU32::new(cfg.rate_limit),
            burst,
        };
        let callers = match &cfg.api_keys {
            Some(path) => {
                let c = Callers::load(path, limit)?;
                if c.is_empty() {
                    tracing::warn!(file = %path.display(), "the API key file lists no caller: every token request is refused (401)");
                }
                c
            }
            None => {
                tracing::warn!(
                    "no --api-keys: every token request is refused (401); the JWKS is served"
                );
                Callers::default()
            }
        };
        if cfg.tokens.max_ttl == 0 {
            return Err(HttpError::Config(
                "--token-max-ttl must be at least 1".into(),
            ));
        }
        let issuer = Issuer::new(cfg.tokens.clone(), Arc::new(keys));
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| HttpError::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| HttpError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let client_ca = cfg.tls.as_ref().and_then(|t| t.client_ca.as_ref());
        if let Some(ca) = client_ca {
            tracing::info!(client_ca = %ca.display(), "mTLS: token requests need a client certificate from this CA and an API key");
        }
        Ok(Self {
            listener,
            addr,
            tls,
            keys: issuer.keys().clone(),
            gate: Arc::new(Gate {
                pending: Mutex::new(Some(Pending {
                    issuer,
                    callers,
                    require_client_cert: client_ca.is_some(),
                })),
                router: OnceLock::new(),
                readiness: Arc::new(Readiness::new()),
            }),
        })
    }

    /// True when serving HTTPS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The switch to the full API, and the readiness it reports.
    pub fn gate(&self) -> Arc<Gate> {
        self.gate.clone()
    }

    /// Serves until `cancel` fires, then lets in-flight requests finish
    /// (at most a few seconds). Also rescans the key directory each second.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), HttpError> {
        let ring = self.keys.clone();
        if ring.dir().is_some() {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEY_RESCAN_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {
                            let ring = ring.clone();
                            let _ = tokio::task::spawn_blocking(move || ring.rescan()).await;
                        }
                    }
                }
            });
        }
        let app = Router::new().fallback(dispatch).with_state(self.gate);
        if let Some(acceptor) = self.tls {
            return tls::serve(self.listener, acceptor, app, cancel).await;
        }
        let stop = cancel.clone();
        let server = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        let server = tokio::spawn(async move { server.await });
        let mut server = server;
        tokio::select! {
            r = &mut server => return flatten(r),
            _ = cancel.cancelled() => {}
        }
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
            Ok(r) => flatten(r),
            Err(_) => {
                tracing::warn!(
                    "HTTP requests still open after the shutdown grace period; closing them"
                );
                server.abort();
                Ok(())
            }
        }
    }
}

fn flatten(r: Result<std::io::Result<()>, tokio::task::JoinError>) -> Result<(), HttpError> {
    match r {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(HttpError::Serve(e)),
        Err(e) => Err(HttpError::Serve(std::io::Error::other(e))),
    }
}

/// HTTPS: rustls, optionally verifying client certificates (mTLS).
mod tls {
    use std::net::SocketAddr;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use hyper_util::rt::TokioIo;
    use tokio::task::JoinSet;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::{RootCertStore, ServerConfig};
    use tokio_util::sync::CancellationToken;
    use tower::Service as _;

    use super::{ClientCertVerified, HttpError, SHUTDOWN_GRACE};

    /// A TLS handshake slower than this is dropped (slowloris).
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, HttpError> {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| HttpError::Tls(format!("{}: {e}", path.display())))?;
        if certs.is_empty() {
            return Err(HttpError::Tls(format!(
                "{}: no PEM certificate in it",
                path.display()
            )));
        }
        Ok(certs)
    }

    /// The acceptor for `--tls-cert`/`--tls-key`, verifying client
    /// certificates against `client_ca` when given. A client may connect
    /// without a certificate (the JWKS is public); one that presents a
    /// certificate the CA did not issue fails the handshake, and token
    /// requests without one are refused by the handler.
    pub(super) fn acceptor(
        cert: &Path,
        key: &Path,
        client_ca: Option<&Path>,
    ) -> Result<TlsAcceptor, HttpError> {
        let chain = certs(cert)?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| HttpError::Tls(format!("{}: {e}", key.display())))?;
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| HttpError::Tls(e.to_string()))?;
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = RootCertStore::empty();
                for c in certs(ca)? {
                    roots
                        .add(c)
                        .map_err(|e| HttpError::Tls(format!("{}: {e}", ca.display())))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| HttpError::Tls(format!("{}: {e}", ca.display())))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| HttpError::Tls(format!("{}: {e}", cert.display())))?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    /// Accepts TLS connections until `cancel`, then closes idle connections
    /// and lets in-flight requests finish (bounded by the grace period).
    pub(super) async fn serve(
        listener: tokio::net::TcpListener,
        acceptor: TlsAcceptor,
        app: Router,
        cancel: CancellationToken,
    ) -> Result<(), HttpError> {
        let mut conns = JoinSet::new();
        loop {
            while conns.try_join_next().is_some() {}
            let (tcp, peer) = tokio::select! {
                _ = cancel.cancelled() => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "HTTPS accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            conns.spawn(connection(
                tcp,
                peer,
                acceptor.clone(),
                app.clone(),
                cancel.clone(),
            ));
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, async {
            while conns.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!(
                "HTTPS connections still open after the shutdown grace period; closing them"
            );
            conns.abort_all();
        }
        Ok(())
    }

    async fn connection(
        tcp: tokio::net::TcpStream,
        peer: SocketAddr,
        acceptor: TlsAcceptor,
        app: Router,
        cancel: CancellationToken,
    ) {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "TLS handshake timed out");
                return;
            }
        };
        let verified = tls
            .get_ref()
            .1
            .peer_certificates()
            .is_some_and(|c| !c.is_empty());
        let svc =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                if verified {
                    req.extensions_mut().insert(ClientCertVerified);
                }
                // A Router is always ready; `call` needs no `poll_ready`.
                app.clone().call(req)
            });
        let conn =
            hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "HTTPS connection ended with an error");
                }
            }
            _ = cancel.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
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
        assert_eq!(c.len(), 2);
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
