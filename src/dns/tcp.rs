//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): the accept loop and the
//! connections. Queries are answered by the hickory-server handler, as
//! on UDP; zone transfers are streamed by [`super::xfr`].
//!
//! Why not hickory-server's own TCP listener: it handles a connection's
//! requests inline and writes responses only after the handler returns, and
//! its idle timer is reset only by incoming messages. A zone transfer of a
//! large zone would have to be queued whole in memory before its first byte
//! is sent, and would be cut when writing it takes longer than the idle
//! timeout. Here a transfer writes each message as it is encoded, paced by
//! the secondary, and ordinary queries behave as before: processed in
//! order, one connection idle for [`TCP_IDLE_TIMEOUT`] is closed, no reply to
//! a partial frame, FORMERR for an undecodable message.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::TCP_IDLE_TIMEOUT;
use super::capture::{self, Capture};
use super::handler::Handler;
use super::prepared::Store;
use super::xfr::{self, Transfers};

/// Open TCP connections per listener; more wait in the kernel's backlog
/// until one closes (RFC 7766 §6.2.2: servers must bound their resources).
pub const MAX_CONNECTIONS: usize = 1024;
/// How long a response may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What every connection needs.
#[derive(Debug)]
pub struct Context {
    /// Answers queries.
    pub handler: Handler,
    /// Serves zone transfers.
    pub transfers: Arc<Transfers>,
    /// The zone versions transfers read.
    pub store: Arc<Store>,
}

/// Accepts connections on `listener` until `cancel` fires; then open
/// connections are dropped.
pub async fn serve(listener: TcpListener, ctx: Arc<Context>, cancel: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut conns = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = cancel.cancelled() => break,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => break,
        };
        match accepted {
            Ok((stream, src)) => {
                let ctx = ctx.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    connection(stream, src, &ctx).await;
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
}

/// Serves one connection: length-prefixed messages, answered in order.
async fn connection(mut stream: TcpStream, src: SocketAddr, ctx: &Context) {
    // Responses are written whole; do not hold them for Nagle.
    let _ = stream.set_nodelay(true);
    let mut len = [0u8; 2];
    loop {
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            // Closed, reset, or idle too long.
            _ => return,
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n == 0 {
            // Not a DNS message: nothing sensible to answer.
            return;
        }
        let mut msg = vec![0u8; n];
        match tokio::time::timeout(TCP_IDLE_TIMEOUT, stream.read_exact(&mut msg)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if let Err(e) = respond(ctx, msg, src, &mut stream).await {
            tracing::debug!(%src, error = %e, "TCP connection closed");
            return;
        }
    }
}

/// Answers one message (or drops it, as hickory-server does, when it is
/// shorter than a header or is itself a response).
async fn respond(
    ctx: &Context,
    msg: Vec<u8>,
    src: SocketAddr,
    stream: &mut TcpStream,
) -> io::Result<()> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return Ok(());
    }
    let head = capture::formerr(&msg);
    let request = match Request::from_bytes(msg, src, Protocol::Tcp) {
        Ok(r) => r,
        Err(_) => {
            // The handler never sees these, so they are counted here.
            crate::metrics::dns().query(
                crate::metrics::Transport::Tcp,
                0,
                u16::from(ResponseCode::FormErr),
            );
            return match head {
                Some(head) => write(stream, &head).await,
                None => Ok(()),
            };
        }
    };
    if xfr::is_transfer(&request) {
        return ctx.transfers.serve_tcp(&ctx.store, &request, stream).await;
    }
    let capture = Capture::new(Protocol::Tcp);
    ctx.handler
        .handle_request::<_, TokioTime>(&request, capture.clone())
        .await;
    match capture.take() {
        Some(bytes) => write(stream, &bytes).await,
        None => Ok(()),
    }
}

/// Writes one length-prefixed message.
async fn write(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("response over 64 KiB"))?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&framed)).await {
        Ok(r) => r,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client did not read its response",
        )),
    }
}
