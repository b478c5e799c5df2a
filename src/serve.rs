//! `cellns serve`: load the map, then run the DNS listeners, the HTTP API and
//! the map watcher until a shutdown signal.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::map;
use crate::reload::{self, Store};

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

/// Loads the initial map (a bad or missing one is an error: nothing to
/// serve), then serves until `shutdown` completes.
pub async fn run(args: ServeArgs, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    // Zone transfer settings first: a bad --axfr-allow or --tsig-key is a
    // start-up error.
    let transfers = Arc::new(
        crate::dns::xfr::Transfers::from_args(&args).context("invalid zone transfer settings")?,
    );
    // Serials stay monotonic across restarts through --state-dir.
    let serial = reload::initial_serial(args.state_dir.as_deref());
    let mut reloader = args
        .map
        .as_ref()
        .map(|path| reload::Reloader::new(path.clone(), args.state_dir.clone()));
    let snapshot = match &mut reloader {
        Some(r) => r
            .load_initial(serial)
            .map_err(|e| anyhow::anyhow!(e.summary()))?,
        None => {
            tracing::warn!(
                "no --map given: serving the example map embedded from zones/example.toml"
            );
            map::load_example(serial).context("the embedded example map is invalid")?
        }
    };
    tracing::info!(
        source = %snapshot.source,
        version = %snapshot.version,
        serial = snapshot.serial,
        cells = snapshot.cells.len(),
        tenants = snapshot.tenants.len(),
        "map loaded"
    );
    reload::save_serial(args.state_dir.as_deref(), snapshot.serial);
    let store = Arc::new(Store::new(snapshot));
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
    let cancel = CancellationToken::new();

    crate::dns::xfr::warn_unexpressible(&args, &store.load());
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
    for addr in dns.local_addrs() {
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    let dns_task = tokio::spawn(dns.run(cancel.clone()));
    let notify_task = notifier.map(|n| tokio::spawn(n.run(cancel.clone())));
    let http = crate::http::HttpServer::bind(&args, store.clone())
        .await
        .context("cannot start the HTTP API")?;
    let addr = http.local_addr();
    tracing::info!(%addr, "HTTP listening");
    let http_task = tokio::spawn(http.run(cancel.clone()));
    tracing::info!("serving");

    shutdown.await;
    tracing::info!("shutting down");
    cancel.cancel();
    dns_task.await.context("DNS task panicked")??;
    if let Some(r) = reload_task {
        r.shutdown().await;
    }
    http_task.await.context("HTTP task panicked")??;
    if let Some(t) = notify_task {
        t.await.context("NOTIFY task panicked")?;
    }
    Ok(())
}
