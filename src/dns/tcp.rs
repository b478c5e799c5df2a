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
//! a partial frame, FORMERR for an undecodable message. At shutdown each
//! connection answers every query it has received, pipelined ones
//! included, before it closes (see [`serve`]).

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
/// through `dispatch`. Then the listener closes (new connections are
/// refused), every open connection answers what it has read and closes (a
/// zone transfer runs to its end), and after `grace` the connections still
/// open are cut.
pub(super) async fn serve(
    listener: TcpListener,
    dispatch: Arc<Dispatch>,
    cancel: CancellationToken,
    grace: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let drain = CancellationToken::new();
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
                let drain = drain.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    connection(stream, src, &dispatch, &drain).await;
                });
            }
            Err(e) => {
                tracing::debug!(error = %e, "TCP accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
    // Refuse new connections from now on.
    drop(listener);
    drain.cancel();
    let open = conns.len();
    let drained =
        tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            open,
            still_open = conns.len(),
            grace_ms = grace.as_millis() as u64,
            "DNS TCP connections still busy after the shutdown grace period; closing them"
        );
        conns.shutdown().await;
    }
}

/// Bytes read from a connection at a time (a message is at most 64 KiB).
const READ_CHUNK: usize = 16 * 1024;
/// At shutdown, how long a connection waits for the rest of a message it
/// has begun to receive.
const DRAIN_PARTIAL: Duration = Duration::from_millis(200);

/// The first whole length-prefixed message in `buf`, taken out of it;
/// `Err` for a zero length (not a DNS message).
fn next_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, ()> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let n = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
    if n == 0 {
        return Err(());
    }
    if buf.len() < 2 + n {
        return Ok(None);
    }
    let msg = buf[2..2 + n].to_vec();
    buf.drain(..2 + n);
    Ok(Some(msg))
}

/// Serves one connection: length-prefixed messages, answered in order.
/// When `drain` fires, it answers every message already received
/// (pipelined ones included: what the kernel holds is read without
/// waiting), then closes.
async fn connection(
    mut stream: TcpStream,
    src: SocketAddr,
    dispatch: &Dispatch,
    drain: &CancellationToken,
) {
    // Responses are written whole; do not hold them for Nagle.
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut draining = false;
    // A message must arrive whole within the idle timeout of its first
    // byte (or of the previous message): a slow sender does not hold the
    // connection by trickling bytes.
    let mut deadline = tokio::time::Instant::now() + TCP_IDLE_TIMEOUT;
    loop {
        loop {
            match next_frame(&mut buf) {
                Ok(Some(msg)) => {
                    if let Err(e) = respond(dispatch, msg, src, &mut stream).await {
                        tracing::debug!(%src, error = %e, "TCP connection closed");
                        return;
                    }
                    deadline = tokio::time::Instant::now() + TCP_IDLE_TIMEOUT;
                }
                Ok(None) => break,
                // Not a DNS message: nothing sensible to answer.
                Err(()) => return,
            }
        }
        if buf.capacity() - buf.len() < READ_CHUNK {
            buf.reserve(READ_CHUNK);
        }
        if draining {
            // What has arrived already is answered; nothing is waited for,
            // except the rest of a message begun.
            match stream.try_read_buf(&mut buf) {
                Ok(0) => return,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !buf.is_empty() => {
                    match tokio::time::timeout(DRAIN_PARTIAL, stream.read_buf(&mut buf)).await {
                        Ok(Ok(n)) if n > 0 => continue,
                        _ => return,
                    }
                }
                Err(_) => return,
            }
        }
        tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => match r {
                Ok(Ok(n)) if n > 0 => {}
                // Closed, reset, or idle too long.
                _ => return,
            },
            _ = drain.cancelled(), if !draining => draining = true,
        }
    }
}

/// Answers one message: a response, nothing, or a streamed transfer.
async fn respond(
    dispatch: &Dispatch,
    msg: Vec<u8>,
    src: SocketAddr,
    stream: &mut TcpStream,
) -> io::Result<()> {
    match dispatch.message(msg, src, Transport::Tcp).await {
        Reply::Message(bytes) => write(stream, &bytes).await,
        Reply::Drop => Ok(()),
        Reply::Transfer(request) => dispatch.transfer(&request, stream).await,
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
