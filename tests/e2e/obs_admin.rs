//! The admin views: `/v1/tenants/{tenant}` says what DNS answers and what
//! `cellns explain` says, for listed, failed-over, hashed, unknown and
//! invalid tenants; `/v1/cells` and `/v1/map` describe the map in force;
//! `/v1/` needs a caller key while the probes and metrics do not; HTTP
//! latency is labelled by route template, never by raw path.

use std::collections::BTreeSet;
use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::dns::{Tcp, Udp};
use crate::support::http::{self, KEY2, TokenServer, get_auth, get_with_key, scrape};
use crate::support::map::{self, Map, MapDir, ORIGIN, cell_v4, cell_v6, small_cell};
use crate::support::run_cli;

/// Cells a, b (active) and c (down, fails over to b); acme listed on a,
/// beta on c; unlisted tenants hashed over a and b.
fn hash_map() -> String {
    let cell = |c: char, status: &str| {
        small_cell(c)
            .set("region", format!("r-{c}"))
            .set("status", status)
            .set("weight", 100)
    };
    Map::new(ORIGIN, "admin-1")
        .set("zone.ttl", 7)
        .cell("a", cell('a', "active"))
        .cell("b", cell('b', "active"))
        .cell("c", cell('c', "down").set("failover", "b"))
        .tenant("acme", "a")
        .tenant("beta", "c")
        .set("placement.unknown", "hash")
        .toml()
}

fn addrs(v: &serde_json::Value) -> BTreeSet<IpAddr> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect()
}

/// The cell id `cellns explain MAP TENANT` names (None: no cell).
fn explain_cli(map: &str, tenant: &str) -> Option<String> {
    let (code, out, err) = run_cli(&["explain", map, tenant]);
    let line = out
        .lines()
        .find(|l| l.starts_with("cell:"))
        .unwrap_or_else(|| panic!("no cell line from explain: {out}{err}"));
    let cell = line.trim_start_matches("cell:").trim();
    match code {
        0 => Some(cell.split(' ').next().unwrap().to_owned()),
        _ => None,
    }
}

#[test]
fn obs_tenants_view_agrees_with_dns_and_explain() {
    let map = MapDir::new(&hash_map(), false);
    let s = TokenServer::start(&["--map", &map.arg()]);
    let (dns, http) = (s.dns(), s.http());
    let mut tcp = Tcp::connect(dns);

    let mut tenants = vec!["acme".to_owned(), "beta".to_owned(), "ACME".to_owned()];
    tenants.extend((0..12).map(|i| format!("hashed-{i}")));
    let mut seen_cells = BTreeSet::new();
    for t in &tenants {
        let r = get_auth(http, &format!("/v1/tenants/{t}"));
        assert_eq!(r.status, 200, "{t}: {}", r.text());
        let v = r.json();
        let cell = v["cell"].as_str().unwrap().to_owned();
        seen_cells.insert(cell.clone());
        // The same decision as `cellns explain` on the same file.
        assert_eq!(
            explain_cli(&map.arg(), t).as_deref(),
            Some(cell.as_str()),
            "{t}: {v}"
        );
        // The same answer as DNS, over UDP and TCP.
        let qname = format!("{t}.{ORIGIN}");
        let c = cell.chars().next().unwrap();
        for (rtype, key, want) in [
            (RecordType::A, "a", cell_v4(c)),
            (RecordType::AAAA, "aaaa", cell_v6(c)),
        ] {
            let udp = Udp::new(dns).ask(&qname, rtype).unwrap();
            let over_tcp = tcp.ask(&qname, rtype).unwrap();
            assert_eq!(udp.rcode, ResponseCode::NoError, "{t} {rtype}");
            assert_eq!(udp.addrs, addrs(&v["dns"][key]), "{t} {rtype}: {v}");
            assert_eq!(over_tcp.addrs, udp.addrs, "{t} {rtype} over TCP");
            assert_eq!(udp.addrs, want, "{t} {rtype}");
        }
        assert_eq!(v["dns"]["ttl"], 7, "{v}");
        assert_eq!(
            v["dns"]["name"],
            format!("{}.{ORIGIN}", t.to_ascii_lowercase()),
            "{v}"
        );
        assert_eq!(v["map_version"], "admin-1");
        let listed = matches!(t.to_ascii_lowercase().as_str(), "acme" | "beta");
        assert_eq!(v["via"], if listed { "listed" } else { "hashed" }, "{v}");
    }
    // beta is listed on c, which is down: served by b.
    let beta = get_auth(http, "/v1/tenants/beta").json();
    assert_eq!(
        (beta["cell"].as_str(), beta["assigned"].as_str()),
        (Some("b"), Some("c")),
        "{beta}"
    );
    assert_eq!(beta["failed_over"], serde_json::json!(["c"]), "{beta}");
    assert_eq!(beta["status"], "active", "{beta}");
    // Twelve hashed tenants land on both active cells, never on c.
    assert_eq!(seen_cells, BTreeSet::from(["a".to_owned(), "b".to_owned()]));

    // Not a tenant id: 400 here, NXDOMAIN in DNS, no cell from explain.
    let r = get_auth(http, "/v1/tenants/_x");
    assert_eq!((r.status, r.error_code().as_str()), (400, "invalid_tenant"));
    let a = Udp::new(dns)
        .ask(&format!("_x.{ORIGIN}"), RecordType::A)
        .unwrap();
    assert_eq!(a.rcode, ResponseCode::NXDomain);
    assert_eq!(explain_cli(&map.arg(), "_x"), None);

    // The route label is the template: one series for every tenant asked.
    let m = scrape(http);
    assert_eq!(
        m.value(
            "cellns_http_request_duration_seconds_count",
            &[("route", "/v1/tenants/{tenant}"), ("status", "200")]
        ),
        (tenants.len() + 1) as f64
    );
    assert!(
        m.names()
            .iter()
            .all(|n| !n.contains("hashed") && !n.contains("acme")),
        "no tenant in metric names"
    );
    assert!(
        !m.0.keys()
            .any(|k| k.contains("hashed-") || k.contains("acme")),
        "no tenant in any label"
    );
}

#[test]
fn obs_unknown_tenant_is_404_and_nxdomain() {
    let map = MapDir::new(&map::small("admin-2", 'b').toml(), false);
    let s = TokenServer::start(&["--map", &map.arg()]);
    let r = get_auth(s.http(), "/v1/tenants/nobody");
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_tenant"));
    let a = Udp::new(s.dns())
        .ask(&format!("nobody.{ORIGIN}"), RecordType::A)
        .unwrap();
    assert_eq!(a.rcode, ResponseCode::NXDomain);
    assert_eq!(explain_cli(&map.arg(), "nobody"), None);
    // And a listed one, for contrast.
    let v = get_auth(s.http(), "/v1/tenants/acme").json();
    assert_eq!(v["cell"], "b", "{v}");
    assert_eq!(addrs(&v["dns"]["a"]), cell_v4('b'));
}

#[test]
fn obs_cells_and_map_views() {
    let map = MapDir::new(&hash_map(), false);
    let s = TokenServer::start(&["--map", &map.arg()]);
    let http = s.http();

    let v = get_auth(http, "/v1/cells").json();
    assert_eq!(v["map_version"], "admin-1", "{v}");
    let cells = v["cells"].as_array().unwrap();
    let ids: Vec<&str> = cells.iter().map(|c| c["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a", "b", "c"], "{v}");
    for c in cells {
        let id = c["id"].as_str().unwrap();
        let ch = id.chars().next().unwrap();
        assert_eq!(c["hostname"], format!("{id}.{ORIGIN}"), "{c}");
        assert_eq!(c["region"], format!("r-{id}"), "{c}");
        assert_eq!(c["weight"], 100, "{c}");
        assert_eq!(addrs(&c["ipv4"]), cell_v4(ch), "{c}");
        assert_eq!(addrs(&c["ipv6"]), cell_v6(ch), "{c}");
        let (status, serving, tenants) = match id {
            "a" => ("active", "a", 1),
            "b" => ("active", "b", 0),
            _ => ("down", "b", 1),
        };
        assert_eq!(c["status"], status, "{c}");
        assert_eq!(c["serving"], serving, "{c}");
        assert_eq!(c["tenants"], tenants, "{c}");
    }
    assert_eq!(cells[2]["failover"], "b");

    let v = get_auth(http, "/v1/map").json();
    assert_eq!(v["version"], "admin-1", "{v}");
    assert_eq!(v["zone"], ORIGIN, "{v}");
    assert_eq!(v["placement"], "hash", "{v}");
    assert_eq!(v["source"], map.arg(), "{v}");
    assert_eq!(
        v["counts"],
        serde_json::json!({"cells": 3, "tenants": 2,
            "cells_by_status": {"active": 2, "draining": 0, "down": 1}}),
        "{v}"
    );
    assert!(v["loaded_at"].as_str().unwrap().ends_with('Z'), "{v}");
    assert!(v["reload"]["last_error"].is_null(), "{v}");
    // The serial is the zone's.
    let soa = Udp::new(s.dns()).ask(ORIGIN, RecordType::SOA).unwrap();
    assert_eq!(v["serial"].as_u64(), soa.serial.map(u64::from), "{v}");
    let m = scrape(http);
    assert_eq!(m.value("cellns_cells", &[("status", "down")]), 1.0);
    assert_eq!(m.value("cellns_tenants", &[("cell", "c")]), 1.0);
}

#[test]
fn obs_admin_views_need_a_key_probes_do_not() {
    let map = MapDir::new(&map::small("admin-3", 'a').toml(), false);
    let s = TokenServer::start(&["--map", &map.arg()]);
    let http = s.http();
    for path in ["/v1/map", "/v1/cells", "/v1/tenants/acme"] {
        let r = get_with_key(http, path, None);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "unauthenticated"),
            "{path}"
        );
        assert!(r.header("www-authenticate").is_some(), "{path}");
        let r = get_with_key(http, path, Some("wrong"));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "invalid_api_key"),
            "{path}"
        );
        // Any configured caller may read.
        let r = get_with_key(http, path, Some(KEY2));
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = http::get(http, path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
    }
    // Admin 401s are not token errors; unknown paths are one "unmatched"
    // series, whatever the path.
    for p in ["/nope", "/v1/nope/acme", "/v2/tenants/acme"] {
        assert_eq!(http::get(http, p).status, 404, "{p}");
    }
    let m = scrape(http);
    assert!(
        m.nonzero("cellns_token_errors_total").is_empty(),
        "{:#?}",
        m.nonzero("cellns_token_errors_total")
    );
    assert_eq!(
        m.value(
            "cellns_http_request_duration_seconds_count",
            &[("route", "unmatched"), ("status", "404")]
        ),
        3.0
    );
    assert_eq!(
        m.value(
            "cellns_http_request_duration_seconds_count",
            &[("route", "/v1/map"), ("status", "401")]
        ),
        2.0
    );
}
