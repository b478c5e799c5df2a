//! The operating side of the HTTP API: liveness (`GET /healthz`),
//! readiness (`GET /readyz`), Prometheus metrics (`GET /metrics`), the
//! read-only views of the map in force (`GET /v1/map`, `/v1/cells`,
//! `/v1/tenants/{tenant}`), and the middleware that times every request.
//!
//! Owns: the JSON documents of these routes, and what the API answers while
//! the map is still loading ([`starting`]). [`Readiness`], which `/readyz`
//! reports, lives in [`super::state`]: `serve` flips it.
//!
//! Access: `/healthz`, `/readyz` and `/metrics` need no credentials, as
//! probes and scrapers expect; they reveal no tenant. The `/v1/` views show
//! where tenants live and what the map file says, so they need a caller API
//! key, like token requests (see [`super::callers::authorize`]).
//!
//! Adding an admin route: one handler here (starting with
//! `app.authorize(...)` unless the route is a probe), and one line in
//! `router::routes`.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::state::{App, Readiness};
use crate::live::{Current, View};
use crate::map::Status;
use crate::metrics;
use crate::route::{self, NoRoute, Via};

/// A JSON response that no cache keeps.
fn json(status: StatusCode, body: &impl Serialize) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_vec(body).unwrap_or_default(),
    )
        .into_response()
}

/// RFC 3339 UTC, to the second.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// Probes and metrics (no credentials).

/// `GET /healthz`: the process is alive and its HTTP server answers.
pub(super) async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: 200 when ready, 503 when not; the body says why.
pub(super) async fn readyz(State(app): State<Arc<App>>) -> Response {
    readiness_response(&app.readiness, Some(&*app.store))
}

#[derive(Serialize)]
struct ReadyBody<'a> {
    ready: bool,
    map_loaded: bool,
    dns_listening: bool,
    /// Where DNS answers (UDP and TCP), once it does.
    dns_addresses: &'a [std::net::SocketAddr],
    stopping: bool,
    map_version: Option<&'a str>,
    serial: Option<u32>,
    /// False when the last reload failed (the last good map still serves).
    last_reload_ok: bool,
    /// When it failed; the message is at `GET /v1/map` (it may name tenants).
    last_reload_error_at: Option<String>,
}

fn readiness_response(readiness: &Readiness, store: Option<&dyn Current>) -> Response {
    let view = store.map(Current::view);
    let status = store.map(Current::reload_status).unwrap_or_default();
    let ready = readiness.is_ready();
    let body = ReadyBody {
        ready,
        map_loaded: readiness.map_loaded(),
        dns_listening: readiness.dns_listening(),
        dns_addresses: readiness.dns_addresses(),
        stopping: readiness.stopping(),
        map_version: view.as_deref().map(|v| v.map().version.as_str()),
        serial: view.as_deref().map(View::serial),
        last_reload_ok: status.last_error.is_none(),
        last_reload_error_at: status.last_error_at.map(rfc3339),
    };
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(code, &body)
}

/// `GET /metrics`: the Prometheus text format.
pub(super) async fn metrics() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "no-store"),
        ],
        metrics::render(),
    )
        .into_response()
}

/// Answers a request that arrives before the map is loaded: the probes and
/// the metrics work, everything else is 503 `starting` (with Retry-After).
pub(super) async fn starting(readiness: &Readiness, req: Request) -> Response {
    let started = Instant::now();
    let get = req.method() == Method::GET;
    let (route, resp) = match req.uri().path() {
        "/healthz" if get => ("/healthz", healthz().await),
        "/readyz" if get => ("/readyz", readiness_response(readiness, None)),
        "/metrics" if get => ("/metrics", metrics().await),
        _ => {
            let mut r = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "starting",
                "the map is still loading; retry shortly",
            )
            .into_response();
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            (metrics::UNMATCHED_ROUTE, r)
        }
    };
    metrics::http_request(route.to_owned(), resp.status().as_u16(), started.elapsed());
    resp
}

/// Middleware: records each request's latency by route template (never the
/// raw path, which would make a series per tenant) and status.
pub(super) async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or_else(
        || metrics::UNMATCHED_ROUTE.to_owned(),
        |m| m.as_str().to_owned(),
    );
    let started = Instant::now();
    let resp = next.run(req).await;
    metrics::http_request(route, resp.status().as_u16(), started.elapsed());
    resp
}

// ---------------------------------------------------------------------------
// Admin views (caller API key).

#[derive(Serialize)]
struct ReloadView {
    successes: u64,
    failures: u64,
    last_error: Option<String>,
    last_error_at: Option<String>,
}

#[derive(Serialize)]
struct Counts {
    cells: usize,
    tenants: usize,
    cells_by_status: std::collections::BTreeMap<&'static str, usize>,
}

#[derive(Serialize)]
struct MapView<'a> {
    version: &'a str,
    serial: u32,
    source: &'a str,
    loaded_at: String,
    loaded_at_unix: u64,
    zone: String,
    placement: &'static str,
    counts: Counts,
    reload: ReloadView,
}

/// `GET /v1/map`: the map in force and the reload status.
pub(super) async fn map_info(
    State(app): State<Arc<App>>,
    req: Request,
) -> Result<Response, ApiError> {
    app.authorize(req.headers(), req.extensions())?;
    let view = app.store.view();
    let snap = view.map();
    let status = app.store.reload_status();
    let body = MapView {
        version: &snap.version,
        serial: view.serial(),
        source: &snap.source,
        loaded_at: rfc3339(snap.loaded_at),
        loaded_at_unix: unix(snap.loaded_at),
        zone: snap.zone.origin.to_ascii(),
        placement: snap.placement.as_str(),
        counts: Counts {
            cells: snap.cells.len(),
            tenants: snap.tenants.len(),
            cells_by_status: Status::ALL
                .iter()
                .map(|&s| (s.as_str(), view.cells_with_status(s)))
                .collect(),
        },
        reload: ReloadView {
            successes: status.successes,
            failures: status.failures,
            last_error: status.last_error,
            last_error_at: status.last_error_at.map(rfc3339),
        },
    };
    Ok(json(StatusCode::OK, &body))
}

/// `GET /v1/dnssec`: the DNSSEC keys with their states and timing, the
/// DS records the parent should have, and the signature cache; 404
/// `dnssec_off` when the zone is not signed.
pub(super) async fn dnssec(
    State(app): State<Arc<App>>,
    req: Request,
) -> Result<Response, ApiError> {
    app.authorize(req.headers(), req.extensions())?;
    let Some(d) = &app.dnssec else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "dnssec_off",
            "the zone is not signed (no --dnssec-keys)",
        ));
    };
    let view = app.store.view();
    Ok(json(StatusCode::OK, &d.status(&view.map().zone.origin)))
}

#[derive(Serialize)]
struct CellView<'a> {
    id: &'a str,
    hostname: String,
    region: &'a str,
    /// The effective status: what answers and tokens follow.
    status: &'static str,
    /// What decided it: `map` or `override`.
    status_source: &'static str,
    /// The status the map gives.
    map_status: &'static str,
    weight: u32,
    /// Tenants listed for this cell in the map.
    tenants: usize,
    /// The cell that answers for this cell's tenants (itself unless down).
    serving: &'a str,
    /// Down with no serving cell on its failover chain: its tenants stay.
    stranded: bool,
    failover: Option<&'a str>,
    /// The endpoints answered for it.
    ipv4: Vec<String>,
    ipv6: Vec<String>,
}

#[derive(Serialize)]
struct CellsView<'a> {
    map_version: &'a str,
    serial: u32,
    cells: Vec<CellView<'a>>,
}

/// `GET /v1/cells`: the cell registry of the zone version in force, with
/// each cell's effective status.
pub(super) async fn cells(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    app.authorize(req.headers(), req.extensions())?;
    let view = app.store.view();
    let cells = view
        .map()
        .cell_ids()
        .map(|id| {
            let (c, st) = (view.cell(id), view.state(id));
            CellView {
                id: &c.id,
                hostname: c.hostname.to_ascii(),
                region: &c.region,
                status: st.status.as_str(),
                status_source: st.source.as_str(),
                map_status: c.status.as_str(),
                weight: c.weight,
                tenants: c.listed_tenants,
                serving: &view.cell(st.serving).id,
                stranded: st.stranded,
                failover: c.failover.map(|f| view.cell(f).id.as_str()),
                ipv4: st.ipv4.iter().map(ToString::to_string).collect(),
                ipv6: st.ipv6.iter().map(ToString::to_string).collect(),
            }
        })
        .collect();
    Ok(json(
        StatusCode::OK,
        &CellsView {
            map_version: &view.map().version,
            serial: view.serial(),
            cells,
        },
    ))
}

#[derive(Serialize)]
struct DnsView {
    name: String,
    ttl: u32,
    a: Vec<String>,
    aaaa: Vec<String>,
    cname: Option<String>,
}

#[derive(Serialize)]
struct TenantView<'a> {
    tenant: String,
    /// The serving cell's id.
    cell: &'a str,
    hostname: String,
    region: &'a str,
    /// The serving cell's effective status.
    status: &'static str,
    /// `listed` or `hashed`.
    via: &'static str,
    /// The cell the map (or the hash) assigns; differs from `cell` when it
    /// is down.
    assigned: &'a str,
    /// The down cells passed through, starting with `assigned`.
    failed_over: Vec<&'a str>,
    /// Why, in words (as `cellns explain` says it).
    why: String,
    /// What a DNS query for the tenant gets.
    dns: DnsView,
    map_version: &'a str,
    serial: u32,
}

/// `GET /v1/tenants/{tenant}`: the tenant's cell and why, decided by
/// [`route::explain`] (as `cellns explain`, DNS and tokens do) on the view
/// in force.
pub(super) async fn tenant(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    app.authorize(req.headers(), req.extensions())?;
    let view = app.store.view();
    let r = route::explain(&view, &tenant).map_err(|e| match e {
        NoRoute::InvalidTenant(..) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_tenant", e.to_string())
        }
        NoRoute::Unknown(..) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_tenant", e.to_string())
        }
    })?;
    Ok(json(StatusCode::OK, &tenant_view(&view, &tenant, &r)))
}

fn tenant_view<'a>(view: &'a View, tenant: &str, r: &route::Route) -> TenantView<'a> {
    let snap = view.map();
    let serving = view.cell(r.serving);
    let state = view.state(r.serving);
    let assigned = view.cell(r.assigned);
    let why = r.reason(view);
    let tenant = tenant.to_ascii_lowercase();
    let cname = serving.by_name_only();
    TenantView {
        cell: &serving.id,
        hostname: serving.hostname.to_ascii(),
        region: &serving.region,
        status: state.status.as_str(),
        via: match r.via {
            Via::Listed => "listed",
            Via::Hashed => "hashed",
        },
        assigned: &assigned.id,
        failed_over: r
            .failed_over
            .iter()
            .map(|c| view.cell(*c).id.as_str())
            .collect(),
        why,
        dns: DnsView {
            name: format!("{tenant}.{}", snap.zone.origin.to_ascii()),
            ttl: snap.zone.ttl,
            a: state.ipv4.iter().map(ToString::to_string).collect(),
            aaaa: state.ipv6.iter().map(ToString::to_string).collect(),
            cname: cname.then(|| serving.hostname.to_ascii()),
        },
        tenant,
        map_version: &snap.version,
        serial: view.serial(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_view_follows_explain() {
        let view = View::of_map(Arc::new(crate::map::load_example().expect("example map")));
        let r = route::explain(&view, "acme").expect("acme is listed");
        let v = tenant_view(&view, "ACME", &r);
        assert_eq!(v.tenant, "acme");
        assert_eq!(v.cell, view.cell(r.serving).id);
        assert_eq!(v.via, "listed");
        assert!(v.dns.name.starts_with("acme."), "{}", v.dns.name);
        assert!(v.dns.name.ends_with('.'), "{}", v.dns.name);
    }
}
