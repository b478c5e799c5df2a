//! The HTTP connection loop, one for plain HTTP and HTTPS: accepting within
//! the connection limits ([`crate::slots`]: in all and per source address,
//! the connection idle the longest closed to make room), the TLS handshake
//! when there is one, and hyper's HTTP/1.1 on each connection, with every
//! wait an outsider controls bounded in time:
//!
//! - the request head (request line and headers): from the accept, or from
//!   its first byte on a kept-alive connection, at most the header
//!   timeout, and at most `max_header_bytes` (hyper answers 431 beyond);
//!   the TLS handshake counts against the header timeout too;
//! - the request body: from the end of the head, at most the body timeout
//!   (a body sent a byte every few seconds, or a chunked body that never
//!   ends, is cut);
//! - a kept-alive connection waiting for its next request: at most the
//!   idle timeout; a response the client does not read: at most the idle
//!   timeout without progress.
//!
//! The clocks live in [`Guarded`], a wrapper of the connection's byte
//! stream: hyper sees a timed-out read or write as an I/O error and closes
//! the connection, which frees its buffers at once.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::Service as _;

use super::callers::ClientCertVerified;
use crate::slots::{Slot, Slots};
use crate::telemetry::OUTSIDER;

/// The limits of the HTTP API (flags `--http-max-connections`,
/// `--http-max-connections-per-source`, `--http-header-timeout-ms`,
/// `--http-body-timeout-ms`, `--http-idle-timeout-ms`,
/// `--http-max-header-bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per client address.
    pub max_per_source: usize,
    /// Request head (and TLS handshake) within this.
    pub header_timeout: Duration,
    /// Request body within this from the end of the head.
    pub body_timeout: Duration,
    /// A kept-alive connection's wait for its next request; a stalled
    /// response write.
    pub idle_timeout: Duration,
    /// Largest request head, bytes (at least 8192, hyper's minimum).
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 512,
            max_per_source: 64,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Pause after a failed `accept` (e.g. out of file descriptors), so the
/// loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections until `cancel`, then closes idle connections and
/// lets in-flight requests finish (at most `grace`). HTTPS when `tls` is
/// given. Accept errors are logged and retried, so it never fails.
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<TlsAcceptor>,
    app: Router,
    limits: HttpLimits,
    cancel: CancellationToken,
    grace: Duration,
) {
    let slots = Slots::new(
        limits.max_connections,
        limits.max_per_source,
        crate::metrics::http_connection,
    );
    let mut conns = JoinSet::new();
    loop {
        while conns.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like (the descriptor
                    // budget keeps this rare): back off, keep serving.
                    tracing::warn!(target: OUTSIDER, error = %e, "HTTP accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let slot = match slots.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                // Reset rather than FIN: the client learns at once, and no
                // TIME_WAIT is left here.
                let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
                closed(peer, why.as_str());
                continue;
            }
        };
        conns.spawn(connection(
            tcp,
            peer,
            tls.clone(),
            app.clone(),
            slot,
            limits,
            cancel.clone(),
        ));
    }
    if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        tracing::warn!("HTTP connections still open after the shutdown grace period; closing them");
        conns.abort_all();
    }
}

/// Counts and logs (rate-limited) a connection a limit closed.
fn closed(peer: SocketAddr, reason: &'static str) {
    crate::metrics::http_closed(reason);
    tracing::debug!(target: OUTSIDER, %peer, reason, "HTTP connection closed by a limit");
}

async fn connection(
    tcp: tokio::net::TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    app: Router,
    slot: Slot,
    limits: HttpLimits,
    cancel: CancellationToken,
) {
    let _ = tcp.set_nodelay(true);
    let phase = Arc::new(Phase::new());
    let slot = Arc::new(slot);
    match tls {
        None => serve_connection(tcp, peer, false, app, slot, phase, limits, cancel).await,
        Some(acceptor) => {
            // The handshake counts against the header timeout.
            let handshake = tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp));
            let stream = tokio::select! {
                r = handshake => match r {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(target: OUTSIDER, %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        closed(peer, Timeout::Header.as_str());
                        return;
                    }
                },
                _ = slot.evicted() => {
                    closed(peer, "evicted");
                    return;
                }
            };
            let verified = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            serve_connection(stream, peer, verified, app, slot, phase, limits, cancel).await;
        }
    }
}

/// Runs HTTP/1.1 on `io` until the client goes, a limit closes it, or
/// `cancel` (then in-flight requests finish).
#[allow(clippy::too_many_arguments)]
async fn serve_connection<IO>(
    io: IO,
    peer: SocketAddr,
    verified: bool,
    app: Router,
    slot: Arc<Slot>,
    phase: Arc<Phase>,
    limits: HttpLimits,
    cancel: CancellationToken,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = {
        let phase = phase.clone();
        let slot = slot.clone();
        hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            if verified {
                req.extensions_mut().insert(ClientCertVerified);
            }
            req.extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            phase.set(State::Request);
            slot.busy();
            // A Router is always ready; `call` needs no `poll_ready`.
            let response = app.clone().call(req);
            let (phase, slot) = (phase.clone(), slot.clone());
            async move {
                let r = response.await;
                // The response is handed to hyper to write; from here the
                // connection waits for the next request (idle).
                phase.set(State::Idle);
                slot.idle(Instant::now());
                r
            }
        })
    };
    let io = Guarded::new(io, phase.clone(), limits);
    // No hyper timer: the clocks are `Guarded`'s (hyper's own header
    // timeout would also cut kept-alive connections after 30 s).
    let conn = hyper::server::conn::http1::Builder::new()
        .max_buf_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(io), svc);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            // A clock that ran out may surface as an error, or as a clean
            // end (hyper ends an idle connection quietly on a read error).
            match (phase.timed_out(), r) {
                (Some(t), _) => closed(peer, t.as_str()),
                (None, Err(e)) => tracing::debug!(target: OUTSIDER, %peer, error = %e, "HTTP connection ended with an error"),
                (None, Ok(())) => {}
            }
        }
        _ = slot.evicted() => {
            closed(peer, "evicted");
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
        _ = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// What a connection is doing, as far as its clocks care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum State {
    /// Waiting for the first byte of a request (kept alive).
    Idle = 0,
    /// Reading a request head.
    Head = 1,
    /// A request is being answered (its body read).
    Request = 2,
}

/// Which clock ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timeout {
    Header,
    Body,
    Idle,
    Write,
}

impl Timeout {
    fn as_str(self) -> &'static str {
        match self {
            Timeout::Header => "header_timeout",
            Timeout::Body => "body_timeout",
            Timeout::Idle => "idle_timeout",
            Timeout::Write => "write_timeout",
        }
    }
}

/// The state of a connection and since when (shared by its stream and
/// its service), and which clock, if any, closed it.
#[derive(Debug)]
struct Phase {
    state: AtomicU8,
    /// When the state began, as an offset in ms from `epoch`.
    since_ms: AtomicU64,
    epoch: Instant,
    /// 0: none; else 1 + the `Timeout` that closed the connection.
    timed_out: AtomicU8,
}

impl Phase {
    /// A new connection: reading its first request head, from now.
    fn new() -> Self {
        Self {
            state: AtomicU8::new(State::Head as u8),
            since_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            timed_out: AtomicU8::new(0),
        }
    }

    fn set(&self, state: State) {
        self.since_ms
            .store(self.epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        self.state.store(state as u8, Ordering::Relaxed);
    }

    fn get(&self) -> (State, Instant) {
        let state = match self.state.load(Ordering::Relaxed) {
            0 => State::Idle,
            1 => State::Head,
            _ => State::Request,
        };
        let since = self.epoch + Duration::from_millis(self.since_ms.load(Ordering::Relaxed));
        (state, since)
    }

    fn time_out(&self, t: Timeout) {
        self.timed_out.store(t as u8 + 1, Ordering::Relaxed);
    }

    fn timed_out(&self) -> Option<Timeout> {
        match self.timed_out.load(Ordering::Relaxed) {
            1 => Some(Timeout::Header),
            2 => Some(Timeout::Body),
            3 => Some(Timeout::Idle),
            4 => Some(Timeout::Write),
            _ => None,
        }
    }
}

/// A connection's byte stream with the clocks of its [`Phase`]: a read
/// that waits past the deadline of the current state, or a write that
/// makes no progress for the idle timeout, fails with `TimedOut`.
struct Guarded<IO> {
    inner: IO,
    phase: Arc<Phase>,
    limits: HttpLimits,
    read_timer: Pin<Box<Sleep>>,
    read_deadline: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    write_deadline: Option<Instant>,
}

impl<IO> Guarded<IO> {
    fn new(inner: IO, phase: Arc<Phase>, limits: HttpLimits) -> Self {
        let now = Instant::now();
        Self {
            inner,
            phase,
            limits,
            read_timer: Box::pin(tokio::time::sleep_until(now)),
            read_deadline: None,
            write_timer: Box::pin(tokio::time::sleep_until(now)),
            write_deadline: None,
        }
    }

    /// The deadline of a read in the current state.
    fn read_deadline(&self) -> (Instant, Timeout) {
        let (state, since) = self.phase.get();
        match state {
            State::Idle => (since + self.limits.idle_timeout, Timeout::Idle),
            State::Head => (since + self.limits.header_timeout, Timeout::Header),
            State::Request => (since + self.limits.body_timeout, Timeout::Body),
        }
    }

    /// Pending I/O on the write side: fail once it has made no progress
    /// for the idle timeout.
    fn write_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let deadline = *self
            .write_deadline
            .get_or_insert_with(|| Instant::now() + self.limits.idle_timeout);
        if self.write_timer.deadline() != deadline {
            self.write_timer.as_mut().reset(deadline);
        }
        if self.write_timer.as_mut().poll(cx).is_ready() {
            self.phase.time_out(Timeout::Write);
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client does not read its response",
            )));
        }
        Poll::Pending
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Guarded<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                self.read_deadline = None;
                if buf.filled().len() > before && self.phase.get().0 == State::Idle {
                    // The first byte of the next request: its head is due
                    // within the header timeout.
                    self.phase.set(State::Head);
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let (deadline, which) = self.read_deadline();
                if self.read_deadline != Some(deadline) {
                    self.read_deadline = Some(deadline);
                    self.read_timer.as_mut().reset(deadline);
                }
                if self.read_timer.as_mut().poll(cx).is_ready() {
                    self.phase.time_out(which);
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        which.as_str(),
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Guarded<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.write_pending(cx).map(|r| r.map(|()| 0)),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.write_pending(cx),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.write_pending(cx),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.write_pending(cx).map(|r| r.map(|()| 0)),
            ready => {
                self.write_deadline = None;
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
