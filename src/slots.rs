//! Connection slots, shared by DNS over TCP and the HTTP API: how many
//! connections may be open in all and per source address, and which one
//! makes room when all slots are taken — the one idle the longest (RFC
//! 7766 §6.2.3), rather than refusing the newcomer, so that a client who
//! holds many connections open cannot lock others out. Only when every
//! connection is busy answering is a newcomer refused.
//!
//! A transport asks [`Slots::admit`] for a [`Slot`] per accepted
//! connection, marks it idle while it waits for a request ([`Slot::idle`])
//! and busy while it answers one ([`Slot::busy`]), and closes the
//! connection when [`Slot::evicted`] fires. The bookkeeping takes a mutex
//! per accept and per close, never per request.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Its source holds its share of slots already.
    SourceLimit,
    /// Every slot is busy answering (none idle to make room).
    Full,
}

impl Refused {
    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refused::SourceLimit => "source_limit",
            Refused::Full => "full",
        }
    }
}

/// The open connections of one listener.
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    per_source: usize,
    epoch: Instant,
    /// Called with true when a connection is admitted, false when it goes
    /// (the open-connections gauge).
    gauge: fn(bool),
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Entry>,
    per_source: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    src: IpAddr,
    shared: Arc<Shared>,
}

/// What a connection and the registry share.
#[derive(Debug)]
struct Shared {
    /// Milliseconds since the epoch (plus one) since when it is idle; 0
    /// while it is busy.
    idle_since: AtomicU64,
    evict: CancellationToken,
}

impl Slots {
    /// At most `max` connections, `per_source` of them from one address;
    /// `gauge` follows the count.
    pub(crate) fn new(max: usize, per_source: usize, gauge: fn(bool)) -> Arc<Self> {
        Arc::new(Self {
            max,
            per_source,
            epoch: Instant::now(),
            gauge,
            open: Mutex::new(Open::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        // Consistent even if a holder panicked: every change is one insert
        // or one remove.
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn millis(&self, at: Instant) -> u64 {
        at.duration_since(self.epoch).as_millis() as u64 + 1
    }

    /// Open connections now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// Admits a new connection from `src`: its slot (idle from now), or why
    /// it is refused. When every slot is taken, the connection idle the
    /// longest is told to close ([`Slot::evicted`]) to make room.
    pub(crate) fn admit(self: &Arc<Self>, src: IpAddr) -> Result<Slot, Refused> {
        let mut open = self.lock();
        if open.per_source.get(&src).copied().unwrap_or(0) >= self.per_source {
            return Err(Refused::SourceLimit);
        }
        if open.by_id.len() >= self.max {
            let oldest = open
                .by_id
                .iter()
                .filter_map(
                    |(&id, e)| match e.shared.idle_since.load(Ordering::Relaxed) {
                        0 => None,
                        since => Some((since, id)),
                    },
                )
                .min();
            let Some((_, id)) = oldest else {
                return Err(Refused::Full);
            };
            if let Some(e) = self.remove(&mut open, id) {
                e.shared.evict.cancel();
            }
        }
        let id = open.next_id;
        open.next_id += 1;
        let shared = Arc::new(Shared {
            idle_since: AtomicU64::new(self.millis(Instant::now())),
            evict: CancellationToken::new(),
        });
        open.by_id.insert(
            id,
            Entry {
                src,
                shared: shared.clone(),
            },
        );
        *open.per_source.entry(src).or_insert(0) += 1;
        (self.gauge)(true);
        Ok(Slot {
            id,
            slots: self.clone(),
            shared,
        })
    }

    fn remove(&self, open: &mut Open, id: u64) -> Option<Entry> {
        let e = open.by_id.remove(&id)?;
        (self.gauge)(false);
        if let Some(n) = open.per_source.get_mut(&e.src) {
            *n -= 1;
            if *n == 0 {
                open.per_source.remove(&e.src);
            }
        }
        Some(e)
    }
}

/// One admitted connection; frees its slot when dropped.
#[derive(Debug)]
pub(crate) struct Slot {
    id: u64,
    slots: Arc<Slots>,
    shared: Arc<Shared>,
}

impl Slot {
    /// The connection waits for a request, since `since` (it may be
    /// evicted, the longest idle first).
    pub(crate) fn idle(&self, since: Instant) {
        self.shared
            .idle_since
            .store(self.slots.millis(since), Ordering::Relaxed);
    }

    /// The connection answers a request (it is not evicted meanwhile).
    pub(crate) fn busy(&self) {
        self.shared.idle_since.store(0, Ordering::Relaxed);
    }

    /// Resolves once the connection was told to close to make room.
    pub(crate) async fn evicted(&self) {
        self.shared.evict.cancelled().await;
    }

    /// Whether the connection was told to close to make room.
    #[cfg(test)]
    pub(crate) fn is_evicted(&self) -> bool {
        self.shared.evict.is_cancelled()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        self.slots.remove(&mut open, self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    fn none(_: bool) {}

    #[tokio::test]
    async fn per_source_cap_refuses_and_frees_on_drop() {
        let c = Slots::new(10, 2, none);
        let a = c.admit(ip("192.0.2.1")).expect("first");
        let _b = c.admit(ip("192.0.2.1")).expect("second");
        assert_eq!(c.admit(ip("192.0.2.1")).err(), Some(Refused::SourceLimit));
        // Per address: the neighbour has its own.
        let _n = c.admit(ip("192.0.2.2")).expect("neighbour");
        drop(a);
        let _again = c.admit(ip("192.0.2.1")).expect("a slot was freed");
        assert_eq!(c.len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn when_full_the_longest_idle_is_evicted_never_a_busy_one() {
        let c = Slots::new(3, 3, none);
        let old = c.admit(ip("192.0.2.1")).expect("1");
        tokio::time::advance(Duration::from_millis(5)).await;
        let mid = c.admit(ip("192.0.2.2")).expect("2");
        tokio::time::advance(Duration::from_millis(5)).await;
        let busy = c.admit(ip("192.0.2.3")).expect("3");
        busy.busy();
        let _new = c.admit(ip("198.51.100.1")).expect("room was made");
        assert!(old.is_evicted());
        assert!(!mid.is_evicted() && !busy.is_evicted());
        tokio::time::timeout(Duration::from_millis(1), old.evicted())
            .await
            .expect("evicted resolves");
        assert_eq!(c.len(), 3);
        // An idle connection that just answered is the youngest idle.
        mid.busy();
        tokio::time::advance(Duration::from_millis(1)).await;
        mid.idle(Instant::now());
        let _x = c.admit(ip("198.51.100.2")).expect("room");
        assert!(!mid.is_evicted(), "the newcomer was idle longer");
        mid.busy();
        let _y = c.admit(ip("198.51.100.3")).expect("room");
        let _z = c.admit(ip("198.51.100.4")).expect("room");
        assert!(!busy.is_evicted() && !mid.is_evicted());
    }

    #[tokio::test(start_paused = true)]
    async fn all_busy_refuses_the_newcomer() {
        let c = Slots::new(1, 1, none);
        let s = c.admit(ip("192.0.2.1")).expect("1");
        s.busy();
        assert_eq!(c.admit(ip("192.0.2.9")).err(), Some(Refused::Full));
    }
}
