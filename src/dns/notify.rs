//! NOTIFY (RFC 1996): tells the `--notify` secondaries that the zone
//! changed, at start-up and after every change of the zone version, so they
//! transfer it within seconds instead of at their SOA refresh.
//!
//! One task owns UDP sockets (one per address family in use, bound to the
//! DNS listen address of that family when it is a specific one, so the
//! secondaries see the primary's address as the source). Each NOTIFY
//! carries the zone's SOA in the answer section (§3.7) and is signed with
//! the `--tsig-key` when one is set. Per secondary:
//!
//! - **Coalesced.** A new serial is sent at once, unless a NOTIFY went to
//!   that secondary less than [`MIN_INTERVAL`] ago: then the newest serial
//!   is sent when the interval ends. A burst of changes (ten reloads in a
//!   row) costs each secondary a NOTIFY or two, the last with the newest
//!   serial.
//! - **Retried until acknowledged.** An unanswered NOTIFY is sent again
//!   after [`FIRST_RETRY`], doubling up to [`MAX_RETRY`], until a response
//!   with its ID, opcode NOTIFY, from that secondary (and verifying, when
//!   signed) arrives, for as long as the zone's SOA refresh (at least
//!   [`MIN_RETRY_FOR`]): after that the secondary's own refresh finds the
//!   change, so a secondary that was down a minute is re-notified when it
//!   is back instead of staying stale until its refresh. Giving up and
//!   error responses are logged and counted.
//! - **Never in the way.** The task only reads the store's serial; a
//!   secondary that is down slows neither reloads nor queries.
//!
//! Metrics: `cellns_notify_sent_total`, `cellns_notify_acknowledged_total`
//! and `cellns_notify_failed_total`, labelled by secondary (the configured
//! `--notify` addresses: bounded).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{RecordType, TSigVerifier};
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::prepared::{Live, Store};
use super::tsig::{self, Key};
use crate::map::Placement;
use crate::metrics::{self, NotifyEvent};

/// Shortest time between two NOTIFYs for new serials to one secondary:
/// changes within it are folded into one NOTIFY with the newest serial.
pub const MIN_INTERVAL: Duration = Duration::from_secs(2);
/// First pause before sending an unanswered NOTIFY again.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// Longest pause between two sends of an unanswered NOTIFY.
pub const MAX_RETRY: Duration = Duration::from_secs(10);
/// Shortest time an unanswered NOTIFY is retried (when the SOA refresh is
/// shorter).
pub const MIN_RETRY_FOR: Duration = Duration::from_secs(60);

/// Why NOTIFY cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The UDP socket cannot be bound.
    #[error("cannot bind the NOTIFY socket on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Sends NOTIFY to the secondaries; see the module docs.
#[derive(Debug)]
pub struct Notifier {
    targets: Vec<SocketAddr>,
    key: Option<Key>,
    store: Arc<Store>,
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

/// The NOTIFY being sent to one secondary until it answers.
struct Outstanding {
    id: u16,
    serial: u32,
    wire: Vec<u8>,
    verifier: Option<TSigVerifier>,
    /// Sends so far.
    sent: u32,
    /// When the first send of this serial went out (retries end after the
    /// SOA refresh).
    since: Instant,
    /// Pause before the next send.
    backoff: Duration,
}

/// One secondary.
struct Target {
    addr: SocketAddr,
    /// The metrics label.
    label: String,
    /// A serial newer than the last one sent is waiting.
    dirty: bool,
    outstanding: Option<Outstanding>,
    /// When the last NOTIFY went out.
    last_sent: Option<Instant>,
    /// When to act next (send a new serial, or retry).
    due: Option<Instant>,
}

impl Target {
    fn new(addr: SocketAddr) -> Self {
        let label = addr.to_string();
        metrics::notify_target(&label);
        Self {
            addr,
            label,
            dirty: true,
            outstanding: None,
            last_sent: None,
            due: Some(Instant::now()),
        }
    }

    /// A newer serial is in force: due now, or when [`MIN_INTERVAL`] since
    /// the last send ends (earlier than a pending retry, never later).
    fn changed(&mut self, now: Instant) {
        self.dirty = true;
        let at = self.last_sent.map_or(now, |t| (t + MIN_INTERVAL).max(now));
        self.due = Some(self.due.map_or(at, |d| d.min(at)));
    }
}

impl Notifier {
    /// A notifier for `targets`, sending from the address of the first
    /// `listen` address of each family (or any address, when that one is
    /// unspecified). `None` when there are no targets.
    pub async fn bind(
        targets: &[SocketAddr],
        key: Option<Key>,
        store: Arc<Store>,
        listen: &[SocketAddr],
    ) -> Result<Option<Self>, NotifyError> {
        if targets.is_empty() {
            return Ok(None);
        }
        let source = |v6: bool| {
            let ip = listen
                .iter()
                .map(SocketAddr::ip)
                .find(|ip| ip.is_ipv6() == v6 && !ip.is_unspecified())
                .unwrap_or(if v6 {
                    IpAddr::V6(Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                });
            SocketAddr::new(ip, 0)
        };
        let bind = |v6: bool| async move {
            if !targets.iter().any(|t| t.is_ipv6() == v6) {
                return Ok(None);
            }
            let addr = source(v6);
            UdpSocket::bind(addr)
                .await
                .map(Some)
                .map_err(|source| NotifyError::Bind { addr, source })
        };
        Ok(Some(Self {
            targets: targets.to_vec(),
            key,
            store,
            v4: bind(false).await?,
            v6: bind(true).await?,
        }))
    }

    /// Notifies for the serial in force, then after every change of it,
    /// until `cancel` fires.
    pub async fn run(self, cancel: CancellationToken) {
        let mut serials = self.store.subscribe_serial();
        serials.mark_unchanged();
        let mut placement = self.store.load().view.map().placement;
        let mut targets: Vec<Target> = self.targets.iter().map(|&a| Target::new(a)).collect();
        let mut buf4 = vec![0u8; 4096];
        let mut buf6 = vec![0u8; 4096];
        tracing::info!(
            serial = self.store.load().view.serial(),
            secondaries = targets.len(),
            "sending NOTIFY"
        );
        loop {
            let next = targets.iter().filter_map(|t| t.due).min();
            tokio::select! {
                _ = cancel.cancelled() => return,
                changed = serials.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let live = self.store.load_full();
                    let now = live.view.map().placement;
                    if now == Placement::Hash && placement != Placement::Hash {
                        tracing::warn!(
                            "the map now places unlisted tenants by hashing, which secondaries \
                             cannot serve: they answer NXDOMAIN for them"
                        );
                    }
                    placement = now;
                    let at = Instant::now();
                    for t in &mut targets {
                        t.changed(at);
                    }
                }
                r = recv(self.v4.as_ref(), &mut buf4) => {
                    if let Ok((n, from)) = r {
                        response(&mut targets, &buf4[..n], from);
                    }
                }
                r = recv(self.v6.as_ref(), &mut buf6) => {
                    if let Ok((n, from)) = r {
                        response(&mut targets, &buf6[..n], from);
                    }
                }
                _ = sleep_until(next) => {
                    let now = Instant::now();
                    let live = self.store.load_full();
                    for t in &mut targets {
                        if t.due.is_some_and(|d| d <= now) {
                            self.act(t, &live, now).await;
                        }
                    }
                }
            }
        }
    }

    /// What is due for `t`: a NOTIFY for the serial in force when a newer
    /// one waits, else a retry of the unanswered one (or giving up).
    async fn act(&self, t: &mut Target, live: &Live, now: Instant) {
        let serial = live.view.serial();
        if t.dirty {
            t.dirty = false;
            if t.outstanding.as_ref().is_some_and(|o| o.serial == serial) {
                // The serial in force is already being sent: keep its
                // schedule (and its ID, so a late answer still counts).
            } else {
                match self.message(live) {
                    Ok((id, wire, verifier)) => {
                        t.outstanding = Some(Outstanding {
                            id,
                            serial,
                            wire,
                            verifier,
                            sent: 0,
                            since: now,
                            backoff: FIRST_RETRY,
                        });
                    }
                    Err(e) => {
                        tracing::error!(secondary = %t.addr, error = %e, "cannot build NOTIFY");
                        metrics::notify(&t.label, NotifyEvent::Failed);
                        t.outstanding = None;
                        t.due = None;
                        return;
                    }
                }
            }
        }
        let retry_for =
            Duration::from_secs(u64::from(live.view.map().zone.refresh)).max(MIN_RETRY_FOR);
        let Some(o) = t.outstanding.as_mut() else {
            t.due = None;
            return;
        };
        if o.sent > 0 && now.duration_since(o.since) >= retry_for {
            tracing::warn!(
                secondary = %t.addr,
                serial = o.serial,
                attempts = o.sent,
                retried_for_s = now.duration_since(o.since).as_secs(),
                "no response to NOTIFY; giving up: the secondary will pick the change up at its \
                 SOA refresh"
            );
            metrics::notify(&t.label, NotifyEvent::Failed);
            t.outstanding = None;
            t.due = None;
            return;
        }
        if o.sent == 1 {
            tracing::info!(
                secondary = %t.addr,
                serial = o.serial,
                "no response to NOTIFY yet; sending it again until it is acknowledged"
            );
        }
        self.send(t.addr, &o.wire).await;
        metrics::notify(&t.label, NotifyEvent::Sent);
        o.sent += 1;
        t.last_sent = Some(now);
        // The next retry; a newer serial may come earlier (`changed`).
        t.due = Some(now + o.backoff);
        o.backoff = (o.backoff * 2).min(MAX_RETRY);
    }

    /// NOTIFY for the SOA of `live`: a random ID, opcode NOTIFY, AA,
    /// question `<origin> IN SOA`, the SOA as answer (RFC 1996 §3.7), signed
    /// when a key is set.
    fn message(
        &self,
        live: &Live,
    ) -> Result<(u16, Vec<u8>, Option<TSigVerifier>), hickory_proto::ProtoError> {
        let id = rand::random::<u16>();
        let mut m = Message::new(id, MessageType::Query, OpCode::Notify);
        m.metadata.authoritative = true;
        m.add_query(Query::query(
            live.view.map().zone.origin.clone(),
            RecordType::SOA,
        ));
        m.add_answer(live.answers.soa.clone());
        let verifier = match &self.key {
            Some(key) => m.finalize(key.signer(), tsig::now())?,
            None => None,
        };
        Ok((id, m.to_vec()?, verifier))
    }

    async fn send(&self, target: SocketAddr, wire: &[u8]) {
        let sock = if target.is_ipv6() {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        };
        let Some(sock) = sock else {
            return;
        };
        // UDP: a send only fails locally (no route, buffers full); the
        // retry schedule covers it.
        if let Err(e) = sock.send_to(wire, target).await {
            tracing::debug!(secondary = %target, error = %e, "cannot send NOTIFY");
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Receives on `sock`, or never when there is none.
async fn recv(sock: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// Matches a datagram to the NOTIFY it answers: same secondary, same ID,
/// a response with opcode NOTIFY, and, for a signed NOTIFY, a response that
/// verifies (an unsigned error response is reported, not retried).
fn response(targets: &mut [Target], bytes: &[u8], from: SocketAddr) {
    if bytes.len() < 12 {
        return;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
    let Some(t) = targets
        .iter_mut()
        .find(|t| t.addr == from && t.outstanding.as_ref().is_some_and(|o| o.id == id))
    else {
        return;
    };
    let Ok(msg) = Message::from_vec(bytes) else {
        return;
    };
    if msg.metadata.message_type != MessageType::Response || msg.metadata.op_code != OpCode::Notify
    {
        return;
    }
    let Some(o) = t.outstanding.as_mut() else {
        return;
    };
    let rcode = msg.metadata.response_code;
    if let Some(verifier) = &mut o.verifier
        && let Err(e) = verifier.verify(bytes)
    {
        if rcode == ResponseCode::NoError {
            // Could be forged: keep waiting for one that verifies.
            tracing::debug!(secondary = %from, error = %e, "ignoring an unverifiable NOTIFY response");
            return;
        }
        tracing::warn!(
            secondary = %from,
            %rcode,
            serial = o.serial,
            "the secondary rejected our NOTIFY (is it configured with the same TSIG key?)"
        );
        metrics::notify(&t.label, NotifyEvent::Failed);
        done(t);
        return;
    }
    if rcode == ResponseCode::NoError {
        if o.sent > 1 {
            tracing::info!(
                secondary = %from,
                serial = o.serial,
                attempts = o.sent,
                "NOTIFY acknowledged"
            );
        } else {
            tracing::debug!(secondary = %from, serial = o.serial, "NOTIFY acknowledged");
        }
        metrics::notify(&t.label, NotifyEvent::Acknowledged);
    } else {
        tracing::warn!(
            secondary = %from,
            %rcode,
            serial = o.serial,
            "the secondary answered NOTIFY with an error (is cellns in its allow-notify?)"
        );
        metrics::notify(&t.label, NotifyEvent::Failed);
    }
    done(t);
}

/// The outstanding NOTIFY of `t` is answered: nothing more is due unless a
/// newer serial waits (then it goes out when [`MIN_INTERVAL`] allows).
fn done(t: &mut Target) {
    t.outstanding = None;
    t.due = if t.dirty {
        let now = Instant::now();
        Some(t.last_sent.map_or(now, |s| (s + MIN_INTERVAL).max(now)))
    } else {
        None
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::prepared::store_of;
    use crate::map::load_example;

    /// A fake secondary: answers each NOTIFY it gets (from the second one
    /// on, when `drop_first`), and reports what it saw.
    async fn secondary(drop_first: bool) -> (SocketAddr, tokio::sync::mpsc::Receiver<Message>) {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let addr = sock.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut seen = 0;
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Ok(m) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                seen += 1;
                let _ = tx.send(m.clone()).await;
                if drop_first && seen == 1 {
                    continue;
                }
                let mut r = Message::new(m.metadata.id, MessageType::Response, OpCode::Notify);
                r.metadata.authoritative = true;
                r.add_queries(m.queries.clone());
                let _ = sock.send_to(&r.to_vec().expect("encode"), from).await;
            }
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn notifies_at_start_and_on_change_and_retries_until_answered() {
        let store = Arc::new(store_of(load_example().expect("example")));
        let first = store.load().view.serial();
        let (target, mut seen) = secondary(true).await;
        let n = Notifier::bind(
            &[target],
            None,
            store.clone(),
            &["127.0.0.1:0".parse().expect("addr")],
        )
        .await
        .expect("bind")
        .expect("a target");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(n.run(cancel.clone()));
        let wait = Duration::from_secs(10);
        // The first is dropped by the secondary, so it comes again.
        for _ in 0..2 {
            let m = tokio::time::timeout(wait, seen.recv())
                .await
                .expect("NOTIFY")
                .expect("open");
            assert_eq!(m.metadata.op_code, OpCode::Notify);
            assert!(m.metadata.authoritative);
            assert_eq!(m.queries[0].query_type(), RecordType::SOA);
            assert_eq!(m.queries[0].name().to_ascii(), "cells.example.com.");
            assert_eq!(soa_serial(&m), first);
        }
        // A new serial is notified at once.
        let next = store
            .publish_map(Arc::new(load_example().expect("example")))
            .expect("serial")
            .serial();
        assert!(next > first);
        let m = tokio::time::timeout(wait, seen.recv())
            .await
            .expect("NOTIFY")
            .expect("open");
        assert_eq!(soa_serial(&m), next);
        cancel.cancel();
        task.await.expect("notifier task");
    }

    fn soa_serial(m: &Message) -> u32 {
        match &m.answers[0].data {
            hickory_proto::rr::RData::SOA(soa) => soa.serial,
            other => panic!("SOA answer: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_burst_of_changes_is_one_or_two_notifies_with_the_newest_serial() {
        let snapshot = |serial: u32| {
            let mut m = load_example().expect("example");
            m.zone.serial = Some(serial);
            m
        };
        let map = |serial: u32| Arc::new(snapshot(serial));
        let store = Arc::new(store_of(snapshot(1_000)));
        let (target, mut seen) = secondary(false).await;
        let n = Notifier::bind(
            &[target],
            None,
            store.clone(),
            &["127.0.0.1:0".parse().expect("addr")],
        )
        .await
        .expect("bind")
        .expect("a target");
        let cancel = CancellationToken::new();
        let task = tokio::spawn(n.run(cancel.clone()));
        let wait = Duration::from_secs(10);
        let m = tokio::time::timeout(wait, seen.recv())
            .await
            .expect("NOTIFY at start")
            .expect("open");
        assert_eq!(soa_serial(&m), 1_000);
        // Ten changes in a row (declared serials: no waiting for the clock).
        for k in 1..=10 {
            store.publish_map(map(1_000 + k)).expect("serial");
        }
        let mut got = Vec::new();
        while got.last() != Some(&1_010) {
            let m = tokio::time::timeout(wait, seen.recv())
                .await
                .unwrap_or_else(|_| panic!("no NOTIFY for the newest serial; got {got:?}"))
                .expect("open");
            got.push(soa_serial(&m));
        }
        assert!(
            got.len() <= 2,
            "ten changes sent {} NOTIFYs: {got:?}",
            got.len()
        );
        cancel.cancel();
        task.await.expect("notifier task");
    }
}
