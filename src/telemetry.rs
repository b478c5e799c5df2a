//! Logging set-up for the binary: `tracing` with a human or JSON format.
//! The default filter keeps hickory's per-response `info!` lines out, and
//! the file watcher's (`notify`) warnings unless `RUST_LOG` names it: the
//! watcher warns when it drops the watch of a directory that was deleted
//! twice (a Kubernetes `..data` swap deletes the old timestamped
//! directory), which is routine; cellns reports the state of its watches
//! itself.
//!
//! Log lines an outsider can cause (a malformed packet, a refused zone
//! transfer, a connection over a limit) are rate-limited, so that nobody
//! can flood the logs by sending packets: every event from the hickory
//! crates (which warn, for example, about every malformed EDNS option
//! they decode) and every event of the [`OUTSIDER`] target passes at most
//! [`LINES_PER_WINDOW`] times per [`WINDOW_SECS`] per call site; what is
//! held back is counted and reported once per window in a line of its
//! own (`log lines suppressed`, from a thread of its own: never from
//! inside the filter). Code that logs from a loop of its own can also use
//! a [`LogLimit`] directly.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Default log filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str =
    "info,hickory_server=warn,hickory_proto=warn,hickory_net=warn,notify=error";

/// The target of log lines an outsider can trigger (rate-limited like the
/// hickory crates' lines): `tracing::info!(target: OUTSIDER, ...)`.
pub const OUTSIDER: &str = "cellns::outsider";

/// Lines each call site may log per window.
pub const LINES_PER_WINDOW: u32 = 10;
/// The window, in seconds.
pub const WINDOW_SECS: u64 = 10;

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
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().flatten_event(true).boxed()
    } else {
        fmt.boxed()
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(fmt.with_filter(OutsiderLimit))
        .try_init();
    if installed.is_ok() {
        let _ = std::thread::Builder::new()
            .name("cellns-log-limit".into())
            .spawn(report_suppressed);
    }
}

/// Every window, logs how many lines the limit held back, if any.
fn report_suppressed() {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(WINDOW_SECS));
        let suppressed: u64 = SITE_LIMITS.iter().map(LogLimit::take_suppressed).sum();
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                window_secs = WINDOW_SECS,
                "log lines suppressed: lines an outsider can trigger are limited to \
                 {LINES_PER_WINDOW} per {WINDOW_SECS} s per call site"
            );
        }
    }
}

/// How many call sites get a limiter of their own; more share (by hash).
const SITES: usize = 64;

/// One limiter per call-site slot.
static SITE_LIMITS: [LogLimit; SITES] = [const { LogLimit::new(LINES_PER_WINDOW) }; SITES];

/// Whether events of this call site are ones an outsider can trigger.
fn is_limited(meta: &Metadata<'_>) -> bool {
    meta.is_event() && (meta.target().starts_with("hickory") || meta.target() == OUTSIDER)
}

/// The per-layer filter: lets an event through unless it is one an
/// outsider can trigger and its call site is over its budget. Its answer
/// for such call sites changes with time, so they are never cached
/// (`Interest::sometimes`); every other call site is always enabled here.
struct OutsiderLimit;

impl<S> Filter<S> for OutsiderLimit {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        if !is_limited(meta) {
            return true;
        }
        // Metadata is static per call site: its address names the site.
        let site = (std::ptr::from_ref(meta) as usize >> 4) % SITES;
        SITE_LIMITS[site].allow()
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_limited(meta) {
            Interest::sometimes()
        } else {
            Interest::always()
        }
    }
}

/// A budget of log lines per window ([`WINDOW_SECS`]), lock-free and
/// allocation-free: for lines an outsider can cause.
#[derive(Debug)]
pub struct LogLimit {
    per_window: u32,
    window: AtomicU64,
    used: AtomicU32,
    suppressed: AtomicU64,
}

impl LogLimit {
    /// A budget of `per_window` lines per window.
    pub const fn new(per_window: u32) -> Self {
        Self {
            per_window,
            window: AtomicU64::new(0),
            used: AtomicU32::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now (and takes it from the budget);
    /// a line refused is counted ([`LogLimit::take_suppressed`]).
    pub fn allow(&self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            / WINDOW_SECS;
        self.allow_at(now)
    }

    /// [`LogLimit::allow`] in window `window` (tests).
    pub fn allow_at(&self, window: u64) -> bool {
        let seen = self.window.load(Ordering::Relaxed);
        if seen != window
            && self
                .window
                .compare_exchange(seen, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.used.store(0, Ordering::Relaxed);
        }
        if self.used.fetch_add(1, Ordering::Relaxed) < self.per_window {
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Lines refused since the last call.
    pub fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_lets_the_budget_through_and_counts_the_rest() {
        let l = LogLimit::new(3);
        let got: Vec<bool> = (0..6).map(|_| l.allow_at(7)).collect();
        assert_eq!(got, [true, true, true, false, false, false]);
        assert_eq!(l.take_suppressed(), 3);
        assert_eq!(l.take_suppressed(), 0);
        // The next window: a new budget.
        assert!(l.allow_at(8));
    }
}
