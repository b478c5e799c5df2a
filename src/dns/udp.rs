//! The UDP server: one thread per worker, each with its own `SO_REUSEPORT`
//! socket (the kernel spreads datagrams over them), reading and writing in
//! batches with `recvmmsg`/`sendmmsg`. Each datagram is answered by the fast
//! path when it can ([`super::fast`]), else by the hickory-server handler
//! called inline ([`general`]). No task per datagram, no allocation on the
//! fast path, no lock.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

use hickory_proto::op::{Header, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::server::{Request, RequestHandler};
use socket2::{Domain, Socket, Type};

use super::answer::Outcome;
use super::capture::{self, Capture};
use super::fast::{self, Fast, RESPONSE_BUF};
use super::handler::Handler;
use super::prepared::{Live, Store};
use crate::metrics::Transport;

/// Datagrams read per `recvmmsg` call.
const BATCH: usize = 64;
/// Largest datagram read; longer ones are truncated by the kernel and
/// answered FORMERR by the general path.
const RECV_BUF: usize = 4096;
/// How often a blocked worker looks at the shutdown flag.
const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Socket buffer sizes: room for bursts.
const SOCKET_BUFFER: usize = 4 << 20;

/// Binds `workers` sockets on `addr` with `SO_REUSEPORT` (port 0: the first
/// picks the port, the rest join it).
pub fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut sockets = Vec::with_capacity(workers);
    let mut addr = addr;
    for _ in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None)?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_reuse_port(true)?;
        let _ = s.set_recv_buffer_size(SOCKET_BUFFER);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.set_read_timeout(Some(POLL_INTERVAL))?;
        s.bind(&addr.into())?;
        let sock: std::net::UdpSocket = s.into();
        addr = sock.local_addr()?;
        sockets.push(sock);
    }
    Ok(sockets)
}

/// Running UDP workers; stop them with [`Workers::stop`].
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Starts one thread per socket; zone transfers are refused.
    pub fn start(sockets: Vec<std::net::UdpSocket>, store: Arc<Store>) -> io::Result<Self> {
        let handler = Handler::new(store.clone());
        Self::start_with(sockets, store, handler)
    }

    /// Starts one thread per socket; `handler` answers what the fast path
    /// does not.
    pub fn start_with(
        sockets: Vec<std::net::UdpSocket>,
        store: Arc<Store>,
        handler: Handler,
    ) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (i, sock) in sockets.into_iter().enumerate() {
            let (stop, store, handler) = (stop.clone(), store.clone(), handler.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("cellns-udp-{i}"))
                    .spawn(move || Worker::new(sock, store, handler).run(&stop))?,
            );
        }
        Ok(Self { stop, threads })
    }

    /// Asks the workers to stop and waits for them (at most one poll
    /// interval, plus the batch in hand).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

struct Worker {
    sock: std::net::UdpSocket,
    store: Arc<Store>,
    handler: Handler,
    recv: Box<[[u8; RECV_BUF]]>,
    send: Box<[[u8; RESPONSE_BUF]]>,
}

impl Worker {
    fn new(sock: std::net::UdpSocket, store: Arc<Store>, handler: Handler) -> Self {
        Self {
            sock,
            handler,
            store,
            recv: vec![[0u8; RECV_BUF]; BATCH].into_boxed_slice(),
            send: vec![[0u8; RESPONSE_BUF]; BATCH].into_boxed_slice(),
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let fd = self.sock.as_raw_fd();
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut addrs: [libc::sockaddr_storage; BATCH] =
            unsafe { MaybeUninit::zeroed().assume_init() };
        let mut iov_in: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut msgs_in: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut iov_out: [libc::iovec; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };
        let mut msgs_out: [libc::mmsghdr; BATCH] = unsafe { MaybeUninit::zeroed().assume_init() };

        while !stop.load(Ordering::Relaxed) {
            for i in 0..BATCH {
                iov_in[i] = libc::iovec {
                    iov_base: self.recv[i].as_mut_ptr().cast(),
                    iov_len: RECV_BUF,
                };
                let h = &mut msgs_in[i].msg_hdr;
                h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_iov = &mut iov_in[i];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                msgs_in[i].msg_len = 0;
            }
            // SAFETY: every msghdr points at live buffers of the stated sizes.
            let n = unsafe {
                libc::recvmmsg(
                    fd,
                    msgs_in.as_mut_ptr(),
                    BATCH as u32,
                    libc::MSG_WAITFORONE,
                    std::ptr::null_mut(),
                )
            };
            if n <= 0 {
                // Timeout (EAGAIN) or EINTR: look at the stop flag again.
                continue;
            }
            let live = self.store.load();
            let mut out = 0;
            for i in 0..n as usize {
                let len = msgs_in[i].msg_len as usize;
                let truncated = msgs_in[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let Some(src) = sockaddr_to_std(&addrs[i]) else {
                    continue;
                };
                if src.port() == 0 {
                    continue;
                }
                let query = &self.recv[i][..len];
                let answer = if truncated {
                    general_formerr(query, &mut self.send[out])
                } else {
                    match fast::respond(&live, query, &mut self.send[out]) {
                        Fast::Answered(n, outcome, qtype) => {
                            count_fast(&live, outcome, qtype, self.send[out][3]);
                            Some(n)
                        }
                        Fast::Drop => None,
                        Fast::General => general(&self.handler, query, src, &mut self.send[out]),
                    }
                };
                let Some(resp_len) = answer else { continue };
                iov_out[out] = libc::iovec {
                    iov_base: self.send[out].as_mut_ptr().cast(),
                    iov_len: resp_len,
                };
                let h = &mut msgs_out[out].msg_hdr;
                h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = msgs_in[i].msg_hdr.msg_namelen;
                h.msg_iov = &mut iov_out[out];
                h.msg_iovlen = 1;
                h.msg_control = std::ptr::null_mut();
                h.msg_controllen = 0;
                h.msg_flags = 0;
                out += 1;
            }
            drop(live);
            let mut sent = 0;
            while sent < out {
                // SAFETY: entries [sent, out) point at live buffers.
                let r = unsafe {
                    libc::sendmmsg(fd, msgs_out[sent..].as_mut_ptr(), (out - sent) as u32, 0)
                };
                if r <= 0 {
                    // A full send buffer or an unreachable peer: drop the
                    // rest of this batch (UDP clients retry).
                    break;
                }
                sent += r as usize;
            }
        }
    }
}

/// Counts a fast-path answer (the general path counts in the handler).
#[inline]
fn count_fast(live: &Live, outcome: Outcome, qtype: u16, flags: u8) {
    crate::metrics::dns().query(Transport::Udp, qtype, u16::from(flags & 0x0F));
    if let Outcome::Tenant(cell) | Outcome::TenantNodata(cell) = outcome {
        live.answers.count_answer(cell);
    }
}

fn sockaddr_to_std(a: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(a.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says this storage holds a sockaddr_in.
            let v4 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(v4.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says this storage holds a sockaddr_in6.
            let v6 = unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(SocketAddr::V6(SocketAddrV6::new(
                ip,
                u16::from_be(v6.sin6_port),
                v6.sin6_flowinfo,
                v6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Answers a datagram with the hickory-server handler, exactly as
/// hickory-server's own UDP loop would (same decoding, same FORMERR for
/// undecodable messages, same encoding limits). Returns the response length.
pub fn general(
    handler: &Handler,
    query: &[u8],
    src: SocketAddr,
    out: &mut [u8; RESPONSE_BUF],
) -> Option<usize> {
    let mut decoder = BinDecoder::new(query);
    let header = Header::read(&mut decoder).ok()?;
    if header.metadata.message_type == hickory_proto::op::MessageType::Response {
        // Never answer a response (reflection).
        return None;
    }
    let request = match Request::from_bytes(query.to_vec(), src, Protocol::Udp) {
        Ok(r) => r,
        Err(_) => return general_formerr(query, out),
    };
    let capture = Capture::new(Protocol::Udp);
    let fut = handler.handle_request::<_, TokioTime>(&request, capture.clone());
    // The handler never waits on I/O: `Capture` completes at once and the
    // snapshot read is lock-free, so one poll finishes it.
    let mut fut = std::pin::pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(_) => {}
        Poll::Pending => return None,
    }
    let bytes = capture.take()?;
    if bytes.len() > out.len() {
        return None;
    }
    out[..bytes.len()].copy_from_slice(&bytes);
    Some(bytes.len())
}

/// FORMERR for a datagram whose header is readable but the rest is not
/// (see [`capture::formerr`]). Counted here: the handler never sees these.
fn general_formerr(query: &[u8], out: &mut [u8; RESPONSE_BUF]) -> Option<usize> {
    let head = capture::formerr(query)?;
    out[..12].copy_from_slice(&head);
    // The question is unreadable, so its type is "other".
    crate::metrics::dns().query(Transport::Udp, 0, u16::from(ResponseCode::FormErr));
    Some(12)
}
