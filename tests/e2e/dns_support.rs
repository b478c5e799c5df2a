//! Support for the DNS end-to-end tests: the test map, raw UDP/TCP
//! exchanges, and the answer table of DESIGN.md ("What a query gets") that
//! every client (hickory, dig, unbound) is checked against.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, Record, RecordType};

use crate::common::{self, Server};

/// The zone of the test map.
pub const ORIGIN: &str = "cells.example.com.";
/// IPv6 addresses of the `big` cell: enough that its AAAA answer needs
/// more than 512 bytes but still fits 1232.
pub const BIG_CELL_ADDRS: usize = 40;
/// How long any single exchange may take before the test fails.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// The example map plus a cell with many IPv6 addresses (tenant `bigco`)
/// and a cell two labels below the apex, which makes `pool.<origin>` an
/// empty non-terminal.
pub fn test_map_text() -> String {
    let example = std::fs::read_to_string(common::example_map()).expect("read example map");
    let ipv6: Vec<String> = (1..=BIG_CELL_ADDRS)
        .map(|i| format!("\"2001:db8:b::{i:x}\""))
        .collect();
    let tenants = "[tenants]\nbigco = \"big\"\npooled = \"deep\"\n";
    assert!(example.contains("[tenants]\n"), "example map has [tenants]");
    let mut text = example.replacen("[tenants]\n", tenants, 1);
    text.push_str(&format!(
        "\n[cells.big]\nhostname = \"big.cells.example.com.\"\nipv6 = [{}]\n\
         region = \"us-east-1\"\nstatus = \"active\"\nweight = 0\n\
         \n[cells.deep]\nhostname = \"a.pool.cells.example.com.\"\nipv4 = [\"192.0.2.99\"]\n\
         region = \"us-east-1\"\nstatus = \"active\"\nweight = 0\n",
        ipv6.join(", ")
    ));
    text
}

/// A server on the test map; the tempdir holding the map lives as long.
pub struct DnsServer {
    /// The running server (dropped first: killed before the map goes).
    pub server: Server,
    _dir: tempfile::TempDir,
}

impl DnsServer {
    /// The DNS address (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.server.dns
    }
}

/// Starts `cellns serve` on the test map.
pub fn start() -> DnsServer {
    let dir = tempfile::tempdir().expect("tempdir");
    let map: PathBuf = dir.path().join("map.toml");
    std::fs::write(&map, test_map_text()).expect("write map");
    let server = Server::start(&["--map", map.to_str().expect("utf-8 path")]);
    DnsServer { server, _dir: dir }
}

/// A query message: one question, RD clear, EDNS with `payload` if given.
pub fn query(id: u16, name: &str, qtype: RecordType, payload: Option<u16>) -> Message {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    if let Some(size) = payload {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m
}

/// Encodes a message.
pub fn wire(m: &Message) -> Vec<u8> {
    m.to_vec().expect("encode query")
}

/// A UDP socket connected to `server`, with the exchange timeout.
pub fn udp_socket(server: SocketAddr) -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    s.connect(server).expect("connect UDP");
    s.set_read_timeout(Some(EXCHANGE_TIMEOUT))
        .expect("read timeout");
    s
}

/// Sends `query` over UDP and returns the response with the same ID.
pub fn udp_exchange(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let s = udp_socket(server);
    s.send(query).expect("send UDP");
    udp_recv_id(&s, [query[0], query[1]])
        .unwrap_or_else(|| panic!("no UDP response within {EXCHANGE_TIMEOUT:?}"))
}

/// Receives datagrams until one carries `id`; `None` on timeout.
pub fn udp_recv_id(s: &UdpSocket, id: [u8; 2]) -> Option<Vec<u8>> {
    let deadline = Instant::now() + EXCHANGE_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    while Instant::now() < deadline {
        match s.recv(&mut buf) {
            Ok(n) if n >= 2 && buf[..2] == id => return Some(buf[..n].to_vec()),
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// A TCP connection to `server` with the exchange timeout.
pub fn tcp_connect(server: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&server, EXCHANGE_TIMEOUT).expect("connect TCP");
    s.set_read_timeout(Some(EXCHANGE_TIMEOUT))
        .expect("read timeout");
    s.set_write_timeout(Some(EXCHANGE_TIMEOUT))
        .expect("write timeout");
    s
}

/// Writes one length-prefixed message (RFC 1035 §4.2.2).
pub fn tcp_send(s: &mut TcpStream, msg: &[u8]) {
    let len = u16::try_from(msg.len()).expect("message fits a TCP frame");
    let mut framed = len.to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    s.write_all(&framed).expect("write TCP");
}

/// Reads one length-prefixed message; `None` when the server closed the
/// connection (EOF or reset) before a whole message arrived.
pub fn tcp_recv(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if is_closed(&e) => return None,
        Err(e) => panic!("reading TCP length: {e}"),
    }
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    match s.read_exact(&mut msg) {
        Ok(()) => Some(msg),
        Err(e) if is_closed(&e) => None,
        Err(e) => panic!("reading TCP message: {e}"),
    }
}

fn is_closed(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
    )
}

/// Sends `query` over a new TCP connection and returns the response.
pub fn tcp_exchange(server: SocketAddr, query: &[u8]) -> Vec<u8> {
    let mut s = tcp_connect(server);
    tcp_send(&mut s, query);
    tcp_recv(&mut s).expect("TCP response")
}

/// Decodes a response.
pub fn decode(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap_or_else(|e| panic!("undecodable response ({e}): {bytes:02x?}"))
}

/// Sends `query` over `transport` and decodes the response.
pub fn exchange(server: SocketAddr, transport: Transport, query: &Message) -> Message {
    let bytes = wire(query);
    decode(&match transport {
        Transport::Udp => udp_exchange(server, &bytes),
        Transport::Tcp => tcp_exchange(server, &bytes),
    })
}

/// UDP or TCP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

/// Both transports.
pub const TRANSPORTS: [Transport; 2] = [Transport::Udp, Transport::Tcp];

/// A response as the table states it: what every client must see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// RCODE (with the EDNS extension).
    pub rcode: ResponseCode,
    /// AA flag.
    pub aa: bool,
    /// RA flag.
    pub ra: bool,
    /// TC flag.
    pub tc: bool,
    /// Answer section, normalised (see [`norm`]).
    pub answer: Vec<String>,
    /// Authority section.
    pub authority: Vec<String>,
    /// Additional section, without the OPT pseudo-record.
    pub additional: Vec<String>,
}

/// One record as `owner ttl TYPE rdata`, owner lowercased, single spaces,
/// the SOA serial replaced by `SERIAL` (it is time-based).
pub fn norm(owner: &str, ttl: u32, rtype: &str, rdata: &str) -> String {
    let mut fields: Vec<&str> = rdata.split_whitespace().collect();
    if rtype == "SOA" && fields.len() == 7 {
        fields[2] = "SERIAL";
    }
    format!(
        "{} {ttl} {rtype} {}",
        owner.to_ascii_lowercase(),
        fields.join(" ")
    )
}

/// A hickory record, normalised.
pub fn norm_record(r: &Record) -> String {
    norm(
        &r.name.to_ascii(),
        r.ttl,
        &r.record_type().to_string(),
        &r.data.to_string(),
    )
}

/// A hickory message as [`Seen`].
pub fn seen(m: &Message) -> Seen {
    let section = |rs: &[Record]| rs.iter().map(norm_record).collect::<Vec<_>>();
    Seen {
        rcode: m.metadata.response_code,
        aa: m.metadata.authoritative,
        ra: m.metadata.recursion_available,
        tc: m.metadata.truncation,
        answer: section(&m.answers),
        authority: section(&m.authorities),
        additional: section(&m.additionals),
    }
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
pub const NEG_SOA: &str = "cells.example.com. 30 SOA ns1.cells.example.com. hostmaster.example.com. SERIAL 3600 600 1209600 30";

/// Every row of DESIGN.md's "What a query gets", on the test map.
pub fn table() -> Vec<Row> {
    use RecordType::*;
    use ResponseCode::*;
    let soa = "cells.example.com. 3600 SOA ns1.cells.example.com. hostmaster.example.com. SERIAL 3600 600 1209600 30";
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

/// `Name` from text (case kept).
pub fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("name")
}
