//! `/metrics` counts exactly what was sent: a fresh server gets a known mix
//! of DNS traffic (UDP fast path, UDP general path, TCP, malformed input)
//! and token requests, and every counter is checked to the unit, per cell,
//! rcode, query type class and transport. The map gauges are checked
//! against what DNS and the map say.

use std::collections::BTreeMap;

use hickory_proto::op::{OpCode, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::dns::{
    Tcp, Udp, query, raw_header, rcode_of, tcp_exchange, udp_exchange, undecodable, wire,
};
use crate::support::http::{KEY, Metrics, TokenServer, post_token, scrape, series, token_req};
use crate::support::map::{self, MapDir, ORIGIN, cell_v4};
use crate::support::unix_now;

const Q: &str = "cellns_dns_queries_total";
const FAST: &str = "cellns_dns_fast_path_total";

fn name(label: &str) -> String {
    format!("{label}.{ORIGIN}")
}

/// `{series → value}` from `(rcode, qtype, transport, value)` rows.
fn queries(rows: &[(&str, &str, &str, f64)]) -> BTreeMap<String, f64> {
    rows.iter()
        .map(|&(rcode, qtype, transport, v)| {
            (
                series(
                    Q,
                    &[("rcode", rcode), ("qtype", qtype), ("transport", transport)],
                ),
                v,
            )
        })
        .collect()
}

fn udp(server: std::net::SocketAddr, label: &str, rtype: RecordType, want: ResponseCode) {
    let a = Udp::new(server)
        .ask(&name(label), rtype)
        .unwrap_or_else(|e| panic!("{label} {rtype}: {e}"));
    assert_eq!(a.rcode, want, "{label} {rtype} over UDP");
}

#[test]
fn obs_metrics_count_dns_and_tokens_exactly() {
    let started = unix_now();
    // Cells a and b; acme on b, f00..f19 on a; unknown tenants NXDOMAIN.
    let map = MapDir::new(&map::small("obs-1", 'b').toml(), false);
    let s = TokenServer::start(&["--map", &map.arg()]);
    let (dns, http) = (s.dns(), s.http());

    // Nothing counted yet, but every DNS series is there (at 0), so rates
    // and ratios have something to divide.
    let before = scrape(http);
    assert!(before.nonzero(Q).is_empty(), "{:#?}", before.nonzero(Q));
    assert_eq!(
        before.family(Q).len(),
        9 * 3 * 2,
        "every rcode × qtype × transport series is registered"
    );

    // --- UDP, fast path: tenant A/AAAA, NODATA, NXDOMAIN, REFUSED.
    for _ in 0..3 {
        udp(dns, "acme", RecordType::A, ResponseCode::NoError); // cell b
    }
    for _ in 0..2 {
        udp(dns, "f00", RecordType::AAAA, ResponseCode::NoError); // cell a
    }
    udp(dns, "acme", RecordType::MX, ResponseCode::NoError); // NODATA, cell b
    for _ in 0..2 {
        udp(dns, "nobody", RecordType::A, ResponseCode::NXDomain);
    }
    let refused = Udp::new(dns)
        .ask("www.example.org.", RecordType::A)
        .unwrap();
    assert_eq!(refused.rcode, ResponseCode::Refused);

    // --- UDP, general path (the hickory handler).
    let soa = Udp::new(dns).ask(ORIGIN, RecordType::SOA).unwrap();
    assert_eq!(soa.rcode, ResponseCode::NoError);
    let serial = soa.serial.expect("SOA serial");
    udp(dns, "acme", RecordType::ANY, ResponseCode::NoError); // cell b
    let mut badvers = query(0x4001, &name("acme"), RecordType::A, Some(1232));
    badvers.edns.as_mut().expect("EDNS").set_version(1);
    assert_eq!(rcode_of(&udp_exchange(dns, &wire(&badvers))), 16, "BADVERS");
    let mut status = query(0x4002, &name("acme"), RecordType::A, None);
    status.metadata.op_code = OpCode::Status;
    assert_eq!(rcode_of(&udp_exchange(dns, &wire(&status))), 4, "NOTIMP");
    // Undecodable (FORMERR from the UDP loop) and no question (FORMERR
    // from the handler).
    assert_eq!(rcode_of(&udp_exchange(dns, &undecodable(0x4003))), 1);
    let no_question = raw_header(0x4004, [0, 0, 0, 0]);
    assert_eq!(rcode_of(&udp_exchange(dns, &no_question)), 1);

    // --- TCP.
    let mut tcp = Tcp::connect(dns);
    for _ in 0..2 {
        let a = tcp.ask(&name("acme"), RecordType::A).unwrap();
        assert_eq!(a.addrs, cell_v4('b'));
    }
    assert_eq!(
        tcp.ask(&name("f01"), RecordType::A).unwrap().addrs,
        cell_v4('a')
    );
    assert_eq!(
        tcp.ask(&name("nobody"), RecordType::AAAA).unwrap().rcode,
        ResponseCode::NXDomain
    );
    drop(tcp);
    assert_eq!(rcode_of(&tcp_exchange(dns, &undecodable(0x4005))), 1);

    // --- Tokens: three issued (2 on b, 1 on a), 404, and two 401s.
    for tenant in ["acme", "acme", "f00"] {
        let r = post_token(http, Some(KEY), &token_req(tenant, 60));
        assert_eq!(r.status, 200, "{tenant}: {}", r.text());
    }
    let r = post_token(http, Some(KEY), &token_req("nobody", 60));
    assert_eq!((r.status, r.error_code().as_str()), (404, "unknown_tenant"));
    let r = post_token(http, None, &token_req("acme", 60));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "unauthenticated")
    );
    let r = post_token(http, Some("not-a-key"), &token_req("acme", 60));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_api_key")
    );

    let m = scrape(http);
    check_dns(&m);
    check_tokens(&m);
    check_map(&m, serial, started);
}

fn check_dns(m: &Metrics) {
    assert_eq!(
        m.nonzero(Q),
        queries(&[
            ("NOERROR", "A", "udp", 3.0),
            ("NOERROR", "AAAA", "udp", 2.0),
            // MX (NODATA), apex SOA, ANY
            ("NOERROR", "other", "udp", 3.0),
            ("NXDOMAIN", "A", "udp", 2.0),
            ("REFUSED", "A", "udp", 1.0),
            ("BADVERS", "A", "udp", 1.0),
            ("NOTIMP", "A", "udp", 1.0),
            ("FORMERR", "other", "udp", 2.0),
            ("NOERROR", "A", "tcp", 3.0),
            ("NXDOMAIN", "AAAA", "tcp", 1.0),
            ("FORMERR", "other", "tcp", 1.0),
        ]),
        "DNS queries by rcode, qtype and transport"
    );
    // acme: 3 A + 1 MX + 1 ANY over UDP, 2 A over TCP; f00 2 AAAA, f01 1 A.
    assert_eq!(
        m.family("cellns_dns_answers_total"),
        BTreeMap::from([
            (series("cellns_dns_answers_total", &[("cell", "a")]), 3.0),
            (series("cellns_dns_answers_total", &[("cell", "b")]), 7.0),
        ]),
        "answers per cell"
    );
    assert_eq!(m.value("cellns_dns_unknown_tenant_total", &[]), 3.0);
    // The fast path answered the 9 queries of its section, and nothing of
    // the general path's or of TCP.
    assert_eq!(m.value(FAST, &[]), 9.0, "fast-path responses");
}

fn check_tokens(m: &Metrics) {
    let issued = "cellns_tokens_issued_total";
    assert_eq!(
        m.family(issued),
        BTreeMap::from([
            (series(issued, &[("cell", "a")]), 1.0),
            (series(issued, &[("cell", "b")]), 2.0),
        ]),
        "tokens issued per cell"
    );
    let errors = "cellns_token_errors_total";
    assert_eq!(
        m.family(errors),
        BTreeMap::from([
            (series(errors, &[("reason", "unknown_tenant")]), 1.0),
            (series(errors, &[("reason", "unauthenticated")]), 1.0),
            (series(errors, &[("reason", "invalid_api_key")]), 1.0),
        ]),
        "token errors by reason"
    );
    let count = "cellns_http_request_duration_seconds_count";
    for (status, n) in [("200", 3.0), ("404", 1.0), ("401", 2.0)] {
        assert_eq!(
            m.value(count, &[("route", "/v1/tokens"), ("status", status)]),
            n,
            "POST /v1/tokens answered {status}"
        );
    }
    // Every request is in the +Inf bucket; the route is the template.
    assert_eq!(
        m.value(
            "cellns_http_request_duration_seconds_bucket",
            &[("route", "/v1/tokens"), ("status", "200"), ("le", "+Inf")]
        ),
        3.0
    );
    assert!(
        m.value(
            "cellns_http_request_duration_seconds_sum",
            &[("route", "/v1/tokens"), ("status", "200")]
        ) > 0.0
    );
}

fn check_map(m: &Metrics, serial: u32, started: f64) {
    assert_eq!(
        m.family("cellns_map_version_info"),
        BTreeMap::from([(
            series("cellns_map_version_info", &[("version", "obs-1")]),
            1.0
        )])
    );
    assert_eq!(m.value("cellns_map_serial", &[]), f64::from(serial));
    let loaded = m.value("cellns_map_loaded_timestamp_seconds", &[]);
    let now = unix_now();
    assert!(
        (started - 1.0..=now).contains(&loaded),
        "loaded at {loaded}, test ran {started}..{now}"
    );
    assert_eq!(m.value("cellns_map_last_reload_success", &[]), 1.0);
    for (result, n) in [("success", 0.0), ("failure", 0.0)] {
        assert_eq!(m.value("cellns_reload_total", &[("result", result)]), n);
    }
    for (cell, n) in [("a", 20.0), ("b", 1.0)] {
        assert_eq!(m.value("cellns_tenants", &[("cell", cell)]), n);
    }
    for (status, n) in [("active", 2.0), ("draining", 0.0), ("down", 0.0)] {
        assert_eq!(m.value("cellns_cells", &[("status", status)]), n);
    }
}

#[test]
fn obs_truncated_udp_replies_are_not_counted_per_cell_their_tcp_retry_is() {
    use crate::support::dns::{Transport, exchange};
    use crate::support::table;

    let srv = table::start();
    let (dns, http) = (srv.addr(), srv.server.http());
    let answers = |m: &Metrics| {
        m.get("cellns_dns_answers_total", &[("cell", "big")])
            .unwrap_or(0.0)
    };
    let aaaa = |transport: &str| {
        series(
            Q,
            &[
                ("rcode", "NOERROR"),
                ("qtype", "AAAA"),
                ("transport", transport),
            ],
        )
    };
    let bigco = |id: u16, payload: Option<u16>| {
        query(id, "bigco.cells.example.com.", RecordType::AAAA, payload)
    };

    // Three UDP queries whose answer does not fit (no EDNS: 512 bytes;
    // EDNS 512): TC, no answer, and nothing counted for the cell.
    for (id, payload) in [(1, None), (2, Some(512)), (3, None)] {
        let m = exchange(dns, Transport::Udp, &bigco(id, payload));
        assert!(m.metadata.truncation && m.answers.is_empty(), "{m:?}");
    }
    let m = scrape(http);
    assert_eq!(answers(&m), 0.0, "truncated replies counted for the cell");
    assert_eq!(
        m.nonzero(Q).get(&aaaa("udp")),
        Some(&3.0),
        "{:#?}",
        m.nonzero(Q)
    );

    // The client's retry over TCP gets the answer, and counts.
    let m = exchange(dns, Transport::Tcp, &bigco(4, None));
    assert_eq!(m.answers.len(), table::BIG_CELL_ADDRS);
    assert_eq!(answers(&scrape(http)), 1.0, "the TCP answer is counted");

    // And a UDP answer that fits (EDNS 1232) counts too.
    let m = exchange(dns, Transport::Udp, &bigco(5, Some(1232)));
    assert!(!m.metadata.truncation);
    let m = scrape(http);
    assert_eq!(answers(&m), 2.0, "the whole UDP answer is counted");
    assert_eq!(m.nonzero(Q).get(&aaaa("udp")), Some(&4.0));
    assert_eq!(m.nonzero(Q).get(&aaaa("tcp")), Some(&1.0));
}

/// The running server answers plain queries by the fast path: tenant A
/// queries over UDP move the fast-path counter one each, while an apex SOA
/// query, ANY, and the same tenant query over TCP (all answered, all
/// counted in `cellns_dns_queries_total`) leave it alone.
#[test]
fn obs_plain_queries_are_answered_by_the_fast_path() {
    let map = MapDir::new(&map::small("obs-fast", 'b').toml(), false);
    let s = TokenServer::start(&["--map", &map.arg()]);
    let (dns, http) = (s.dns(), s.http());
    let total = |m: &Metrics| m.nonzero(Q).values().sum::<f64>();

    let m = scrape(http);
    assert_eq!((m.value(FAST, &[]), total(&m)), (0.0, 0.0));

    // Tenant A over UDP: fast, one count per query.
    for (i, tenant) in ["acme", "f00", "f01", "acme", "f19"].iter().enumerate() {
        let a = Udp::new(dns).ask(&name(tenant), RecordType::A).unwrap();
        assert_eq!(a.rcode, ResponseCode::NoError, "{tenant}");
        assert!(!a.addrs.is_empty(), "{tenant}: no address");
        let m = scrape(http);
        assert_eq!(m.value(FAST, &[]), (i + 1) as f64, "after {tenant} A");
        assert_eq!(total(&m), (i + 1) as f64);
    }

    // The apex SOA, ANY at a tenant: answered by the general path.
    let soa = Udp::new(dns).ask(ORIGIN, RecordType::SOA).unwrap();
    assert!(soa.serial.is_some(), "SOA answer");
    udp(dns, "acme", RecordType::ANY, ResponseCode::NoError);
    // TCP never takes the fast path.
    let a = Tcp::connect(dns).ask(&name("acme"), RecordType::A).unwrap();
    assert_eq!(a.addrs, cell_v4('b'));
    let m = scrape(http);
    assert_eq!(total(&m), 8.0, "{:#?}", m.nonzero(Q));
    assert_eq!(m.value(FAST, &[]), 5.0, "the general path counted as fast");
}
