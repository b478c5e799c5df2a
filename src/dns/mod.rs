//! DNS: binding the listeners and answering queries.
//!
//! - [`answer`]: the answer table, a pure function of snapshot + question.
//! - [`handler`]: the hickory-server handler (protocol rules, EDNS).
//!
//! The server listens on UDP and TCP on every `--dns-listen` address.

pub mod answer;
pub mod handler;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;

use crate::config::ServeArgs;
use crate::reload::Store;

/// Idle time after which a TCP connection with no new query is closed
/// (RFC 7766 §6.2.3 suggests seconds, not minutes).
pub const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Per-connection queue of outbound TCP messages.
const TCP_RESPONSE_QUEUE: usize = 64;

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

/// Bound DNS listeners, ready to run.
pub struct DnsServer {
    server: Server<handler::Handler>,
    addrs: Vec<SocketAddr>,
}

impl DnsServer {
    /// Binds UDP and TCP on every listen address. Port 0 picks a free port
    /// (the same one for UDP and TCP of one address).
    pub async fn bind(args: &ServeArgs, store: Arc<Store>) -> Result<Self, DnsError> {
        let mut server = Server::new(handler::Handler::new(store));
        let mut addrs = Vec::new();
        for &addr in &args.dns_listen {
            let (udp, tcp) = bind_pair(addr).await?;
            addrs.push(udp.local_addr().map_err(|source| DnsError::Bind {
                proto: "UDP",
                addr,
                source,
            })?);
            server.register_socket(udp);
            server.register_listener(tcp, TCP_IDLE_TIMEOUT, TCP_RESPONSE_QUEUE);
        }
        Ok(Self { server, addrs })
    }

    /// The bound addresses (UDP and TCP share them).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Serves until `cancel` fires.
    pub async fn run(mut self, cancel: CancellationToken) -> Result<(), DnsError> {
        let token = self.server.shutdown_token().clone();
        tokio::spawn(async move {
            cancel.cancelled().await;
            token.cancel();
        });
        self.server
            .block_until_done()
            .await
            .map_err(|e| DnsError::Server(e.to_string()))
    }
}

/// Binds UDP and TCP on the same port. With port 0 the UDP socket picks the
/// port and TCP takes the same one; a clash (TCP port taken) is retried.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let mut last_err = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind {
                proto: "UDP",
                addr,
                source,
            })?;
        let bound = udp.local_addr().map_err(|source| DnsError::Bind {
            proto: "UDP",
            addr,
            source,
        })?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
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
