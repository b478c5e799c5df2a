//! Limits on DNS-over-TCP connections (RFC 7766 §6.2): how many may be
//! open in all and per source address ([`crate::slots`]: when all are
//! taken the one idle the longest makes room), how long one may wait for
//! its next query, and how long one may live.
//!
//! The idle deadline runs from the end of the last complete exchange (the
//! response written), not from the last byte read: a client trickling a
//! query a byte at a time is cut when the idle time is up. And a
//! connection is closed once it is [`TcpLimits::max_lifetime`] old (at
//! its next wait for a query; a zone transfer in progress is not cut), so
//! that a trickle of complete queries cannot hold a slot forever either.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::slots::{Refused, Slot, Slots};

/// The limits of DNS over TCP (flags `--tcp-max-connections`,
/// `--tcp-max-connections-per-source`, `--tcp-idle-timeout-ms`,
/// `--tcp-max-lifetime-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpLimits {
    /// Open connections in all, per listener.
    pub max_connections: usize,
    /// Open connections per source address (/32 or /128).
    pub max_per_source: usize,
    /// How long a connection may wait for its next complete query after
    /// its last response.
    pub idle_timeout: Duration,
    /// How long a connection may live.
    pub max_lifetime: Duration,
}

impl Default for TcpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_per_source: 32,
            idle_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(120),
        }
    }
}

/// Why a connection was closed by the server, for the metric and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// Refused at accept.
    Refused(Refused),
    /// Closed to make room for a new one: it was idle the longest.
    Evicted,
    /// No complete query within the idle timeout.
    IdleTimeout,
    /// Older than the maximum lifetime.
    Lifetime,
}

impl Closed {
    /// The metric label.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Closed::Refused(r) => r.as_str(),
            Closed::Evicted => "evicted",
            Closed::IdleTimeout => "idle_timeout",
            Closed::Lifetime => "lifetime",
        }
    }
}

/// The connections of one listener, under its limits.
#[derive(Debug)]
pub(super) struct Conns {
    limits: TcpLimits,
    slots: Arc<Slots>,
}

impl Conns {
    /// No connection yet, under `limits`.
    pub(super) fn new(limits: TcpLimits) -> Self {
        Self {
            limits,
            slots: Slots::new(
                limits.max_connections,
                limits.max_per_source,
                crate::metrics::dns_tcp_connection,
            ),
        }
    }

    /// A new connection from `src`, or why it is refused.
    pub(super) fn admit(&self, src: IpAddr) -> Result<Conn, Closed> {
        let slot = self.slots.admit(src).map_err(Closed::Refused)?;
        let now = Instant::now();
        Ok(Conn {
            slot,
            limits: self.limits,
            opened: now,
            last_exchange: now,
        })
    }
}

/// One admitted connection and its deadlines; frees its slot when dropped.
#[derive(Debug)]
pub(super) struct Conn {
    slot: Slot,
    limits: TcpLimits,
    opened: Instant,
    last_exchange: Instant,
}

impl Conn {
    /// The connection waits for a query from now on (it may be evicted).
    /// Returns when the wait must end, and why it would: the idle timeout
    /// from the last complete exchange, or the lifetime, whichever comes
    /// first.
    pub(super) fn idle(&mut self) -> (Instant, Closed) {
        self.slot.idle(self.last_exchange);
        let idle = self.last_exchange + self.limits.idle_timeout;
        let lifetime = self.opened + self.limits.max_lifetime;
        if lifetime <= idle {
            (lifetime, Closed::Lifetime)
        } else {
            (idle, Closed::IdleTimeout)
        }
    }

    /// A complete query was read: the connection answers it (and is not
    /// evicted meanwhile).
    pub(super) fn busy(&self) {
        self.slot.busy();
    }

    /// The response was written: the idle time counts from now.
    pub(super) fn exchanged(&mut self) {
        self.last_exchange = Instant::now();
    }

    /// Resolves when the connection was closed to make room for another.
    pub(super) async fn evicted(&self) {
        self.slot.evicted().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_idle_deadline_runs_from_the_last_exchange_and_the_lifetime_caps_it() {
        let c = Conns::new(TcpLimits {
            idle_timeout: Duration::from_secs(10),
            max_lifetime: Duration::from_secs(25),
            ..TcpLimits::default()
        });
        let start = Instant::now();
        let mut s = c.admit("192.0.2.1".parse().expect("ip")).expect("slot");
        assert_eq!(
            s.idle(),
            (start + Duration::from_secs(10), Closed::IdleTimeout)
        );
        // Reading (even partly) does not move it; an exchange does.
        tokio::time::advance(Duration::from_secs(8)).await;
        assert_eq!(s.idle().0, start + Duration::from_secs(10));
        s.busy();
        s.exchanged();
        assert_eq!(
            s.idle(),
            (start + Duration::from_secs(18), Closed::IdleTimeout)
        );
        // A trickle of exchanges ends at the lifetime.
        tokio::time::advance(Duration::from_secs(8)).await;
        s.exchanged();
        assert_eq!(
            s.idle(),
            (start + Duration::from_secs(25), Closed::Lifetime)
        );
    }
}
