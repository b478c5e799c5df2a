//! Placement of unlisted tenants (`placement.unknown = "hash"`) as the
//! running server answers it equals what an independent implementation
//! computes: `tests/placement/placement.py`, written from
//! `docs/placement.md` alone. Compared on thousands of tenants over cells of
//! very different weights, then after a cell is added and after one is
//! removed (hot reloads), where each change may move only the tenants the
//! new cell wins, or only the removed cell's.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};

use hickory_proto::rr::{RData, RecordType};

use crate::support::dns::{Udp, decode, query, wire};
use crate::support::map::{Cell, Map, MapDir, Mode};
use crate::support::server::Server;
use crate::support::{EXCHANGE, RELOAD, python, repo};

const ORIGIN: &str = "place.test.";
const TENANTS: usize = 3000;

/// A cell of the test maps: its id, weight, status and the one address
/// that tells which cell answered.
struct C {
    id: &'static str,
    weight: u32,
    status: &'static str,
    ip: &'static str,
}

const fn c(id: &'static str, weight: u32, status: &'static str, ip: &'static str) -> C {
    C {
        id,
        weight,
        status,
        ip,
    }
}

fn map(version: &str, cells: &[C]) -> String {
    let mut m = Map::new(ORIGIN, version)
        .set("placement.unknown", "hash")
        .no_gate();
    for cell in cells {
        m = m.cell(
            cell.id,
            Cell::new(&format!("{}.cells.example.net.", cell.id))
                .ipv4([cell.ip])
                .set("status", cell.status)
                .set("weight", i64::from(cell.weight)),
        );
    }
    m.toml()
}

/// What the independent implementation says: tenant → cell id, over the
/// hash pool (active cells in map order; it drops weight 0 itself).
fn expected(cells: &[C], tenants: &[String]) -> BTreeMap<String, String> {
    let pool: Vec<serde_json::Value> = cells
        .iter()
        .filter(|c| c.status == "active")
        .map(|c| serde_json::json!({"id": c.id, "weight": c.weight}))
        .collect();
    let request = serde_json::json!({"cells": pool, "tenants": tenants}).to_string();
    let mut child = Command::new(python())
        .arg(repo().join("tests/placement/placement.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run tests/placement/placement.py");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), request.as_bytes())
        .expect("write the request");
    let out = child.wait_with_output().expect("placement.py output");
    assert!(out.status.success(), "placement.py failed");
    serde_json::from_slice(&out.stdout).expect("placement.py answers JSON")
}

/// What the server answers: tenant → cell id, by the answer's address.
fn served(dns: SocketAddr, cells: &[C], tenants: &[String]) -> BTreeMap<String, String> {
    let by_ip: BTreeMap<&str, &str> = cells.iter().map(|c| (c.ip, c.id)).collect();
    let udp = Udp::new(dns);
    tenants
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let id = (i as u16).wrapping_add(0x2000);
            udp.send(&wire(&query(
                id,
                &format!("{t}.{ORIGIN}"),
                RecordType::A,
                None,
            )));
            let resp = udp
                .recv_id(id.to_be_bytes(), EXCHANGE)
                .unwrap_or_else(|| panic!("no answer for {t}"));
            let m = decode(&resp);
            let [r] = &m.answers[..] else {
                panic!("{t}: {} answers: {m:?}", m.answers.len());
            };
            let RData::A(a) = &r.data else {
                panic!("{t}: {r:?}");
            };
            let ip = a.0.to_string();
            let cell = by_ip
                .get(ip.as_str())
                .unwrap_or_else(|| panic!("{t}: address {ip} is no cell's"));
            (t.clone(), (*cell).to_owned())
        })
        .collect()
}

#[track_caller]
fn assert_same(what: &str, got: &BTreeMap<String, String>, want: &BTreeMap<String, String>) {
    let differ: Vec<_> = want
        .iter()
        .filter(|(t, c)| got.get(*t) != Some(*c))
        .take(5)
        .collect();
    assert!(
        differ.is_empty(),
        "{what}: the server places differently from docs/placement.md for {differ:?} (of {})",
        want.len()
    );
}

#[test]
fn placement_matches_the_independent_implementation() {
    let tenants: Vec<String> = (0..TENANTS).map(|i| format!("tenant-{i:05}")).collect();
    let first = [
        c("a", 1, "active", "198.51.100.1"),
        c("b", 50, "active", "198.51.100.2"),
        c("c", 100, "active", "198.51.100.3"),
        c("d", 100, "draining", "198.51.100.4"),
        c("e", 0, "active", "198.51.100.5"),
        c("f", 1000, "active", "198.51.100.6"),
        c("g", 250, "active", "198.51.100.7"),
    ];
    let mut dir = MapDir::new(&map("v1", &first), false);
    let s = Server::start(&["--map", dir.path.to_str().expect("utf-8 path")]);

    let want1 = expected(&first, &tenants);
    let got1 = served(s.dns, &first, &tenants);
    assert_same("v1", &got1, &want1);
    // Weights matter: f (1000 of 1401) takes most, a (1 of 1401) few.
    let on = |m: &BTreeMap<String, String>, id: &str| m.values().filter(|c| *c == id).count();
    assert!(on(&got1, "f") > TENANTS / 2, "f has {}", on(&got1, "f"));
    assert!(on(&got1, "a") < TENANTS / 100, "a has {}", on(&got1, "a"));
    assert_eq!(
        on(&got1, "d") + on(&got1, "e"),
        0,
        "draining or weight-0 cells"
    );

    // Add h: only tenants h wins move, all to h.
    let second: Vec<C> = first
        .iter()
        .map(|x| c(x.id, x.weight, x.status, x.ip))
        .chain([c("h", 300, "active", "198.51.100.8")])
        .collect();
    dir.write(&map("v2", &second), Mode::Rename);
    s.logs()
        .wait_for("INFO", "map reloaded", RELOAD)
        .expect("v2 reloaded");
    let want2 = expected(&second, &tenants);
    let got2 = served(s.dns, &second, &tenants);
    assert_same("v2 (h added)", &got2, &want2);
    for (t, cell) in &got2 {
        assert!(
            cell == &got1[t] || cell == "h",
            "{t} moved {} → {cell}",
            got1[t]
        );
    }
    assert!(on(&got2, "h") > 0);

    // Remove b: only b's tenants move.
    let third: Vec<C> = second
        .iter()
        .filter(|x| x.id != "b")
        .map(|x| c(x.id, x.weight, x.status, x.ip))
        .collect();
    dir.write(&map("v3", &third), Mode::Rename);
    s.logs()
        .wait_for_nth("INFO", "map reloaded", 2, RELOAD)
        .expect("v3 reloaded");
    let want3 = expected(&third, &tenants);
    let got3 = served(s.dns, &third, &tenants);
    assert_same("v3 (b removed)", &got3, &want3);
    for (t, cell) in &got3 {
        assert!(
            cell == &got2[t] || got2[t] == "b",
            "{t} moved {} → {cell}",
            got2[t]
        );
    }
}
