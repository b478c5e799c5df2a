//! `cellns serve`: bind the HTTP API, load the map, then run the DNS
//! listeners, the HTTP API and the map watcher until a shutdown signal.
//! `/readyz` turns ready once the map is loaded and DNS is bound.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::live::reload::{self, Reloader};
use crate::live::{Conditions, Serials};
use crate::map;

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

/// Binds the HTTP API (probes answer from here on), loads the initial map
/// (a bad or missing one is an error: nothing to serve), binds DNS, reports
/// ready, then serves until `shutdown` completes.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Before any snapshot is compiled: per-cell counters are resolved then.
    crate::metrics::install();
    // Zone transfer settings first: a bad --axfr-allow or --tsig-key is a
    // start-up error.
    let transfers = Arc::new(
        crate::dns::xfr::Transfers::from_args(&args).context("invalid zone transfer settings")?,
    );
    let cancel = CancellationToken::new();
    // Whatever fails from here on stops the tasks already started.
    let _stop_on_error = cancel.clone().drop_guard();

    // HTTP before the map: /healthz answers and /readyz says "not ready"
    // while a large map loads.
    let http = crate::http::HttpServer::bind(&args)
        .await
        .context("cannot start the HTTP API")?;
    let addr = http.local_addr();
    let gate = http.gate();
    tracing::info!(%addr, "HTTP listening");
    let http_task = tokio::spawn(http.run(cancel.clone()));
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
    // Serials stay monotonic across restarts through --state-dir.
    let serials = Serials::open(args.state_dir.clone());
    let store = Arc::new(crate::dns::prepared::new_store(
        Arc::new(snapshot),
        Conditions::default(),
        serials,
    ));
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
    }
    gate.attach(store.clone());
    // Watch the map file (and SIGHUP) before reporting "serving".
    let reload_task = match reloader {
        Some(r) => Some(
            r.spawn(
                store.clone(),
                std::time::Duration::from_millis(args.reload_debounce_ms),
            )
            .context("cannot start the map watcher")?,
        ),
        None => {
            reload::ignore_sighup().context("cannot handle SIGHUP")?;
            None
        }
    };

    crate::dns::xfr::warn_unexpressible(&args, store.load().view.map());
    let dns = crate::dns::DnsServer::bind(&args, store.clone(), transfers.clone())
        .await
        .context("cannot start DNS")?;
    // NOTIFY the secondaries now (they may have missed changes while we were
    // down) and after every reload.
    let notifier = crate::dns::notify::Notifier::bind(
        &args.notify,
        transfers.key().cloned(),
        store.clone(),
        dns.local_addrs(),
    )
    .await
    .context("cannot start NOTIFY")?;
    // Bound sockets queue queries until the workers read them: ready now,
    // before the log lines that tell the address.
    gate.readiness().set_dns_listening();
    for addr in dns.local_addrs() {
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    let dns_task = tokio::spawn(dns.run(cancel.clone()));
    let notify_task = notifier.map(|n| tokio::spawn(n.run(cancel.clone())));
    tracing::info!("serving");

    shutdown.await;
    tracing::info!("shutting down");
    gate.readiness().set_stopping();
    cancel.cancel();
    dns_task.await.context("DNS task panicked")??;
    if let Some(r) = reload_task {
        r.shutdown().await;
    }
    http_task.await.context("HTTP task panicked")??;
    let _ = upkeep_task.await;
    if let Some(t) = notify_task {
        t.await.context("NOTIFY task panicked")?;
    }
    Ok(())
}
