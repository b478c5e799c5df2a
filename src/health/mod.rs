//! Active health probing: probers whose verdicts feed the effective view.
//!
//! ```text
//! map (health tables) ─▶ CellProbes ─▶ one prober task per endpoint ──verdict changes──┐
//!                                                                                        ▼
//!        /v1/cells, /v1/tenants ◀── probe details (Monitor)      publisher: Store::update("health")
//! ```
//!
//! - **Probers.** Every address of every cell with a `[cells.<id>.health]`
//!   table gets its own tokio task that probes it every `interval_ms`
//!   ([`probe`]: HTTP 2xx or a TCP connection, bounded by `timeout_ms`).
//!   Starts are spread over the interval, so that thousands of endpoints
//!   do not probe in step. Nothing here runs on the query path: DNS reads
//!   only the view the store publishes.
//! - **Hysteresis.** An endpoint becomes down after `fall` consecutive
//!   failures and up after `rise` consecutive successes
//!   ([`hysteresis`]); before its first verdict it counts as up, so a
//!   restart never moves a tenant.
//! - **Publishing.** Only verdict changes leave a prober: they go to one
//!   publisher task, which applies every change waiting at once (a network
//!   blip that fails a thousand endpoints is one publish, not a thousand)
//!   into the store's conditions ([`crate::live::Conditions::endpoints_down`])
//!   with [`crate::live::Store::update`]: answers are prepared again from
//!   the map in memory, the serial goes up and NOTIFY follows. What the
//!   view makes of the verdicts (`min_up`, overrides, fail-static) is
//!   [`crate::live::view`]'s business.
//! - **Cells.** The monitor also keeps each cell's own health verdict
//!   (fewer than `min_up` endpoints up: unhealthy) and logs, counts and
//!   audits its transitions, whether or not the view applies them.
//! - **Reloads.** The monitor follows the map in force: a cell whose
//!   probe settings or addresses change gets new probers (keeping the
//!   verdicts of the addresses it still has, so an edit of the path does
//!   not bring a down endpoint back); other cells' probers keep running
//!   undisturbed; a cell without a health table any more, or gone from the
//!   map, has its probers stopped and its verdicts dropped.
//! - **Details.** Last probe time, latency, last error and the counters of
//!   each endpoint stay here ([`Monitor::report`]) for the HTTP API; they
//!   are not part of the view, so that a probe that changes no verdict
//!   changes no zone version.

pub mod hysteresis;
pub mod probe;

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash as _, Hasher as _};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::live::Store;
use crate::live::audit::{Event, rfc3339};
use crate::map::{HealthCheck, Snapshot};
use crate::metrics::ProbeMetrics;
use hysteresis::Hysteresis;
use probe::Target;

/// Verdict changes waiting for the publisher; probers wait when it is full.
const QUEUE: usize = 4096;

/// The probing of one cell, as the map configures it: the health part's
/// own configuration, built from the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellProbes {
    /// The cell id.
    pub cell: String,
    /// The `Host` of HTTP probes: the cell's hostname, no trailing dot.
    pub host: String,
    /// The probe settings.
    pub check: HealthCheck,
    /// The addresses probed (every address of the cell).
    pub endpoints: Vec<IpAddr>,
}

impl CellProbes {
    /// The probing every cell of `map` with a health table asks for, by
    /// cell id.
    pub fn from_map(map: &Snapshot) -> BTreeMap<String, CellProbes> {
        map.cells
            .iter()
            .filter_map(|c| {
                let check = c.health.clone()?;
                let host = c.hostname.to_ascii();
                Some((
                    c.id.clone(),
                    CellProbes {
                        cell: c.id.clone(),
                        host: host.trim_end_matches('.').to_owned(),
                        check,
                        endpoints: c.endpoints().collect(),
                    },
                ))
            })
            .collect()
    }
}

/// What the prober of one endpoint knows (for the HTTP API).
#[derive(Debug, Clone, PartialEq)]
pub struct EndpointReport {
    /// The endpoint's address.
    pub address: IpAddr,
    /// Whether it counts as up (it does before its first verdict).
    pub up: bool,
    /// Its verdict: `None` before the first.
    pub verdict: Option<bool>,
    /// When the verdict last changed.
    pub since: Option<SystemTime>,
    /// The probe (1-based count) whose result changed the verdict last.
    pub changed_at_probe: Option<u64>,
    /// Probes so far (since the prober started).
    pub probes: u64,
    /// Successful probes so far.
    pub successes: u64,
    /// Failed probes so far.
    pub failures: u64,
    /// Consecutive successes now.
    pub consecutive_successes: u32,
    /// Consecutive failures now.
    pub consecutive_failures: u32,
    /// When the last probe ended.
    pub last_probe_at: Option<SystemTime>,
    /// How long the last probe took.
    pub last_latency: Option<Duration>,
    /// Why the last failed probe failed.
    pub last_error: Option<String>,
    /// When that was.
    pub last_error_at: Option<SystemTime>,
}

/// What the monitor knows about one cell (for the HTTP API).
#[derive(Debug, Clone, PartialEq)]
pub struct CellReport {
    /// The probing configured.
    pub config: CellProbes,
    /// Its endpoints, in map order.
    pub endpoints: Vec<EndpointReport>,
    /// Endpoints that count as up.
    pub up: usize,
    /// Fewer than `min_up` endpoints up (whether or not the view applies
    /// it: an override or fail-static may not).
    pub unhealthy: bool,
    /// Since when.
    pub unhealthy_since: Option<SystemTime>,
}

impl CellReport {
    /// Why the cell is unhealthy, in words: `unhealthy since T (0 of 2
    /// endpoints up, min_up 1), 3 probes failed: connection refused`.
    pub fn describe(&self) -> String {
        let mut s = String::from("unhealthy");
        if let Some(t) = self.unhealthy_since {
            s.push_str(&format!(" since {}", rfc3339(t)));
        }
        s.push_str(&format!(
            " ({} of {} endpoints up, min_up {})",
            self.up,
            self.endpoints.len(),
            self.config.check.min_up
        ));
        // The most recent failure of an endpoint that is down.
        if let Some(e) = self
            .endpoints
            .iter()
            .filter(|e| !e.up)
            .max_by_key(|e| e.last_error_at)
        {
            s.push_str(&format!(
                ", {} probes failed: {}",
                e.consecutive_failures,
                e.last_error.as_deref().unwrap_or("unknown error")
            ));
        }
        s
    }
}

/// One probed endpoint: its state, shared by its prober and the API.
#[derive(Debug)]
struct Endpoint {
    addr: IpAddr,
    state: Mutex<EndpointState>,
    metrics: ProbeMetrics,
}

#[derive(Debug)]
struct EndpointState {
    verdicts: Hysteresis,
    probes: u64,
    successes: u64,
    failures: u64,
    since: Option<SystemTime>,
    changed_at_probe: Option<u64>,
    last_probe_at: Option<SystemTime>,
    last_latency: Option<Duration>,
    last_error: Option<String>,
    last_error_at: Option<SystemTime>,
}

impl Endpoint {
    fn new(cell: &str, addr: IpAddr, check: &HealthCheck, carried: Option<&Endpoint>) -> Self {
        let (verdict, since, last_error, last_error_at) = match carried {
            Some(old) => {
                let s = old.lock();
                (
                    s.verdicts.verdict(),
                    s.since,
                    s.last_error.clone(),
                    s.last_error_at,
                )
            }
            None => (None, None, None, None),
        };
        let metrics = ProbeMetrics::new(cell, &addr.to_string());
        metrics.set_up(verdict != Some(false));
        Self {
            addr,
            state: Mutex::new(EndpointState {
                verdicts: Hysteresis::starting_at(check.rise, check.fall, verdict),
                probes: 0,
                successes: 0,
                failures: 0,
                since,
                changed_at_probe: None,
                last_probe_at: None,
                last_latency: None,
                last_error,
                last_error_at,
            }),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, EndpointState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one probe result; the new verdict when it changed, with the
    /// one before (`None`: this is the first).
    fn record(
        &self,
        result: &Result<(), String>,
        elapsed: Duration,
    ) -> Option<(Option<bool>, bool)> {
        let now = SystemTime::now();
        self.metrics.probe(result.is_ok(), elapsed);
        let mut s = self.lock();
        s.probes += 1;
        s.last_probe_at = Some(now);
        s.last_latency = Some(elapsed);
        match result {
            Ok(()) => s.successes += 1,
            Err(e) => {
                s.failures += 1;
                s.last_error = Some(e.clone());
                s.last_error_at = Some(now);
            }
        }
        let before = s.verdicts.verdict();
        let up = s.verdicts.record(result.is_ok())?;
        s.since = Some(now);
        s.changed_at_probe = Some(s.probes);
        self.metrics.set_up(up);
        Some((before, up))
    }

    fn report(&self) -> EndpointReport {
        let s = self.lock();
        EndpointReport {
            address: self.addr,
            up: s.verdicts.is_up(),
            verdict: s.verdicts.verdict(),
            since: s.since,
            changed_at_probe: s.changed_at_probe,
            probes: s.probes,
            successes: s.successes,
            failures: s.failures,
            consecutive_successes: s.verdicts.successes(),
            consecutive_failures: s.verdicts.failures(),
            last_probe_at: s.last_probe_at,
            last_latency: s.last_latency,
            last_error: s.last_error.clone(),
            last_error_at: s.last_error_at,
        }
    }
}

/// A verdict change on its way to the publisher.
#[derive(Debug)]
struct Change {
    cell: String,
    epoch: u64,
    addr: IpAddr,
    up: bool,
}

/// The probers of one cell.
#[derive(Debug)]
struct CellEntry {
    config: CellProbes,
    /// Changes from probers of an earlier epoch (restarted) are stale.
    epoch: u64,
    endpoints: Vec<Arc<Endpoint>>,
    /// The endpoints published as down.
    down: BTreeSet<IpAddr>,
    unhealthy_since: Option<SystemTime>,
    cancel: CancellationToken,
}

impl CellEntry {
    fn up(&self) -> usize {
        self.config
            .endpoints
            .iter()
            .filter(|a| !self.down.contains(a))
            .count()
    }

    fn unhealthy(&self) -> bool {
        self.up() < self.config.check.min_up as usize
    }
}

/// Runs the probers of the map in force and publishes their verdicts; see
/// the module docs.
#[derive(Debug)]
pub struct Monitor {
    cells: Mutex<BTreeMap<String, CellEntry>>,
    epochs: AtomicU64,
    tx: mpsc::Sender<Change>,
    runtime: tokio::runtime::Handle,
    cancel: CancellationToken,
}

impl Monitor {
    /// Starts probing the map in force in `store`, following reloads and
    /// publishing verdict changes into it, until `cancel` fires. Call from
    /// within the tokio runtime. Returns the monitor and the task to wait
    /// for at shutdown.
    pub fn start<A: Send + Sync + 'static>(
        store: Arc<Store<A>>,
        cancel: CancellationToken,
    ) -> (Arc<Self>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE);
        let monitor = Arc::new(Self {
            cells: Mutex::new(BTreeMap::new()),
            epochs: AtomicU64::new(0),
            tx,
            runtime: tokio::runtime::Handle::current(),
            cancel: cancel.clone(),
        });
        let map = store.load().view.map_arc().clone();
        monitor.reconcile(&store, &map);
        let task = tokio::spawn(monitor.clone().supervise(store, rx, map, cancel));
        (monitor, task)
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, CellEntry>> {
        self.cells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The publisher and the map follower, in one task.
    async fn supervise<A: Send + Sync + 'static>(
        self: Arc<Self>,
        store: Arc<Store<A>>,
        mut rx: mpsc::Receiver<Change>,
        mut map: Arc<Snapshot>,
        cancel: CancellationToken,
    ) {
        let mut serials = store.subscribe_serial();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                first = rx.recv() => {
                    let Some(first) = first else { break };
                    let mut batch = vec![first];
                    while let Ok(c) = rx.try_recv() {
                        batch.push(c);
                    }
                    let (this, store) = (self.clone(), store.clone());
                    let _ = tokio::task::spawn_blocking(move || this.apply(&store, batch)).await;
                }
                changed = serials.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let now = store.load().view.map_arc().clone();
                    if !Arc::ptr_eq(&now, &map) {
                        map = now;
                        let (this, store, m) = (self.clone(), store.clone(), map.clone());
                        let _ = tokio::task::spawn_blocking(move || this.reconcile(&store, &m)).await;
                    }
                }
            }
        }
        for entry in self.lock().values() {
            entry.cancel.cancel();
        }
    }

    /// Makes the running probers those `map` asks for (see the module
    /// docs, "Reloads"), and the published verdicts those of the cells
    /// still probed.
    fn reconcile<A: Send + Sync + 'static>(&self, store: &Store<A>, map: &Snapshot) {
        let wanted = CellProbes::from_map(map);
        let mut cells = self.lock();
        let gone: Vec<String> = cells
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect();
        for id in &gone {
            if let Some(entry) = cells.remove(id) {
                entry.cancel.cancel();
                for e in &entry.endpoints {
                    e.metrics.set_up(true);
                }
                tracing::info!(cell = %id, "health probing stopped (no health table in the map any more)");
            }
        }
        let mut restarted = Vec::new();
        for (id, config) in wanted {
            if cells.get(&id).is_some_and(|e| e.config == config) {
                continue;
            }
            let old = cells.remove(&id);
            if let Some(old) = &old {
                old.cancel.cancel();
                for e in &old.endpoints {
                    if !config.endpoints.contains(&e.addr) {
                        e.metrics.set_up(true);
                    }
                }
            }
            let entry = self.spawn_cell(config, old.as_ref());
            restarted.push(id.clone());
            cells.insert(id, entry);
        }
        if !gone.is_empty() || !restarted.is_empty() {
            tracing::info!(
                probed_cells = cells.len(),
                started = restarted.len(),
                stopped = gone.len(),
                "health probers follow the map"
            );
        }
        let published: BTreeMap<String, BTreeSet<IpAddr>> = cells
            .iter()
            .filter(|(_, e)| !e.down.is_empty())
            .map(|(k, e)| (k.clone(), e.down.clone()))
            .collect();
        if let Err(e) = store.update("health", |c| c.endpoints_down = published) {
            tracing::error!(error = %e, "health verdicts not published: the serial cannot be saved");
        }
    }

    /// Starts the probers of one cell, carrying the verdicts `old` had for
    /// the addresses it keeps.
    fn spawn_cell(&self, config: CellProbes, old: Option<&CellEntry>) -> CellEntry {
        let epoch = self.epochs.fetch_add(1, Ordering::Relaxed) + 1;
        let cancel = self.cancel.child_token();
        let carried =
            |addr: &IpAddr| old.and_then(|o| o.endpoints.iter().find(|e| e.addr == *addr));
        let endpoints: Vec<Arc<Endpoint>> = config
            .endpoints
            .iter()
            .map(|a| {
                Arc::new(Endpoint::new(
                    &config.cell,
                    *a,
                    &config.check,
                    carried(a).map(|e| &**e),
                ))
            })
            .collect();
        let down: BTreeSet<IpAddr> = old
            .map(|o| {
                o.down
                    .iter()
                    .filter(|a| config.endpoints.contains(a))
                    .copied()
                    .collect()
            })
            .unwrap_or_default();
        for ep in &endpoints {
            let target = Target::new(
                ep.addr,
                config.check.port,
                config.check.probe,
                &config.check.path,
                &config.host,
            );
            self.runtime.spawn(run_prober(
                ep.clone(),
                target,
                config.cell.clone(),
                epoch,
                config.check.interval,
                config.check.timeout,
                self.tx.clone(),
                cancel.clone(),
            ));
        }
        tracing::debug!(cell = %config.cell, endpoints = endpoints.len(), probe = config.check.probe.as_str(), "health probers started");
        let mut entry = CellEntry {
            config,
            epoch,
            endpoints,
            down,
            unhealthy_since: old.and_then(|o| o.unhealthy_since),
            cancel,
        };
        if !entry.unhealthy() {
            entry.unhealthy_since = None;
        } else if entry.unhealthy_since.is_none() {
            entry.unhealthy_since = Some(SystemTime::now());
        }
        entry
    }

    /// Applies a batch of verdict changes: the cells' own verdicts (logged,
    /// counted, audited) and one publish into the store.
    fn apply<A: Send + Sync + 'static>(&self, store: &Store<A>, batch: Vec<Change>) {
        let mut cells = self.lock();
        let mut touched = BTreeSet::new();
        for c in batch {
            let Some(entry) = cells.get_mut(&c.cell) else {
                continue;
            };
            if entry.epoch != c.epoch || !entry.config.endpoints.contains(&c.addr) {
                continue;
            }
            let changed = if c.up {
                entry.down.remove(&c.addr)
            } else {
                entry.down.insert(c.addr)
            };
            if changed {
                touched.insert(c.cell);
            }
        }
        if touched.is_empty() {
            return;
        }
        for id in &touched {
            let Some(entry) = cells.get_mut(id) else {
                continue;
            };
            let unhealthy = entry.unhealthy();
            if unhealthy == entry.unhealthy_since.is_some() {
                continue;
            }
            entry.unhealthy_since = unhealthy.then(SystemTime::now);
            let report = report_of(entry);
            crate::metrics::health_transition(id, unhealthy);
            let (what, before, after) = if unhealthy {
                ("cell_unhealthy", "healthy", "unhealthy")
            } else {
                ("cell_healthy", "unhealthy", "healthy")
            };
            let reason = if unhealthy {
                report.describe()
            } else {
                format!(
                    "{} of {} endpoints up (min_up {})",
                    report.up,
                    report.endpoints.len(),
                    entry.config.check.min_up
                )
            };
            if unhealthy {
                tracing::warn!(cell = %id, up = report.up, min_up = entry.config.check.min_up, "cell {reason}");
            } else {
                tracing::info!(cell = %id, up = report.up, min_up = entry.config.check.min_up, "cell healthy again: {reason}");
            }
            store.audit().record(
                Event::new("health", what)
                    .cell(id.as_str())
                    .change(Some(before.into()), Some(after.into()))
                    .reason(reason)
                    .detail("up", report.up)
                    .detail("endpoints", report.endpoints.len()),
            );
        }
        let updates: Vec<(String, BTreeSet<IpAddr>)> = touched
            .into_iter()
            .filter_map(|id| cells.get(&id).map(|e| (id, e.down.clone())))
            .collect();
        // Under the monitor's lock, so that a reconcile cannot publish an
        // older set in between.
        let published = store.update("health", |c| {
            for (id, down) in updates {
                if down.is_empty() {
                    c.endpoints_down.remove(&id);
                } else {
                    c.endpoints_down.insert(id, down);
                }
            }
        });
        if let Err(e) = published {
            tracing::error!(error = %e, "health verdicts not published: the serial cannot be saved");
        }
    }

    /// What is known about every probed cell, by cell id.
    pub fn report(&self) -> BTreeMap<String, CellReport> {
        self.lock()
            .iter()
            .map(|(k, e)| (k.clone(), report_of(e)))
            .collect()
    }

    /// What is known about cell `cell`, if it is probed.
    pub fn cell(&self, cell: &str) -> Option<CellReport> {
        self.lock().get(cell).map(report_of)
    }
}

fn report_of(e: &CellEntry) -> CellReport {
    let endpoints: Vec<EndpointReport> = e.endpoints.iter().map(|ep| ep.report()).collect();
    CellReport {
        config: e.config.clone(),
        up: e.up(),
        unhealthy: e.unhealthy(),
        unhealthy_since: e.unhealthy_since,
        endpoints,
    }
}

/// A stable offset in `[0, interval)` for `addr`, spreading the first
/// probes of many endpoints over the interval.
fn spread(addr: IpAddr, interval: Duration) -> Duration {
    let mut h = std::hash::DefaultHasher::new();
    addr.hash(&mut h);
    let ms = interval.as_millis().max(1) as u64;
    Duration::from_millis(h.finish() % ms)
}

/// Probes one endpoint every `interval` until `cancel` fires, sending
/// verdict changes to the publisher.
#[allow(clippy::too_many_arguments)]
async fn run_prober(
    ep: Arc<Endpoint>,
    target: Target,
    cell: String,
    epoch: u64,
    interval: Duration,
    timeout: Duration,
    tx: mpsc::Sender<Change>,
    cancel: CancellationToken,
) {
    let start = tokio::time::Instant::now() + spread(ep.addr, interval);
    let mut tick = tokio::time::interval_at(start, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = target.probe(timeout) => r,
        };
        let Some((before, up)) = ep.record(&result, started.elapsed()) else {
            continue;
        };
        if before.is_none() && up {
            // The first verdict, and it is what the endpoint counted as:
            // nothing changes.
            tracing::debug!(%cell, endpoint = %target.addr, "endpoint up (first verdict)");
            continue;
        }
        let (failures, error) = {
            let s = ep.lock();
            (s.verdicts.failures(), s.last_error.clone())
        };
        if up {
            tracing::info!(%cell, endpoint = %target.addr, "endpoint up");
        } else {
            tracing::info!(%cell, endpoint = %target.addr, failures, error = error.as_deref().unwrap_or(""), "endpoint down");
        }
        let change = Change {
            cell: cell.clone(),
            epoch,
            addr: ep.addr,
            up,
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = tx.send(change) => if r.is_err() { return },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::{Conditions, Serials};

    /// A map of cells a (two endpoints on 127.0.0.x, tcp on `port`, fall
    /// as given, rise 1), b (not probed) and c (127.0.0.3, fall 1), a
    /// failing over to b.
    fn map(port: u16, fall: u32) -> Arc<Snapshot> {
        let text = format!(
            "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n\
             [cells.a]\nhostname = \"a.z.test.\"\nipv4 = [\"127.0.0.1\", \"127.0.0.2\"]\nfailover = \"b\"\n\
             [cells.a.health]\nprobe = \"tcp\"\nport = {port}\ninterval_ms = 250\ntimeout_ms = 200\nrise = 1\nfall = {fall}\n\
             [cells.b]\nhostname = \"b.z.test.\"\nipv4 = [\"192.0.2.2\"]\n\
             [cells.c]\nhostname = \"c.z.test.\"\nipv4 = [\"127.0.0.3\"]\n\
             [cells.c.health]\nprobe = \"tcp\"\nport = {port}\ninterval_ms = 250\ntimeout_ms = 200\nrise = 1\nfall = 1\n\
             [tenants]\nacme = \"a\"\n"
        );
        Arc::new(
            crate::map::load_str(crate::map::Source {
                text: &text,
                format: crate::map::Format::Toml,
                name: "t.toml",
            })
            .expect("valid"),
        )
    }

    async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn verdicts_reach_the_view_and_follow_reloads() {
        // 127.0.0.1 listens, 127.0.0.2 refuses: one endpoint down; c's
        // 127.0.0.3 listens.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = l.local_addr().expect("addr").port();
        let _c = tokio::net::TcpListener::bind(("127.0.0.3", port))
            .await
            .expect("bind c");
        let store = Arc::new(
            Store::new(
                map(port, 1),
                Conditions::default(),
                Serials::open(None),
                |_| (),
            )
            .expect("store"),
        );
        let cancel = CancellationToken::new();
        let (monitor, task) = Monitor::start(store.clone(), cancel.clone());
        let a = store.load().view.map().cell_by_id("a").expect("a");
        wait("127.0.0.2 to leave a's answers", || {
            store.load().view.state(a).ipv4
                == ["127.0.0.1".parse::<std::net::Ipv4Addr>().expect("ip")]
        })
        .await;
        let r = monitor.cell("a").expect("probed");
        assert_eq!((r.up, r.unhealthy), (1, false));
        let down = &r.endpoints[1];
        assert_eq!(down.verdict, Some(false));
        assert_eq!(down.last_error.as_deref(), Some("connection refused"));
        assert!(down.last_probe_at.is_some() && down.last_latency.is_some());
        assert!(r.endpoints[0].up);

        // A reload that changes a's probe settings keeps the verdict of
        // 127.0.0.2 (down), so nothing moves meanwhile; c's probers go on.
        let got = wait_for(|| {
            monitor
                .cell("c")
                .is_some_and(|r| r.endpoints[0].verdict == Some(true))
        })
        .await;
        assert!(got, "c's first verdict: {:?}", monitor.cell("c"));
        let c_before = monitor.cell("c").expect("c").endpoints[0].clone();
        let serial = store.load().view.serial();
        store.publish_map(map(port, 2)).expect("serial");
        wait("the new settings", || {
            monitor.cell("a").is_some_and(|r| r.config.check.fall == 2)
        })
        .await;
        let r = monitor.cell("a").expect("probed");
        assert_eq!(r.endpoints[1].verdict, Some(false));
        assert_eq!(store.load().view.state(a).ipv4.len(), 1);
        assert!(store.load().view.serial() > serial);
        let c_after = monitor.cell("c").expect("c").endpoints[0].clone();
        assert!(
            c_after.probes >= c_before.probes,
            "c's prober kept its state"
        );
        assert_eq!(c_after.changed_at_probe, c_before.changed_at_probe);

        // Both endpoints down: a is unhealthy, its tenants go to b.
        drop(l);
        wait("a to fail over", || {
            let v = store.load().view.clone();
            v.serving(a) != a
        })
        .await;
        assert!(monitor.cell("a").expect("probed").unhealthy);
        assert!(
            monitor
                .cell("a")
                .expect("probed")
                .describe()
                .contains("probes failed: connection refused")
        );

        // A map without a's health table: probers stop, verdicts dropped.
        let plain = crate::map::load_str(crate::map::Source {
            text: "[zone]\norigin = \"z.test.\"\nnameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n\
                   [cells.a]\nhostname = \"a.z.test.\"\nipv4 = [\"127.0.0.1\", \"127.0.0.2\"]\nfailover = \"b\"\n\
                   [cells.b]\nhostname = \"b.z.test.\"\nipv4 = [\"192.0.2.2\"]\n",
            format: crate::map::Format::Toml,
            name: "t.toml",
        })
        .expect("valid");
        store.publish_map(Arc::new(plain)).expect("serial");
        wait("a's verdicts to be dropped", || {
            monitor.cell("a").is_none() && store.conditions().endpoints_down.is_empty()
        })
        .await;
        assert_eq!(store.load().view.serving(a), a);
        cancel.cancel();
        task.await.expect("monitor task");
    }
}
