//! A toy cell: one HTTP endpoint, `GET /v1/whoami`, that serves a tenant's
//! request only when the bearer token is for this cell and the tenant still
//! lives here. Otherwise it answers with the wrong-cell signal (421, see
//! docs/sdk.md), which tells the client to get a new token and go to the
//! cell that token names.
//!
//! Two checks:
//! 1. the token, with `cellns_client::Verifier` for this cell's hostname
//!    (public keys from the cellns JWKS URL): a token for another cell is
//!    refused with 421;
//! 2. the tenant: a token stays valid for minutes after its tenant moved,
//!    so the cell asks cellns DNS where `<tenant>.<zone>` lives now (cached
//!    for the answer's TTL) and refuses tenants that left. A real cell
//!    knows its tenants from its own data; asking DNS is how a cell that
//!    does not can still follow the map. If cellns cannot be reached the
//!    cell trusts the verified token: the data plane keeps working when the
//!    routing layer is down.
//!
//! ```sh
//! cargo run --example cell -- --listen 127.0.0.2:8443 --hostname a.cells.demo.test \
//!     --zone cells.demo.test --jwks http://127.0.0.1:8053/.well-known/jwks.json --dns 127.0.0.1:5353
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cellns_client::{
    Claims, Expectations, ResolveError, Resolver, Verifier, VerifyError, WRONG_CELL_STATUS,
    WrongCell, canonical_host,
};
use clap::Parser;

/// Command line of the toy cell.
#[derive(Debug, Parser)]
pub struct Args {
    /// Address to serve HTTP on (every cell of a deployment uses the same port).
    #[arg(long)]
    pub listen: SocketAddr,
    /// This cell's hostname, as in the map (the `cell` claim it accepts).
    #[arg(long)]
    pub hostname: String,
    /// The tenant zone, e.g. `cells.demo.test` (tenants are `<tenant>.<zone>`).
    #[arg(long)]
    pub zone: String,
    /// The cellns JWKS URL.
    #[arg(long)]
    pub jwks: String,
    /// The DNS server that answers for the zone (cellns).
    #[arg(long)]
    pub dns: SocketAddr,
    /// Expected `iss`.
    #[arg(long, default_value = "cellns")]
    pub issuer: String,
    /// Expected `aud`.
    #[arg(long, default_value = "cells")]
    pub audience: String,
}

/// A cell's state: who it is, how it checks tokens and tenants.
pub struct Cell {
    hostname: String,
    zone: String,
    verifier: Verifier,
    dns: Resolver,
    /// Tenant → (lives here?, until when that answer holds).
    tenants: Mutex<HashMap<String, (bool, Instant)>>,
}

impl Cell {
    /// Fetches the JWKS and sets up the cell.
    pub async fn new(args: &Args) -> anyhow::Result<Self> {
        let hostname = canonical_host(&args.hostname);
        let expect = Expectations::new(&args.issuer, &args.audience, &hostname)?;
        Ok(Self {
            verifier: Verifier::from_jwks_url(&args.jwks, expect).await?,
            zone: canonical_host(&args.zone),
            dns: Resolver::new(args.dns),
            tenants: Mutex::new(HashMap::new()),
            hostname,
        })
    }

    /// Whether `tenant` lives in this cell according to cellns DNS: its
    /// name and this cell's hostname lead to the same endpoint.
    async fn serves(&self, tenant: &str) -> bool {
        let now = Instant::now();
        if let Some(&(here, until)) = self
            .tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            && now < until
        {
            return here;
        }
        let name = format!("{tenant}.{}", self.zone);
        let (t, c) = tokio::join!(self.dns.lookup(&name), self.dns.lookup(&self.hostname));
        let (here, ttl) = match (t, c) {
            (Ok(t), Ok(c)) => (t.same_endpoint(&c), t.ttl.min(c.ttl)),
            // The map has no such tenant: definitely not here.
            (Err(ResolveError::NxDomain(_)), _) => (false, Duration::from_secs(5)),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(tenant, error = %e, "cannot ask cellns where the tenant lives; trusting the token");
                return true;
            }
        };
        let until = now + ttl.max(Duration::from_secs(1));
        self.tenants
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_owned(), (here, until));
        here
    }
}

/// The cell's routes.
pub fn router(cell: Arc<Cell>) -> axum::Router {
    axum::Router::new()
        .route("/v1/whoami", get(whoami))
        .with_state(cell)
}

/// Serves `router(cell)` on `listener` until the task is dropped.
pub async fn run(listener: tokio::net::TcpListener, cell: Arc<Cell>) -> std::io::Result<()> {
    axum::serve(listener, router(cell)).await
}

/// `GET /v1/whoami`: who served the request, for whom.
async fn whoami(State(cell): State<Arc<Cell>>, headers: HeaderMap) -> Response {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "send `Authorization: Bearer TOKEN`",
        );
    };
    let claims: Claims = match cell.verifier.verify(token.trim()).await {
        Ok(c) => c,
        Err(VerifyError::WrongCell { expected, got }) => return wrong_cell(&expected, &got),
        Err(e @ VerifyError::Jwks(_)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.code(), &e.to_string());
        }
        Err(e) => return error(StatusCode::UNAUTHORIZED, e.code(), &e.to_string()),
    };
    if !cell.serves(&claims.tenant).await {
        return wrong_cell(&cell.hostname, &claims.cell);
    }
    let body = serde_json::json!({
        "cell": cell.hostname,
        "tenant": claims.tenant,
        "subject": claims.sub,
        "map_version": claims.map_version,
    });
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// The wrong-cell signal: 421 with the `wrong_cell` JSON error.
fn wrong_cell(expected: &str, got: &str) -> Response {
    debug_assert_eq!(StatusCode::MISDIRECTED_REQUEST.as_u16(), WRONG_CELL_STATUS);
    let body = WrongCell::new(expected, got).http_body();
    (
        StatusCode::MISDIRECTED_REQUEST,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Any other refusal, in the cellns error format.
fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            header::HeaderValue::from_static(r#"Bearer error="invalid_token""#),
        );
    }
    resp
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.listen))?;
    let cell = Arc::new(Cell::new(&args).await?);
    // The demo script reads this line to learn the port.
    println!(
        "cell {} listening on {}",
        cell.hostname,
        listener.local_addr()?
    );
    run(listener, cell).await?;
    Ok(())
}
