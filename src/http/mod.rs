//! The HTTP API: the token endpoint, the JWKS, the OpenAPI document, the
//! probes, `/metrics` and the admin views, and the server that binds and
//! runs them (plain HTTP or HTTPS, optionally with client certificates).
//!
//! # What lives where
//!
//! Leaf modules first; each imports only the ones above it, none imports
//! this one, so there is no cycle:
//!
//! - `error`: the JSON error format (`ApiError`) and its conversions.
//! - `callers`: the API key file (re-read when it changes), callers, their
//!   scopes and rate limits, bearer parsing, and `authorize` (client
//!   certificate, key, rate, scope).
//! - `state`: what handlers share (`App`), and [`Readiness`].
//! - `tokens`: `POST /v1/tokens`, the JWKS, `GET /openapi.yaml`.
//! - `admin`: `/healthz`, `/readyz`, `/metrics`, the `/v1/` views of the
//!   effective view in force, operator overrides, the start-up answers and
//!   the request-timing middleware.
//! - `tls`: the rustls acceptor.
//! - `conn`: the connection loop of plain HTTP and HTTPS alike: connection
//!   limits, the TLS handshake, timeouts on every wait a client controls,
//!   the drain at shutdown.
//! - `router`: the route table and the router built from it.
//! - `scrape`: who may read `/metrics` (`--metrics-allow`,
//!   `--metrics-key-file`), checked before any route.
//! - this module: the settings ([`HttpConfig`]), the server ([`HttpServer`])
//!   and the start-up switch ([`Gate`]).
//!
//! # How a request flows
//!
//! The listener (`conn`: plain, or TLS, marking connections whose client
//! certificate was verified) hands every request to `dispatch`. Until
//! [`Gate::attach`] gives it a map, `dispatch` answers with
//! `admin::starting`: the probes and `/metrics` work, the rest is 503
//! `starting`. [`HttpServer::bind`] binds before the map is loaded, so
//! that `/healthz` and `/readyz` (503) answer while a large map loads.
//! Once attached, the router built by `router::router` serves: the
//! timing middleware records the route template and status, the handler
//! of the route runs, and `/v1/` handlers call `App::authorize` first.
//! Errors answer as `ApiError` JSON.
//!
//! # Adding a route
//!
//! Write the handler in the module that owns it (`tokens` or `admin`, a
//! new leaf for a new concern), add one `.add(...)` line to
//! `router::routes`, and document the path in `openapi/cellns.yaml`; a
//! test fails when the two disagree. State a handler needs goes into
//! `App` (built in [`Gate::attach`]).

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use tokio_util::sync::CancellationToken;

use crate::dns::dnssec::Dnssec;
use crate::health::Monitor;
use crate::live::Current;
use crate::live::overrides::Control;
use crate::token::keys::{Alg, KeyError, KeyRing};
use crate::token::{Issuer, IssuerConfig};

mod admin;
mod callers;
mod conn;
mod error;
mod router;
mod scrape;
mod state;
mod tls;
mod tokens;

pub use callers::ApiKeyError;
pub use conn::HttpLimits;
pub use router::{RouteInfo, route_table};
pub use state::Readiness;

use callers::{CallerSet, RateLimit};
use state::App;

/// How often the key directory and the API key file are rescanned.
const KEY_RESCAN_INTERVAL: Duration = Duration::from_secs(1);

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
    /// At shutdown, how long requests in flight may take to finish.
    pub shutdown_grace: Duration,
    /// Connection limits and timeouts.
    pub limits: HttpLimits,
    /// `--metrics-allow`: address prefixes that may read `/metrics`
    /// (empty: any).
    pub metrics_allow: Vec<String>,
    /// `--metrics-key-file`: SHA-256 hashes of the bearer keys that may
    /// read `/metrics`.
    pub metrics_key_file: Option<PathBuf>,
}

/// The HTTP API, bound and ready to run.
pub struct HttpServer {
    listener: tokio::net::TcpListener,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    limits: HttpLimits,
    keys: Arc<KeyRing>,
    callers: Arc<CallerSet>,
    gate: Arc<Gate>,
    shutdown_grace: Duration,
}

/// What the full API serves, given to [`Gate::attach`] once the map is
/// loaded.
#[derive(Debug)]
pub struct Attach {
    /// The effective view in force.
    pub store: Arc<dyn Current>,
    /// Operator overrides of the same store.
    pub overrides: Arc<dyn Control>,
    /// The health probers (none: nothing probed).
    pub health: Option<Arc<Monitor>>,
    /// The secondaries' serials (none: no `--notify`).
    pub fleet: Option<Arc<crate::dns::fleet::Fleet>>,
}

/// Switches the HTTP API from its start-up answers (probes and metrics
/// only) to the full API once a map is loaded.
#[derive(Debug)]
pub struct Gate {
    /// What the [`App`] is made of, until [`Gate::attach`] takes it.
    pending: Mutex<Option<Pending>>,
    router: OnceLock<Router>,
    readiness: Arc<Readiness>,
    metrics_access: scrape::MetricsAccess,
    /// The DNSSEC signer, for `/v1/dnssec`, when the zone is signed.
    dnssec: OnceLock<Arc<Dnssec>>,
}

#[derive(Debug)]
struct Pending {
    issuer: Issuer,
    callers: Arc<CallerSet>,
    require_client_cert: bool,
}

impl Gate {
    /// Serves the full API over `parts` from now on, and marks the map
    /// loaded. The first call wins (true); later ones change nothing and
    /// return false.
    pub fn attach(&self, parts: Attach) -> bool {
        let Some(p) = self.pending.lock().ok().and_then(|mut p| p.take()) else {
            return false;
        };
        let app = Arc::new(App {
            store: parts.store,
            overrides: parts.overrides,
            health: parts.health,
            fleet: parts.fleet,
            issuer: p.issuer,
            callers: p.callers,
            require_client_cert: p.require_client_cert,
            readiness: self.readiness.clone(),
            dnssec: self.dnssec.get().cloned(),
        });
        let _ = self.router.set(router::router(app));
        self.readiness.set_map_loaded();
        true
    }

    /// Shows `dnssec` in `/v1/dnssec`; call before [`Gate::attach`].
    pub fn set_dnssec(&self, dnssec: Arc<Dnssec>) {
        let _ = self.dnssec.set(dnssec);
    }

    /// Start-up progress (`/readyz`).
    pub fn readiness(&self) -> &Arc<Readiness> {
        &self.readiness
    }
}

/// The service the listener runs: the full router once attached, the
/// start-up answers before.
async fn dispatch(State(gate): State<Arc<Gate>>, req: axum::extract::Request) -> Response {
    use axum::response::IntoResponse as _;
    use tower::Service as _;
    if req.uri().path() == scrape::PATH {
        let peer = req
            .extensions()
            .get::<axum::extract::ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip());
        if let Err(e) = gate.metrics_access.check(peer, req.headers()) {
            return e.into_response();
        }
    }
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
            Some(t) => Some(
                tls::acceptor(&t.cert, &t.key, t.client_ca.as_deref())
                    .map_err(|e| HttpError::Tls(e.to_string()))?,
            ),
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
        let callers = Arc::new(CallerSet::load(cfg.api_keys.as_deref(), limit)?);
        match &cfg.api_keys {
            Some(path) if callers.load_current().is_empty() => {
                tracing::warn!(file = %path.display(), "the API key file lists no caller: every token request is refused (401)");
            }
            Some(_) => {}
            None => tracing::warn!(
                "no --api-keys: every token request is refused (401); the JWKS is served"
            ),
        }
        if cfg.tokens.max_ttl == 0 {
            return Err(HttpError::Config(
                "--token-max-ttl must be at least 1".into(),
            ));
        }
        let metrics_access =
            scrape::MetricsAccess::load(&cfg.metrics_allow, cfg.metrics_key_file.as_deref())
                .map_err(HttpError::Config)?;
        if !metrics_access.is_open() {
            tracing::info!(
                allow = ?cfg.metrics_allow,
                key_file = ?cfg.metrics_key_file,
                "/metrics is restricted; /healthz and /readyz stay open"
            );
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
            shutdown_grace: cfg.shutdown_grace,
            listener,
            addr,
            tls,
            limits: cfg.limits,
            keys: issuer.keys().clone(),
            callers: callers.clone(),
            gate: Arc::new(Gate {
                pending: Mutex::new(Some(Pending {
                    issuer,
                    callers,
                    require_client_cert: client_ca.is_some(),
                })),
                router: OnceLock::new(),
                readiness: Arc::new(Readiness::new()),
                metrics_access,
                dnssec: OnceLock::new(),
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

    /// Serves until `cancel` fires, then stops accepting and lets requests
    /// in flight finish (at most the shutdown grace period). Also rescans
    /// the key directory and the API key file each second.
    pub async fn run(self, cancel: CancellationToken) -> Result<(), HttpError> {
        let ring = self.keys.clone();
        let callers = self.callers.clone();
        if ring.dir().is_some() || callers.path().is_some() {
            let cancel = cancel.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(KEY_RESCAN_INTERVAL);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tick.tick() => {
                            let (ring, callers) = (ring.clone(), callers.clone());
                            let _ = tokio::task::spawn_blocking(move || {
                                if ring.dir().is_some() {
                                    ring.rescan();
                                }
                                callers.rescan();
                            })
                            .await;
                        }
                    }
                }
            });
        }
        let app = Router::new().fallback(dispatch).with_state(self.gate);
        conn::serve(
            self.listener,
            self.tls,
            app,
            self.limits,
            cancel,
            self.shutdown_grace,
        )
        .await;
        Ok(())
    }
}
