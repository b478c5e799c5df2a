//! Supervision: `/readyz` says ready only once DNS answers, and when the DNS
//! server dies under a running process (its UDP socket shut down from
//! outside, with gdb), the process reports unready, says why, and exits
//! non-zero instead of staying up without DNS.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{read_logs, require_tool, serve_command, wait_until};

/// `GET path` over plain HTTP/1.1: (status, body), or `None` when the
/// server does not answer.
fn get(http: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&http, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// One A query for acme; true when a response with its id comes back.
fn dns_answers(dns: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    // ID 0x4242, RD, one question: acme.cells.example.com A IN.
    let mut q = vec![0x42, 0x42, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["acme", "cells", "example", "com"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if s.send_to(&q, dns).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    matches!(s.recv(&mut buf), Ok(n) if n >= 12 && buf[..2] == [0x42, 0x42])
}

/// The file descriptor of the process's UDP socket bound to `port`, from
/// /proc (the socket inode in /proc/PID/net/udp, then the fd linking to it).
fn udp_fd(pid: u32, port: u16) -> Option<u32> {
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/udp")).ok()?;
    let inode = table.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let local_port = f.get(1)?.rsplit(':').next()?;
        (u16::from_str_radix(local_port, 16).ok()? == port)
            .then(|| f.get(9).map(|s| s.to_string()))?
    })?;
    let want = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(Result::ok)
        .find(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == want))
        .and_then(|e| e.file_name().to_str()?.parse().ok())
}

#[test]
fn serve_ready_only_with_dns_and_exits_when_dns_dies() {
    let gdb = require_tool("gdb");
    let mut child = serve_command(true, &["--udp-workers", "1"])
        .spawn()
        .expect("spawn cellns");
    let (logs, rx) = read_logs(child.stderr.take().expect("stderr"));
    let pid = child.id();
    // The HTTP address, as soon as it is logged.
    let deadline = Instant::now() + Duration::from_secs(30);
    let http: SocketAddr = loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("cellns logs HTTP listening");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "HTTP listening" {
            break v["addr"]
                .as_str()
                .and_then(|a| a.parse().ok())
                .expect("addr");
        }
    };

    // Poll /readyz from the start: the first 200 must come with a DNS
    // address that answers at once.
    let dns: SocketAddr = loop {
        assert!(Instant::now() < deadline, "never ready");
        match get(http, "/readyz") {
            Some((200, body)) => {
                let v: serde_json::Value = serde_json::from_str(&body).expect("JSON body");
                let addr = v["dns_addresses"][0]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("ready without a DNS address: {body}"));
                assert!(dns_answers(addr), "/readyz said ready, DNS did not answer");
                break addr;
            }
            Some((503, _)) => {}
            other => panic!("/readyz: {other:?}"),
        }
    };

    // Shut the worker's UDP socket down for reading, under it. (On an
    // unconnected UDP socket shutdown(2) returns ENOTCONN but does shut it
    // down, waking the blocked receive: the outcome is what is checked.)
    let fd = udp_fd(pid, dns.port()).expect("the DNS UDP socket in /proc");
    let out = Command::new(gdb)
        .args(["-p", &pid.to_string(), "-batch", "-nx", "--readnever"])
        .args(["-ex", &format!("call (int)shutdown({fd}, 0)")])
        .output()
        .expect("run gdb");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("$1 = "),
        "gdb could not call shutdown in cellns: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The process notices, says why, and exits non-zero.
    assert!(
        wait_until(Duration::from_secs(20), || child
            .try_wait()
            .ok()
            .flatten()
            .is_some()),
        "cellns kept running without its DNS socket"
    );
    let status = child.wait().expect("exit status");
    assert!(!status.success(), "exit status {status}");
    let logs = logs.lock().expect("logs").join("\n");
    assert!(
        logs.contains("UDP worker stopped") && logs.contains("a part of the server failed"),
        "{logs}"
    );
}
