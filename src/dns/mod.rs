//! DNS: binding the listeners and answering queries.
//!
//! - [`prepared`]: the answers of a zone version, prepared from its
//!   effective view when it is published.
//! - [`answer`]: the answer table, a pure function of zone version + question.
//! - [`handler`]: the hickory-server handler (protocol rules, EDNS).
//! - [`udp`] (with [`fast`] and [`wire`]) and [`tcp`]: the transports.
//! - [`xfr`] and [`tsig`]: zone transfers to secondaries; [`notify`]: NOTIFY
//!   to them after each reload.
//!
//! The server listens on UDP and TCP on every `--dns-listen` address.
//!
//! ```text
//! UDP datagram ─▶ udp worker ─▶ fast::respond ──(tenant A/AAAA, NODATA, NXDOMAIN, REFUSED)──▶ reply
//!                                   └─ anything else ─▶ handler (hickory-server) ─▶ capture ─▶ reply
//! TCP message  ─▶ tcp connection ─▶ AXFR/IXFR? ─▶ xfr (streamed)
//!                                   └─ else ─▶ handler ─▶ capture ─▶ reply
//! ```
//!
//! Why our own transports around hickory-server's handler: its UDP loop
//! spawns a task per datagram without bound, and its TCP loop queues a
//! whole zone transfer before writing it (see `udp` and `tcp`).

pub mod answer;
mod capture;
pub mod fast;
pub mod handler;
pub mod notify;
pub mod prepared;
pub mod tcp;
pub mod tsig;
pub mod udp;
pub mod wire;
pub mod xfr;

pub use prepared::{Answers, Live, Store};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;

/// Idle time after which a TCP connection with no new query is closed
/// (RFC 7766 §6.2.3 suggests seconds, not minutes).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the DNS server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// A listen address could not be bound.
    #[error("cannot bind DNS {proto} socket on {addr}: {source}")]
    Bind {
        /// `UDP` or `TCP`.
        proto: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server's tasks failed.
    #[error("DNS server failed: {0}")]
    Server(String),
}

/// Bound DNS listeners, ready to run: UDP on the fast-path workers
/// ([`udp`]), TCP on [`tcp`] (queries and zone transfers).
pub struct DnsServer {
    tcp: Vec<TcpListener>,
    udp: Vec<std::net::UdpSocket>,
    store: Arc<Store>,
    handler: handler::Handler,
    transfers: Arc<xfr::Transfers>,
    addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP (one `SO_REUSEPORT` socket per worker) and TCP on every
    /// listen address. Port 0 picks a free port, the same for UDP and TCP.
    /// Zone transfers are served as `transfers` allows.
    pub async fn bind(
        args: &ServeArgs,
        store: Arc<Store>,
        transfers: Arc<xfr::Transfers>,
    ) -> Result<Self, DnsError> {
        let workers = match args.udp_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let handler = handler::Handler::with_transfers(store.clone(), transfers.clone());
        let mut tcp_listeners = Vec::new();
        let mut addrs = Vec::new();
        let mut udp = Vec::new();
        for &addr in &args.dns_listen {
            let (sockets, tcp) = bind_pair(addr, workers)?;
            let bound = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(addr);
            addrs.push(bound);
            udp.extend(sockets);
            tcp_listeners.push(tcp);
        }
        Ok(Self {
            tcp: tcp_listeners,
            udp,
            store,
            handler,
            transfers,
            addrs,
        })
    }

    /// The bound addresses (UDP and TCP share them).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Serves until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), DnsError> {
        let workers = udp::Workers::start_with(
            std::mem::take(&mut self.udp),
            self.store.clone(),
            self.handler.clone(),
        )
        .map_err(|e| DnsError::Server(format!("cannot start UDP workers: {e}")))?;
        let ctx = Arc::new(tcp::Context {
            handler: self.handler,
            transfers: self.transfers,
            store: self.store,
        });
        let mut listeners = tokio::task::JoinSet::new();
        for l in self.tcp {
            listeners.spawn(tcp::serve(l, ctx.clone(), cancel.clone()));
        }
        let mut result = Ok(());
        while let Some(done) = listeners.join_next().await {
            if let Err(e) = done {
                result = Err(DnsError::Server(format!("TCP listener task failed: {e}")));
            }
        }
        tokio::task::spawn_blocking(move || workers.stop())
            .await
            .map_err(|e| DnsError::Server(format!("UDP workers panicked: {e}")))?;
        result
    }
}

/// Binds the UDP sockets and a TCP listener on the same port. With port 0
/// the first UDP socket picks the port; if TCP cannot have it, try again.
fn bind_pair(
    addr: SocketAddr,
    workers: usize,
) -> Result<(Vec<std::net::UdpSocket>, TcpListener), DnsError> {
    let mut last_err = None;
    for _ in 0..16 {
        let sockets = udp::bind(addr, workers).map_err(|source| DnsError::Bind {
            proto: "UDP",
            addr,
            source,
        })?;
        let bound = sockets
            .first()
            .and_then(|s| s.local_addr().ok())
            .unwrap_or(addr);
        match bind_tcp(bound) {
            Ok(tcp) => return Ok((sockets, tcp)),
            Err(source) if addr.port() == 0 => last_err = Some(source),
            Err(source) => {
                return Err(DnsError::Bind {
                    proto: "TCP",
                    addr: bound,
                    source,
                });
            }
        }
    }
    Err(DnsError::Bind {
        proto: "TCP",
        addr,
        source: last_err.unwrap_or_else(|| std::io::Error::other("no free port")),
    })
}

/// A TCP listener with `SO_REUSEADDR` (restarts do not wait for TIME_WAIT).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    TcpListener::from_std(s.into())
}
