//! `cellns serve`: the wiring. It turns the serve flags into each part's
//! own configuration, starts the parts in order, and supervises them.
//!
//! Order: the HTTP API first (probes answer while a large map loads), then
//! the map, then DNS; `/readyz` turns 200 only once every DNS socket is
//! bound and every UDP worker and TCP listener runs. From then on the
//! process serves until a shutdown signal, or until the DNS server, the
//! HTTP API or the NOTIFY task stops on its own: then it logs why, reports
//! unready, stops the rest and exits non-zero, so an orchestrator restarts
//! it instead of keeping a process that is "up" but does not serve.
//!
//! Shutdown (SIGTERM or SIGINT) is graceful, in three steps:
//! 1. `/readyz` turns 503 at once, while everything keeps serving, for
//!    `--shutdown-unready-ms`: load balancers and health checks stop
//!    sending (a part failing meanwhile ends the wait);
//! 2. the listeners close: no new DNS-over-TCP or HTTP connection, UDP
//!    workers answer the datagrams they have read and stop; each open TCP
//!    connection answers every query it has read (pipelined ones included)
//!    and closes, a zone transfer under way is finished, HTTP requests in
//!    flight complete;
//! 3. what is still open after `--shutdown-grace-ms` is cut, and the
//!    process exits.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::args::ServeArgs;
use crate::dns::dnssec::{DEFAULT_VALIDITY, Dnssec, DnssecConfig};
use crate::dns::xfr::{TransferConfig, Transfers};
use crate::dns::{DnsConfig, DnsServer, TcpLimits};
use crate::health::Monitor;
use crate::http::{Attach, HttpConfig, HttpLimits, HttpServer, TlsConfig};
use crate::live::audit::Audit;
use crate::live::overrides::{self, Bound, Overrides};
use crate::live::reload::{self, Reloader, ThreadConfig};
use crate::live::{Conditions, Serials};
use crate::map;
use crate::token::IssuerConfig;

/// Waits for SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Each part's configuration, from the flags.
struct Configs {
    dns: DnsConfig,
    http: HttpConfig,
    transfers: TransferConfig,
    dnssec: Option<DnssecConfig>,
}

impl Configs {
    /// Fails on flags that cannot go together.
    fn from_args(args: &ServeArgs) -> anyhow::Result<Self> {
        if args.dnssec_keys.is_some() && (!args.axfr_allow.is_empty() || !args.notify.is_empty()) {
            // A secondary would need the whole zone signed ahead of time,
            // with an NSEC or NSEC3 chain over every tenant name: a list of
            // the tenants for anyone who walks it. Compact denial exists
            // only online.
            anyhow::bail!(
                "--dnssec-keys cannot be combined with --axfr-allow or --notify: the zone is signed \
                 online, with compact denial of existence (RFC 9824), which exists only in answers; \
                 a secondary would need a pre-signed zone with a complete NSEC/NSEC3 chain, which \
                 lets anyone list the tenants. Run more cellns instances from the same map and key \
                 directory instead (docs/dnssec.md, \"Zone transfers\")"
            );
        }
        Ok(Self {
            dns: DnsConfig {
                listen: args.dns_listen.clone(),
                udp_workers: args.udp_workers,
                shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
                tcp: TcpLimits {
                    max_connections: args.tcp_max_connections as usize,
                    max_per_source: args.tcp_max_connections_per_source as usize,
                    idle_timeout: Duration::from_millis(args.tcp_idle_timeout_ms),
                    max_lifetime: Duration::from_millis(args.tcp_max_lifetime_ms),
                },
                rrl_rate: args.rrl_rate,
                rrl_slip: args.rrl_slip,
            },
            http: HttpConfig {
                listen: args.http_listen,
                // clap makes --tls-cert and --tls-key go together, and
                // --client-ca require them.
                tls: match (&args.tls_cert, &args.tls_key) {
                    (Some(cert), Some(key)) => Some(TlsConfig {
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: args.client_ca.clone(),
                    }),
                    _ => None,
                },
                signing_keys: args.signing_keys.clone(),
                allow_dev_key: args.allow_dev_key,
                api_keys: args.api_keys.clone(),
                tokens: IssuerConfig {
                    issuer: args.issuer.clone(),
                    audience: args.audience.clone(),
                    max_ttl: args.token_max_ttl,
                },
                rate_limit: args.rate_limit,
                rate_burst: args.rate_burst,
                shutdown_grace: Duration::from_millis(args.shutdown_grace_ms),
                limits: HttpLimits {
                    max_connections: args.http_max_connections as usize,
                    max_per_source: args.http_max_connections_per_source as usize,
                    header_timeout: Duration::from_millis(args.http_header_timeout_ms),
                    body_timeout: Duration::from_millis(args.http_body_timeout_ms),
                    idle_timeout: Duration::from_millis(args.http_idle_timeout_ms),
                    max_header_bytes: args.http_max_header_bytes as usize,
                },
                metrics_allow: args.metrics_allow.clone(),
                metrics_key_file: args.metrics_key_file.clone(),
            },
            transfers: TransferConfig {
                allow: args.axfr_allow.clone(),
                tsig_key: args.tsig_key.clone(),
                secondaries: args.notify.clone(),
                journal: crate::dns::xfr::journal::Limits {
                    versions: args.ixfr_journal_versions,
                    bytes: args.ixfr_journal_bytes,
                },
            },
            dnssec: args.dnssec_keys.as_ref().map(|keys| DnssecConfig {
                keys: keys.clone(),
                cache_entries: usize::try_from(args.dnssec_cache_entries).unwrap_or(usize::MAX),
                cache_bytes: usize::try_from(args.dnssec_cache_mib.saturating_mul(1 << 20))
                    .unwrap_or(usize::MAX),
                validity: DEFAULT_VALIDITY,
            }),
        })
    }
}

/// Binds the HTTP API (probes answer from here on), loads the initial map
/// (a bad or missing one is an error: nothing to serve), starts DNS,
/// reports ready, then serves until `shutdown` completes or a part fails
/// (an error: the process exits non-zero).
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let started = crate::live::serial::unix_now();
    let mut cfg = Configs::from_args(&args)?;
    // Connections must never take the descriptors reloads and UDP need.
    let budget =
        super::budget::fit(&mut cfg.dns, &mut cfg.http.limits).context("file descriptor budget")?;
    tracing::debug!(
        nofile = budget.nofile,
        lowered = budget.lowered,
        "file descriptor budget"
    );
    // Before any zone version is prepared: per-cell counters are resolved then.
    crate::metrics::install();
    // The DNSSEC keys before anything listens: a bad key directory is a
    // start-up error.
    let dnssec = cfg
        .dnssec
        .as_ref()
        .map(Dnssec::open)
        .transpose()
        .context("cannot start DNSSEC")?;
    // Zone transfer settings first: a bad --axfr-allow or --tsig-key is a
    // start-up error.
    let transfers =
        Arc::new(Transfers::from_config(&cfg.transfers).context("invalid zone transfer settings")?);
    let cancel = CancellationToken::new();
    // Whatever fails from here on stops the tasks already started.
    let _stop_on_error = cancel.clone().drop_guard();

    // HTTP before the map: /healthz answers and /readyz says "not ready"
    // while a large map loads.
    let http = HttpServer::bind(&cfg.http)
        .await
        .context("cannot start the HTTP API")?;
    let addr = http.local_addr();
    let gate = http.gate();
    tracing::info!(%addr, "HTTP listening");
    let mut http_task = tokio::spawn(http.run(cancel.clone()));
    let upkeep_task = tokio::spawn(crate::metrics::upkeep(cancel.clone()));

    let reloader = args
        .map
        .as_ref()
        .map(|path| Reloader::new(path.clone()).max_bytes(args.map_max_bytes));
    // Off the async workers: parsing a million-tenant map takes seconds,
    // and the HTTP probes must keep answering meanwhile.
    let (reloader, snapshot) = tokio::task::spawn_blocking(move || match reloader {
        Some(mut r) => {
            let snap = r.load_initial().map_err(|e| anyhow::anyhow!(e.summary()))?;
            Ok((Some(r), snap))
        }
        None => {
            tracing::warn!(
                "no --map given: serving the example map embedded from zones/example.toml"
            );
            let snap = map::load_example().context("the embedded example map is invalid")?;
            anyhow::Ok((None, snap))
        }
    })
    .await
    .context("loading the map panicked")??;
    // Serials never go backwards: saved in --state-dir before use, and
    // clock serials above the second this process started in. Operator
    // overrides survive restarts through --state-dir too, and apply from the
    // first zone version on.
    let serials = Serials::open(args.state_dir.clone()).not_before(started);
    let overrides = Arc::new(Overrides::load(args.state_dir.as_deref()));
    let conditions = Conditions {
        overrides: overrides.in_force(overrides::now_ms()),
        ..Conditions::default()
    };
    let audit = Arc::new(Audit::open(args.state_dir.as_deref()));
    let store = {
        let overrides = overrides.clone();
        let transfers_j = transfers.clone();
        let dnssec = dnssec.clone();
        tokio::task::spawn_blocking(move || {
            let store = Arc::new(crate::dns::prepared::new_store(
                Arc::new(snapshot),
                conditions,
                serials,
                dnssec,
            )?);
            store.set_audit(audit);
            // Every publish from now on records its IXFR differences.
            store.set_on_publish(move |old, new| transfers_j.journal().record(old, new));
            // Overrides that expired while the process was down: audited,
            // dropped.
            overrides.expire(&store, overrides::now_ms());
            Ok::<_, crate::live::serial::SerialError>(store)
        })
        .await
        .context("preparing the first zone version panicked")?
        .context("cannot save the first SOA serial in --state-dir")?
    };
    {
        let live = store.load();
        let snapshot = live.view.map();
        tracing::info!(
            source = %snapshot.source,
            version = %snapshot.version,
            serial = live.view.serial(),
            cells = snapshot.cells.len(),
            tenants = snapshot.tenants.len(),
            "map loaded"
        );
        crate::dns::xfr::warn_unexpressible(&cfg.transfers, snapshot);
        crate::dns::xfr::warn_clock_serials(&cfg.transfers, snapshot);
    }
    if let Some(d) = &dnssec {
        gate.set_dnssec(d.clone());
    }
    // Key events (a key published, activated, retired, removed, or a key
    // file changed) are new zone versions; publishing may wait for the
    // clock, so off the async workers.
    let dnssec_task = dnssec.map(|d| {
        let store = store.clone();
        tokio::spawn(d.watch(cancel.clone(), move || {
            let store = store.clone();
            tokio::task::spawn_blocking(move || match store.republish("dnssec") {
                Ok(view) => tracing::info!(
                    serial = view.serial(),
                    "DNSSEC keys changed: new zone version"
                ),
                Err(e) => tracing::error!(
                    error = %e,
                    "DNSSEC keys changed but the new zone version cannot be published: the SOA serial cannot be saved"
                ),
            });
        }))
    });
    // Probers of the cells with a health table, following reloads.
    let (monitor, health_task) = Monitor::start(store.clone(), cancel.clone());
    let expiry_task = tokio::spawn(overrides.clone().run_expiry(store.clone(), cancel.clone()));
    // The secondaries' serials, for GET /v1/fleet.
    let fleet = (!cfg.transfers.secondaries.is_empty()).then(|| {
        Arc::new(crate::dns::fleet::Fleet::new(
            &cfg.transfers.secondaries,
            store.clone(),
        ))
    });
    let fleet_task = fleet.clone().map(|f| tokio::spawn(f.run(cancel.clone())));
    // Planned moves: a new zone version at each boundary, on the wall clock.
    let moves_task = tokio::spawn(crate::live::moves::run_timer(store.clone(), cancel.clone()));
    gate.attach(Attach {
        fleet,
        store: store.clone(),
        overrides: Arc::new(Bound {
            overrides,
            store: store.clone(),
        }),
        health: Some(monitor),
    });
    // Watch the map file (and SIGHUP) before reporting "serving".
    let reload_task = match reloader {
        Some(r) => Some(
            r.spawn(
                store.clone(),
                ThreadConfig {
                    debounce: Duration::from_millis(args.reload_debounce_ms),
                    check_interval: Duration::from_millis(args.map_check_interval_ms),
                },
            )
            .context("cannot start the map watcher")?,
        ),
        None => {
            reload::ignore_sighup().context("cannot handle SIGHUP")?;
            None
        }
    };

    let dns = DnsServer::bind(&cfg.dns, store.clone(), transfers.clone())
        .await
        .context("cannot start DNS")?;
    let dns_addrs = dns.local_addrs().to_vec();
    // NOTIFY the secondaries now (they may have missed changes while we were
    // down) and after every change.
    let notifier = crate::dns::notify::Notifier::bind(
        &cfg.transfers.secondaries,
        transfers.key().cloned(),
        store.clone(),
        &dns_addrs,
    )
    .await
    .context("cannot start NOTIFY")?;
    let mut dns_task = dns.start(cancel.clone()).context("cannot start DNS")?;
    // Every socket is bound and every worker and listener runs: queries sent
    // now are answered. Ready, before the log lines that tell the address.
    gate.readiness().set_dns_listening(&dns_addrs);
    for addr in &dns_addrs {
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    let mut notify_task = notifier.map(|n| tokio::spawn(n.run(cancel.clone())));
    tracing::info!("serving");

    let mut failure = tokio::select! {
        _ = shutdown => None,
        r = dns_task.wait() => Some(dns_stopped(r)),
        r = &mut http_task => Some(http_stopped(r)),
        r = async { match &mut notify_task { Some(t) => t.await, None => std::future::pending().await } } => {
            Some(notify_stopped(r))
        }
    };
    gate.readiness().set_stopping();
    if failure.is_none() {
        tracing::info!(
            unready_ms = args.shutdown_unready_ms,
            grace_ms = args.shutdown_grace_ms,
            "shutting down: reporting unready while still serving"
        );
        // Still serving; a part that fails meanwhile ends the wait.
        failure = tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(args.shutdown_unready_ms)) => None,
            r = dns_task.wait(), if !dns_task.is_finished() => Some(dns_stopped(r)),
            r = &mut http_task, if !http_task.is_finished() => Some(http_stopped(r)),
        };
    }
    match &failure {
        None => {
            tracing::info!("shutting down: closing the listeners, finishing what is under way")
        }
        Some(e) => {
            tracing::error!(error = %format!("{e:#}"), "a part of the server failed; stopping")
        }
    }
    cancel.cancel();
    // Each part is waited for unless it is the one that already ended.
    if !dns_task.is_finished() {
        dns_task.wait().await.context("DNS server")?;
    }
    if let Some(r) = reload_task {
        r.shutdown().await;
    }
    if !http_task.is_finished() {
        http_task.await.context("HTTP task panicked")??;
    }
    let _ = upkeep_task.await;
    let _ = health_task.await;
    let _ = expiry_task.await;
    if let Some(t) = fleet_task {
        let _ = t.await;
    }
    let _ = moves_task.await;
    if let Some(t) = dnssec_task {
        let _ = t.await;
    }
    if let Some(t) = notify_task
        && !t.is_finished()
    {
        t.await.context("NOTIFY task panicked")?;
    }
    match failure {
        None => {
            tracing::info!("stopped");
            Ok(())
        }
        Some(e) => Err(e),
    }
}

fn dns_stopped(r: Result<(), crate::dns::DnsError>) -> anyhow::Error {
    match r {
        Ok(()) => anyhow::anyhow!("the DNS server stopped"),
        Err(e) => anyhow::Error::new(e),
    }
}

fn http_stopped(
    r: Result<Result<(), crate::http::HttpError>, tokio::task::JoinError>,
) -> anyhow::Error {
    match r {
        Ok(Ok(())) => anyhow::anyhow!("the HTTP API stopped"),
        Ok(Err(e)) => anyhow::Error::new(e),
        Err(e) => anyhow::anyhow!("the HTTP API panicked: {e}"),
    }
}

fn notify_stopped(r: Result<(), tokio::task::JoinError>) -> anyhow::Error {
    match r {
        Ok(()) => anyhow::anyhow!("the NOTIFY task stopped"),
        Err(e) => anyhow::anyhow!("the NOTIFY task panicked: {e}"),
    }
}
