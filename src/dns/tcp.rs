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
//! order, no reply to a partial frame, FORMERR for an undecodable message.
//! At shutdown each connection answers every query it has received,
//! pipelined ones included, before it closes (see [`serve`]).
//!
//! Connections are bounded by `tcp_limits` (in all and per source, an
//! idle timeout from the last complete exchange, a maximum lifetime; the
//! connection idle the longest makes room when all slots are taken).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::dispatch::{Dispatch, Reply};
use super::tcp_limits::{Closed, Conn, Conns, TcpLimits};
use crate::metrics::Transport;
use crate::telemetry::OUTSIDER;

/// How long a response may wait for the client to read it.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` until `cancel` fires, each answered
/// through `dispatch` within `limits`. Then the listener closes (new
/// connections are refused), every open connection answers what it has
/// read and closes (a zone transfer runs to its end), and after `grace`
/// the connections still open are cut.
pub(super) async fn serve(
    listener: TcpListener,
    dispatch: Arc<Dispatch>,
    limits: TcpLimits,
    cancel: CancellationToken,
    grace: Duration,
) {
    let admitted = Conns::new(limits);
    let drain = CancellationToken::new();
    let mut conns = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = cancel.cancelled() => break,
        };
        match accepted {
            Ok((stream, src)) => {
                if let Some(slot) = admit(&admitted, &stream, src) {
                    let dispatch = dispatch.clone();
                    let drain = drain.clone();
                    conns.spawn(async move {
                        connection(stream, src, &dispatch, slot, &drain).await;
                    });
                }
            }
            Err(e) => {
                // Out of descriptors, and the like: the descriptor budget
                // (cli) keeps this rare; back off instead of spinning.
                tracing::warn!(target: OUTSIDER, error = %e, "TCP accept failed; backing off");
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

/// A slot for the connection `stream` from `src`, or `None` (then the
/// stream is closed when the caller drops it): counted and logged.
fn admit(conns: &Conns, stream: &TcpStream, src: SocketAddr) -> Option<Conn> {
    match conns.admit(src.ip()) {
        Ok(slot) => Some(slot),
        Err(why) => {
            // Reset rather than FIN: the refused client learns at once, and
            // no TIME_WAIT state is left behind here.
            let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
            closed(src, why);
            None
        }
    }
}

/// Counts and logs (rate-limited) a connection the limits closed.
fn closed(src: SocketAddr, why: Closed) {
    crate::metrics::dns_tcp_closed(why.as_str());
    tracing::debug!(target: OUTSIDER, %src, reason = why.as_str(), "DNS TCP connection closed by a limit");
}

/// Serves one connection: length-prefixed messages, answered in order,
/// within the limits of its `slot`. When `drain` fires, it answers every
/// message already received (pipelined ones included: what the kernel
/// holds is read without waiting), then closes.
async fn connection(
    mut stream: TcpStream,
    src: SocketAddr,
    dispatch: &Dispatch,
    mut slot: Conn,
    drain: &CancellationToken,
) {
    // Responses are written whole; do not hold them for Nagle.
    let _ = stream.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut draining = false;
    loop {
        loop {
            match next_frame(&mut buf) {
                Ok(Some(msg)) => {
                    slot.busy();
                    if let Err(e) = respond(dispatch, msg, src, &mut stream).await {
                        tracing::debug!(target: OUTSIDER, %src, error = %e, "TCP connection closed");
                        return;
                    }
                    slot.exchanged();
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
        // One deadline for the whole next query (from the last exchange):
        // reading it slowly does not buy time.
        let (deadline, why) = slot.idle();
        tokio::select! {
            r = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf)) => match r {
                Ok(Ok(n)) if n > 0 => {}
                // Closed or reset.
                Ok(_) => return,
                Err(_) => {
                    closed(src, why);
                    return;
                }
            },
            _ = slot.evicted() => {
                closed(src, Closed::Evicted);
                return;
            }
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
