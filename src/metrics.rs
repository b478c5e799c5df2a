//! Prometheus metrics: their names, the recorder, and counters the query
//! path can bump without a lock or an allocation.
//!
//! Label cardinality is bounded: per cell, per rcode, per query-type class
//! (A, AAAA, other), per transport, per HTTP route template and status,
//! per token error code; never per tenant. DNS handles are resolved once
//! (at [`install`]; per-cell answer counters when a snapshot is compiled),
//! so counting a query is one relaxed atomic add. Token and HTTP metrics are
//! looked up in the registry per request: a hash lookup, negligible next to
//! signing a token or serving an HTTP request.
//!
//! Who records what: the DNS transports count queries ([`dns`]), the DNS
//! answers of each zone version count per-cell answers, `crate::live`
//! publishes the zone gauges ([`zone_published`]) and reload results,
//! `crate::http` counts tokens and HTTP latency. `GET /metrics` renders the
//! registry ([`render`]).

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use metrics::{Counter, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::map::{Snapshot, Status};

/// DNS queries answered, by `rcode`, `qtype` (A, AAAA, other) and `transport`.
pub const DNS_QUERIES: &str = "cellns_dns_queries_total";
/// Tenant answers (including NODATA for a tenant), by serving `cell`.
pub const DNS_ANSWERS: &str = "cellns_dns_answers_total";
/// NXDOMAIN answers for names inside the zone (unknown tenants).
pub const DNS_UNKNOWN_TENANT: &str = "cellns_dns_unknown_tenant_total";
/// UDP answers the kernel refused to send (an unreachable peer, a full
/// buffer); the client retries.
pub const DNS_SEND_ERRORS: &str = "cellns_dns_send_errors_total";
/// DNS responses sent by the fast UDP path (also counted in
/// [`DNS_QUERIES`]); the rest of the UDP responses took the general path.
pub const DNS_FAST_PATH: &str = "cellns_dns_fast_path_total";
/// UDP responses response rate limiting withheld, by response `kind`
/// (positive, nodata, nxdomain, error) and `action` (dropped, or slipped:
/// sent truncated instead). They are also in [`DNS_QUERIES`], which counts
/// the responses computed.
pub const DNS_RRL: &str = "cellns_dns_rrl_total";
/// Open DNS-over-TCP connections.
pub const DNS_TCP_CONNECTIONS: &str = "cellns_dns_tcp_connections";
/// DNS-over-TCP connections a limit closed or refused, by `reason`
/// (source_limit, full, evicted, idle_timeout, lifetime).
pub const DNS_TCP_CLOSED: &str = "cellns_dns_tcp_closed_total";
/// Open HTTP connections.
pub const HTTP_CONNECTIONS: &str = "cellns_http_connections";
/// HTTP connections a limit closed or refused, by `reason` (source_limit,
/// full, evicted, header_timeout, body_timeout, idle_timeout,
/// write_timeout).
pub const HTTP_CLOSED: &str = "cellns_http_closed_total";
/// 1, labelled with the map `version` in force (one series: the versions
/// served before are not kept).
pub const MAP_VERSION: &str = "cellns_map_version_info";
/// SOA serial of the map in force.
pub const MAP_SERIAL: &str = "cellns_map_serial";
/// Unix time the map in force was loaded.
pub const MAP_LOADED: &str = "cellns_map_loaded_timestamp_seconds";
/// 1 when the last reload attempt succeeded (or none failed since start),
/// 0 when it failed and the last good map is still served.
pub const MAP_LAST_RELOAD_SUCCESS: &str = "cellns_map_last_reload_success";
/// Reload attempts, by `result` (success, failure).
pub const RELOADS: &str = "cellns_reload_total";
/// 1 while every change of the map file raises a watch event, 0 while
/// only the periodic check would see it (a directory missing, a watch
/// that could not be armed, no watcher at all).
pub const MAP_WATCH_OK: &str = "cellns_map_watch_ok";
/// Changes of the map file the periodic check found and no watch event
/// reported.
pub const MAP_CHECK_CHANGES: &str = "cellns_map_check_changes_total";
/// NOTIFY messages sent (first sends and retries), by `secondary`.
pub const NOTIFY_SENT: &str = "cellns_notify_sent_total";
/// NOTIFYs a secondary acknowledged, by `secondary`.
pub const NOTIFY_ACKNOWLEDGED: &str = "cellns_notify_acknowledged_total";
/// NOTIFYs that failed, by `secondary`: answered with an error, or never
/// acknowledged before the retries ended.
pub const NOTIFY_FAILED: &str = "cellns_notify_failed_total";
/// Zone transfers served, by `kind`: `axfr`, `ixfr` (differences, or the
/// SOA alone for a client already up to date), `ixfr_full` (an IXFR
/// answered with the whole zone: the journal does not reach back to the
/// client's serial), `refused` (not allowed, or no free transfer slot),
/// `failed` (cut off while streaming).
pub const XFR_TRANSFERS: &str = "cellns_xfr_transfers_total";
/// Bytes of zone transfer responses sent, by `kind` (axfr, ixfr, ixfr_full).
pub const XFR_BYTES: &str = "cellns_xfr_bytes_total";
/// Time to send a zone transfer, by `kind` (axfr, ixfr, ixfr_full).
pub const XFR_DURATION: &str = "cellns_xfr_duration_seconds";
/// Zone versions the IXFR journal holds differences for.
pub const IXFR_JOURNAL_VERSIONS: &str = "cellns_ixfr_journal_versions";
/// Bytes the IXFR journal holds.
pub const IXFR_JOURNAL_BYTES: &str = "cellns_ixfr_journal_bytes";
/// 1 while a `--notify` secondary serves our serial (its SOA, asked
/// periodically), else 0, by `secondary`.
pub const SECONDARY_IN_SYNC: &str = "cellns_secondary_in_sync";
/// Listed tenants, by assigned `cell`.
pub const TENANTS: &str = "cellns_tenants";
/// Cells, by effective `status`.
pub const CELLS: &str = "cellns_cells";
/// Tokens issued, by serving `cell` (the cell id).
pub const TOKENS_ISSUED: &str = "cellns_tokens_issued_total";
/// Token requests refused, by `reason` (the stable error code of the API).
pub const TOKEN_ERRORS: &str = "cellns_token_errors_total";
/// HTTP request latency, by `route` (the route template) and `status`.
pub const HTTP_DURATION: &str = "cellns_http_request_duration_seconds";
/// A cell's effective status as a state set: 1 for the status in force,
/// 0 for the others, by `cell` and `status`.
pub const CELL_STATUS: &str = "cellns_cell_status";
/// What decided a cell's effective status, as a state set: 1 for the
/// source in force (`map`, `override`, `health`), by `cell` and `source`.
pub const CELL_STATUS_SOURCE: &str = "cellns_cell_status_source";
/// 1 while an endpoint counts as up (before its first verdict too), 0
/// while down, by `cell` and `endpoint` (the address).
pub const HEALTH_ENDPOINT_UP: &str = "cellns_health_endpoint_up";
/// Probe latency (successful or not), by `cell`.
pub const HEALTH_PROBE_DURATION: &str = "cellns_health_probe_duration_seconds";
/// Probes, by `cell` and `result` (success, failure).
pub const HEALTH_PROBES: &str = "cellns_health_probes_total";
/// Health transitions of a cell, by `cell` and `to` (unhealthy, healthy).
pub const HEALTH_TRANSITIONS: &str = "cellns_health_transitions_total";
/// 1 while health is ignored for every cell because it would take out
/// more than `safety.max_unhealthy_fraction` of the serving cells.
pub const HEALTH_FAIL_STATIC: &str = "cellns_health_fail_static";
/// Operator overrides in force.
pub const OVERRIDES: &str = "cellns_overrides";
/// Audit log lines that could not be written (the event is lost).
pub const AUDIT_WRITE_ERRORS: &str = "cellns_audit_write_errors_total";
/// 0 while the last re-read of the API key file failed (the callers read
/// before keep their rights), 1 otherwise.
pub const API_KEYS_LAST_RELOAD_SUCCESS: &str = "cellns_api_keys_last_reload_success";

/// Planned tenant moves in the map in force, by `phase` (`scheduled`,
/// `short-ttl`, `moved`).
pub const MOVES: &str = "cellns_moves";
/// Unix time from which no tenant answer cached by a resolver and no live
/// token issued by this instance can point at the cell, by `cell`; 0 while
/// tenant answers still point at it.
pub const CELL_QUIET: &str = "cellns_cell_quiet_timestamp_seconds";

/// RRSIGs made (not served from the signature cache), by `result` (ok,
/// error).
pub const DNSSEC_SIGNATURES: &str = "cellns_dnssec_signatures_total";
/// Signature cache lookups that found the RRSIGs.
pub const DNSSEC_CACHE_HITS: &str = "cellns_dnssec_cache_hits_total";
/// Signature cache lookups that did not (a signature was made).
pub const DNSSEC_CACHE_MISSES: &str = "cellns_dnssec_cache_misses_total";
/// Signature cache entries evicted to stay within its bounds.
pub const DNSSEC_CACHE_EVICTIONS: &str = "cellns_dnssec_cache_evictions_total";
/// Signature cache entries held.
pub const DNSSEC_CACHE_ENTRIES: &str = "cellns_dnssec_cache_entries";
/// Signature cache bytes held (estimated).
pub const DNSSEC_CACHE_BYTES: &str = "cellns_dnssec_cache_bytes";
/// DNSSEC keys in the key directory, by `role` and `state`.
pub const DNSSEC_KEYS: &str = "cellns_dnssec_keys";
/// Unix time of the next key state change (0: none scheduled).
pub const DNSSEC_NEXT_KEY_EVENT: &str = "cellns_dnssec_next_key_event_timestamp_seconds";

/// Every metric name, for documentation checks.
pub const ALL: [&str; 51] = [
    DNS_QUERIES,
    DNS_ANSWERS,
    DNS_UNKNOWN_TENANT,
    DNS_SEND_ERRORS,
    DNS_FAST_PATH,
    DNS_RRL,
    DNS_TCP_CONNECTIONS,
    DNS_TCP_CLOSED,
    HTTP_CONNECTIONS,
    HTTP_CLOSED,
    MAP_VERSION,
    MAP_SERIAL,
    MAP_LOADED,
    MAP_LAST_RELOAD_SUCCESS,
    RELOADS,
    MAP_WATCH_OK,
    MAP_CHECK_CHANGES,
    NOTIFY_SENT,
    NOTIFY_ACKNOWLEDGED,
    NOTIFY_FAILED,
    XFR_TRANSFERS,
    XFR_BYTES,
    XFR_DURATION,
    IXFR_JOURNAL_VERSIONS,
    IXFR_JOURNAL_BYTES,
    SECONDARY_IN_SYNC,
    TENANTS,
    CELLS,
    TOKENS_ISSUED,
    TOKEN_ERRORS,
    HTTP_DURATION,
    CELL_STATUS,
    CELL_STATUS_SOURCE,
    HEALTH_ENDPOINT_UP,
    HEALTH_PROBE_DURATION,
    HEALTH_PROBES,
    HEALTH_TRANSITIONS,
    HEALTH_FAIL_STATIC,
    OVERRIDES,
    AUDIT_WRITE_ERRORS,
    API_KEYS_LAST_RELOAD_SUCCESS,
    MOVES,
    CELL_QUIET,
    DNSSEC_SIGNATURES,
    DNSSEC_CACHE_HITS,
    DNSSEC_CACHE_MISSES,
    DNSSEC_CACHE_EVICTIONS,
    DNSSEC_CACHE_ENTRIES,
    DNSSEC_CACHE_BYTES,
    DNSSEC_KEYS,
    DNSSEC_NEXT_KEY_EVENT,
];

/// The `source` values of [`CELL_STATUS_SOURCE`].
pub const STATUS_SOURCES: [&str; 3] = ["map", "override", "health"];

/// The `route` label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// How often histogram samples are folded into the registry between
/// scrapes (bounds their memory when nobody scrapes).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder (once; later calls return the
/// same handle) and registers the DNS counters, so every series exists
/// from the start. Call before the first snapshot is compiled, so that
/// per-cell handles are live.
pub fn install() -> PrometheusHandle {
    let handle = HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.to_owned()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(XFR_DURATION.to_owned()),
                    &[
                        0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ],
                )
                .expect("bucket list is not empty")
                .set_buckets_for_metric(
                    Matcher::Full(HEALTH_PROBE_DURATION.to_owned()),
                    &[0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5],
                )
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests running
            // several servers in one process): then this handle renders an
            // empty registry, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone();
    dns();
    // Series that alerts and dashboards query exist from the start.
    gauge!(HEALTH_FAIL_STATIC).set(0.0);
    gauge!(OVERRIDES).set(0.0);
    counter!(AUDIT_WRITE_ERRORS).increment(0);
    gauge!(API_KEYS_LAST_RELOAD_SUCCESS).set(1.0);
    for kind in XfrKind::ALL {
        counter!(XFR_TRANSFERS, "kind" => kind.as_str()).increment(0);
    }
    gauge!(IXFR_JOURNAL_VERSIONS).set(0.0);
    gauge!(IXFR_JOURNAL_BYTES).set(0.0);
    handle
}

/// The `# HELP` lines.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        DNS_QUERIES,
        "DNS responses sent, by rcode, query type (A, AAAA, other) and transport"
    );
    describe_counter!(
        DNS_ANSWERS,
        "Answers for tenants (addresses, CNAME or NODATA), by serving cell"
    );
    describe_counter!(
        DNS_UNKNOWN_TENANT,
        "NXDOMAIN answers: names in the zone that are no tenant"
    );
    describe_counter!(
        DNS_SEND_ERRORS,
        "UDP answers the kernel refused to send (the client retries)"
    );
    describe_counter!(
        DNS_FAST_PATH,
        "DNS responses sent by the fast UDP path (a subset of cellns_dns_queries_total)"
    );
    describe_counter!(
        DNS_RRL,
        "UDP responses withheld by response rate limiting, by response kind and action (dropped, slipped: sent truncated)"
    );
    describe_gauge!(DNS_TCP_CONNECTIONS, "Open DNS-over-TCP connections");
    describe_counter!(
        DNS_TCP_CLOSED,
        "DNS-over-TCP connections closed or refused by a limit, by reason"
    );
    describe_gauge!(HTTP_CONNECTIONS, "Open HTTP connections");
    describe_counter!(
        HTTP_CLOSED,
        "HTTP connections closed or refused by a limit, by reason"
    );
    describe_gauge!(MAP_SERIAL, "SOA serial of the zone version in force");
    describe_gauge!(
        MAP_LOADED,
        Unit::Seconds,
        "Unix time the map in force was loaded"
    );
    describe_gauge!(
        MAP_LAST_RELOAD_SUCCESS,
        "1 unless the last reload attempt failed (then the last good map serves)"
    );
    describe_counter!(RELOADS, "Map reload attempts, by result");
    describe_gauge!(
        MAP_WATCH_OK,
        "1 while every change of the map file raises a watch event; 0 while only the periodic check sees changes"
    );
    describe_counter!(
        MAP_CHECK_CHANGES,
        "Map file changes found by the periodic check that no watch event reported"
    );
    describe_counter!(
        XFR_TRANSFERS,
        "Zone transfers, by kind (axfr, ixfr, ixfr_full, refused, failed)"
    );
    describe_counter!(
        XFR_BYTES,
        Unit::Bytes,
        "Bytes of zone transfer responses sent, by kind"
    );
    describe_histogram!(
        XFR_DURATION,
        Unit::Seconds,
        "Time to send a zone transfer, by kind"
    );
    describe_gauge!(
        IXFR_JOURNAL_VERSIONS,
        "Zone versions the IXFR journal holds differences for"
    );
    describe_gauge!(
        IXFR_JOURNAL_BYTES,
        Unit::Bytes,
        "Bytes held by the IXFR journal"
    );
    describe_gauge!(
        SECONDARY_IN_SYNC,
        "1 while a --notify secondary serves our serial, by secondary"
    );
    describe_counter!(NOTIFY_SENT, "NOTIFY messages sent, by secondary");
    describe_counter!(NOTIFY_ACKNOWLEDGED, "NOTIFYs acknowledged, by secondary");
    describe_counter!(
        NOTIFY_FAILED,
        "NOTIFYs answered with an error or never acknowledged, by secondary"
    );
    describe_gauge!(TENANTS, "Tenants listed in the map, by assigned cell");
    describe_gauge!(CELLS, "Cells in the map, by effective status");
    describe_counter!(TOKENS_ISSUED, "Tokens issued, by serving cell");
    describe_counter!(
        TOKEN_ERRORS,
        "Token requests refused, by reason (the API error code)"
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by route template and status"
    );
    describe_gauge!(
        CELL_STATUS,
        "Effective status of each cell: 1 for the status in force, 0 for the others"
    );
    describe_gauge!(
        CELL_STATUS_SOURCE,
        "What decided each cell's effective status (map, override, health): 1 for the source in force"
    );
    describe_gauge!(
        HEALTH_ENDPOINT_UP,
        "1 while a probed endpoint counts as up (also before its first verdict), 0 while down"
    );
    describe_histogram!(
        HEALTH_PROBE_DURATION,
        Unit::Seconds,
        "Health probe latency, by cell"
    );
    describe_counter!(HEALTH_PROBES, "Health probes, by cell and result");
    describe_counter!(
        HEALTH_TRANSITIONS,
        "Health transitions of a cell (to unhealthy, to healthy)"
    );
    describe_gauge!(
        HEALTH_FAIL_STATIC,
        "1 while health is ignored for every cell (it would take out more than max_unhealthy_fraction)"
    );
    describe_gauge!(OVERRIDES, "Operator overrides of cell status in force");
    describe_counter!(
        AUDIT_WRITE_ERRORS,
        "Audit log lines that could not be written"
    );
    describe_gauge!(
        API_KEYS_LAST_RELOAD_SUCCESS,
        "0 while the last re-read of the API key file failed (the previous callers stay)"
    );
    describe_counter!(
        DNSSEC_SIGNATURES,
        "RRSIGs made (signature cache misses), by result"
    );
    describe_counter!(
        DNSSEC_CACHE_HITS,
        "DNSSEC signature cache lookups that found the signatures"
    );
    describe_counter!(
        DNSSEC_CACHE_MISSES,
        "DNSSEC signature cache lookups that did not (a signature was made)"
    );
    describe_counter!(
        DNSSEC_CACHE_EVICTIONS,
        "DNSSEC signature cache entries evicted to stay within its bounds"
    );
    describe_gauge!(DNSSEC_CACHE_ENTRIES, "DNSSEC signature cache entries");
    describe_gauge!(
        DNSSEC_CACHE_BYTES,
        Unit::Bytes,
        "DNSSEC signature cache size (estimated)"
    );
    describe_gauge!(DNSSEC_KEYS, "DNSSEC keys, by role and state");
    describe_gauge!(
        DNSSEC_NEXT_KEY_EVENT,
        Unit::Seconds,
        "Unix time of the next DNSSEC key state change (0: none scheduled)"
    );
}

/// The map version in force, for [`MAP_VERSION`].
static MAP_VERSION_IN_FORCE: Mutex<String> = Mutex::new(String::new());

/// The Prometheus text exposition of every metric; empty before
/// [`install`].
pub fn render() -> String {
    let Some(handle) = HANDLE.get() else {
        return String::new();
    };
    let mut out = handle.render();
    // The version info is written here rather than registered: a registry
    // gauge per version would grow one series per version ever served.
    let version = MAP_VERSION_IN_FORCE
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    if !version.is_empty() {
        use std::fmt::Write as _;
        let _ = write!(
            out,
            "# HELP {MAP_VERSION} The map version in force (value 1)\n# TYPE {MAP_VERSION} gauge\n{MAP_VERSION}{{version=\"{}\"}} 1\n",
            escape_label(&version)
        );
    }
    out
}

/// A label value in the Prometheus text format: backslash, quote and
/// newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Folds recorded histogram samples into the registry every few seconds
/// until `cancel` fires (scrapes do it too; this bounds memory between them).
pub async fn upkeep(cancel: CancellationToken) {
    let Some(handle) = HANDLE.get() else { return };
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// The transport a query came over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

const RCODES: [&str; 9] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "NOTAUTH", "BADVERS",
    "OTHER",
];
const QTYPES: [&str; 3] = ["A", "AAAA", "other"];
const TRANSPORTS: [&str; 2] = ["udp", "tcp"];

const RRL_ACTIONS: [&str; 2] = ["dropped", "slipped"];

/// Pre-resolved DNS counters.
pub struct DnsCounters {
    queries: Vec<Counter>,
    unknown_tenant: Counter,
    send_errors: Counter,
    fast_path: Counter,
    /// By kind, then action.
    rrl: Vec<Counter>,
}

impl DnsCounters {
    fn new() -> Self {
        let mut queries = Vec::with_capacity(RCODES.len() * QTYPES.len() * TRANSPORTS.len());
        for rcode in RCODES {
            for qtype in QTYPES {
                for transport in TRANSPORTS {
                    let c = counter!(DNS_QUERIES, "rcode" => rcode, "qtype" => qtype, "transport" => transport);
                    // Registered at zero, so rates and ratios have a series.
                    c.increment(0);
                    queries.push(c);
                }
            }
        }
        let unknown_tenant = counter!(DNS_UNKNOWN_TENANT);
        unknown_tenant.increment(0);
        let send_errors = counter!(DNS_SEND_ERRORS);
        send_errors.increment(0);
        let fast_path = counter!(DNS_FAST_PATH);
        fast_path.increment(0);
        let mut rrl = Vec::with_capacity(crate::dns::rrl::Kind::ALL.len() * RRL_ACTIONS.len());
        for kind in crate::dns::rrl::Kind::ALL {
            for action in RRL_ACTIONS {
                let c = counter!(DNS_RRL, "kind" => kind.as_str(), "action" => action);
                c.increment(0);
                rrl.push(c);
            }
        }
        Self {
            queries,
            unknown_tenant,
            send_errors,
            fast_path,
            rrl,
        }
    }

    /// Counts one UDP response that rate limiting dropped, or sent
    /// truncated when `slipped`.
    #[inline]
    pub fn rate_limited(&self, kind: crate::dns::rrl::Kind, slipped: bool) {
        self.rrl[kind as usize * RRL_ACTIONS.len() + usize::from(slipped)].increment(1);
    }

    /// Counts one UDP answer that could not be sent.
    #[inline]
    pub fn send_failed(&self) {
        self.send_errors.increment(1);
    }

    /// Counts one response of the fast path (besides [`DnsCounters::query`]).
    #[inline]
    pub fn fast_path(&self) {
        self.fast_path.increment(1);
    }

    /// Counts one answered query. `rcode` is the full (extended) rcode.
    #[inline]
    pub fn query(&self, transport: Transport, qtype: u16, rcode: u16) {
        let r = match rcode {
            0..=5 => usize::from(rcode),
            9 => 6,
            16 => 7,
            _ => 8,
        };
        let q = match qtype {
            1 => 0,
            28 => 1,
            _ => 2,
        };
        let t = match transport {
            Transport::Udp => 0,
            Transport::Tcp => 1,
        };
        self.queries[(r * QTYPES.len() + q) * TRANSPORTS.len() + t].increment(1);
        if rcode == 3 {
            self.unknown_tenant.increment(1);
        }
    }

    /// Counts a name that does not exist answered NOERROR by compact
    /// denial (RFC 9824, signed zones): an unknown name all the same.
    pub fn compact_denial(&self) {
        self.unknown_tenant.increment(1);
    }
}

/// The DNS counters (resolved on first use).
pub fn dns() -> &'static DnsCounters {
    static DNS: OnceLock<DnsCounters> = OnceLock::new();
    DNS.get_or_init(DnsCounters::new)
}

/// Per-cell answer counters of one zone version, indexed by `CellId`.
pub fn cell_answer_counters<'a>(cell_ids: impl Iterator<Item = &'a str>) -> Vec<Counter> {
    cell_ids
        .map(|id| counter!(DNS_ANSWERS, "cell" => id.to_owned()))
        .collect()
}

/// Sets the zone gauges for the version now in force: `map` with `serial`
/// and each cell's effective status (indexed by `CellId`), replacing the
/// version on `previous` (cells it had that `map` lacks report 0 tenants).
pub fn zone_published(
    map: &Snapshot,
    serial: u32,
    statuses: &[Status],
    previous: Option<&Snapshot>,
) {
    if let Some(old) = previous {
        for cell in &old.cells {
            if map.cell_by_id(&cell.id).is_none() {
                gauge!(TENANTS, "cell" => cell.id.clone()).set(0.0);
            }
        }
    }
    if let Ok(mut v) = MAP_VERSION_IN_FORCE.lock()
        && *v != map.version
    {
        v.clone_from(&map.version);
    }
    gauge!(MAP_SERIAL).set(f64::from(serial));
    let loaded = map
        .loaded_at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(MAP_LOADED).set(loaded);
    if previous.is_some_and(|old| std::ptr::eq(old, map)) {
        // Same map: only statuses changed.
    } else {
        for cell in &map.cells {
            gauge!(TENANTS, "cell" => cell.id.clone()).set(cell.listed_tenants as f64);
            // Every cell has a token series from the start (at 0).
            counter!(TOKENS_ISSUED, "cell" => cell.id.clone()).increment(0);
        }
    }
    for status in Status::ALL {
        let n = statuses.iter().filter(|&&s| s == status).count();
        gauge!(CELLS, "status" => status.as_str()).set(n as f64);
    }
}

/// Sets cell `cell`'s effective status and its source (one of
/// [`STATUS_SOURCES`]); `None`: the cell left the map (every series 0).
pub fn cell_status(cell: &str, state: Option<(Status, &str)>) {
    for status in Status::ALL {
        let on = state.is_some_and(|(s, _)| s == status);
        gauge!(CELL_STATUS, "cell" => cell.to_owned(), "status" => status.as_str()).set(if on {
            1.0
        } else {
            0.0
        });
    }
    for source in STATUS_SOURCES {
        let on = state.is_some_and(|(_, s)| s == source);
        gauge!(CELL_STATUS_SOURCE, "cell" => cell.to_owned(), "source" => source).set(if on {
            1.0
        } else {
            0.0
        });
    }
}

/// Sets the number of planned moves in `phase`.
pub fn moves(phase: &'static str, n: usize) {
    gauge!(MOVES, "phase" => phase).set(n as f64);
}

/// Sets when `cell` is quiet (`None`: tenant answers still point at it).
pub fn cell_quiet(cell: &str, at: Option<SystemTime>) {
    let v = at
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(CELL_QUIET, "cell" => cell.to_owned()).set(v);
}

/// Sets the fail-static gauge.
pub fn fail_static(on: bool) {
    gauge!(HEALTH_FAIL_STATIC).set(if on { 1.0 } else { 0.0 });
}

/// Sets the number of overrides in force.
pub fn overrides(n: usize) {
    gauge!(OVERRIDES).set(n as f64);
}

/// Counts an audit line that could not be written.
pub fn audit_write_failed() {
    counter!(AUDIT_WRITE_ERRORS).increment(1);
}

/// Records the outcome of a re-read of the API key file.
pub fn api_keys_reload(ok: bool) {
    gauge!(API_KEYS_LAST_RELOAD_SUCCESS).set(if ok { 1.0 } else { 0.0 });
}

/// Per-endpoint and per-cell health series, resolved once per prober.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    up: metrics::Gauge,
    duration: metrics::Histogram,
    successes: Counter,
    failures: Counter,
}

impl ProbeMetrics {
    /// The series of endpoint `endpoint` of cell `cell`.
    pub fn new(cell: &str, endpoint: &str) -> Self {
        let successes = counter!(HEALTH_PROBES, "cell" => cell.to_owned(), "result" => "success");
        let failures = counter!(HEALTH_PROBES, "cell" => cell.to_owned(), "result" => "failure");
        successes.increment(0);
        failures.increment(0);
        let up = gauge!(HEALTH_ENDPOINT_UP, "cell" => cell.to_owned(), "endpoint" => endpoint.to_owned());
        up.set(1.0);
        counter!(HEALTH_TRANSITIONS, "cell" => cell.to_owned(), "to" => "unhealthy").increment(0);
        counter!(HEALTH_TRANSITIONS, "cell" => cell.to_owned(), "to" => "healthy").increment(0);
        Self {
            up,
            duration: histogram!(HEALTH_PROBE_DURATION, "cell" => cell.to_owned()),
            successes,
            failures,
        }
    }

    /// Records one probe.
    pub fn probe(&self, ok: bool, elapsed: Duration) {
        self.duration.record(elapsed.as_secs_f64());
        if ok {
            self.successes.increment(1);
        } else {
            self.failures.increment(1);
        }
    }

    /// Sets whether the endpoint counts as up.
    pub fn set_up(&self, up: bool) {
        self.up.set(if up { 1.0 } else { 0.0 });
    }
}

/// Counts a health transition of cell `cell` (to unhealthy or healthy).
pub fn health_transition(cell: &str, unhealthy: bool) {
    let to = if unhealthy { "unhealthy" } else { "healthy" };
    counter!(HEALTH_TRANSITIONS, "cell" => cell.to_owned(), "to" => to).increment(1);
}

/// The reload metrics at start: both counters at 0, the last-reload gauge
/// at 1 (the start-up load succeeded).
pub fn reloads_start() {
    for result in ["success", "failure"] {
        counter!(RELOADS, "result" => result).increment(0);
    }
    gauge!(MAP_LAST_RELOAD_SUCCESS).set(1.0);
}

/// Records whether every change of the map file raises a watch event.
pub fn map_watch(ok: bool) {
    gauge!(MAP_WATCH_OK).set(if ok { 1.0 } else { 0.0 });
    counter!(MAP_CHECK_CHANGES).increment(0);
}

/// Counts a map change that only the periodic check found.
pub fn map_check_change() {
    counter!(MAP_CHECK_CHANGES).increment(1);
}

/// What happened to a NOTIFY to one secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyEvent {
    /// Sent (or sent again).
    Sent,
    /// Acknowledged.
    Acknowledged,
    /// Answered with an error, or given up on.
    Failed,
}

/// Registers the NOTIFY series of `secondary` at 0 (the label values are
/// the configured secondaries: bounded).
pub fn notify_target(secondary: &str) {
    for name in [NOTIFY_SENT, NOTIFY_ACKNOWLEDGED, NOTIFY_FAILED] {
        counter!(name, "secondary" => secondary.to_owned()).increment(0);
    }
}

/// Counts a NOTIFY event for `secondary`.
pub fn notify(secondary: &str, event: NotifyEvent) {
    let name = match event {
        NotifyEvent::Sent => NOTIFY_SENT,
        NotifyEvent::Acknowledged => NOTIFY_ACKNOWLEDGED,
        NotifyEvent::Failed => NOTIFY_FAILED,
    };
    counter!(name, "secondary" => secondary.to_owned()).increment(1);
}

/// What kind of zone transfer ([`XFR_TRANSFERS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XfrKind {
    /// The whole zone, asked as AXFR.
    Axfr,
    /// Differences (or the SOA alone for a client up to date).
    Ixfr,
    /// An IXFR answered with the whole zone.
    IxfrFull,
    /// Refused (not allowed, or no free slot).
    Refused,
    /// Cut off while being sent.
    Failed,
}

impl XfrKind {
    /// Every kind.
    pub const ALL: [Self; 5] = [
        Self::Axfr,
        Self::Ixfr,
        Self::IxfrFull,
        Self::Refused,
        Self::Failed,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Axfr => "axfr",
            Self::Ixfr => "ixfr",
            Self::IxfrFull => "ixfr_full",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// Records a zone transfer of `kind` that sent `bytes` in `elapsed`;
/// `ok` false counts it as failed (its bytes and time still count under
/// its kind).
pub fn xfr(kind: XfrKind, bytes: usize, elapsed: Duration, ok: bool) {
    let counted = if ok { kind } else { XfrKind::Failed };
    counter!(XFR_TRANSFERS, "kind" => counted.as_str()).increment(1);
    counter!(XFR_BYTES, "kind" => kind.as_str()).increment(bytes as u64);
    histogram!(XFR_DURATION, "kind" => kind.as_str()).record(elapsed.as_secs_f64());
}

/// Counts a refused zone transfer.
pub fn xfr_refused() {
    counter!(XFR_TRANSFERS, "kind" => XfrKind::Refused.as_str()).increment(1);
}

/// The IXFR journal's size.
pub fn ixfr_journal(versions: usize, bytes: usize) {
    gauge!(IXFR_JOURNAL_VERSIONS).set(versions as f64);
    gauge!(IXFR_JOURNAL_BYTES).set(bytes as f64);
}

/// Whether `secondary` serves our serial.
pub fn secondary_in_sync(secondary: &str, in_sync: bool) {
    gauge!(SECONDARY_IN_SYNC, "secondary" => secondary.to_owned()).set(if in_sync {
        1.0
    } else {
        0.0
    });
}

/// Records a reload attempt.
pub fn reload_result(success: bool) {
    let result = if success { "success" } else { "failure" };
    counter!(RELOADS, "result" => result).increment(1);
    gauge!(MAP_LAST_RELOAD_SUCCESS).set(if success { 1.0 } else { 0.0 });
}

/// The map file is back to the content in force after a failed reload:
/// nothing was reloaded, but nothing is failing any more.
pub fn reload_recovered() {
    gauge!(MAP_LAST_RELOAD_SUCCESS).set(1.0);
}

/// One DNS-over-TCP connection more (`opened`) or less.
pub fn dns_tcp_connection(opened: bool) {
    let g = gauge!(DNS_TCP_CONNECTIONS);
    if opened {
        g.increment(1.0)
    } else {
        g.decrement(1.0)
    }
}

/// Counts a DNS-over-TCP connection a limit closed; `reason` is one of a
/// fixed few.
pub fn dns_tcp_closed(reason: &'static str) {
    counter!(DNS_TCP_CLOSED, "reason" => reason).increment(1);
}

/// One HTTP connection more (`opened`) or less.
pub fn http_connection(opened: bool) {
    let g = gauge!(HTTP_CONNECTIONS);
    if opened {
        g.increment(1.0)
    } else {
        g.decrement(1.0)
    }
}

/// Counts an HTTP connection a limit closed; `reason` is one of a fixed
/// few.
pub fn http_closed(reason: &'static str) {
    counter!(HTTP_CLOSED, "reason" => reason).increment(1);
}

/// Counts a token issued for a tenant served by the cell `cell_id`.
pub fn token_issued(cell_id: &str) {
    counter!(TOKENS_ISSUED, "cell" => cell_id.to_owned()).increment(1);
}

/// Counts a refused token request; `reason` is the API error code.
pub fn token_error(reason: &'static str) {
    counter!(TOKEN_ERRORS, "reason" => reason).increment(1);
}

/// Records one HTTP request: `route` is the route template (or
/// [`UNMATCHED_ROUTE`]), never the raw path.
pub fn http_request(route: String, status: u16, elapsed: Duration) {
    histogram!(HTTP_DURATION, "route" => route, "status" => status.to_string())
        .record(elapsed.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_counters_cover_every_label_combination() {
        let d = DnsCounters::new();
        assert_eq!(
            d.queries.len(),
            RCODES.len() * QTYPES.len() * TRANSPORTS.len()
        );
        // The highest index is in range.
        d.query(Transport::Tcp, 255, 4095);
    }

    /// The README's metrics table lists exactly the metrics of [`ALL`].
    #[test]
    fn readme_metrics_table_lists_every_metric() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("| metric | labels | meaning |")
            .expect("README has a metrics table");
        let listed: std::collections::BTreeSet<&str> = readme[start..]
            .lines()
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .filter_map(|l| l.split('`').nth(1))
            .collect();
        let all: std::collections::BTreeSet<&str> = ALL.into_iter().collect();
        assert_eq!(listed, all, "README metrics table vs metrics::ALL");
    }
}
