//! A health-driven failover is a new zone version: the serial goes up and
//! an NSD secondary, NOTIFYed, follows it within seconds (the SOA refresh
//! and retry are an hour, so nothing else can explain it).

use crate::health_probe::{a_of, health_table, ips};
use crate::support::dns;
use crate::support::http::{Toy, ToyKind};
use crate::support::map::{Cell, Map, XFR_ORIGIN as ORIGIN};
use crate::support::secondary::{Kind, Secondary};
use crate::support::server::{Launch, Server};
use crate::support::{RELOAD, STARTUP, free_port, wait_until};

#[test]
fn health_nsd_secondary_follows_a_health_failover_through_notify() {
    let mut toy = Toy::bind_all(ToyKind::Tcp, &["127.31.7.1"]).remove(0);
    let map = Map::new(ORIGIN, "n1")
        .set("zone.refresh", 3600)
        .set("zone.retry", 3600)
        .cell(
            "a",
            Cell::new(&format!("a.{ORIGIN}"))
                .ipv4(["127.31.7.1"])
                .set("failover", "b")
                .set(
                    "health",
                    health_table("tcp", toy.addr.port(), 500, 400, 2, 2),
                ),
        )
        .cell("b", Cell::new(&format!("b.{ORIGIN}")).ipv4(["192.0.2.20"]))
        .tenant("acme", "a");
    // The zone of the deploy/secondaries examples the secondary runs.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("map.toml"), map.toml()).expect("write map");
    let origin = ORIGIN;

    let (cellns, secondary) = start_pair(dir.path());
    let context = |what: &str| {
        format!(
            "{what}\n--- secondary log:\n{}\n--- cellns log:\n{}",
            secondary.log_text(),
            cellns.logs().text()
        )
    };
    let acme = format!("acme.{origin}");
    let first = dns::serial(cellns.dns, origin).expect("cellns answers its SOA");
    assert!(
        wait_until(STARTUP, || dns::serial(secondary.addr, origin)
            >= Some(first)),
        "{}",
        context("no first transfer")
    );
    assert!(
        wait_until(RELOAD, || a_of(secondary.addr, &acme)
            == ips(&["127.31.7.1"])),
        "{}",
        context("the secondary does not answer a's endpoint")
    );

    // The endpoint goes away: cellns fails acme over to b ...
    toy.close();
    assert!(
        wait_until(RELOAD, || a_of(cellns.dns, &acme) == ips(&["192.0.2.20"])),
        "{}",
        context("cellns did not fail over")
    );
    let serial = dns::serial(cellns.dns, origin).expect("serial");
    assert!(serial > first);
    // ... and the secondary follows, told by NOTIFY.
    assert!(
        wait_until(RELOAD, || a_of(secondary.addr, &acme)
            == ips(&["192.0.2.20"])),
        "{}",
        context("the secondary did not follow the failover")
    );
    assert!(dns::serial(secondary.addr, origin) >= Some(serial));

    // Back.
    toy.open();
    assert!(
        wait_until(RELOAD, || a_of(secondary.addr, &acme)
            == ips(&["127.31.7.1"])),
        "{}",
        context("the secondary did not follow the recovery")
    );
}

/// cellns NOTIFYing an NSD secondary on a free port (another port, and so
/// another cellns, when NSD finds it taken).
fn start_pair(dir: &std::path::Path) -> (Server, Secondary) {
    let map = dir.join("map.toml");
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let notify = format!("127.0.0.1:{port}");
        let map_arg = map.display().to_string();
        let cellns = Launch::new(&[
            "--map",
            &map_arg,
            "--axfr-allow",
            "127.0.0.1",
            "--notify",
            &notify,
        ])
        .start();
        match Secondary::start(Kind::Nsd, false, dir, port, cellns.dns) {
            Ok(s) => return (cellns, s),
            Err(log) => last = log,
        }
    }
    panic!("NSD: no free port in three tries; last log:\n{last}");
}
