//! One probe of one endpoint: a TCP connection, or an HTTP/1.1 `GET`
//! whose status line says 2xx; either way the connection is then reset
//! (no TIME_WAIT left behind). Everything an endpoint controls is bounded:
//! the whole probe by the cell's `timeout_ms`, the response read by
//! [`MAX_RESPONSE_HEAD`] bytes (only the status line is read; the rest is
//! never looked at), error texts by [`MAX_ERROR`] characters.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::map::Probe;

/// Most bytes read from an HTTP response (the status line must be in
/// them).
pub const MAX_RESPONSE_HEAD: usize = 1024;
/// Longest error text kept for an endpoint.
pub const MAX_ERROR: usize = 200;

/// What to send to one endpoint, built once per prober.
#[derive(Debug, Clone)]
pub struct Target {
    /// The endpoint.
    pub addr: SocketAddr,
    probe: Probe,
    /// The HTTP request (empty for TCP).
    request: Vec<u8>,
}

impl Target {
    /// A probe of `ip:port`; HTTP probes ask for `path` with `Host: host`
    /// (the cell's hostname, so virtual-hosted cells answer as for their
    /// clients).
    pub fn new(ip: IpAddr, port: u16, probe: Probe, path: &str, host: &str) -> Self {
        let request = match probe {
            Probe::Tcp => Vec::new(),
            Probe::Http => format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cellns-health/{}\r\n\
                 Accept: */*\r\nConnection: close\r\n\r\n",
                env!("CARGO_PKG_VERSION")
            )
            .into_bytes(),
        };
        Self {
            addr: SocketAddr::new(ip, port),
            probe,
            request,
        }
    }

    /// Probes once, within `timeout`: `Ok` when the endpoint is up, else
    /// why it is not (short text).
    pub async fn probe(&self, timeout: Duration) -> Result<(), String> {
        match tokio::time::timeout(timeout, self.attempt()).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {} ms", timeout.as_millis())),
        }
    }

    async fn attempt(&self) -> Result<(), String> {
        let mut stream = TcpStream::connect(self.addr)
            .await
            .map_err(|e| io_error("connect", &e))?;
        // Closed with a reset, as HAProxy closes its checks: a probe is not
        // a conversation, and thousands of probes a second must not leave
        // thousands of sockets in TIME_WAIT on this host.
        let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
        if self.probe == Probe::Tcp {
            return Ok(());
        }
        let _ = stream.set_nodelay(true);
        stream
            .write_all(&self.request)
            .await
            .map_err(|e| io_error("send", &e))?;
        let mut buf = [0u8; MAX_RESPONSE_HEAD];
        let mut n = 0;
        while n < buf.len() && !buf[..n].contains(&b'\n') {
            match stream.read(&mut buf[n..]).await {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(io_error("read", &e)),
            }
        }
        // Dropped without reading the rest: the connection is closed.
        status_verdict(&buf[..n])
    }
}

/// Up when `head` starts with an HTTP/1.x status line with a 2xx code.
fn status_verdict(head: &[u8]) -> Result<(), String> {
    let line_end = head.iter().position(|&b| b == b'\n');
    let Some(end) = line_end else {
        return Err(if head.is_empty() {
            "connection closed before the status line".to_owned()
        } else {
            format!("no HTTP status line in the first {} bytes", head.len())
        });
    };
    let line = String::from_utf8_lossy(&head[..end]);
    let mut words = line.split_ascii_whitespace();
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        return Err(bounded(format!("not an HTTP status line: {line:?}")));
    };
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(bounded(format!("not an HTTP status line: {line:?}")));
    }
    match code.parse::<u16>() {
        Ok(200..=299) => Ok(()),
        Ok(c) => Err(format!("HTTP {c}")),
        Err(_) => Err(bounded(format!("not an HTTP status line: {line:?}"))),
    }
}

fn io_error(what: &str, e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset => format!("connection reset ({what})"),
        K::TimedOut => format!("{what} timed out"),
        _ => bounded(format!("{what}: {e}")),
    }
}

fn bounded(mut s: String) -> String {
    if s.len() > MAX_ERROR {
        let mut cut = MAX_ERROR;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::net::TcpListener;

    #[test]
    fn status_lines() {
        assert_eq!(status_verdict(b"HTTP/1.1 200 OK\r\n"), Ok(()));
        assert_eq!(status_verdict(b"HTTP/1.0 204 No Content\r\nX: y"), Ok(()));
        assert_eq!(
            status_verdict(b"HTTP/1.1 503 Busy\r\n"),
            Err("HTTP 503".into())
        );
        assert_eq!(
            status_verdict(b"HTTP/1.1 301 Moved\n"),
            Err("HTTP 301".into())
        );
        assert!(status_verdict(b"").unwrap_err().contains("closed"));
        assert!(
            status_verdict(b"HTTP/1.1 200")
                .unwrap_err()
                .contains("no HTTP status line")
        );
        assert!(
            status_verdict(b"SSH-2.0-OpenSSH\r\n")
                .unwrap_err()
                .contains("not an HTTP")
        );
        assert!(status_verdict(b"HTTP/1.1 2000 OK\r\n").is_err());
        let long = format!("X {}\n", "y".repeat(5000));
        assert!(status_verdict(long.as_bytes()).unwrap_err().len() <= MAX_ERROR + 3);
    }

    /// A one-shot server that answers `reply` to the first connection,
    /// after reading the request head; returns the request it read.
    async fn serve_once(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut req = Vec::new();
            let mut buf = [0u8; 512];
            while !req.ends_with(b"\r\n\r\n") {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let _ = s.write_all(reply).await;
            String::from_utf8_lossy(&req).into_owned()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn http_probe_sends_the_path_and_host_and_reads_the_status() {
        let (addr, task) = serve_once(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let t = Target::new(
            addr.ip(),
            addr.port(),
            Probe::Http,
            "/healthz",
            "c1.example.com",
        );
        assert_eq!(t.probe(Duration::from_secs(5)).await, Ok(()));
        let req = task.await.expect("server");
        assert!(req.starts_with("GET /healthz HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("\r\nHost: c1.example.com\r\n"), "{req}");
        let (addr, _task) = serve_once(b"HTTP/1.1 500 Oops\r\n\r\n").await;
        let t = Target::new(addr.ip(), addr.port(), Probe::Http, "/", "c");
        assert_eq!(
            t.probe(Duration::from_secs(5)).await,
            Err("HTTP 500".into())
        );
    }

    #[tokio::test]
    async fn refused_and_silent_endpoints_fail_within_the_timeout() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        // Accepted by the kernel, never answered: a TCP probe is up, an
        // HTTP probe times out.
        let tcp = Target::new(addr.ip(), addr.port(), Probe::Tcp, "/", "c");
        assert_eq!(tcp.probe(Duration::from_secs(5)).await, Ok(()));
        let http = Target::new(addr.ip(), addr.port(), Probe::Http, "/", "c");
        let started = std::time::Instant::now();
        let e = http.probe(Duration::from_millis(200)).await.unwrap_err();
        assert_eq!(e, "timed out after 200 ms");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(l);
        assert_eq!(
            tcp.probe(Duration::from_secs(5)).await,
            Err("connection refused".into())
        );
    }
}
