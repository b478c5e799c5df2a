//! Health probing end to end: toy HTTP and TCP endpoints on 127.0.0.x
//! addresses that the tests flip between healthy, failing, flapping and
//! closed, probed by the real server. An endpoint leaves the answers after
//! exactly `fall` failed probes and returns after exactly `rise`
//! successes (counted by the server itself, checked against what the toy
//! endpoint answered, and observed while the next answer is held back);
//! a flapping endpoint never changes an answer; a cell with no endpoint up
//! fails over, with tokens agreeing with DNS at every step; fail-static
//! holds the answers when most cells look down.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use hickory_proto::rr::RecordType;

use crate::support::dns::Udp;
use crate::support::http::{
    ADMIN_KEY, TokenServer, Toy, ToyKind, ToyMode, get, get_auth, mint, scrape,
};
use crate::support::map::{Cell, Map, MapDir};
use crate::support::{EXCHANGE, RELOAD, wait_until};

const ORIGIN: &str = "health.example.test.";

/// A `[cells.<id>.health]` table.
pub fn health_table(
    probe: &str,
    port: u16,
    interval_ms: i64,
    timeout_ms: i64,
    rise: i64,
    fall: i64,
) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("probe".into(), probe.into());
    t.insert("port".into(), i64::from(port).into());
    if probe == "http" {
        t.insert("path".into(), "/healthz".into());
    }
    t.insert("interval_ms".into(), interval_ms.into());
    t.insert("timeout_ms".into(), timeout_ms.into());
    t.insert("rise".into(), rise.into());
    t.insert("fall".into(), fall.into());
    t.insert("min_up".into(), 1.into());
    t
}

/// The addresses a DNS A query for `name` gets.
pub fn a_of(dns: SocketAddr, name: &str) -> BTreeSet<IpAddr> {
    Udp::new(dns)
        .ask(name, RecordType::A)
        .unwrap_or_else(|e| panic!("A {name}: {e}"))
        .addrs
}

pub fn ips(list: &[&str]) -> BTreeSet<IpAddr> {
    list.iter().map(|a| a.parse().expect("ip")).collect()
}

/// Cell `cell` of `GET /v1/cells`.
pub fn cell_json(http: SocketAddr, cell: &str) -> serde_json::Value {
    let r = get_auth(http, "/v1/cells");
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["id"] == cell)
        .unwrap_or_else(|| panic!("no cell {cell}"))
        .clone()
}

/// Endpoint `addr` of cell `cell` in `GET /v1/cells`.
pub fn endpoint_json(http: SocketAddr, cell: &str, addr: &str) -> serde_json::Value {
    cell_json(http, cell)["health"]["endpoints"]
        .as_array()
        .expect("probed cell")
        .iter()
        .find(|e| e["address"] == addr)
        .unwrap_or_else(|| panic!("no endpoint {addr} in cell {cell}"))
        .clone()
}

fn n(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// Waits until every endpoint of `cell` has the verdict `up`.
fn wait_all_up(http: SocketAddr, cell: &str, logs: &dyn Fn() -> String) {
    assert!(
        wait_until(RELOAD, || {
            cell_json(http, cell)["health"]["endpoints"]
                .as_array()
                .is_some_and(|e| e.iter().all(|e| e["verdict"] == "up"))
        }),
        "{cell}'s endpoints never all up: {}\n{}",
        cell_json(http, cell),
        logs()
    );
}

/// The DNS answer for `name`, read first, and then the endpoint's
/// counters: when the counters have not moved between two reads around the
/// DNS query, the answer is the one those counters led to (a verdict is
/// counted before it is published).
fn answer_with_counters(
    http: SocketAddr,
    dns: SocketAddr,
    name: &str,
    cell: &str,
    addr: &str,
) -> (BTreeSet<IpAddr>, serde_json::Value) {
    loop {
        let before = endpoint_json(http, cell, addr);
        let answer = a_of(dns, name);
        let after = endpoint_json(http, cell, addr);
        if before["probes"] == after["probes"] {
            return (answer, after);
        }
    }
}

#[test]
fn health_http_endpoint_leaves_after_exactly_fall_and_returns_after_exactly_rise() {
    let toys = Toy::bind_all(ToyKind::Http, &["127.31.1.1", "127.31.1.2"]);
    let port = toys[0].addr.port();
    let (rise, fall) = (2u64, 3u64);
    let map = Map::new(ORIGIN, "h1")
        .cell(
            "a",
            Cell::new(&format!("a.{ORIGIN}"))
                .ipv4(["127.31.1.1", "127.31.1.2"])
                .set("failover", "b")
                .set(
                    "health",
                    health_table("http", port, 1000, 900, rise as i64, fall as i64),
                ),
        )
        .cell("b", Cell::new(&format!("b.{ORIGIN}")).ipv4(["192.0.2.20"]))
        .tenant("acme", "a");
    let dir = MapDir::new(&map.toml(), false);
    let s = TokenServer::start(&["--map", &dir.arg()]);
    let (http, dns) = (s.http(), s.dns());
    let logs = || s.server.logs().text();
    let acme = format!("acme.{ORIGIN}");
    wait_all_up(http, "a", &logs);
    assert_eq!(a_of(dns, &acme), ips(&["127.31.1.1", "127.31.1.2"]));

    // Failing: hold back the `fall`th failure.
    let toy = &toys[0];
    toy.set_holding(ToyMode::Failing, false, fall as usize);
    assert!(toy.wait_held(RELOAD), "no {fall}th probe: {}", logs());
    let switched = toy.switched_at() as u64;
    // fall - 1 failures seen: still answered.
    let (answer, e) = answer_with_counters(http, dns, &acme, "a", "127.31.1.1");
    assert_eq!(n(&e["consecutive_failures"]), fall - 1, "{e}");
    assert_eq!(e["verdict"], "up", "{e}");
    assert!(
        answer.contains(&"127.31.1.1".parse().expect("ip")),
        "{answer:?} after {} failures",
        fall - 1
    );
    // The `fall`th failure: left out; the next answer is held meanwhile.
    toy.hold_next();
    assert!(
        wait_until(RELOAD, || a_of(dns, &acme) == ips(&["127.31.1.2"])),
        "127.31.1.1 still answered after {fall} failures: {}\n{}",
        endpoint_json(http, "a", "127.31.1.1"),
        logs()
    );
    let e = endpoint_json(http, "a", "127.31.1.1");
    assert_eq!(e["verdict"], "down", "{e}");
    assert_eq!(e["last_error"], "HTTP 503", "{e}");
    // The server changed its verdict at its `fall`th probe after the switch,
    // and the toy answered exactly `fall` failures by then.
    let at = n(&e["changed_at_probe"]);
    assert_eq!(at, switched + fall, "{e}");
    let answers = toy.answers();
    assert!(
        answers[switched as usize..at as usize].iter().all(|ok| !ok),
        "{answers:?}"
    );
    assert_eq!(n(&e["consecutive_failures"]), fall, "{e}");
    // The cell still serves (one endpoint up, min_up 1): same cell in tokens.
    assert_eq!(
        mint(http, "acme")["cell"],
        format!("a.{}", ORIGIN.trim_end_matches('.'))
    );

    // Healthy again: hold back the `rise`th success.
    toy.set_holding(ToyMode::Healthy, true, rise as usize);
    assert!(toy.wait_held(RELOAD), "no {rise}th probe: {}", logs());
    let switched = toy.switched_at() as u64;
    let (answer, e) = answer_with_counters(http, dns, &acme, "a", "127.31.1.1");
    assert_eq!(n(&e["consecutive_successes"]), rise - 1, "{e}");
    assert_eq!(
        answer,
        ips(&["127.31.1.2"]),
        "back after {} successes",
        rise - 1
    );
    toy.hold_next();
    assert!(
        wait_until(RELOAD, || a_of(dns, &acme)
            == ips(&["127.31.1.1", "127.31.1.2"])),
        "127.31.1.1 not back after {rise} successes: {}\n{}",
        endpoint_json(http, "a", "127.31.1.1"),
        logs()
    );
    let e = endpoint_json(http, "a", "127.31.1.1");
    assert_eq!(e["verdict"], "up", "{e}");
    assert_eq!(n(&e["changed_at_probe"]), switched + rise, "{e}");
    assert_eq!(n(&e["consecutive_successes"]), rise, "{e}");
    toy.release();

    // The metrics say the same.
    let m = scrape(http);
    let up = |addr: &str| {
        m.value(
            "cellns_health_endpoint_up",
            &[("cell", "a"), ("endpoint", addr)],
        )
    };
    assert_eq!((up("127.31.1.1"), up("127.31.1.2")), (1.0, 1.0));
    assert!(
        m.value(
            "cellns_health_probes_total",
            &[("cell", "a"), ("result", "failure")]
        ) >= fall as f64
    );
    assert!(
        m.value(
            "cellns_health_probe_duration_seconds_count",
            &[("cell", "a")]
        ) > 0.0
    );
    assert_eq!(m.value("cellns_health_fail_static", &[]), 0.0);
}

#[test]
fn health_flapping_endpoint_never_changes_the_answer() {
    let toys = Toy::bind_all(ToyKind::Http, &["127.31.2.1", "127.31.2.2"]);
    let port = toys[0].addr.port();
    let map = Map::new(ORIGIN, "h2")
        .cell(
            "a",
            Cell::new(&format!("a.{ORIGIN}"))
                .ipv4(["127.31.2.1", "127.31.2.2"])
                .set("failover", "b")
                .set("health", health_table("http", port, 500, 450, 2, 2)),
        )
        .cell("b", Cell::new(&format!("b.{ORIGIN}")).ipv4(["192.0.2.20"]))
        .tenant("acme", "a");
    let dir = MapDir::new(&map.toml(), false);
    let s = TokenServer::start(&["--map", &dir.arg()]);
    let (http, dns) = (s.http(), s.dns());
    let logs = || s.server.logs().text();
    let acme = format!("acme.{ORIGIN}");
    wait_all_up(http, "a", &logs);
    let serial = crate::support::dns::serial(dns, ORIGIN).expect("serial");
    let before = endpoint_json(http, "a", "127.31.2.1");

    toys[0].set(ToyMode::Flapping);
    // A probe may have been answered healthy just before the switch.
    let start = n(&before["probes"]) + 2;
    let both = ips(&["127.31.2.1", "127.31.2.2"]);
    let mut checked = 0;
    let flapped = wait_until(6 * RELOAD, || {
        let (answer, e) = answer_with_counters(http, dns, &acme, "a", "127.31.2.1");
        assert_eq!(
            answer,
            both,
            "a flapping endpoint changed the answer: {e}\n{}",
            logs()
        );
        if n(&e["probes"]) > start {
            assert!(
                n(&e["consecutive_failures"]) < 2 && n(&e["consecutive_successes"]) < 2,
                "two alike in a row: {e}"
            );
        }
        checked += 1;
        n(&e["probes"]) >= start + 12
    });
    assert!(
        flapped,
        "fewer than 12 probes: {}",
        endpoint_json(http, "a", "127.31.2.1")
    );
    let answers = toys[0].answers();
    let since = toys[0].switched_at();
    assert!(
        answers[since..].windows(2).all(|w| w[0] != w[1]),
        "the toy did not alternate: {answers:?}"
    );
    let e = endpoint_json(http, "a", "127.31.2.1");
    assert_eq!(e["verdict"], "up", "{e}");
    assert_eq!(e["changed_at_probe"], before["changed_at_probe"], "{e}");
    assert!(n(&e["failures"]) >= 5, "{e}");
    // No new zone version either.
    assert_eq!(crate::support::dns::serial(dns, ORIGIN), Some(serial));
    assert!(checked > 0);
}

/// A map of cells `ids` with the addresses `addrs` probed over TCP on
/// `port` (rise 2, fall 2), failing over in a ring, tenant `t-<id>` on
/// each.
fn ring(ids: &[&str], addrs: &[Vec<&str>], port: u16, version: &str) -> Map {
    let mut m = Map::new(ORIGIN, version);
    for (i, id) in ids.iter().enumerate() {
        let next = ids[(i + 1) % ids.len()];
        m = m
            .cell(
                id,
                Cell::new(&format!("{id}.{ORIGIN}"))
                    .ipv4(addrs[i].iter().copied())
                    .set("failover", next)
                    .set("health", health_table("tcp", port, 500, 400, 2, 2)),
            )
            .tenant(&format!("t-{id}"), id);
    }
    m
}

/// The hostname (token `cell` claim form) of cell `id`.
fn host(id: &str) -> String {
    format!("{id}.{}", ORIGIN.trim_end_matches('.'))
}

#[test]
fn health_tcp_cell_with_no_endpoint_up_fails_over_and_tokens_agree_with_dns() {
    let mut toys = Toy::bind_all(ToyKind::Tcp, &["127.31.3.1", "127.31.3.2", "127.31.3.3"]);
    let port = toys[0].addr.port();
    let map = ring(
        &["a", "b"],
        &[vec!["127.31.3.1", "127.31.3.2"], vec!["127.31.3.3"]],
        port,
        "h3",
    );
    let dir = MapDir::new(&map.toml(), false);
    let state = tempfile::tempdir().expect("tempdir");
    let s = TokenServer::start(&[
        "--map",
        &dir.arg(),
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    let (http, dns) = (s.http(), s.dns());
    let logs = || s.server.logs().text();
    let name = format!("t-a.{ORIGIN}");
    wait_all_up(http, "a", &logs);
    // DNS and the token name the same cell, at every step.
    let agree = |addrs: &[&str], cell: &str| {
        assert!(
            wait_until(RELOAD, || a_of(dns, &name) == ips(addrs)),
            "t-a never answered {addrs:?}: {:?}\n{}",
            a_of(dns, &name),
            logs()
        );
        assert_eq!(mint(http, "t-a")["cell"], host(cell), "DNS says {addrs:?}");
        let t = get_auth(http, "/v1/tenants/t-a").json();
        assert_eq!(t["cell"], cell, "{t}");
        t
    };
    agree(&["127.31.3.1", "127.31.3.2"], "a");

    // One endpoint closed: it leaves after `fall` (2) refused connections.
    toys[0].close();
    agree(&["127.31.3.2"], "a");
    let e = endpoint_json(http, "a", "127.31.3.1");
    assert_eq!(e["last_error"], "connection refused", "{e}");
    // Counted by the server: the verdict changed at the 2nd consecutive
    // failure, and every probe since failed too.
    let failures = n(&e["consecutive_failures"]);
    assert!(failures >= 2, "{e}");
    assert_eq!(
        n(&e["probes"]) - n(&e["changed_at_probe"]),
        failures - 2,
        "{e}"
    );

    // None up: the cell is unhealthy and its tenants fail over to b.
    toys[1].close();
    let t = agree(&["127.31.3.3"], "b");
    let why = t["why"].as_str().expect("why");
    assert!(
        why.contains("failed over: `a` unhealthy since ")
            && why.contains("probes failed: connection refused"),
        "{why}"
    );
    assert!(why.ends_with("served by `b`"), "{why}");
    let a = cell_json(http, "a");
    assert_eq!(
        (a["status"].as_str(), a["status_source"].as_str()),
        (Some("down"), Some("health")),
        "{a}"
    );
    assert_eq!(a["health"]["healthy"], false, "{a}");
    assert_eq!(a["serving"], "b", "{a}");
    let m = scrape(http);
    assert_eq!(
        m.value("cellns_cell_status", &[("cell", "a"), ("status", "down")]),
        1.0
    );
    assert_eq!(
        m.value(
            "cellns_cell_status_source",
            &[("cell", "a"), ("source", "health")]
        ),
        1.0
    );
    assert_eq!(
        m.value(
            "cellns_health_endpoint_up",
            &[("cell", "a"), ("endpoint", "127.31.3.2")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "cellns_health_transitions_total",
            &[("cell", "a"), ("to", "unhealthy")]
        ),
        1.0
    );

    // Back: after `rise` successes of one endpoint the cell serves again.
    toys[1].open();
    agree(&["127.31.3.2"], "a");
    toys[0].open();
    agree(&["127.31.3.1", "127.31.3.2"], "a");

    // Audited: the cell's transitions and its status changes.
    let audit = std::fs::read_to_string(state.path().join("audit.jsonl")).expect("audit log");
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let has = |what: &str, f: &dyn Fn(&serde_json::Value) -> bool| {
        lines.iter().any(|l| l["what"] == what && f(l))
    };
    assert!(
        has("cell_unhealthy", &|l| l["cell"] == "a"
            && l["actor"] == "health"),
        "{audit}"
    );
    assert!(has("cell_healthy", &|l| l["cell"] == "a"), "{audit}");
    assert!(
        has("status", &|l| l["cell"] == "a"
            && l["after"] == "down (health)"),
        "{audit}"
    );
    assert!(
        has("status", &|l| l["cell"] == "a"
            && l["after"] == "active (map)"),
        "{audit}"
    );
}

#[test]
fn health_fail_static_holds_the_answers_when_most_cells_look_down() {
    let ids = ["a", "b", "c", "d"];
    let addrs = ["127.31.4.1", "127.31.4.2", "127.31.4.3", "127.31.4.4"];
    let mut toys = Toy::bind_all(ToyKind::Tcp, &addrs);
    let port = toys[0].addr.port();
    let map = ring(
        &ids,
        &addrs.iter().map(|a| vec![*a]).collect::<Vec<_>>(),
        port,
        "h4",
    );
    let dir = MapDir::new(&map.toml(), false);
    let state = tempfile::tempdir().expect("tempdir");
    let s = TokenServer::start(&[
        "--map",
        &dir.arg(),
        "--state-dir",
        state.path().to_str().expect("utf-8"),
    ]);
    let (http, dns) = (s.http(), s.dns());
    let logs = || s.server.logs().text();
    for id in ids {
        wait_all_up(http, id, &logs);
    }
    let answers = |want: [&str; 4]| {
        let mut last = Vec::new();
        let ok = wait_until(RELOAD, || {
            last = ids
                .iter()
                .map(|id| a_of(dns, &format!("t-{id}.{ORIGIN}")))
                .collect();
            last.iter().zip(want).all(|(got, w)| *got == ips(&[w]))
        });
        assert!(ok, "answers {last:?}, want {want:?}\n{}", logs());
    };
    let ready = || get(http, "/readyz").json();

    // One of four cells down: health applies, t-a fails over to b.
    toys[0].close();
    answers([addrs[1], addrs[1], addrs[2], addrs[3]]);
    assert_eq!(ready()["fail_static"], false);

    // Three of four: more than half. Health is ignored for every cell: the
    // answers are the map's, a's included.
    toys[1].close();
    toys[2].close();
    answers(addrs);
    assert!(
        s.server
            .logs()
            .wait_for("WARN", "fail-static entered", EXCHANGE)
            .is_some(),
        "{}",
        logs()
    );
    let r = get(http, "/readyz");
    assert_eq!(
        (r.status, &r.json()["fail_static"]),
        (200, &serde_json::json!(true))
    );
    assert_eq!(scrape(http).value("cellns_health_fail_static", &[]), 1.0);
    let cells = get_auth(http, "/v1/cells").json();
    assert_eq!(cells["fail_static"], true, "{cells}");
    assert_eq!(cells["health"]["unhealthy"], 3, "{cells}");
    assert_eq!(mint(http, "t-a")["cell"], host("a"));
    let c = cell_json(http, "c");
    assert_eq!(
        (
            c["status_source"].as_str(),
            c["health"]["healthy"].as_bool()
        ),
        (Some("map"), Some(false)),
        "{c}"
    );

    // Two come back: one of four again, health applies again.
    toys[1].open();
    toys[2].open();
    answers([addrs[1], addrs[1], addrs[2], addrs[3]]);
    assert!(
        s.server
            .logs()
            .wait_for("WARN", "fail-static exited", EXCHANGE)
            .is_some(),
        "{}",
        logs()
    );
    assert_eq!(ready()["fail_static"], false);
    assert_eq!(scrape(http).value("cellns_health_fail_static", &[]), 0.0);
    let audit = std::fs::read_to_string(state.path().join("audit.jsonl")).expect("audit log");
    assert!(
        audit.contains("\"what\":\"fail_static_entered\""),
        "{audit}"
    );
    assert!(audit.contains("\"what\":\"fail_static_exited\""), "{audit}");
    // An operator key (read,admin) sees the views too.
    assert_eq!(
        crate::support::http::get_with_key(http, "/v1/cells", Some(ADMIN_KEY)).status,
        200
    );
}
