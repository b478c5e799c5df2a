//! NOTIFY (RFC 1996): tells the `--notify` secondaries that the zone
//! changed, at start-up and after every map reload, so they transfer it
//! within seconds instead of at their SOA refresh.
//!
//! One task owns UDP sockets (one per address family in use, bound to the
//! DNS listen address of that family when it is a specific one, so the
//! secondaries see the primary's address as the source). Each NOTIFY
//! carries the zone's SOA in the answer section (§3.7) and is signed with
//! the `--tsig-key` when one is set. It is sent again every
//! [`RETRY_INTERVAL`] until a response with its ID, opcode NOTIFY, from that
//! secondary (and verifying, when signed) arrives, at most [`ATTEMPTS`]
//! times. A newer serial supersedes the NOTIFY still being retried.

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

/// Time between sends of an unanswered NOTIFY.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(2);
/// Sends of one NOTIFY (the first and the retries) before giving up.
pub const ATTEMPTS: u32 = 6;

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

/// One secondary's NOTIFY awaiting its response.
struct Pending {
    target: SocketAddr,
    id: u16,
    serial: u32,
    wire: Vec<u8>,
    verifier: Option<TSigVerifier>,
    sent: u32,
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
        let mut pending = self.round(&self.store.load_full()).await;
        let mut next = Instant::now() + RETRY_INTERVAL;
        let mut buf4 = vec![0u8; 4096];
        let mut buf6 = vec![0u8; 4096];
        loop {
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
                    pending = self.round(&live).await;
                    next = Instant::now() + RETRY_INTERVAL;
                }
                r = recv(self.v4.as_ref(), &mut buf4) => {
                    if let Ok((n, from)) = r {
                        response(&mut pending, &buf4[..n], from);
                    }
                }
                r = recv(self.v6.as_ref(), &mut buf6) => {
                    if let Ok((n, from)) = r {
                        response(&mut pending, &buf6[..n], from);
                    }
                }
                _ = tokio::time::sleep_until(next), if !pending.is_empty() => {
                    let mut kept = Vec::with_capacity(pending.len());
                    for mut p in pending.drain(..) {
                        if p.sent >= ATTEMPTS {
                            tracing::warn!(
                                secondary = %p.target,
                                serial = p.serial,
                                attempts = p.sent,
                                "no response to NOTIFY; the secondary will pick the change up at its SOA refresh"
                            );
                            continue;
                        }
                        self.send(&mut p).await;
                        kept.push(p);
                    }
                    pending = kept;
                    next = Instant::now() + RETRY_INTERVAL;
                }
            }
        }
    }

    /// Sends a fresh NOTIFY for the zone version `live` to every target.
    async fn round(&self, live: &Live) -> Vec<Pending> {
        let serial = live.view.serial();
        tracing::info!(serial, secondaries = self.targets.len(), "sending NOTIFY");
        let mut pending = Vec::with_capacity(self.targets.len());
        for &target in &self.targets {
            match self.message(live) {
                Ok((id, wire, verifier)) => {
                    let mut p = Pending {
                        target,
                        id,
                        serial,
                        wire,
                        verifier,
                        sent: 0,
                    };
                    self.send(&mut p).await;
                    pending.push(p);
                }
                Err(e) => tracing::error!(secondary = %target, error = %e, "cannot build NOTIFY"),
            }
        }
        pending
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

    async fn send(&self, p: &mut Pending) {
        p.sent += 1;
        let sock = if p.target.is_ipv6() {
            self.v6.as_ref()
        } else {
            self.v4.as_ref()
        };
        let Some(sock) = sock else {
            return;
        };
        if let Err(e) = sock.send_to(&p.wire, p.target).await {
            tracing::debug!(secondary = %p.target, error = %e, "cannot send NOTIFY");
        }
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
fn response(pending: &mut Vec<Pending>, bytes: &[u8], from: SocketAddr) {
    if bytes.len() < 12 {
        return;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let from = SocketAddr::new(from.ip().to_canonical(), from.port());
    let Some(i) = pending.iter().position(|p| p.id == id && p.target == from) else {
        return;
    };
    let Ok(msg) = Message::from_vec(bytes) else {
        return;
    };
    if msg.metadata.message_type != MessageType::Response || msg.metadata.op_code != OpCode::Notify
    {
        return;
    }
    let p = &mut pending[i];
    let rcode = msg.metadata.response_code;
    if let Some(verifier) = &mut p.verifier
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
            serial = p.serial,
            "the secondary rejected our NOTIFY (is it configured with the same TSIG key?)"
        );
        pending.swap_remove(i);
        return;
    }
    if rcode == ResponseCode::NoError {
        tracing::debug!(secondary = %from, serial = p.serial, "NOTIFY acknowledged");
    } else {
        tracing::warn!(
            secondary = %from,
            %rcode,
            serial = p.serial,
            "the secondary answered NOTIFY with an error (is cellns in its allow-notify?)"
        );
    }
    pending.swap_remove(i);
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
            let hickory_proto::rr::RData::SOA(soa) = &m.answers[0].data else {
                panic!("SOA answer: {:?}", m.answers);
            };
            assert_eq!(soa.serial, first);
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
        let hickory_proto::rr::RData::SOA(soa) = &m.answers[0].data else {
            panic!("SOA answer");
        };
        assert_eq!(soa.serial, next);
        cancel.cancel();
        task.await.expect("notifier task");
    }
}
