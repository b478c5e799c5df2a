//! The live snapshot and how it changes: watch → parse → validate → swap,
//! keeping the last good map when a new one is bad.
//!
//! Readers (DNS, tokens) call [`Store::load`], a lock-free `arc-swap` read.
//! Only this module publishes snapshots.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;

use crate::map::Snapshot;

/// The outcome of the most recent reload attempt.
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Successful reloads since start.
    pub successes: u64,
    /// Failed reloads since start.
    pub failures: u64,
    /// The last failure's message, cleared by the next success.
    pub last_error: Option<String>,
    /// When the last failure happened.
    pub last_error_at: Option<SystemTime>,
}

/// Holds the snapshot every query reads, and the reload status.
#[derive(Debug)]
pub struct Store {
    current: ArcSwap<Snapshot>,
    status: Mutex<ReloadStatus>,
}

impl Store {
    /// A store serving `initial`.
    pub fn new(initial: Snapshot) -> Self {
        Self {
            current: ArcSwap::from_pointee(initial),
            status: Mutex::new(ReloadStatus::default()),
        }
    }

    /// The snapshot in force. Lock-free; hold the guard only for one query.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// The snapshot in force, as an owned `Arc` (for longer work).
    pub fn load_full(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Publishes a new snapshot and returns the one it replaced.
    pub fn publish(&self, next: Snapshot) -> Arc<Snapshot> {
        self.current.swap(Arc::new(next))
    }

    /// A copy of the reload status.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Records a successful reload.
    pub fn record_success(&self) {
        if let Ok(mut s) = self.status.lock() {
            s.successes += 1;
            s.last_error = None;
            s.last_error_at = None;
        }
    }

    /// Records a failed reload; the snapshot in force is unchanged.
    pub fn record_failure(&self, message: String) {
        if let Ok(mut s) = self.status.lock() {
            s.failures += 1;
            s.last_error = Some(message);
            s.last_error_at = Some(SystemTime::now());
        }
    }
}

/// The SOA serial for the next snapshot: the clock in seconds, but always
/// above `previous` (RFC 1982 arithmetic is not needed until 2106).
pub fn next_serial(previous: Option<u32>) -> u32 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs().min(u64::from(u32::MAX)) as u32)
        .unwrap_or(1);
    match previous {
        Some(p) => now.max(p.wrapping_add(1)),
        None => now,
    }
}
