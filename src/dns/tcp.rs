//! DNS over TCP (RFC 1035 §4.2.2, RFC 7766): the accept loop and the
//! connections. Each message is answered by [`Dispatch::message`], as on
//! UDP; zone transfers it hands back are streamed ([`Dispatch::transfer`]).
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

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatch, Reply};
use crate::metrics::Transport;

/// Idle time after which a TCP connection with no new query is closed
/// (RFC 7766 §6.2.3 suggests seconds, not minutes).
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Open TCP connections per listener; more wait in the kernel's backlog
/// until one closes (RFC 7766 §6.2.2: servers must bound their resources).
const MAX_CONNECTIONS: usize = 1024;
/// How long a response may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` until `cancel` fires, each answered
/// through `dispatch`; then open connections are dropped.
pub(super) async fn serve(
    listener: TcpListener,
    dispatch: Arc<Dispatch>,
    cancel: CancellationToken,
) {
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
                let dispatch = dispatch.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    connection(stream, src, &dispatch).await;
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
async fn connection(mut stream: TcpStream, src: SocketAddr, dispatch: &Dispatch) {
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
        let sent = match dispatch.message(msg, src, Transport::Tcp).await {
            Reply::Message(bytes) => write(&mut stream, &bytes).await,
            Reply::Drop => Ok(()),
            Reply::Transfer(request) => dispatch.transfer(&request, &mut stream).await,
        };
        if let Err(e) = sent {
            tracing::debug!(%src, error = %e, "TCP connection closed");
            return;
        }
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
