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

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::args::ServeArgs;
use crate::dns::xfr::{TransferConfig, Transfers};
use crate::dns::{DnsConfig, DnsServer};
use crate::health::Monitor;
use crate::http::{Attach, HttpConfig, HttpServer, TlsConfig};
use crate::live::audit::Audit;
use crate::live::overrides::{self, Bound, Overrides};
use crate::live::reload::{self, Reloader};
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
}

impl Configs {
    fn from_args(args: &ServeArgs) -> Self {
        Self {
            dns: DnsConfig {
                listen: args.dns_listen.clone(),
                udp_workers: args.udp_workers,
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
            },
            transfers: TransferConfig {
                allow: args.axfr_allow.clone(),
                tsig_key: args.tsig_key.clone(),
                secondaries: args.notify.clone(),
            },
        }
    }
}

/// Binds the HTTP API (probes answer from here on), loads the initial map
/// (a bad or missing one is an error: nothing to serve), starts DNS,
/// reports ready, then serves until `shutdown` completes or a part fails
/// (an error: the process exits non-zero).
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let cfg = Configs::from_args(&args);
    // Before any zone version is prepared: per-cell counters are resolved then.
    crate::metrics::install();
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

    let reloader = args.map.as_ref().map(|path| Reloader::new(path.clone()));
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
    // Serials stay monotonic across restarts through --state-dir; so do
    // operator overrides, which apply from the first zone version on.
    let serials = Serials::open(args.state_dir.clone());
    let overrides = Arc::new(Overrides::load(args.state_dir.as_deref()));
    let conditions = Conditions {
        overrides: overrides.in_force(overrides::now_ms()),
        ..Conditions::default()
    };
    let store = Arc::new(crate::dns::prepared::new_store(
        Arc::new(snapshot),
        conditions,
        serials,
    ));
    store.set_audit(Arc::new(Audit::open(args.state_dir.as_deref())));
    // Overrides that expired while the process was down: audited, dropped.
    overrides.expire(&store, overrides::now_ms());
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
    }
    // Probers of the cells with a health table, following reloads.
    let (monitor, health_task) = Monitor::start(store.clone(), cancel.clone());
    let expiry_task = tokio::spawn(overrides.clone().run_expiry(store.clone(), cancel.clone()));
    // Planned moves: a new zone version at each boundary, on the wall clock.
    let moves_task = tokio::spawn(crate::live::moves::run_timer(store.clone(), cancel.clone()));
    gate.attach(Attach {
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
                Duration::from_millis(args.reload_debounce_ms),
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

    let failure = tokio::select! {
        _ = shutdown => None,
        r = dns_task.wait() => Some(match r {
            Ok(()) => anyhow::anyhow!("the DNS server stopped"),
            Err(e) => anyhow::Error::new(e),
        }),
        r = &mut http_task => Some(match r {
            Ok(Ok(())) => anyhow::anyhow!("the HTTP API stopped"),
            Ok(Err(e)) => anyhow::Error::new(e),
            Err(e) => anyhow::anyhow!("the HTTP API panicked: {e}"),
        }),
        r = async { match &mut notify_task { Some(t) => t.await, None => std::future::pending().await } } => {
            Some(match r {
                Ok(()) => anyhow::anyhow!("the NOTIFY task stopped"),
                Err(e) => anyhow::anyhow!("the NOTIFY task panicked: {e}"),
            })
        }
    };
    gate.readiness().set_stopping();
    match &failure {
        None => tracing::info!("shutting down"),
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
    let _ = moves_task.await;
    if let Some(t) = notify_task
        && !t.is_finished()
    {
        t.await.context("NOTIFY task panicked")?;
    }
    match failure {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
