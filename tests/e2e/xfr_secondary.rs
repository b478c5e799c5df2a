//! cellns as the primary of real secondaries: NSD and Knot, configured
//! from the examples in deploy/secondaries/, transfer the zone, answer
//! exactly as cellns does (a failed-over tenant, a CNAME tenant, unknown
//! names, NODATA, cell hostnames, the apex), and follow a map change within
//! seconds through NOTIFY: the SOA refresh and retry are an hour, so
//! nothing else can explain it.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};

use crate::support::dns::{self, seen};
use crate::support::map::{self, XFR_ORIGIN as ORIGIN};
use crate::support::secondary::{Kind, Secondary, key_file};
use crate::support::server::{Launch, Server};
use crate::support::{RELOAD, STARTUP, free_port, replace_file, repo, require_tool, wait_until};

/// Time allowed for the first transfer (start-up of both servers included).
const FIRST_TRANSFER: Duration = STARTUP;
/// Time allowed between cellns serving a change and the secondary serving
/// it: NOTIFY, then a transfer (the SOA timers are an hour).
const VIA_NOTIFY: Duration = RELOAD;
/// Time for every answer to agree once the secondary has the serial.
const SETTLE: Duration = RELOAD;

/// Questions whose answers must be the same on cellns and the secondary.
fn sample() -> Vec<(String, RecordType)> {
    let mut q = Vec::new();
    for tenant in ["acme", "downco", "cnameco", "f00", "f17", "nobody"] {
        for t in [RecordType::A, RecordType::AAAA, RecordType::TXT] {
            q.push((format!("{tenant}.{}", ORIGIN), t));
        }
    }
    for (name, t) in [
        (format!("a.{}", ORIGIN), RecordType::A),
        (format!("a.{}", ORIGIN), RecordType::AAAA),
        (format!("c.{}", ORIGIN), RecordType::A),
        (format!("ns1.{}", ORIGIN), RecordType::A),
        (ORIGIN.to_owned(), RecordType::NS),
        (format!("x.acme.{}", ORIGIN), RecordType::A),
    ] {
        q.push((name, t));
    }
    q
}

/// The sample questions whose answers differ between `ours` (cellns) and
/// `theirs` (the secondary), described: flags, rcode, and all three
/// sections (sorted: their order carries no meaning).
fn differences(ours: SocketAddr, theirs: SocketAddr) -> Vec<String> {
    let mut diff = Vec::new();
    for (name, qtype) in sample() {
        let a = dns::try_query(ours, &name, qtype).map(|m| seen(&m).sorted());
        let b = dns::try_query(theirs, &name, qtype).map(|m| seen(&m).sorted());
        if a.is_none() || a != b {
            diff.push(format!(
                "{name} {qtype}:\n  cellns:    {a:?}\n  secondary: {b:?}"
            ));
        }
    }
    diff
}

/// cellns (NOTIFYing `port`) and the secondary on `port`; another port
/// (and so another cellns) when the secondary finds it taken.
fn start_pair(kind: Kind, tsig: bool, dir: &std::path::Path) -> (Server, Secondary) {
    let map = dir.join("map.toml");
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let mut args = vec![
            "--map".to_owned(),
            map.display().to_string(),
            "--axfr-allow".to_owned(),
            "127.0.0.1".to_owned(),
            "--notify".to_owned(),
            format!("127.0.0.1:{port}"),
        ];
        if tsig {
            args.push("--tsig-key".to_owned());
            args.push(key_file(dir).display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let cellns = Launch::new(&args).start();
        match Secondary::start(kind, tsig, dir, port, cellns.dns) {
            Ok(secondary) => return (cellns, secondary),
            Err(log) => last = log,
        }
    }
    panic!("{kind:?}: no free port in three tries; last log:\n{last}");
}

fn follows_through_notify(kind: Kind, tsig: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("map.toml");
    std::fs::write(&map, map::xfr("v1", 'a').toml()).expect("write map");
    let (cellns, secondary) = start_pair(kind, tsig, dir.path());
    let context = |what: &str| {
        format!(
            "{kind:?} (tsig: {tsig}): {what}\n--- secondary log:\n{}\n--- cellns log:\n{}",
            secondary.log_text(),
            cellns.logs().text()
        )
    };

    // The first transfer.
    let first = dns::serial(cellns.dns, ORIGIN).expect("cellns answers its SOA");
    assert!(
        wait_until(FIRST_TRANSFER, || dns::serial(secondary.addr, ORIGIN)
            == Some(first)),
        "{}",
        context(&format!(
            "no transfer of serial {first} within {FIRST_TRANSFER:?}"
        ))
    );

    // Same answers, including the cases only cellns's logic produces.
    // (Polled: NSD answers from its previous server process for a moment
    // after loading a transfer.)
    let mut diff = Vec::new();
    assert!(
        wait_until(SETTLE, || {
            diff = differences(cellns.dns, secondary.addr);
            diff.is_empty()
        }),
        "{}",
        context(&format!("answers differ:\n{}", diff.join("\n")))
    );
    let downco = dns::try_query(secondary.addr, &format!("downco.{}", ORIGIN), RecordType::A)
        .expect("answer");
    assert_eq!(
        downco
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect::<Vec<_>>(),
        ["192.0.2.20"],
        "the down cell's tenant is served by its failover cell"
    );
    let cname = dns::try_query(
        secondary.addr,
        &format!("cnameco.{}", ORIGIN),
        RecordType::A,
    )
    .expect("answer");
    assert!(
        matches!(cname.answers.first().map(|r| &r.data), Some(RData::CNAME(c)) if c.0.to_ascii() == "d.lb.example.net."),
        "{:?}",
        cname.answers
    );
    let nobody = dns::try_query(secondary.addr, &format!("nobody.{}", ORIGIN), RecordType::A)
        .expect("answer");
    assert_eq!(nobody.metadata.response_code, ResponseCode::NXDomain);

    // Move acme from a to b: cellns reloads, NOTIFYs, the secondary
    // transfers and answers the new cell.
    replace_file(&map, &map::xfr("v2", 'b').toml());
    let acme = format!("acme.{}", ORIGIN);
    let moved = |server| {
        dns::try_query(server, &acme, RecordType::A)
            .is_some_and(|m| m.answers.len() == 1 && m.answers[0].data.to_string() == "192.0.2.20")
    };
    assert!(
        wait_until(RELOAD, || moved(cellns.dns)),
        "{}",
        context("cellns did not reload the map")
    );
    let reloaded = Instant::now();
    let second = dns::serial(cellns.dns, ORIGIN).expect("cellns SOA");
    assert_ne!(second, first, "a reload changes the serial");
    assert!(
        wait_until(VIA_NOTIFY, || moved(secondary.addr)
            && dns::serial(secondary.addr, ORIGIN) == Some(second)),
        "{}",
        context(&format!(
            "the secondary did not follow within {VIA_NOTIFY:?} (SOA refresh is 3600 s: only NOTIFY can do it)"
        ))
    );
    let lag = reloaded.elapsed();
    assert!(
        cellns.logged("sending NOTIFY"),
        "{}",
        context("no NOTIFY logged")
    );
    // And still the same answers everywhere.
    assert!(
        wait_until(SETTLE, || {
            diff = differences(cellns.dns, secondary.addr);
            diff.is_empty()
        }),
        "{}",
        context(&format!(
            "answers differ after the change:\n{}",
            diff.join("\n")
        ))
    );
    eprintln!("{kind:?} (tsig: {tsig}) served the change {lag:?} after cellns");
}

#[test]
fn nsd_with_tsig_follows_cellns_through_notify() {
    follows_through_notify(Kind::Nsd, true);
}

#[test]
fn nsd_by_address_follows_cellns_through_notify() {
    follows_through_notify(Kind::Nsd, false);
}

#[test]
fn knot_with_tsig_follows_cellns_through_notify() {
    follows_through_notify(Kind::Knot, true);
}

#[test]
fn knot_by_address_follows_cellns_through_notify() {
    follows_through_notify(Kind::Knot, false);
}

/// The examples as shipped are valid for the servers' own checkers.
#[test]
fn secondary_examples_pass_the_servers_config_checks() {
    let dir = repo().join("deploy/secondaries");
    let nsd = require_tool("nsd-checkconf");
    let knotc = require_tool("knotc");
    for (tool, args, file) in [
        (&nsd, vec![], "nsd.conf"),
        (&nsd, vec![], "nsd-tsig.conf"),
        (&knotc, vec!["-c"], "knot.conf"),
        (&knotc, vec!["-c"], "knot-tsig.conf"),
    ] {
        let path = dir.join(file);
        let mut cmd = std::process::Command::new(tool);
        cmd.args(&args).arg(&path);
        if tool == &knotc {
            cmd.arg("conf-check");
        }
        let out = cmd.output().expect("run the config checker");
        assert!(
            out.status.success(),
            "{file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
