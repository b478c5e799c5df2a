//! Supervision: `/readyz` says ready only once DNS answers, and when the DNS
//! server dies under a running process (its UDP socket shut down from
//! outside, with gdb), the process reports unready, says why, and exits
//! non-zero instead of staying up without DNS.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Instant;

use hickory_proto::rr::RecordType;

use crate::support::dns::{Udp, query, wire};
use crate::support::http::get;
use crate::support::server::Launch;
use crate::support::{EXCHANGE, STARTUP, require_tool};

/// One A query for acme; true when its answer comes back.
fn dns_answers(dns: SocketAddr) -> bool {
    let q = query(0x4242, "acme.cells.example.com.", RecordType::A, None);
    let udp = Udp::new(dns);
    udp.send(&wire(&q));
    udp.recv_id([0x42, 0x42], EXCHANGE).is_some()
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
    let mut server = Launch::new(&["--udp-workers", "1"]).start_early();
    let (http, pid) = (server.http, server.pid());
    let deadline = Instant::now() + STARTUP;

    // Poll /readyz from the start: the first 200 must come with a DNS
    // address that answers at once.
    let dns: SocketAddr = loop {
        assert!(Instant::now() < deadline, "never ready");
        let r = get(http, "/readyz");
        match r.status {
            200 => {
                let v = r.json();
                let addr = v["dns_addresses"][0]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or_else(|| panic!("ready without a DNS address: {v}"));
                assert!(dns_answers(addr), "/readyz said ready, DNS did not answer");
                break addr;
            }
            503 => {}
            other => panic!("/readyz: {other} {}", r.text()),
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
    let status = server
        .exit_within(STARTUP)
        .expect("cellns kept running without its DNS socket");
    assert!(!status.success(), "exit status {status}");
    let logs = server.logs().text();
    assert!(
        logs.contains("UDP worker stopped") && logs.contains("a part of the server failed"),
        "{logs}"
    );
}
