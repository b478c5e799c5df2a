//! Incremental zone transfers (IXFR, RFC 1995) and the fleet view.
//!
//! - NSD and Knot, secondaries of a 20,000-tenant zone (the examples of
//!   deploy/secondaries/), follow a one-tenant move by IXFR: cellns logs
//!   an IXFR of a few records to them, and Knot's own log says IXFR.
//! - A secondary cut off from NOTIFY while the zone changes three times
//!   gets one condensed IXFR when it is back; one further behind than the
//!   journal gets the whole zone. Its answers equal ours after each.
//! - kdig's IXFR over TCP and over UDP (the differences when they fit, the
//!   SOA alone when they do not, or when up to date).
//! - `GET /v1/fleet` shows a stopped secondary out of sync and in sync
//!   again after it restarts; `cellns fleet wait` exits 0 or 1 accordingly.
//! - Two primaries fed the same map (with `zone.serial`) serve the same
//!   serial and the same zone, and either answers IXFR from a serial the
//!   other served.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use cellns::map::Format;
use cellns::map::generate::{Spec, cell_name, generate_spec, tenant_cell, tenant_name};
use hickory_proto::rr::RecordType;

use crate::support::dns::{self, seen};
use crate::support::http::{KEY, api_keys_file, get_auth, scrape};
use crate::support::map::{MapDir, Mode, XFR_ORIGIN as ORIGIN};
use crate::support::secondary::{Kind, NotifyRelay, Secondary};
use crate::support::server::{Launch, Server};
use crate::support::{RELOAD, free_port, require_tool, run_cli, run_tool, wait_until};

/// Tenants of the zone: large enough that a whole-zone transfer and an
/// IXFR differ by orders of magnitude, small enough for CI.
const TENANTS: usize = 20_000;
const CELLS: usize = 20;
/// Time for a secondary to follow a change (NOTIFY, then the transfer).
const FOLLOW: Duration = Duration::from_secs(30);

/// The generated zone under the secondaries' origin, with tenants
/// `moved` (numbers) on the cell after their usual one, and `serial` as
/// `zone.serial` when given.
fn zone(moved: &[usize], serial: Option<u32>) -> String {
    let spec = Spec::new(TENANTS, CELLS, Format::Json);
    let mut text = generate_spec(&spec).replace("cells.example.test.", ORIGIN);
    for &i in moved {
        let from = cell_name(tenant_cell(&spec, i));
        let to = cell_name((tenant_cell(&spec, i) + 1) % CELLS);
        let (a, b) = (
            format!("\"{}\": \"{from}\"", tenant_name(i)),
            format!("\"{}\": \"{to}\"", tenant_name(i)),
        );
        assert!(text.contains(&a), "generated map changed shape: no {a}");
        text = text.replacen(&a, &b, 1);
    }
    if let Some(s) = serial {
        text = text.replacen(
            "\"zone\": {",
            &format!("\"zone\": {{\n    \"serial\": {s},"),
            1,
        );
        assert!(text.contains("\"serial\""), "generated map changed shape");
    }
    text
}

/// Questions whose answers must be the same on cellns and a secondary:
/// the tenants that move, a spread of others, an unknown name, the apex.
fn sample() -> Vec<(String, RecordType)> {
    let mut q: Vec<(String, RecordType)> = [1, 2, 3, 4, 5, 6, 7, 777, 10_000, TENANTS]
        .iter()
        .flat_map(|&i| {
            [RecordType::A, RecordType::AAAA].map(|t| (format!("{}.{ORIGIN}", tenant_name(i)), t))
        })
        .collect();
    q.push((format!("t999999.{ORIGIN}"), RecordType::A));
    q.push((ORIGIN.to_owned(), RecordType::NS));
    q.push((ORIGIN.to_owned(), RecordType::SOA));
    q
}

/// The sample questions whose answers differ between cellns and `theirs`.
fn differences(ours: SocketAddr, theirs: SocketAddr) -> Vec<String> {
    let mut diff = Vec::new();
    for (name, qtype) in sample() {
        let a = dns::try_query(ours, &name, qtype).map(|m| seen(&m).sorted());
        let b = dns::try_query(theirs, &name, qtype).map(|m| seen(&m).sorted());
        if a.is_none() || a != b {
            diff.push(format!("{name} {qtype}:\n  cellns: {a:?}\n  theirs: {b:?}"));
        }
    }
    diff
}

/// cellns (with `extra` flags, NOTIFYing the secondary directly or through
/// a relay) and the secondary; other ports when the secondary finds its
/// port taken.
fn start_pair(
    kind: Kind,
    map: &MapDir,
    extra: &[&str],
    relayed: bool,
) -> (Server, Secondary, Option<NotifyRelay>) {
    let mut last = String::new();
    for _ in 0..3 {
        let port = free_port();
        let to: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let relay = relayed.then(|| NotifyRelay::start(to));
        let notify = relay.as_ref().map_or(to, |r| r.addr).to_string();
        let mut args = vec![
            "--map",
            map.path.to_str().expect("utf-8 path"),
            "--axfr-allow",
            "127.0.0.1",
            "--notify",
            &notify,
        ];
        args.extend_from_slice(extra);
        let cellns = Launch::new(&args).start();
        match Secondary::start(kind, false, map.dir.path(), port, cellns.dns) {
            Ok(s) => return (cellns, s, relay),
            Err(log) => last = log,
        }
    }
    panic!("{kind:?}: no free port in three tries; last log:\n{last}");
}

fn context(cellns: &Server, secondary: &Secondary) -> String {
    format!(
        "--- secondary log:\n{}\n--- cellns log:\n{}",
        secondary.log_text(),
        cellns.logs().text()
    )
}

/// Waits until cellns serves a serial other than `before`; returns it.
fn reloaded(cellns: &Server, before: u32) -> u32 {
    let mut now = None;
    assert!(
        wait_until(RELOAD, || {
            now = dns::serial(cellns.dns, ORIGIN);
            now.is_some_and(|s| s != before)
        }),
        "cellns did not reload: {}",
        cellns.logs().text()
    );
    now.expect("serial")
}

/// Waits until the secondary serves `serial` and answers as cellns does.
fn follows(cellns: &Server, secondary: &Secondary, serial: u32, what: &str) {
    assert!(
        wait_until(FOLLOW, || dns::serial(secondary.addr, ORIGIN)
            == Some(serial)),
        "{what}: the secondary did not reach serial {serial}\n{}",
        context(cellns, secondary)
    );
    let mut diff = Vec::new();
    assert!(
        wait_until(RELOAD, || {
            diff = differences(cellns.dns, secondary.addr);
            diff.is_empty()
        }),
        "{what}: answers differ:\n{}\n{}",
        diff.join("\n"),
        context(cellns, secondary)
    );
}

/// cellns's "zone transfer done" lines for transfers of `serial`.
fn transfers_to(cellns: &Server, serial: u32) -> Vec<serde_json::Value> {
    cellns
        .logs()
        .messages("zone transfer done")
        .into_iter()
        .filter(|l| l["serial"] == serial)
        .collect()
}

fn follows_a_move_by_ixfr(kind: Kind) {
    let mut map = MapDir::named("map.json", &zone(&[], None), false);
    let (cellns, secondary, _) = start_pair(kind, &map, &[], false);
    let first = dns::serial(cellns.dns, ORIGIN).expect("serial");
    follows(&cellns, &secondary, first, "first transfer");
    let full = transfers_to(&cellns, first);
    assert!(
        full.iter()
            .any(|l| l["records"].as_u64() > Some(TENANTS as u64)),
        "the first transfer is the whole zone: {full:?}"
    );

    // One tenant moves.
    map.write(&zone(&[7], None), Mode::Rename);
    let second = reloaded(&cellns, first);
    follows(&cellns, &secondary, second, "one-tenant move");
    let done = transfers_to(&cellns, second);
    let ixfr = done
        .iter()
        .find(|l| l["kind"] == "ixfr" && l["records"].as_u64().is_some_and(|r| r > 1))
        .unwrap_or_else(|| {
            panic!(
                "no IXFR of serial {second} logged: {done:?}\n{}",
                context(&cellns, &secondary)
            )
        });
    // Four SOAs and the tenant's three records out and three in.
    assert_eq!(ixfr["records"], 10, "{ixfr}");
    assert!(ixfr["bytes"].as_u64().is_some_and(|b| b < 1000), "{ixfr}");
    assert!(
        !done.iter().any(|l| l["kind"] != "ixfr"),
        "a whole-zone transfer of {second}: {done:?}"
    );
    if kind == Kind::Knot {
        let log = secondary.log_text();
        assert!(
            log.contains("IXFR, incoming") && log.contains("finished"),
            "Knot's log shows no incoming IXFR:\n{log}"
        );
    }
    let m = scrape(cellns.http());
    assert!(m.value("cellns_xfr_transfers_total", &[("kind", "ixfr")]) >= 1.0);
    assert!(
        m.value("cellns_xfr_transfers_total", &[("kind", "axfr")])
            + m.value("cellns_xfr_transfers_total", &[("kind", "ixfr_full")])
            >= 1.0
    );
    assert!(m.value("cellns_xfr_bytes_total", &[("kind", "ixfr")]) > 0.0);
    assert!(m.value("cellns_ixfr_journal_versions", &[]) >= 1.0);
}

#[test]
fn nsd_follows_a_one_tenant_move_by_ixfr() {
    follows_a_move_by_ixfr(Kind::Nsd);
}

#[test]
fn knot_follows_a_one_tenant_move_by_ixfr() {
    follows_a_move_by_ixfr(Kind::Knot);
}

/// Three changes while NOTIFY cannot reach the secondary: one condensed
/// IXFR when it can. Then more changes than the journal holds: the whole
/// zone.
#[test]
fn a_secondary_behind_gets_a_condensed_ixfr_and_one_beyond_the_journal_the_whole_zone() {
    let mut map = MapDir::named("map.json", &zone(&[], None), false);
    let (cellns, secondary, relay) =
        start_pair(Kind::Nsd, &map, &["--ixfr-journal-versions", "3"], true);
    let relay = relay.expect("relay");
    let first = dns::serial(cellns.dns, ORIGIN).expect("serial");
    follows(&cellns, &secondary, first, "first transfer");

    // Three versions the secondary does not hear of: tenant 1 moves, 2
    // moves, 1 moves back (so the condensed IXFR carries tenant 2 only).
    relay.set_up(false);
    let mut serial = first;
    for moved in [&[1][..], &[1, 2], &[2]] {
        map.write(&zone(moved, None), Mode::Rename);
        serial = reloaded(&cellns, serial);
    }
    assert_eq!(dns::serial(secondary.addr, ORIGIN), Some(first), "it heard");
    relay.set_up(true);
    follows(&cellns, &secondary, serial, "three versions behind");
    let done = transfers_to(&cellns, serial);
    let ixfr = done
        .iter()
        .find(|l| l["kind"] == "ixfr" && l["from_serial"] == first)
        .unwrap_or_else(|| {
            panic!(
                "no IXFR from {first} to {serial}: {done:?}\n{}",
                context(&cellns, &secondary)
            )
        });
    assert_eq!(ixfr["versions"], 3, "{ixfr}");
    // Condensed: tenant 1 went and came back, only tenant 2's records:
    // four SOAs, three out, three in.
    assert_eq!(ixfr["records"], 10, "{ixfr}");

    // Four versions: further back than the journal's three.
    relay.set_up(false);
    let behind = serial;
    for moved in [&[3][..], &[3, 4], &[3, 4, 5], &[4, 5, 6]] {
        map.write(&zone(moved, None), Mode::Rename);
        serial = reloaded(&cellns, serial);
    }
    relay.set_up(true);
    follows(&cellns, &secondary, serial, "beyond the journal");
    let done = transfers_to(&cellns, serial);
    assert!(
        done.iter()
            .any(|l| l["kind"] == "ixfr_full" && l["records"].as_u64() > Some(TENANTS as u64)),
        "no whole-zone answer to the IXFR from {behind}: {done:?}"
    );
    assert!(cellns.logged("the journal does not reach back"));
}

/// kdig's IXFR answers as `(transport, records)`.
fn kdig_ixfr(server: SocketAddr, serial: u32, udp: bool) -> (String, Vec<String>) {
    let mut args = vec![
        "@127.0.0.1".to_owned(),
        "-p".to_owned(),
        server.port().to_string(),
        format!("IXFR={serial}"),
        ORIGIN.to_owned(),
        "+nocomments".to_owned(),
        "+nostats".to_owned(),
        "+noquestion".to_owned(),
    ];
    if udp {
        args.push("+notcp".to_owned());
    }
    let (code, out) = run_tool("kdig", &args);
    assert_eq!(code, 0, "kdig {args:?}: {out}");
    let records = out
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (out, records)
}

#[test]
fn kdig_ixfr_over_tcp_and_udp() {
    require_tool("kdig");
    let mut map = MapDir::named("map.json", &zone(&[], None), false);
    let cellns = Launch::new(&[
        "--map",
        map.path.to_str().expect("path"),
        "--axfr-allow",
        "127.0.0.1",
    ])
    .start();
    let first = dns::serial(cellns.dns, ORIGIN).expect("serial");
    map.write(&zone(&[7], None), Mode::Rename);
    let second = reloaded(&cellns, first);
    let soas = |r: &[String]| r.iter().filter(|l| l.contains(" SOA ")).count();
    let moved = format!("{}.{ORIGIN}", tenant_name(7));
    for udp in [false, true] {
        let (out, r) = kdig_ixfr(cellns.dns, first, udp);
        assert_eq!(r.len(), 10, "udp {udp}: {out}");
        assert_eq!(soas(&r), 4, "udp {udp}: {out}");
        assert_eq!(
            r.iter().filter(|l| l.starts_with(&moved)).count(),
            6,
            "{out}"
        );
        // Up to date: the SOA alone.
        let (out, r) = kdig_ixfr(cellns.dns, second, udp);
        assert_eq!(r.len(), 1, "udp {udp}: {out}");
        assert!(r[0].contains(" SOA ") && r[0].contains(&second.to_string()));
    }
    // Many tenants moved: too big for a datagram, so UDP gets the SOA
    // alone; TCP the differences.
    let many: Vec<usize> = (100..400).collect();
    map.write(&zone(&many, None), Mode::Rename);
    let third = reloaded(&cellns, second);
    let (out, r) = kdig_ixfr(cellns.dns, second, true);
    assert_eq!(r.len(), 1, "{out}");
    assert!(r[0].contains(&third.to_string()), "{out}");
    let (out, r) = kdig_ixfr(cellns.dns, second, false);
    assert_eq!(
        r.len(),
        4 + 300 * 3 * 2 + 6,
        "{}",
        &out[..out.len().min(2000)]
    );
    // Condensed from the first version: tenant 7 back, 300 moved.
    let (_, r) = kdig_ixfr(cellns.dns, first, false);
    assert_eq!(soas(&r), 4);
    assert_eq!(r.len(), 4 + 300 * 3 * 2);
    // A serial never served: the whole zone, AXFR-style.
    let (_, r) = kdig_ixfr(cellns.dns, 12345, false);
    assert!(r.len() > TENANTS * 3, "{} records", r.len());
}

fn fleet(cellns: &Server) -> serde_json::Value {
    let r = get_auth(cellns.http(), "/v1/fleet");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

#[test]
fn fleet_shows_a_stopped_secondary_out_of_sync_and_in_sync_after_restart() {
    let mut map = MapDir::named("map.json", &zone(&[], None), false);
    let keys = api_keys_file(map.dir.path());
    let keys = keys.to_str().expect("path").to_owned();
    let (cellns, secondary, _) = start_pair(Kind::Nsd, &map, &["--api-keys", &keys], false);
    let first = dns::serial(cellns.dns, ORIGIN).expect("serial");
    follows(&cellns, &secondary, first, "first transfer");
    let url = format!("http://{}", cellns.http());
    let wait = |serial: u32, timeout: &str| {
        run_cli(&[
            "fleet",
            "wait",
            "--serial",
            &serial.to_string(),
            "--timeout",
            timeout,
            "--url",
            &url,
            "--api-key",
            KEY,
        ])
    };
    let mut f = serde_json::Value::Null;
    assert!(
        wait_until(RELOAD, || {
            f = fleet(&cellns);
            f["in_sync"] == true
        }),
        "{f:#}"
    );
    assert_eq!(f["serial"], first);
    assert_eq!(f["secondaries"][0]["address"], secondary.addr.to_string());
    assert_eq!(f["secondaries"][0]["serial"], first);
    assert!(f["secondaries"][0]["last_in_sync"].is_string(), "{f:#}");
    let (code, out, err) = wait(first, "10");
    assert_eq!(code, 0, "{out}{err}");
    // Without a key: refused at once, clearly.
    let (code, _, err) = run_cli(&["fleet", "wait", "--serial", "1", "--url", &url]);
    assert_ne!(code, 0);
    assert!(err.contains("read scope"), "{err}");

    // Stopped: out of sync, and a change cannot reach it.
    let (dir, port) = (map.dir.path().to_owned(), secondary.addr.port());
    drop(secondary);
    map.write(&zone(&[9], None), Mode::Rename);
    let second = reloaded(&cellns, first);
    assert!(
        wait_until(RELOAD, || {
            f = fleet(&cellns);
            f["serial"] == second
                && f["secondaries"][0]["in_sync"] == false
                && f["secondaries"][0]["error"].is_string()
        }),
        "{f:#}"
    );
    assert_eq!(f["in_sync"], false);
    let (code, out, err) = wait(second, "3");
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("timed out") && err.contains(&port.to_string()),
        "{err}"
    );

    // Restarted: it catches up (NOTIFY retries, or its own check at start)
    // and the fleet says so.
    let secondary = Secondary::start(Kind::Nsd, false, &dir, port, cellns.dns)
        .unwrap_or_else(|log| panic!("NSD did not restart on {port}: {log}"));
    follows(&cellns, &secondary, second, "after restart");
    assert!(
        wait_until(RELOAD, || {
            f = fleet(&cellns);
            f["in_sync"] == true && f["secondaries"][0]["serial"] == second
        }),
        "{f:#}"
    );
    assert!(f["secondaries"][0]["lag_seconds"].is_null(), "{f:#}");
    let (code, out, err) = wait(second, "20");
    assert_eq!(code, 0, "{out}{err}");
    let m = scrape(cellns.http());
    assert_eq!(
        m.value(
            "cellns_secondary_in_sync",
            &[("secondary", &secondary.addr.to_string())]
        ),
        1.0
    );
}

/// The zone of `server` by AXFR (kdig), as a set of records.
fn axfr(server: SocketAddr) -> BTreeSet<String> {
    let (code, out) = run_tool(
        "kdig",
        &[
            "@127.0.0.1".to_owned(),
            "-p".to_owned(),
            server.port().to_string(),
            "AXFR".to_owned(),
            ORIGIN.to_owned(),
            "+nocomments".to_owned(),
            "+nostats".to_owned(),
            "+noquestion".to_owned(),
        ],
    );
    assert_eq!(code, 0, "{out}");
    out.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with(';'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

#[test]
fn two_primaries_fed_the_same_map_serve_the_same_serial_and_zone() {
    let mut map = MapDir::named("map.json", &zone(&[], Some(2_000_000_001)), false);
    let path = map.path.to_str().expect("path").to_owned();
    let start = || Launch::new(&["--map", &path, "--axfr-allow", "127.0.0.1"]).start();
    let (a, b) = (start(), start());
    assert_eq!(dns::serial(a.dns, ORIGIN), Some(2_000_000_001));
    assert_eq!(dns::serial(b.dns, ORIGIN), Some(2_000_000_001));
    assert_eq!(axfr(a.dns), axfr(b.dns));
    map.write(&zone(&[5], Some(2_000_000_002)), Mode::Rename);
    for s in [&a, &b] {
        assert!(
            wait_until(RELOAD, || dns::serial(s.dns, ORIGIN) == Some(2_000_000_002)),
            "{}",
            s.logs().text()
        );
    }
    assert_eq!(axfr(a.dns), axfr(b.dns));
    // Either answers IXFR from the serial both served before.
    let (_, ra) = kdig_ixfr(a.dns, 2_000_000_001, false);
    let (_, rb) = kdig_ixfr(b.dns, 2_000_000_001, false);
    assert_eq!(ra.len(), 10, "{ra:#?}");
    assert_eq!(ra, rb);
}
