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
//!
//! Connections are bounded by `tcp_limits` (in all and per source, an
//! idle timeout from the last complete exchange, a maximum lifetime; the
//! connection idle the longest makes room when all slots are taken).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
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
/// through `dispatch` within `limits`; then open connections are dropped.
pub(super) async fn serve(
    listener: TcpListener,
    dispatch: Arc<Dispatch>,
    limits: TcpLimits,
    cancel: CancellationToken,
) {
    let admitted = Conns::new(limits);
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
                    conns.spawn(async move {
                        connection(stream, src, &dispatch, slot).await;
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

/// Reads exactly `buf.len()` bytes before `deadline`, unless the slot is
/// evicted first: `Err` with the reason to close (`None`: the peer closed
/// or the read failed).
async fn read_until(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut [u8],
    slot: &Conn,
    (deadline, why): (tokio::time::Instant, Closed),
) -> Result<(), Option<Closed>> {
    tokio::select! {
        r = tokio::time::timeout_at(deadline, stream.read_exact(buf)) => match r {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(None),
            Err(_) => Err(Some(why)),
        },
        _ = slot.evicted() => Err(Some(Closed::Evicted)),
    }
}

/// Serves one connection: length-prefixed messages, answered in order,
/// within the limits of its `slot`.
async fn connection(mut stream: TcpStream, src: SocketAddr, dispatch: &Dispatch, mut slot: Conn) {
    // Responses are written whole; do not hold them for Nagle.
    let _ = stream.set_nodelay(true);
    let mut len = [0u8; 2];
    loop {
        // One deadline for the whole next query: reading it slowly does
        // not buy time.
        let wait = slot.idle();
        if let Err(why) = read_until(&mut stream, &mut len, &slot, wait).await {
            if let Some(why) = why {
                closed(src, why);
            }
            return;
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n == 0 {
            // Not a DNS message: nothing sensible to answer.
            return;
        }
        let mut msg = vec![0u8; n];
        if let Err(why) = read_until(&mut stream, &mut msg, &slot, wait).await {
            if let Some(why) = why {
                closed(src, why);
            }
            return;
        }
        slot.busy();
        let sent = match dispatch.message(msg, src, Transport::Tcp).await {
            Reply::Message(bytes) => write(&mut stream, &bytes).await,
            Reply::Drop => Ok(()),
            Reply::Transfer(request) => dispatch.transfer(&request, &mut stream).await,
        };
        if let Err(e) = sent {
            tracing::debug!(target: OUTSIDER, %src, error = %e, "TCP connection closed");
            return;
        }
        slot.exchanged();
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
