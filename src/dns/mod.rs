//! DNS: binding the listeners and answering queries.
//!
//! What each module owns:
//!
//! - [`prepared`]: the answers of a zone version, prepared from its
//!   effective view when it is published (records, per-cell counters, and
//!   the fast path's wire bodies, built by `bodies`).
//! - [`answer`]: the answer table, a pure function of zone version + question.
//! - [`dispatch`]: the one way a message is answered, for both transports:
//!   drop, FORMERR, routing (fast path, handler, zone transfers), counting.
//! - [`fast`]: UDP answers straight from prepared bytes, no allocation.
//! - `handler` (the hickory-server handler: opcodes, EDNS, truncation) run
//!   through `capture` (which encodes its response).
//! - [`udp`] and `tcp`: the transports (sockets, batching, framing,
//!   connection limits); they call the dispatch and nothing else.
//! - [`rrl`]: response rate limiting of UDP answers (the dispatch applies
//!   it to every UDP response, fast path or not).
//! - [`xfr`]: zone transfers to secondaries (who may, streamed over TCP,
//!   one message over UDP, IXFR from the journal of differences recorded at
//!   each publish); [`tsig`]: their signatures; [`notify`]: NOTIFY to the
//!   secondaries after each change; [`fleet`]: the serial each of them
//!   serves (`GET /v1/fleet`).
//! - `wire`: the one byte writer (header, OPT, names, records) the fast
//!   path, transfers, TSIG and FORMERR write with; `MAX_UDP_PAYLOAD`.
//!
//! The server listens on UDP and TCP on every `--dns-listen` address.
//!
//! ```text
//! UDP datagram ─▶ udp worker ─▶ dispatch::datagram ─▶ fast::respond ─(tenant A/AAAA, NODATA,
//!                                    │                                NXDOMAIN, REFUSED)─▶ reply
//!                                    └─ anything else ─▶ dispatch::message ┐
//! TCP message ─▶ tcp connection ─────────────────────▶ dispatch::message ┤
//!                                                                         │
//!   dispatch::message: short, or a response ─▶ dropped
//!                      undecodable          ─▶ FORMERR
//!                      AXFR/IXFR            ─▶ over TCP: xfr::stream (streamed to the connection)
//!                                              over UDP: IXFR differences that fit ─▶ reply,
//!                                                        else xfr::single ─▶ capture ─▶ reply
//!                      anything else        ─▶ handler (hickory-server) ─▶ capture ─▶ reply
//! ```
//!
//! Every reply is counted once, in the dispatch (a streamed transfer is
//! not counted). Imports go one way: transports → dispatch → fast,
//! handler, xfr → prepared, answer → bodies, wire; no module imports one
//! that imports it back.
//!
//! Why our own transports around hickory-server's handler: its UDP loop
//! spawns a task per datagram without bound, and its TCP loop queues a
//! whole zone transfer before writing it (see `udp` and `tcp`).

pub mod answer;
mod bodies;
mod capture;
pub mod dispatch;
pub mod dnssec;
pub mod fast;
pub mod fleet;
mod handler;
pub mod notify;
pub mod prepared;
pub mod rrl;
mod tcp;
mod tcp_limits;
pub mod tsig;
pub mod udp;
mod wire;
pub mod xfr;

pub use prepared::{Answers, Live, Store};
pub use tcp_limits::TcpLimits;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use dispatch::Dispatch;

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

/// How the DNS server listens (built by the serve wiring from the flags).
#[derive(Debug, Clone)]
pub struct DnsConfig {
    /// Addresses to answer on, UDP and TCP; port 0 picks a free port.
    pub listen: Vec<SocketAddr>,
    /// UDP worker threads (one `SO_REUSEPORT` socket each); 0 = one per CPU.
    pub udp_workers: usize,
    /// At shutdown, how long open TCP connections may take to answer what
    /// they have read and to finish zone transfers under way.
    pub shutdown_grace: Duration,
    /// Limits of DNS over TCP.
    pub tcp: TcpLimits,
    /// Response rate limiting of UDP answers (`--rrl-rate`): responses per
    /// second per /24 or /56 and response kind; 0 = off.
    pub rrl_rate: u32,
    /// Every how many limited responses one is sent truncated
    /// (`--rrl-slip`); 0 = none.
    pub rrl_slip: u32,
}

/// Bound DNS listeners, ready to run: UDP on the fast-path workers
/// ([`udp`]), TCP on `tcp` (queries and zone transfers).
pub struct DnsServer {
    tcp: Vec<TcpListener>,
    tcp_limits: TcpLimits,
    udp: Vec<std::net::UdpSocket>,
    dispatch: Dispatch,
    addrs: Vec<SocketAddr>,
    shutdown_grace: Duration,
}

impl DnsServer {
    /// Binds UDP (one `SO_REUSEPORT` socket per worker) and TCP on every
    /// listen address. Port 0 picks a free port, the same for UDP and TCP.
    /// Zone transfers are served as `transfers` allows.
    pub async fn bind(
        cfg: &DnsConfig,
        store: Arc<Store>,
        transfers: Arc<xfr::Transfers>,
    ) -> Result<Self, DnsError> {
        let workers = match cfg.udp_workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let mut tcp_listeners = Vec::new();
        let mut addrs = Vec::new();
        let mut udp = Vec::new();
        for &addr in &cfg.listen {
            let (sockets, tcp) = bind_pair(addr, workers)?;
            let bound = sockets
                .first()
                .and_then(|s| s.local_addr().ok())
                .unwrap_or(addr);
            addrs.push(bound);
            udp.extend(sockets);
            tcp_listeners.push(tcp);
        }
        let rrl = rrl::Rrl::new(cfg.rrl_rate, cfg.rrl_slip).map(Arc::new);
        Ok(Self {
            tcp: tcp_listeners,
            tcp_limits: cfg.tcp,
            udp,
            dispatch: Dispatch::new(store, transfers).with_rrl(rrl),
            addrs,
            shutdown_grace: cfg.shutdown_grace,
        })
    }

    /// The bound addresses (UDP and TCP share them).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Starts serving: returns once every UDP worker is in its receive
    /// loop and every TCP listener accepts, so queries sent from now on are
    /// answered. The server then runs until `cancel` fires, or until a part
    /// of it stops on its own (a socket error a worker cannot recover
    /// from, a panic), which [`Running::wait`] reports.
    ///
    /// Stopping is graceful: the TCP listeners close at once (new
    /// connections are refused), each open connection answers every query
    /// it has read and closes, a zone transfer under way runs to its end,
    /// and UDP workers answer the datagrams they have read; after the
    /// shutdown grace period what is still open is cut.
    pub fn start(mut self, cancel: CancellationToken) -> Result<Running, DnsError> {
        let mut workers = udp::Workers::start(std::mem::take(&mut self.udp), self.dispatch.clone())
            .map_err(|e| DnsError::Server(format!("cannot start UDP workers: {e}")))?;
        let dispatch = Arc::new(self.dispatch);
        // The listeners stop with the server, whichever way it stops.
        let stop = cancel.child_token();
        let mut listeners = tokio::task::JoinSet::new();
        for l in self.tcp {
            listeners.spawn(tcp::serve(
                l,
                dispatch.clone(),
                self.tcp_limits,
                stop.clone(),
                self.shutdown_grace,
            ));
        }
        let task = tokio::spawn(async move {
            let failure = tokio::select! {
                // A listener that ends because of the shutdown is not a
                // failure: the shutdown is looked at first.
                biased;
                _ = cancel.cancelled() => None,
                exit = workers.failed() => Some(DnsError::Server(format!(
                    "UDP worker {} stopped: {}",
                    exit.worker, exit.error
                ))),
                done = listeners.join_next() => Some(DnsError::Server(match done {
                    Some(Err(e)) => format!("a TCP listener failed: {e}"),
                    _ => "a TCP listener stopped".to_owned(),
                })),
            };
            stop.cancel();
            // UDP stops while TCP drains.
            let udp = tokio::task::spawn_blocking(move || workers.stop());
            while listeners.join_next().await.is_some() {}
            udp.await
                .map_err(|e| DnsError::Server(format!("UDP workers panicked: {e}")))?;
            failure.map_or(Ok(()), Err)
        });
        Ok(Running { task })
    }
}

/// A DNS server that is serving (see [`DnsServer::start`]).
#[derive(Debug)]
pub struct Running {
    task: tokio::task::JoinHandle<Result<(), DnsError>>,
}

impl Running {
    /// Whether the server has stopped (then [`Running::wait`] must not be
    /// called again if it already returned).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Waits until the server has stopped: `Ok` when it was asked to (the
    /// cancellation token), the reason when it stopped on its own.
    pub async fn wait(&mut self) -> Result<(), DnsError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(DnsError::Server(format!("the DNS task panicked: {e}"))),
        }
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
