//! Logging set-up for the binary: `tracing` with a human or JSON format.
//! The default filter keeps hickory's per-response `info!` lines out.

use tracing_subscriber::EnvFilter;

/// Default log filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn";

/// Installs the global subscriber (logs go to stderr): human-readable
/// lines, or one JSON object per line when `json`. Safe to call twice.
pub fn init(json: bool) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}
