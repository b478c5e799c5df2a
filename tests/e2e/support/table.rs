//! The answer table of DESIGN.md ("What a query gets") on the table map,
//! which every DNS client of the tests (hickory, dig, unbound) is checked
//! against, and the server that serves it.

use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::dns::{Seen, TRANSPORTS, exchange, query};
use super::map::{Cell, Map};
use super::server::{Launch, Server};

/// The zone of the table map.
pub const ORIGIN: &str = "cells.example.com.";
/// IPv6 addresses of the `big` cell: enough that its AAAA answer needs
/// more than 512 bytes but still fits 1232.
pub const BIG_CELL_ADDRS: usize = 40;

/// The example map plus a cell with many IPv6 addresses (tenant `bigco`)
/// and a cell two labels below the apex, which makes `pool.<origin>` an
/// empty non-terminal.
pub fn map() -> Map {
    let ipv6 = (1..=BIG_CELL_ADDRS).map(|i| format!("2001:db8:b::{i:x}"));
    let cell = |hostname: &str| {
        Cell::new(hostname)
            .set("region", "us-east-1")
            .set("status", "active")
            .set("weight", 0)
    };
    Map::example()
        .tenant("bigco", "big")
        .tenant("pooled", "deep")
        .cell("big", cell("big.cells.example.com.").ipv6(ipv6))
        .cell(
            "deep",
            cell("a.pool.cells.example.com.").ipv4(["192.0.2.99"]),
        )
}

/// A server on the table map; the directory holding the map lives as long.
pub struct TableServer {
    /// The running server (dropped first: killed before the map goes).
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl TableServer {
    /// The DNS address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.server.dns
    }
}

/// Starts `cellns serve` on the table map.
pub fn start() -> TableServer {
    start_on("127.0.0.1:0")
}

/// Starts `cellns serve` on the table map, DNS on `listen`.
pub fn start_on(listen: &str) -> TableServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    std::fs::write(&path, map().toml()).expect("write map");
    let server = Launch::new(&["--map", path.to_str().expect("utf-8 path")])
        .dns_listen(listen)
        .start();
    TableServer { server, _dir: dir }
}

/// One row: a question and the response it must get.
#[derive(Debug, Clone)]
pub struct Row {
    /// What the row shows (for failure messages).
    pub what: &'static str,
    /// Query name.
    pub name: &'static str,
    /// Query type.
    pub qtype: RecordType,
    /// The response.
    pub want: Seen,
}

fn row(
    what: &'static str,
    name: &'static str,
    qtype: RecordType,
    rcode: ResponseCode,
    answer: &[&str],
    authority: &[&str],
    additional: &[&str],
) -> Row {
    let strings = |s: &[&str]| s.iter().map(|r| (*r).to_owned()).collect();
    Row {
        what,
        name,
        qtype,
        want: Seen {
            rcode,
            // Authoritative for everything in the zone; REFUSED is not.
            aa: rcode != ResponseCode::Refused,
            ra: false,
            tc: false,
            answer: strings(answer),
            authority: strings(authority),
            additional: strings(additional),
        },
    }
}

/// The SOA in negative answers: TTL min(apex 3600, negative 30) = 30
/// (RFC 2308 §3).
pub const NEG_SOA: &str = "cells.example.com. 30 SOA ns1.cells.example.com. hostmaster.example.com. SERIAL 300 60 1209600 30";

/// Every row of DESIGN.md's "What a query gets", on the test map.
pub fn table() -> Vec<Row> {
    use RecordType::*;
    use ResponseCode::*;
    let soa = "cells.example.com. 3600 SOA ns1.cells.example.com. hostmaster.example.com. SERIAL 300 60 1209600 30";
    vec![
        row(
            "tenant A",
            "acme.cells.example.com.",
            A,
            NoError,
            &[
                "acme.cells.example.com. 30 A 192.0.2.10",
                "acme.cells.example.com. 30 A 192.0.2.11",
            ],
            &[],
            &[],
        ),
        row(
            "tenant AAAA",
            "acme.cells.example.com.",
            AAAA,
            NoError,
            &["acme.cells.example.com. 30 AAAA 2001:db8::10"],
            &[],
            &[],
        ),
        row(
            "down cell's tenant gets the failover cell (usw2-a → use1-b)",
            "hooli.cells.example.com.",
            A,
            NoError,
            &["hooli.cells.example.com. 30 A 192.0.2.20"],
            &[],
            &[],
        ),
        row(
            "down cell's tenant gets the failover cell, AAAA",
            "hooli.cells.example.com.",
            AAAA,
            NoError,
            &["hooli.cells.example.com. 30 AAAA 2001:db8::20"],
            &[],
            &[],
        ),
        row(
            "draining cell's tenant",
            "initech.cells.example.com.",
            A,
            NoError,
            &["initech.cells.example.com. 30 A 198.51.100.10"],
            &[],
            &[],
        ),
        row(
            "out-of-zone-only cell: CNAME (A)",
            "umbrella.cells.example.com.",
            A,
            NoError,
            &["umbrella.cells.example.com. 30 CNAME apse1-a.lb.example.net."],
            &[],
            &[],
        ),
        row(
            "out-of-zone-only cell: CNAME (AAAA)",
            "umbrella.cells.example.com.",
            AAAA,
            NoError,
            &["umbrella.cells.example.com. 30 CNAME apse1-a.lb.example.net."],
            &[],
            &[],
        ),
        row(
            "in-zone cell hostname A",
            "use1-a.cells.example.com.",
            A,
            NoError,
            &[
                "use1-a.cells.example.com. 30 A 192.0.2.10",
                "use1-a.cells.example.com. 30 A 192.0.2.11",
            ],
            &[],
            &[],
        ),
        row(
            "in-zone cell hostname AAAA",
            "use1-b.cells.example.com.",
            AAAA,
            NoError,
            &["use1-b.cells.example.com. 30 AAAA 2001:db8::20"],
            &[],
            &[],
        ),
        row(
            "tenant, other type: NODATA (TXT)",
            "acme.cells.example.com.",
            TXT,
            NoError,
            &[],
            &[NEG_SOA],
            &[],
        ),
        row(
            "tenant, other type: NODATA (MX)",
            "globex.cells.example.com.",
            MX,
            NoError,
            &[],
            &[NEG_SOA],
            &[],
        ),
        row(
            "tenant whose cell has no IPv6: NODATA",
            "initech.cells.example.com.",
            AAAA,
            NoError,
            &[],
            &[NEG_SOA],
            &[],
        ),
        row(
            "unknown tenant: NXDOMAIN",
            "nobody.cells.example.com.",
            A,
            NXDomain,
            &[],
            &[NEG_SOA],
            &[],
        ),
        row(
            "deeper name under a tenant: NXDOMAIN",
            "www.acme.cells.example.com.",
            A,
            NXDomain,
            &[],
            &[NEG_SOA],
            &[],
        ),
        row(
            "empty non-terminal: NODATA",
            "pool.cells.example.com.",
            A,
            NoError,
            &[],
            &[NEG_SOA],
            &[],
        ),
        row(
            "name below the empty non-terminal",
            "a.pool.cells.example.com.",
            A,
            NoError,
            &["a.pool.cells.example.com. 30 A 192.0.2.99"],
            &[],
            &[],
        ),
        row("apex SOA", ORIGIN, SOA, NoError, &[soa], &[], &[]),
        row(
            "apex NS with glue",
            ORIGIN,
            NS,
            NoError,
            &[
                "cells.example.com. 3600 NS ns1.cells.example.com.",
                "cells.example.com. 3600 NS ns2.cells.example.com.",
            ],
            &[],
            &[
                "ns1.cells.example.com. 3600 A 192.0.2.53",
                "ns1.cells.example.com. 3600 AAAA 2001:db8::53",
                "ns2.cells.example.com. 3600 A 198.51.100.53",
            ],
        ),
        row(
            "apex, other type: NODATA",
            ORIGIN,
            A,
            NoError,
            &[],
            &[NEG_SOA],
            &[],
        ),
        row(
            "in-zone nameserver A",
            "ns1.cells.example.com.",
            A,
            NoError,
            &["ns1.cells.example.com. 3600 A 192.0.2.53"],
            &[],
            &[],
        ),
        row(
            "ANY: one RRset (RFC 8482)",
            "acme.cells.example.com.",
            ANY,
            NoError,
            &[
                "acme.cells.example.com. 30 A 192.0.2.10",
                "acme.cells.example.com. 30 A 192.0.2.11",
            ],
            &[],
            &[],
        ),
        row(
            "outside the zone: REFUSED",
            "www.example.org.",
            A,
            Refused,
            &[],
            &[],
            &[],
        ),
        row(
            "the parent zone: REFUSED",
            "example.com.",
            SOA,
            Refused,
            &[],
            &[],
            &[],
        ),
    ]
}

/// Checks a response against a row; `how` names the client and transport.
#[track_caller]
pub fn check_row(row: &Row, how: &str, got: &Seen) {
    assert_eq!(
        got, &row.want,
        "{how}: {} ({} {}): response differs from the table",
        row.what, row.name, row.qtype
    );
}

/// Asserts that the server still answers a valid query over UDP and TCP.
#[track_caller]
pub fn assert_alive(server: SocketAddr, after: &str) {
    let q = query(0x5eed, "acme.cells.example.com.", RecordType::A, None);
    for t in TRANSPORTS {
        let m = exchange(server, t, &q);
        assert_eq!(
            m.answers.len(),
            2,
            "after {after}: a valid query over {t:?} got {m:?}"
        );
    }
}
