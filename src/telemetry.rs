//! Logging set-up for the binary: `tracing` with a human or JSON format.
//! The default filter keeps hickory's per-response `info!` lines out, and
//! the file watcher's (`notify`) warnings unless `RUST_LOG` names it: the
//! watcher warns when it drops the watch of a directory that was deleted
//! twice (a Kubernetes `..data` swap deletes the old timestamped
//! directory), which is routine; cellns reports the state of its watches
//! itself.

use tracing_subscriber::EnvFilter;

/// Default log filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str =
    "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn,notify=error";

/// Installs the global subscriber (logs go to stderr): human-readable
/// lines, or one JSON object per line when `json`. Safe to call twice.
pub fn init(json: bool) {
    let mut filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    if !std::env::var("RUST_LOG").is_ok_and(|v| v.contains("notify"))
        && let Ok(quiet) = "notify=error".parse()
    {
        filter = filter.add_directive(quiet);
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
