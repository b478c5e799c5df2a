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
    let serial = reload::next_serial(None);
    let snapshot = match &args.map {
        Some(path) => map::load_file(path, serial).map_err(|e| anyhow::anyhow!(e.summary()))?,
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
    let store = Arc::new(Store::new(snapshot));
    let cancel = CancellationToken::new();

    let dns = crate::dns::DnsServer::bind(&args, store.clone())
        .await
        .context("cannot start DNS")?;
    for addr in dns.local_addrs() {
        tracing::info!(%addr, "DNS listening (UDP and TCP)");
    }
    let dns_task = tokio::spawn(dns.run(cancel.clone()));
    tracing::info!("serving");

    shutdown.await;
    tracing::info!("shutting down");
    cancel.cancel();
    dns_task.await.context("DNS task panicked")??;
    Ok(())
}
