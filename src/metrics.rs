//! Prometheus metrics: their names, the recorder, and counters the query
//! path can bump without a lock or an allocation.
//!
//! Label cardinality is bounded: per cell, per rcode, per query-type class
//! (A, AAAA, other), per transport; never per tenant. Handles are resolved
//! once (DNS counters at first use, per-cell counters when a snapshot is
//! compiled), so counting is one relaxed atomic add.

use std::sync::OnceLock;

use metrics::{Counter, counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::map::{Snapshot, Status};

/// DNS queries answered, by `rcode`, `qtype` (A, AAAA, other) and `transport`.
pub const DNS_QUERIES: &str = "cellns_dns_queries_total";
/// Tenant answers, by serving `cell`.
pub const DNS_ANSWERS: &str = "cellns_dns_answers_total";
/// NXDOMAIN answers for names inside the zone (unknown tenants).
pub const DNS_UNKNOWN_TENANT: &str = "cellns_dns_unknown_tenant_total";
/// Always 1, labelled with the map `version` in force.
pub const MAP_VERSION: &str = "cellns_map_version_info";
/// SOA serial of the map in force.
pub const MAP_SERIAL: &str = "cellns_map_serial";
/// Unix time the map in force was loaded.
pub const MAP_LOADED: &str = "cellns_map_loaded_timestamp_seconds";
/// 1 when the last reload attempt succeeded, 0 when it failed.
pub const MAP_LAST_RELOAD_SUCCESS: &str = "cellns_map_last_reload_success";
/// Reload attempts, by `result` (success, failure).
pub const RELOADS: &str = "cellns_reload_total";
/// Listed tenants, by assigned `cell`.
pub const TENANTS: &str = "cellns_tenants";
/// Cells, by `status`.
pub const CELLS: &str = "cellns_cells";
/// Tokens issued, by `cell`.
pub const TOKENS_ISSUED: &str = "cellns_tokens_issued_total";
/// Token requests refused, by `reason` (a stable error code).
pub const TOKEN_ERRORS: &str = "cellns_token_errors_total";
/// HTTP request latency, by `route` and `status`.
pub const HTTP_DURATION: &str = "cellns_http_request_duration_seconds";

/// Installs the global Prometheus recorder (once; later calls return the
/// same handle). Call before the first snapshot is compiled, so that
/// per-cell handles are live.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(HTTP_DURATION.to_owned()),
                    &[
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ],
                )
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests running
            // several servers in one process): then this handle renders an
            // empty registry, which is harmless.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
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

/// Pre-resolved DNS counters.
pub struct DnsCounters {
    queries: Vec<Counter>,
    unknown_tenant: Counter,
}

impl DnsCounters {
    fn new() -> Self {
        let mut queries = Vec::with_capacity(RCODES.len() * QTYPES.len() * TRANSPORTS.len());
        for rcode in RCODES {
            for qtype in QTYPES {
                for transport in TRANSPORTS {
                    queries.push(counter!(DNS_QUERIES, "rcode" => rcode, "qtype" => qtype, "transport" => transport));
                }
            }
        }
        Self {
            queries,
            unknown_tenant: counter!(DNS_UNKNOWN_TENANT),
        }
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
}

/// The DNS counters (resolved on first use).
pub fn dns() -> &'static DnsCounters {
    static DNS: OnceLock<DnsCounters> = OnceLock::new();
    DNS.get_or_init(DnsCounters::new)
}

/// Per-cell answer counters of one snapshot, indexed by `CellId`.
pub fn cell_answer_counters(cell_ids: impl Iterator<Item = String>) -> Vec<Counter> {
    cell_ids
        .map(|id| counter!(DNS_ANSWERS, "cell" => id))
        .collect()
}

/// Sets the map gauges for the snapshot now in force.
pub fn publish_map(snap: &Snapshot, previous_version: Option<&str>) {
    if let Some(old) = previous_version
        && old != snap.version
    {
        gauge!(MAP_VERSION, "version" => old.to_owned()).set(0.0);
    }
    gauge!(MAP_VERSION, "version" => snap.version.clone()).set(1.0);
    gauge!(MAP_SERIAL).set(f64::from(snap.serial));
    let loaded = snap
        .loaded_at
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    gauge!(MAP_LOADED).set(loaded);
    for cell in &snap.cells {
        gauge!(TENANTS, "cell" => cell.id.clone()).set(cell.listed_tenants as f64);
    }
    for status in Status::ALL {
        gauge!(CELLS, "status" => status.as_str()).set(snap.cells_with_status(status) as f64);
    }
}

/// Records a reload attempt.
pub fn reload_result(success: bool) {
    let result = if success { "success" } else { "failure" };
    counter!(RELOADS, "result" => result).increment(1);
    gauge!(MAP_LAST_RELOAD_SUCCESS).set(if success { 1.0 } else { 0.0 });
}
