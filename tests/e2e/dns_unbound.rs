//! A real recursive resolver in front of cellns: unbound with a stub-zone
//! for the origin. Through it a tenant resolves to its cell's addresses
//! and an unknown tenant gets NXDOMAIN.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::dns::{self as s, Udp, norm_record};
use crate::support::table::{self as t, ORIGIN};
use crate::support::{STARTUP, free_port, require_tool, wait_until};

/// A running unbound, killed on drop.
struct Unbound {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_conf(dir: &Path, port: u16, cellns: SocketAddr) -> std::path::PathBuf {
    let conf = dir.join("unbound.conf");
    let d = dir.display();
    let stub = format!("{}@{}", cellns.ip(), cellns.port());
    std::fs::write(
        &conf,
        format!(
            r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: "{d}/unbound.log"
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    do-not-query-localhost: no
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
    # Randomise the case of names sent to cellns (0x20) and insist that
    # replies keep it.
    use-caps-for-id: yes
    verbosity: 1

stub-zone:
    name: "cells.example.com."
    stub-addr: {stub}

# Everything else also goes to cellns (which refuses it): the test must
# not reach past loopback.
stub-zone:
    name: "."
    stub-addr: {stub}
"#
        ),
    )
    .expect("write unbound.conf");
    conf
}

/// Starts unbound and waits until it answers through cellns.
fn start_unbound(dir: &Path, cellns: SocketAddr) -> Unbound {
    let bin = require_tool("unbound");
    let checkconf = require_tool("unbound-checkconf");
    let mut last_err = String::new();
    // The free port may be taken between our check and unbound's bind:
    // then unbound exits, and we try another port.
    for _ in 0..3 {
        let port = free_port();
        let conf = write_conf(dir, port, cellns);
        let check = Command::new(&checkconf)
            .arg(&conf)
            .output()
            .expect("run unbound-checkconf");
        assert!(
            check.status.success(),
            "unbound-checkconf rejects the config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn unbound");
        let mut ub = Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        };
        match wait_ready(&mut ub) {
            Ok(()) => return ub,
            Err(e) => {
                drop(ub);
                let log = std::fs::read_to_string(dir.join("unbound.log")).unwrap_or_default();
                last_err = format!("{e}; unbound's log:\n{log}");
            }
        }
    }
    panic!("unbound did not come up: {last_err}");
}

/// Polls unbound with the apex SOA question until it answers NOERROR
/// (which needs cellns behind it), unbound exits, or the start-up deadline
/// passes.
fn wait_ready(ub: &mut Unbound) -> Result<(), String> {
    let client = Udp::new(ub.addr);
    let mut exited = None;
    let ready = wait_until(STARTUP, || {
        if let Ok(Some(status)) = ub.child.try_wait() {
            exited = Some(status);
            return true;
        }
        let mut q = s::query(0x7000, ORIGIN, RecordType::SOA, Some(1232));
        q.metadata.recursion_desired = true;
        client.send(&s::wire(&q));
        client
            .recv_id(0x7000u16.to_be_bytes(), Duration::from_millis(250))
            .and_then(|r| Message::from_vec(&r).ok())
            .is_some_and(|m| {
                m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
            })
    });
    match (ready, exited) {
        (_, Some(status)) => Err(format!("unbound exited: {status}")),
        (true, None) => Ok(()),
        (false, None) => Err(format!("no answer within {STARTUP:?}")),
    }
}

/// Asks unbound (RD set) over UDP.
fn resolve(ub: &Unbound, qname: &str, qtype: RecordType) -> Message {
    let mut q = s::query(0x4242, qname, qtype, Some(1232));
    q.metadata.recursion_desired = true;
    s::decode(&s::udp_exchange(ub.addr, &s::wire(&q)))
}

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn unbound_resolves_tenants_through_cellns() {
    let srv = t::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let ub = start_unbound(dir.path(), srv.addr());

    for (tenant, qtype, want) in [
        ("acme", RecordType::A, vec!["192.0.2.10", "192.0.2.11"]),
        ("acme", RecordType::AAAA, vec!["2001:db8::10"]),
        ("globex", RecordType::A, vec!["192.0.2.20"]),
        // usw2-a is down: its tenant gets use1-b.
        ("hooli", RecordType::A, vec!["192.0.2.20"]),
        ("initech", RecordType::A, vec!["198.51.100.10"]),
    ] {
        let qname = format!("{tenant}.cells.example.com.");
        let m = resolve(&ub, &qname, qtype);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{qname} {qtype}"
        );
        assert!(m.metadata.recursion_available, "unbound recursed");
        assert_eq!(addresses(&m), want, "{qname} {qtype}: {m:?}");
        assert!(
            m.answers.iter().all(|r| r.ttl <= 30),
            "{qname}: TTL at most zone.ttl"
        );
    }

    for qname in ["nobody.cells.example.com.", "www.acme.cells.example.com."] {
        let m = resolve(&ub, qname, RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{qname}: {m:?}"
        );
        assert!(m.answers.is_empty());
        let soa: Vec<String> = m.authorities.iter().map(norm_record).collect();
        assert_eq!(soa.len(), 1, "{qname}: SOA in authority: {soa:?}");
        assert!(soa[0].starts_with("cells.example.com. "), "{soa:?}");
        assert!(soa[0].contains(" SOA "), "{soa:?}");
    }

    // NODATA passes through as NOERROR with no answer.
    let m = resolve(&ub, "acme.cells.example.com.", RecordType::TXT);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}
