//! The UDP server: one thread per worker, each with its own `SO_REUSEPORT`
//! socket (the kernel spreads datagrams over them), reading and writing in
//! batches with `recvmmsg`/`sendmmsg`. Each datagram is answered inline by
//! `Dispatch::datagram` (the fast path when it can, else the general
//! path), from the zone version loaded once per batch. No task per
//! datagram, no allocation on the fast path, no lock.

use std::io;
use std::mem::MaybeUninit;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::dispatch::Dispatch;
use super::fast::RESPONSE_BUF;

/// Datagrams read per `recvmmsg` call.
const BATCH: usize = 64;
/// Largest datagram read; longer ones are truncated by the kernel and
/// answered FORMERR.
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
    if let Some(last) = sockets.last()
        && let Err(e) = steer_to_own(last, sockets.len())
    {
        tracing::warn!(
            error = %e,
            "cannot attach the SO_REUSEPORT steering program: another socket of this user \
             bound to the DNS port would get a share of its queries"
        );
    }
    Ok(sockets)
}

/// Makes the kernel hand every datagram of the port to one of our `n`
/// sockets: the one of index (receiving CPU mod `n`) in the port's
/// `SO_REUSEPORT` group, as Knot steers. Without a program the kernel
/// spreads datagrams over every socket of the group, and any process of the
/// same user may join the group by binding the port with `SO_REUSEPORT`;
/// ours occupy indexes `0..n` (a socket that joins later is appended), so
/// it would receive nothing. (It could replace the program: a same-user
/// process can also ptrace us; this keeps out accidents, such as a second
/// instance started on the same port, not an attacker with our uid.)
fn steer_to_own(sock: &std::net::UdpSocket, n: usize) -> io::Result<()> {
    /// asm-generic value (libc only defines it for Android).
    const SO_ATTACH_REUSEPORT_CBPF: libc::c_int = 51;
    let ins = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let mut code = [
        // A = the CPU the datagram arrived on.
        ins(
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS,
            (libc::SKF_AD_OFF + libc::SKF_AD_CPU) as u32,
        ),
        ins(libc::BPF_ALU | libc::BPF_MOD | libc::BPF_K, n.max(1) as u32),
        // Return A: the index of the socket in the group.
        ins(libc::BPF_RET | libc::BPF_A, 0),
    ];
    let prog = libc::sock_fprog {
        len: code.len() as u16,
        filter: code.as_mut_ptr(),
    };
    // SAFETY: `prog` points at `code`, both live for the call; the kernel
    // copies the program and reads nothing after returning.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_ATTACH_REUSEPORT_CBPF,
            (&raw const prog).cast(),
            size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A worker that stopped without being asked to.
#[derive(Debug)]
pub(super) struct Exit {
    /// Its index.
    pub(super) worker: usize,
    /// Why: the socket error it could not recover from, or its panic.
    pub(super) error: String,
}

/// Running UDP workers; stop them with [`Workers::stop`].
pub struct Workers {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    exits: tokio::sync::mpsc::UnboundedReceiver<Exit>,
}

/// Reports the end of a worker thread, however it ends (a panic included),
/// unless it was asked to stop.
struct ExitGuard {
    worker: usize,
    stop: Arc<AtomicBool>,
    exits: tokio::sync::mpsc::UnboundedSender<Exit>,
    error: Option<String>,
}

impl ExitGuard {
    /// The worker returned `result`: report an error as its reason.
    fn finish(mut self, result: io::Result<()>) {
        self.error = result.err().map(|e| e.to_string());
    }
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        if self.stop.load(Ordering::Relaxed) {
            return;
        }
        let error = self.error.take().unwrap_or_else(|| {
            if std::thread::panicking() {
                "it panicked".to_owned()
            } else {
                "it returned".to_owned()
            }
        });
        tracing::error!(worker = self.worker, %error, "UDP worker stopped");
        let _ = self.exits.send(Exit {
            worker: self.worker,
            error,
        });
    }
}

impl Workers {
    /// Starts one thread per socket (named `cellns-udp-<i>`), each
    /// answering through its clone of `dispatch`; returns once every
    /// thread is in its receive loop.
    pub fn start(sockets: Vec<std::net::UdpSocket>, dispatch: Dispatch) -> io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (exit_tx, exits) = tokio::sync::mpsc::unbounded_channel();
        let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
        let mut threads = Vec::new();
        let n = sockets.len();
        for (i, sock) in sockets.into_iter().enumerate() {
            let dispatch = dispatch.clone();
            let guard = ExitGuard {
                worker: i,
                stop: stop.clone(),
                exits: exit_tx.clone(),
                error: None,
            };
            let ready = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("cellns-udp-{i}"))
                .spawn(move || {
                    let stop = guard.stop.clone();
                    let _ = ready.send(());
                    let result = Worker::new(sock, dispatch).run(&stop);
                    guard.finish(result);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    Self {
                        stop,
                        threads,
                        exits,
                    }
                    .stop();
                    return Err(e);
                }
            }
        }
        drop(ready_tx);
        // A thread that panicked before its loop drops its sender too: stop
        // counting then, and let `failed` report it.
        for _ in 0..n {
            if ready.recv().is_err() {
                break;
            }
        }
        Ok(Self {
            stop,
            threads,
            exits,
        })
    }

    /// Resolves when a worker stops without being asked to.
    pub(super) async fn failed(&mut self) -> Exit {
        match self.exits.recv().await {
            Some(exit) => exit,
            // Every guard is gone: all threads ended, reported or not.
            None => std::future::pending().await,
        }
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
    dispatch: Dispatch,
    recv: Box<[[u8; RECV_BUF]]>,
    send: Box<[[u8; RESPONSE_BUF]]>,
}

impl Worker {
    fn new(sock: std::net::UdpSocket, dispatch: Dispatch) -> Self {
        Self {
            sock,
            dispatch,
            recv: vec![[0u8; RECV_BUF]; BATCH].into_boxed_slice(),
            send: vec![[0u8; RESPONSE_BUF]; BATCH].into_boxed_slice(),
        }
    }

    /// Answers datagrams until `stop` is set (then `Ok`), or until the
    /// socket fails for good (the error).
    fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let mut errors = ErrorBackoff::default();
        let fd = self.sock.as_raw_fd();
        let mut addrs: [libc::sockaddr_storage; BATCH] = zeroed();
        let mut iov_in: [libc::iovec; BATCH] = zeroed();
        let mut msgs_in: [libc::mmsghdr; BATCH] = zeroed();
        let mut iov_out: [libc::iovec; BATCH] = zeroed();
        let mut msgs_out: [libc::mmsghdr; BATCH] = zeroed();

        // Every receive header points at its own buffer and address slot
        // for the worker's whole life (the arrays never move). recvmmsg
        // writes back only the length, address length and flags of the
        // entries it fills, so only those are reset after a batch: resetting
        // all 64 each time cost more than answering a small batch.
        let recv_base = self.recv.as_mut_ptr();
        let name_len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        for i in 0..BATCH {
            iov_in[i] = libc::iovec {
                // SAFETY: `i < BATCH`, the length of `self.recv`.
                iov_base: unsafe { recv_base.add(i) }.cast(),
                iov_len: RECV_BUF,
            };
            let h = &mut msgs_in[i].msg_hdr;
            h.msg_name = (&mut addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = name_len;
            h.msg_iov = &mut iov_in[i];
            h.msg_iovlen = 1;
        }
        let mut filled = 0;

        while !stop.load(Ordering::Relaxed) {
            for m in &mut msgs_in[..filled] {
                m.msg_hdr.msg_namelen = name_len;
                m.msg_hdr.msg_flags = 0;
                m.msg_len = 0;
            }
            // Until recvmmsg says how many it filled, assume any may have
            // been written (a failed call resets them all next time).
            filled = BATCH;
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
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    // The poll timeout, or a signal: look at the stop flag.
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => continue,
                    _ if is_fatal(&e) => return Err(e),
                    // Out of memory or buffers, and the like: back off
                    // instead of spinning, and say so (rate-limited).
                    _ => {
                        errors.failed("recvmmsg", &e);
                        continue;
                    }
                }
            }
            if n == 0 {
                // Only a socket shut down for reading returns no datagram
                // without an error.
                return Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "the UDP socket was shut down",
                ));
            }
            errors.ok();
            filled = n as usize;
            let live = self.dispatch.store().load();
            let mut out = 0;
            for i in 0..n as usize {
                let len = msgs_in[i].msg_len as usize;
                if len == 0 && msgs_in[i].msg_hdr.msg_namelen == 0 {
                    // Not a datagram (a peer's empty datagram has a source
                    // address): the socket was shut down for reading, and
                    // every receive returns this at once from now on.
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the UDP socket was shut down",
                    ));
                }
                let truncated = msgs_in[i].msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
                let Some(src) = sockaddr_to_std(&addrs[i]) else {
                    continue;
                };
                if src.port() == 0 {
                    continue;
                }
                let query = &self.recv[i][..len];
                let answer =
                    self.dispatch
                        .datagram(&live, query, src, truncated, &mut self.send[out]);
                let Some(resp_len) = answer else { continue };
                iov_out[out] = libc::iovec {
                    iov_base: self.send[out].as_mut_ptr().cast(),
                    iov_len: resp_len,
                };
                let h = &mut msgs_out[out].msg_hdr;
                // The answer goes back to the address its query came from.
                h.msg_name = msgs_in[i].msg_hdr.msg_name;
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
                if r > 0 {
                    sent += r as usize;
                    continue;
                }
                let e = io::Error::last_os_error();
                if r < 0 && e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                if r < 0 && is_fatal(&e) {
                    return Err(e);
                }
                // The entry at `sent` failed (an unreachable or refused
                // peer, a full buffer): drop that answer only (its client
                // retries) and send the rest of the batch.
                crate::metrics::dns().send_failed();
                tracing::trace!(error = %e, "cannot send a UDP answer");
                sent += 1;
            }
        }
        Ok(())
    }
}

/// Plain C structs whose all-zero bytes are a valid value (integers and
/// null pointers only).
trait ZeroValid {}
impl ZeroValid for libc::sockaddr_storage {}
impl ZeroValid for libc::iovec {}
impl ZeroValid for libc::mmsghdr {}

/// An array of all-zero `T`s.
fn zeroed<T: ZeroValid, const N: usize>() -> [T; N] {
    // SAFETY: `ZeroValid` types are plain C structs made of integers and
    // raw pointers, for which all-zero bytes are a valid value (0 and null).
    unsafe { MaybeUninit::zeroed().assume_init() }
}

/// Errors that mean the socket itself is gone: no retry can help.
fn is_fatal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBADF | libc::ENOTSOCK | libc::EINVAL | libc::EFAULT)
    )
}

/// Pacing for a worker whose socket keeps failing with errors that may
/// pass (ENOMEM, ENOBUFS, ...): sleeps 1 ms doubling to 100 ms between
/// attempts, and logs at most once a second.
#[derive(Default)]
struct ErrorBackoff {
    streak: u32,
    logged: Option<std::time::Instant>,
}

impl ErrorBackoff {
    fn failed(&mut self, what: &str, e: &io::Error) {
        self.streak = self.streak.saturating_add(1);
        if self
            .logged
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
        {
            self.logged = Some(std::time::Instant::now());
            tracing::warn!(error = %e, failures = self.streak, "UDP {what} failed; backing off");
        }
        let ms = 1u64 << self.streak.min(7).saturating_sub(1);
        std::thread::sleep(Duration::from_millis(ms.min(100)));
    }

    fn ok(&mut self) {
        self.streak = 0;
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
