//! The operating side of the HTTP API: liveness (`GET /healthz`),
//! readiness (`GET /readyz`), Prometheus metrics (`GET /metrics`), the
//! views of the effective view in force (`GET /v1/map`, `/v1/cells`,
//! `/v1/tenants/{tenant}`), the serials the secondaries serve (`GET
//! /v1/fleet`), operator overrides (`PUT`/`DELETE
//! /v1/cells/{id}/status`), and the middleware that times every request.
//!
//! Owns: the JSON documents of these routes, and what the API answers while
//! the map is still loading ([`starting`]). [`Readiness`], which `/readyz`
//! reports, lives in [`super::state`]: `serve` flips it.
//!
//! Access: `/healthz`, `/readyz` and `/metrics` need no credentials, as
//! probes and scrapers expect; they reveal no tenant. The `/v1/` views show
//! where tenants live and what the map file says, so they need a caller
//! API key with the `read` scope; overrides need the `admin` scope (see
//! [`super::callers::authorize`]).
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
use serde::{Deserialize, Serialize};

use super::callers::Scope;
use super::error::ApiError;
use super::state::{App, Readiness};
use super::tokens::{is_json, read_body};
use crate::health::{CellReport, EndpointReport, Monitor};
use crate::live::overrides::{Changed, Override, OverrideError, Overrides};
use crate::live::quiet::Quiet;
use crate::live::{Current, StatusSource, View};
use crate::map::{CellId, Status};
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
    crate::live::audit::rfc3339(UNIX_EPOCH + std::time::Duration::from_secs(unix(t)))
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
    readiness_response(
        &app.readiness,
        Some(&*app.store),
        Some(app.overrides.overrides()),
    )
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
    /// Health is ignored for every cell (it would take out too many).
    fail_static: bool,
    /// Overrides are written to `--state-dir` (false: memory only).
    overrides_persisted: Option<bool>,
    /// Why the override file could not be loaded at start (it was ignored).
    overrides_error: Option<&'a str>,
    /// The last reload failed for a reason that may pass, and it is being
    /// retried without waiting for a change of the file.
    reload_retrying: bool,
    /// How the map file is watched: `ok`, `degraded` (only the periodic
    /// check sees changes; why is at `GET /v1/map`), `none` (no map file).
    map_watch: &'static str,
}

fn readiness_response(
    readiness: &Readiness,
    store: Option<&dyn Current>,
    overrides: Option<&Overrides>,
) -> Response {
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
        fail_static: view.as_deref().is_some_and(View::fail_static),
        overrides_persisted: overrides.map(Overrides::persisted),
        overrides_error: overrides.and_then(Overrides::load_error),
        reload_retrying: status.retrying,
        map_watch: status.watch.as_str(),
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
        "/readyz" if get => ("/readyz", readiness_response(readiness, None, None)),
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
    retrying: bool,
    watch: &'static str,
    watch_problem: Option<String>,
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
    app.authorize(req.headers(), req.extensions(), Scope::Read)?;
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
            last_error_at: status.last_error_at.map(rfc3339),
            retrying: status.retrying,
            watch: status.watch.as_str(),
            watch_problem: match &status.watch {
                crate::live::WatchState::Degraded(why) => Some(why.clone()),
                _ => None,
            },
            last_error: status.last_error,
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
    app.authorize(req.headers(), req.extensions(), Scope::Read)?;
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
    /// What decided it: `map`, `override` or `health`.
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
    /// The endpoints answered for it (health may have left some out).
    ipv4: Vec<String>,
    ipv6: Vec<String>,
    /// The operator override, if any.
    #[serde(rename = "override")]
    override_: Option<OverrideView>,
    /// Health probing, when the map asks for it.
    health: Option<HealthView>,
    /// When no tenant answer cached by a resolver and no live token issued
    /// by this instance can point at the cell any more (RFC 3339 UTC);
    /// null while tenant answers point at it. After it, the cell can be
    /// decommissioned (see docs/moves.md).
    quiet_at: Option<String>,
    quiet_at_unix: Option<u64>,
}

#[derive(Serialize)]
struct OverrideView {
    status: &'static str,
    reason: String,
    actor: String,
    set_at: String,
    expires_at: Option<String>,
}

impl From<&Override> for OverrideView {
    fn from(o: &Override) -> Self {
        Self {
            status: o.status.as_str(),
            reason: o.reason.clone(),
            actor: o.actor.clone(),
            set_at: rfc3339_ms(o.set_at()),
            expires_at: o.expires_at().map(rfc3339_ms),
        }
    }
}

#[derive(Serialize)]
struct HealthView {
    probe: &'static str,
    port: u16,
    path: Option<String>,
    interval_ms: u64,
    timeout_ms: u64,
    rise: u32,
    fall: u32,
    min_up: u32,
    /// Fewer than `min_up` endpoints up (applied unless an override pins
    /// the cell or the server is fail-static).
    healthy: bool,
    unhealthy_since: Option<String>,
    /// Endpoints that count as up.
    up: usize,
    endpoints: Vec<EndpointView>,
}

#[derive(Serialize)]
struct EndpointView {
    address: String,
    /// Counts as up (also before its first verdict).
    up: bool,
    /// `up`, `down`, or `unknown` before the first verdict.
    verdict: &'static str,
    since: Option<String>,
    /// The probe (count) that changed the verdict last.
    changed_at_probe: Option<u64>,
    probes: u64,
    successes: u64,
    failures: u64,
    consecutive_successes: u32,
    consecutive_failures: u32,
    last_probe_at: Option<String>,
    last_latency_ms: Option<f64>,
    last_error: Option<String>,
    last_error_at: Option<String>,
}

impl From<&CellReport> for HealthView {
    fn from(r: &CellReport) -> Self {
        let c = &r.config.check;
        Self {
            probe: c.probe.as_str(),
            port: c.port,
            path: (c.probe == crate::map::Probe::Http).then(|| c.path.clone()),
            interval_ms: c.interval.as_millis() as u64,
            timeout_ms: c.timeout.as_millis() as u64,
            rise: c.rise,
            fall: c.fall,
            min_up: c.min_up,
            healthy: !r.unhealthy,
            unhealthy_since: r.unhealthy_since.map(rfc3339_ms),
            up: r.up,
            endpoints: r.endpoints.iter().map(EndpointView::from).collect(),
        }
    }
}

impl From<&EndpointReport> for EndpointView {
    fn from(e: &EndpointReport) -> Self {
        Self {
            address: e.address.to_string(),
            up: e.up,
            verdict: match e.verdict {
                None => "unknown",
                Some(true) => "up",
                Some(false) => "down",
            },
            since: e.since.map(rfc3339_ms),
            changed_at_probe: e.changed_at_probe,
            probes: e.probes,
            successes: e.successes,
            failures: e.failures,
            consecutive_successes: e.consecutive_successes,
            consecutive_failures: e.consecutive_failures,
            last_probe_at: e.last_probe_at.map(rfc3339_ms),
            last_latency_ms: e.last_latency.map(|d| d.as_secs_f64() * 1000.0),
            last_error: e.last_error.clone(),
            last_error_at: e.last_error_at.map(rfc3339_ms),
        }
    }
}

#[derive(Serialize)]
struct FleetHealth {
    /// Health is ignored for every cell.
    fail_static: bool,
    /// Cells serving after overrides, when this zone version was built.
    serving: usize,
    /// Of those, the cells health found unhealthy then.
    unhealthy: usize,
    max_unhealthy_fraction: f64,
}

#[derive(Serialize)]
struct CellsView<'a> {
    map_version: &'a str,
    serial: u32,
    /// Health is ignored for every cell (see `health`).
    fail_static: bool,
    health: FleetHealth,
    /// Overrides are written to `--state-dir` (false: memory only).
    overrides_persisted: bool,
    cells: Vec<CellView<'a>>,
}

/// The view of cell `id`, with its override and probe details.
fn cell_view<'a>(
    view: &'a View,
    id: CellId,
    overrides: &Overrides,
    health: Option<&Monitor>,
    quiet: &Quiet,
) -> CellView<'a> {
    let (c, st) = (view.cell(id), view.state(id));
    let quiet_at = quiet.cell_quiet_at(view, id);
    CellView {
        quiet_at: quiet_at.map(rfc3339_ms),
        quiet_at_unix: quiet_at.map(unix),
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
        override_: overrides.get(&c.id).as_ref().map(OverrideView::from),
        health: health
            .and_then(|m| m.cell(&c.id))
            .as_ref()
            .map(HealthView::from),
    }
}

/// `GET /v1/cells`: the cell registry of the zone version in force, with
/// each cell's effective status, override and probe details.
pub(super) async fn cells(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    app.authorize(req.headers(), req.extensions(), Scope::Read)?;
    let view = app.store.view();
    let overrides = app.overrides.overrides();
    let cells = view
        .map()
        .cell_ids()
        .map(|id| {
            cell_view(
                &view,
                id,
                overrides,
                app.health.as_deref(),
                app.store.quiet(),
            )
        })
        .collect();
    let h = view.health();
    Ok(json(
        StatusCode::OK,
        &CellsView {
            map_version: &view.map().version,
            serial: view.serial(),
            fail_static: h.fail_static,
            health: FleetHealth {
                fail_static: h.fail_static,
                serving: h.serving,
                unhealthy: h.unhealthy,
                max_unhealthy_fraction: h.max_unhealthy_fraction,
            },
            overrides_persisted: overrides.persisted(),
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
    /// The tenant's planned move (`[moves.<tenant>]`), if the map has one.
    #[serde(rename = "move")]
    move_: Option<MoveView<'a>>,
}

#[derive(Serialize)]
struct MoveView<'a> {
    /// The cell id it moves from (its `[tenants]` cell).
    from: &'a str,
    /// The cell id it moves to.
    to: &'a str,
    /// When (RFC 3339 UTC), and as Unix seconds.
    at: String,
    at_unix: u64,
    /// `scheduled`, `short-ttl` (the old cell, answers with `move_ttl`) or
    /// `moved` (the new cell).
    phase: &'static str,
    /// The tenant's answers carry `zone.move_ttl` now.
    short_ttl: bool,
    /// When the short TTL starts (`at - zone.ttl`) and ends (`at + zone.ttl`).
    short_ttl_from: String,
    short_ttl_until: String,
    /// When no answer cached by a resolver nor live token issued by this
    /// instance can point at the old cell for this tenant (docs/moves.md
    /// gives the formula).
    old_cell_quiet_at: String,
    old_cell_quiet_at_unix: u64,
    /// When this instance first published a map holding the move.
    seen_at: String,
}

/// `GET /v1/tenants/{tenant}`: the tenant's cell and why, decided by
/// [`route::explain`] (as `cellns explain`, DNS and tokens do) on the view
/// in force.
pub(super) async fn tenant(
    State(app): State<Arc<App>>,
    Path(tenant): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    app.authorize(req.headers(), req.extensions(), Scope::Read)?;
    let view = app.store.view();
    let r = route::explain(&view, &tenant).map_err(|e| match e {
        NoRoute::InvalidTenant(..) => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_tenant", e.to_string())
        }
        NoRoute::Unknown(..) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_tenant", e.to_string())
        }
    })?;
    let mut v = tenant_view(&view, &tenant, &r);
    v.move_ = move_view(&view, &r, app.store.quiet());
    if !r.failed_over.is_empty() {
        v.why = format!(
            "{}; failed over: {}",
            v.why,
            failover_reasons(&view, &r, app.overrides.overrides(), app.health.as_deref())
        );
    }
    Ok(json(StatusCode::OK, &v))
}

/// Why each cell a tenant failed over through is down, in words, and where
/// it ended: "`use1-a` unhealthy since T (0 of 2 endpoints up, min_up 1),
/// 3 probes failed: connection refused; served by `use1-b`".
fn failover_reasons(
    view: &View,
    r: &route::Route,
    overrides: &Overrides,
    health: Option<&Monitor>,
) -> String {
    let mut parts: Vec<String> = r
        .failed_over
        .iter()
        .map(|&c| {
            let id = &view.cell(c).id;
            match view.state(c).source {
                StatusSource::Map => format!("`{id}` is down in the map"),
                StatusSource::Override => match overrides.get(id) {
                    Some(o) => {
                        let until = o
                            .expires_at()
                            .map(|t| format!(" until {}", rfc3339_ms(t)))
                            .unwrap_or_default();
                        format!(
                            "`{id}` is down by an override of {} ({:?}){until}",
                            o.actor, o.reason
                        )
                    }
                    None => format!("`{id}` is down by an override"),
                },
                StatusSource::Health => match health.and_then(|m| m.cell(id)) {
                    Some(report) => format!("`{id}` {}", report.describe()),
                    None => format!("`{id}` is unhealthy"),
                },
            }
        })
        .collect();
    parts.push(format!("served by `{}`", view.cell(r.serving).id));
    parts.join("; ")
}

/// The planned move of a tenant, with its phase and quiet time.
fn move_view<'a>(view: &'a View, r: &route::Route, quiet: &Quiet) -> Option<MoveView<'a>> {
    let (i, state) = r.planned?;
    let map = view.map();
    let m = map.moves.get(i)?;
    let q = quiet.move_report(view, m);
    let ttl = std::time::Duration::from_secs(u64::from(map.zone.ttl));
    Some(MoveView {
        from: &view.cell(m.from).id,
        to: &view.cell(m.to).id,
        at: rfc3339(m.at),
        at_unix: unix(m.at),
        phase: state.phase.as_str(),
        short_ttl: state.short_ttl,
        short_ttl_from: rfc3339(m.at.checked_sub(ttl).unwrap_or(UNIX_EPOCH)),
        short_ttl_until: rfc3339(m.at + ttl),
        old_cell_quiet_at: rfc3339_ms(q.old_cell_quiet_at),
        old_cell_quiet_at_unix: unix(q.old_cell_quiet_at),
        seen_at: rfc3339_ms(q.seen),
    })
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
            ttl: if r.planned.is_some_and(|(_, s)| s.short_ttl) {
                snap.zone.move_ttl
            } else {
                snap.zone.ttl
            },
            a: state.ipv4.iter().map(ToString::to_string).collect(),
            aaaa: state.ipv6.iter().map(ToString::to_string).collect(),
            cname: cname.then(|| serving.hostname.to_ascii()),
        },
        tenant,
        map_version: &snap.version,
        serial: view.serial(),
        move_: None,
    }
}

// ---------------------------------------------------------------------------
// Operator overrides (caller API key with the `admin` scope).

/// The body of `PUT /v1/cells/{id}/status`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusRequest {
    status: String,
    reason: String,
    #[serde(default)]
    expires_in_seconds: Option<u64>,
}

#[derive(Serialize)]
struct EffectiveView<'a> {
    status: &'static str,
    status_source: &'static str,
    serving: &'a str,
    stranded: bool,
}

#[derive(Serialize)]
struct OverrideResult<'a> {
    cell: &'a str,
    /// The override now in force (null after a DELETE).
    #[serde(rename = "override")]
    override_: Option<OverrideView>,
    /// The override before the change.
    previous: Option<OverrideView>,
    /// The cell as DNS and tokens see it now.
    effective: Option<EffectiveView<'a>>,
    /// The zone version in force now.
    serial: u32,
    /// Written to `--state-dir` before it was applied.
    persisted: bool,
    /// Said when the override is not persisted.
    #[serde(skip_serializing_if = "Option::is_none")]
    warning: Option<&'static str>,
}

const NOT_PERSISTED: &str = "not persisted: the server has no --state-dir, so this override \
                             lives in memory and is lost when the process restarts";

fn override_result<'a>(cell: &'a str, c: &'a Changed) -> OverrideResult<'a> {
    let view = &c.view;
    let effective = view.map().cell_by_id(cell).map(|id| {
        let st = view.state(id);
        EffectiveView {
            status: st.status.as_str(),
            status_source: st.source.as_str(),
            serving: view.cell(st.serving).id.as_str(),
            stranded: st.stranded,
        }
    });
    OverrideResult {
        cell,
        override_: c.after.as_ref().map(OverrideView::from),
        previous: c.before.as_ref().map(OverrideView::from),
        effective,
        serial: view.serial(),
        persisted: c.persisted,
        warning: (!c.persisted).then_some(NOT_PERSISTED),
    }
}

impl From<OverrideError> for ApiError {
    fn from(e: OverrideError) -> Self {
        let (status, code) = match &e {
            OverrideError::UnknownCell(_) => (StatusCode::NOT_FOUND, "unknown_cell"),
            OverrideError::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            OverrideError::WouldStrand(_) => (StatusCode::CONFLICT, "would_strand"),
            OverrideError::Persist(_) | OverrideError::Serial(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "persist_failed")
            }
        };
        Self::new(status, code, e.to_string())
    }
}

/// `PUT /v1/cells/{id}/status`: sets an operator override. Checks run in
/// this order: caller (401), rate (429), scope `admin` (403), content type
/// (415), size (413), JSON (400), then the change: unknown cell (404),
/// stranding (409), the override file (500). Written to the state
/// directory before it applies; in force when the answer is sent.
pub(super) async fn set_status(
    State(app): State<Arc<App>>,
    Path(cell): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let caller = app.authorize(&parts.headers, &parts.extensions, Scope::Admin)?;
    if !is_json(&parts.headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let bytes = read_body(&parts.headers, body).await?;
    let body: StatusRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let status = Status::from_word(&body.status).ok_or_else(|| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!(
                "`status` {:?} is not one of down, draining, active",
                body.status
            ),
        )
    })?;
    let control = app.overrides.clone();
    let (cell2, actor) = (cell.clone(), caller.name.clone());
    let changed = tokio::task::spawn_blocking(move || {
        control.set(
            &cell2,
            status,
            &body.reason,
            &actor,
            body.expires_in_seconds,
        )
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??;
    Ok(json(StatusCode::OK, &override_result(&cell, &changed)))
}

/// `DELETE /v1/cells/{id}/status`: clears the operator override of a cell
/// (200 with `previous: null` when there was none). Same checks as the
/// `PUT`, without a body.
pub(super) async fn clear_status(
    State(app): State<Arc<App>>,
    Path(cell): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let caller = app.authorize(req.headers(), req.extensions(), Scope::Admin)?;
    let control = app.overrides.clone();
    let (cell2, actor) = (cell.clone(), caller.name.clone());
    let changed = tokio::task::spawn_blocking(move || control.clear(&cell2, &actor))
        .await
        .map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
        })??;
    Ok(json(StatusCode::OK, &override_result(&cell, &changed)))
}

/// RFC 3339 UTC with milliseconds.
fn rfc3339_ms(t: SystemTime) -> String {
    crate::live::audit::rfc3339(t)
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

// ---------------------------------------------------------------------------
// The fleet.

/// `GET /v1/fleet`: the body.
#[derive(Debug, Serialize)]
struct FleetView {
    zone: String,
    serial: u32,
    serial_since: String,
    serial_since_unix: u64,
    in_sync: bool,
    secondaries: Vec<SecondaryView>,
}

#[derive(Debug, Serialize)]
struct SecondaryView {
    address: String,
    serial: Option<u32>,
    in_sync: bool,
    checked_at: Option<String>,
    last_in_sync: Option<String>,
    lag_seconds: Option<u64>,
    serials_behind: Option<u32>,
    error: Option<String>,
}

/// `GET /v1/fleet` (read scope): our serial, and for every `--notify`
/// secondary the serial it served at the last check (every
/// [`crate::dns::fleet::INTERVAL`]), whether that is ours, when it last
/// was, and how far behind it is.
pub(super) async fn fleet(State(app): State<Arc<App>>, req: Request) -> Result<Response, ApiError> {
    app.authorize(req.headers(), req.extensions(), Scope::Read)?;
    let view = app.store.view();
    let zone = view.map().zone.origin.to_ascii();
    let body = match &app.fleet {
        Some(f) => {
            let r = f.report();
            FleetView {
                zone,
                serial: r.serial,
                serial_since: rfc3339(r.serial_since),
                serial_since_unix: unix(r.serial_since),
                in_sync: r.secondaries.iter().all(|s| s.in_sync),
                secondaries: r
                    .secondaries
                    .into_iter()
                    .map(|s| SecondaryView {
                        address: s.address.to_string(),
                        serial: s.serial,
                        in_sync: s.in_sync,
                        checked_at: s.checked_at.map(rfc3339),
                        last_in_sync: s.last_in_sync.map(rfc3339),
                        lag_seconds: s.lag_seconds,
                        serials_behind: s.serials_behind,
                        error: s.error,
                    })
                    .collect(),
            }
        }
        None => FleetView {
            zone,
            serial: view.serial(),
            serial_since: rfc3339(view.map().loaded_at),
            serial_since_unix: unix(view.map().loaded_at),
            in_sync: true,
            secondaries: Vec::new(),
        },
    };
    Ok(json(StatusCode::OK, &body))
}
