//! Nothing on the fast UDP path allocates per query: a counting global
//! allocator wraps the system one, and answering must not move it.
//!
//! 1. `fast::respond` alone, counting the test thread's own allocations.
//! 2. The real UDP worker (`udp::Workers` on a loopback socket, as the
//!    server runs it: the zone version loaded per batch, `recvmmsg`, the
//!    dispatch, the fast path, metric counting into the installed
//!    Prometheus recorder, `sendmmsg`), counting the allocations of every
//!    thread but the test's own. The test thread plays the client (it
//!    builds, decodes and compares messages, and may allocate); the only
//!    other threads are the worker and the idle test harness, so a moving
//!    count is the worker's. Hit, NXDOMAIN, REFUSED, NODATA, hashed
//!    tenants (`placement.unknown = "hash"`) and DO-bit queries, each
//!    answer checked (rcode, AA, answer count, the addresses, the OPT and
//!    its DO bit), and `cellns_dns_fast_path_total` must count every query
//!    of the measured batches: they really took the fast path.
//! 3. The same worker with response rate limiting on (1 response a second
//!    per network and kind, every second limited one truncated): answered,
//!    dropped and truncated (TC) responses alike allocate nothing, and the
//!    measured batches must contain all three.
//!
//! A separate test binary, because the allocator is global; and one test
//! function, because a second one running alongside would allocate on a
//! thread the worker check counts.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cellns::dns::Store;
use cellns::dns::dispatch::Dispatch;
use cellns::dns::fast::{Fast, RESPONSE_BUF, respond};
use cellns::dns::udp;
use cellns::map::{Format, Source, load_str};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

struct Counting;

/// Allocations made by threads other than the test's own.
static OTHERS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Allocations made by this thread.
    static MINE: Cell<usize> = const { Cell::new(0) };
    /// Whether this thread's allocations stay out of [`OTHERS`] (the test
    /// thread's).
    static EXEMPT: Cell<bool> = const { Cell::new(false) };
}

/// Counts one allocation. The thread-locals are const-initialised and have
/// no destructor, so reading them neither allocates nor fails on a thread
/// that is exiting.
fn count() {
    let _ = MINE.try_with(|m| m.set(m.get() + 1));
    if !EXEMPT.try_with(Cell::get).unwrap_or(false) {
        OTHERS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: defers to the system allocator; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc`, passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (every allocation goes there).
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `realloc`, passed on unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// How long a batch of answers may take on a loaded 2-core machine.
const BATCH_DEADLINE: Duration = Duration::from_secs(20);
/// Measured batches per zone (after the warm-up ones).
const ROUNDS: usize = 100;
/// Batches before measuring: the worker's first zone-version load sets up
/// its thread-local state (arc-swap's debt list) once.
const WARM_UP: usize = 3;

/// A query: `edns` is `None` for none, else the DO bit.
fn query(id: u16, name: &str, t: RecordType, edns: Option<bool>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_str(name).expect("name"), t));
    if let Some(dnssec_ok) = edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_dnssec_ok(dnssec_ok);
        m.set_edns(e);
    }
    m.to_vec().expect("encode query")
}

#[test]
fn nothing_on_the_fast_path_allocates() {
    EXEMPT.with(|e| e.set(true));
    // As the server does: the recorder first, so that the zone versions'
    // per-cell counters and the DNS counters are live handles.
    cellns::metrics::install();
    fast_path_alone();
    through_the_udp_worker();
    rate_limited_through_the_udp_worker();
}

/// `fast::respond` on a mix of queries, the test thread's allocations
/// counted.
fn fast_path_alone() {
    // use1-a is probed, and health found one of its endpoints down: the
    // answers for acme leave it out (the view's filtered endpoints).
    // And globex has a move to euw1-a 20 s ahead: its answers carry the
    // short TTL (the per-tenant overlay and the short bodies).
    let text = format!(
        "{}\n[cells.use1-a.health]\nprobe = \"tcp\"\nport = 443\n{}",
        cellns::map::EXAMPLE_MAP,
        move_in(20)
    );
    let map = cellns::map::load_str(cellns::map::Source {
        text: &text,
        format: cellns::map::Format::Toml,
        name: "probed.toml",
    })
    .expect("probed example map");
    let mut conditions = cellns::live::Conditions::default();
    conditions.endpoints_down.insert(
        "use1-a".into(),
        ["192.0.2.11".parse().expect("address")].into(),
    );
    let store = cellns::dns::prepared::new_store(
        std::sync::Arc::new(map),
        conditions,
        cellns::live::Serials::open(None),
        None,
    )
    .expect("store");
    let snap = store.load();
    let mut buf = [0u8; RESPONSE_BUF];
    let Fast::Answered(n, ..) = respond(
        &snap,
        &query(7, "acme.cells.example.com.", RecordType::A, None),
        &mut buf,
    ) else {
        panic!("acme A not answered on the fast path")
    };
    let answer = Message::from_vec(&buf[..n]).expect("decodable answer");
    let got: Vec<String> = answer.answers.iter().map(|r| r.data.to_string()).collect();
    assert_eq!(got, ["192.0.2.10"], "the down endpoint is left out");
    let Fast::Answered(n, ..) = respond(
        &snap,
        &query(7, "globex.cells.example.com.", RecordType::A, None),
        &mut buf,
    ) else {
        panic!("globex A not answered on the fast path")
    };
    let answer = Message::from_vec(&buf[..n]).expect("decodable answer");
    assert_eq!(
        answer.answers[0].ttl, 5,
        "globex is in its short-TTL window"
    );
    assert_eq!(answer.answers[0].data.to_string(), "192.0.2.20");
    let mut queries = Vec::new();
    for name in [
        "acme.cells.example.com.",
        "GLOBEX.cells.example.com.",
        "nobody.cells.example.com.",
        "x.example.org.",
    ] {
        for t in [RecordType::A, RecordType::AAAA, RecordType::MX] {
            for edns in [None, Some(false), Some(true)] {
                queries.push(query(7, name, t, edns));
            }
        }
    }
    let mut out = [0u8; RESPONSE_BUF];
    for q in &queries {
        assert!(matches!(respond(&snap, q, &mut out), Fast::Answered(..)));
    }
    let before = MINE.with(Cell::get);
    let mut answered = 0;
    for _ in 0..1000 {
        for q in &queries {
            if let Fast::Answered(n, ..) = respond(&snap, q, &mut out) {
                answered += n;
            }
        }
    }
    let allocated = MINE.with(Cell::get) - before;
    assert!(answered > 0);
    assert_eq!(
        allocated,
        0,
        "the fast path allocated {allocated} times in {} queries",
        1000 * queries.len()
    );
}

/// A `[moves.globex]` table moving globex to euw1-a `ahead` seconds from
/// now (negative: in the past).
fn move_in(ahead: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let at = time::OffsetDateTime::from_unix_timestamp(now + ahead)
        .expect("time")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format");
    format!("\n[moves.globex]\nto = \"euw1-a\"\nat = \"{at}\"\n")
}

/// What a query must get.
#[derive(Debug, Clone)]
enum Want {
    /// NOERROR, AA, exactly these addresses.
    Addrs(BTreeSet<IpAddr>),
    /// NOERROR, AA, no answer, the SOA in authority.
    Nodata,
    /// NXDOMAIN, AA, no answer, the SOA in authority.
    NxDomain,
    /// REFUSED, no AA, nothing.
    Refused,
}

/// One query of the batch and what it must get.
struct Case {
    label: String,
    wire: Vec<u8>,
    edns: Option<bool>,
    want: Want,
}

fn addrs<T: Into<IpAddr> + Copy>(list: &[T]) -> Want {
    Want::Addrs(list.iter().map(|&a| a.into()).collect())
}

/// The batch for `store`: `(name, type, want)` rows, each asked without
/// EDNS, with EDNS, and with EDNS and the DO bit.
fn cases(rows: &[(String, RecordType, Want)]) -> Vec<Case> {
    let mut out = Vec::new();
    for (name, t, want) in rows {
        for edns in [None, Some(false), Some(true)] {
            let id = out.len() as u16 + 1;
            out.push(Case {
                label: format!("{name} {t} edns {edns:?}"),
                wire: query(id, name, *t, edns),
                edns,
                want: want.clone(),
            });
        }
    }
    assert!(out.len() < 64, "a batch fits in one recvmmsg");
    out
}

/// Checks a decoded answer against its case.
fn check(case: &Case, bytes: &[u8]) {
    let m = Message::from_vec(bytes).unwrap_or_else(|e| panic!("{}: undecodable: {e}", case.label));
    let what = &case.label;
    assert_eq!(
        m.metadata.id,
        u16::from_be_bytes([case.wire[0], case.wire[1]])
    );
    assert_eq!(m.metadata.message_type, MessageType::Response, "{what}");
    assert!(!m.metadata.truncation, "{what}: TC");
    match (&case.edns, &m.edns) {
        (None, None) => {}
        (Some(dnssec_ok), Some(e)) => {
            assert_eq!(e.flags().dnssec_ok, *dnssec_ok, "{what}: DO bit");
            assert_eq!(e.version(), 0, "{what}");
        }
        (q, r) => panic!("{what}: query EDNS {q:?}, response EDNS {r:?}"),
    }
    let rcode = m.metadata.response_code;
    match &case.want {
        Want::Addrs(want) => {
            assert_eq!(rcode, ResponseCode::NoError, "{what}");
            assert!(m.metadata.authoritative, "{what}: AA");
            let got: BTreeSet<IpAddr> = m
                .answers
                .iter()
                .map(|r| match &r.data {
                    RData::A(a) => IpAddr::V4(a.0),
                    RData::AAAA(a) => IpAddr::V6(a.0),
                    other => panic!("{what}: answer {other:?}"),
                })
                .collect();
            assert_eq!(m.answers.len(), want.len(), "{what}: answer count");
            assert_eq!(&got, want, "{what}: addresses");
            assert!(m.authorities.is_empty(), "{what}");
        }
        Want::Nodata | Want::NxDomain => {
            let rc = match case.want {
                Want::Nodata => ResponseCode::NoError,
                _ => ResponseCode::NXDomain,
            };
            assert_eq!(rcode, rc, "{what}");
            assert!(m.metadata.authoritative, "{what}: AA");
            assert!(m.answers.is_empty(), "{what}: {:?}", m.answers);
            assert_eq!(m.authorities.len(), 1, "{what}: the SOA");
            assert_eq!(m.authorities[0].record_type(), RecordType::SOA, "{what}");
        }
        Want::Refused => {
            assert_eq!(rcode, ResponseCode::Refused, "{what}");
            assert!(!m.metadata.authoritative, "{what}: AA");
            assert!(m.answers.is_empty() && m.authorities.is_empty(), "{what}");
        }
    }
}

/// The value of `cellns_dns_fast_path_total` in the recorder.
fn fast_path_count() -> f64 {
    let text = cellns::metrics::render();
    text.lines()
        .find_map(|l| l.strip_prefix("cellns_dns_fast_path_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no cellns_dns_fast_path_total in:\n{text}"))
}

/// A client of one running worker.
struct Client {
    sock: UdpSocket,
    buf: Vec<u8>,
}

impl Client {
    fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind client");
        sock.connect(server).expect("connect client");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        Self {
            sock,
            buf: vec![0; 65535],
        }
    }

    /// Sends every case, then reads one answer each; calls `seen` with the
    /// case's index and the answer.
    fn batch(&mut self, cases: &[Case], mut seen: impl FnMut(usize, &[u8])) {
        for c in cases {
            self.sock.send(&c.wire).expect("send query");
        }
        let deadline = Instant::now() + BATCH_DEADLINE;
        let mut answered = vec![false; cases.len()];
        let mut left = cases.len();
        while left > 0 {
            assert!(
                Instant::now() < deadline,
                "{left} of {} queries unanswered within {BATCH_DEADLINE:?}",
                cases.len()
            );
            let n = match self.sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("receive: {e}"),
            };
            assert!(n >= 12, "short answer {:02x?}", &self.buf[..n]);
            let i = usize::from(u16::from_be_bytes([self.buf[0], self.buf[1]])) - 1;
            assert!(i < cases.len() && !answered[i], "unexpected answer ID {i}");
            answered[i] = true;
            left -= 1;
            seen(i, &self.buf[..n]);
        }
    }
}

/// Runs one worker on `store` and measures batches of `cases`.
fn measure(zone: &str, store: Arc<Store>, cases: &[Case]) {
    let sockets = udp::bind("127.0.0.1:0".parse().expect("address"), 1).expect("bind worker");
    let addr = sockets[0].local_addr().expect("worker address");
    let workers = udp::Workers::start(sockets, Dispatch::new(store, Default::default()))
        .expect("start worker");
    let mut client = Client::new(addr);

    // Warm-up, and every answer checked.
    let mut expected: Vec<Vec<u8>> = vec![Vec::new(); cases.len()];
    for _ in 0..WARM_UP {
        client.batch(cases, |i, bytes| {
            check(&cases[i], bytes);
            expected[i] = bytes.to_vec();
        });
    }

    let fast_before = fast_path_count();
    let before = OTHERS.load(Ordering::SeqCst);
    for _ in 0..ROUNDS {
        client.batch(cases, |i, bytes| {
            assert!(
                bytes == expected[i].as_slice(),
                "{zone}: {}: the answer changed",
                cases[i].label
            );
        });
    }
    let allocated = OTHERS.load(Ordering::SeqCst) - before;
    let fast = fast_path_count() - fast_before;
    workers.stop();
    assert_eq!(
        allocated,
        0,
        "{zone}: the UDP worker allocated {allocated} times answering {} queries",
        ROUNDS * cases.len()
    );
    assert_eq!(
        fast,
        (ROUNDS * cases.len()) as f64,
        "{zone}: queries the fast path answered"
    );
}

fn through_the_udp_worker() {
    let v4 = |s: &str| -> IpAddr { s.parse().expect("address") };

    // The example map: listed tenants, unknown names NXDOMAIN.
    let store = Arc::new(cellns::dns::prepared::store_of(
        cellns::map::load_example().expect("example"),
    ));
    let z = "cells.example.com.";
    let rows = vec![
        (
            format!("acme.{z}"),
            RecordType::A,
            Want::Addrs([v4("192.0.2.10"), v4("192.0.2.11")].into()),
        ),
        (
            format!("ACME.{z}"),
            RecordType::AAAA,
            Want::Addrs([v4("2001:db8::10")].into()),
        ),
        (
            format!("globex.{z}"),
            RecordType::A,
            Want::Addrs([v4("192.0.2.20")].into()),
        ),
        // usw2-a is down: its tenant gets the failover cell, use1-b.
        (
            format!("hooli.{z}"),
            RecordType::A,
            Want::Addrs([v4("192.0.2.20")].into()),
        ),
        // euw1-a has no IPv6.
        (format!("initech.{z}"), RecordType::AAAA, Want::Nodata),
        (format!("acme.{z}"), RecordType::MX, Want::Nodata),
        (format!("nobody.{z}"), RecordType::A, Want::NxDomain),
        (format!("nobody.{z}"), RecordType::AAAA, Want::NxDomain),
        ("www.example.org.".to_owned(), RecordType::A, Want::Refused),
    ];
    measure("example map", store, &cases(&rows));

    // A move in its short-TTL window (globex, to euw1-a) and one done
    // (initech, to use1-a): the overlay answers both.
    let text = format!(
        "{}{}\n[moves.initech]\nto = \"use1-a\"\nat = \"2000-01-01T00:00:00Z\"\n",
        cellns::map::EXAMPLE_MAP,
        move_in(20)
    );
    let snap = load_str(Source {
        text: &text,
        format: Format::Toml,
        name: "moves.toml",
    })
    .expect("moves map");
    let store = Arc::new(cellns::dns::prepared::store_of(snap));
    let rows = vec![
        (
            format!("globex.{z}"),
            RecordType::A,
            Want::Addrs([v4("192.0.2.20")].into()),
        ),
        (
            format!("GLOBEX.{z}"),
            RecordType::AAAA,
            Want::Addrs([v4("2001:db8::20")].into()),
        ),
        (
            format!("initech.{z}"),
            RecordType::A,
            Want::Addrs([v4("192.0.2.10"), v4("192.0.2.11")].into()),
        ),
        (
            format!("acme.{z}"),
            RecordType::A,
            Want::Addrs([v4("192.0.2.10"), v4("192.0.2.11")].into()),
        ),
        (format!("nobody.{z}"), RecordType::A, Want::NxDomain),
    ];
    measure("moves map", store, &cases(&rows));

    // The same map placing unlisted tenants by hashing: names that are in
    // no list get a cell's addresses. Which cell is the placement's
    // business (tested elsewhere); here, the cells of the hash pool that
    // have addresses (one with only a CNAME goes to the general path).
    let text = cellns::map::EXAMPLE_MAP.replace("unknown = \"nxdomain\"", "unknown = \"hash\"");
    let snap = load_str(Source {
        text: &text,
        format: Format::Toml,
        name: "hash.toml",
    })
    .expect("hash map");
    let store = Arc::new(cellns::dns::prepared::store_of(snap));
    let live = store.load_full();
    let mut rows = Vec::new();
    let mut cells = BTreeSet::new();
    for i in 0..1000 {
        let label = format!("h{i:03}");
        let Some(id) = cellns::route::lookup(&live.view, label.as_bytes()) else {
            panic!("{label}: hash placement gave no cell");
        };
        let state = live.view.state(id);
        if live.view.cell(id).by_name_only() || state.ipv4.is_empty() {
            continue;
        }
        cells.insert(id);
        let name = format!("{label}.{z}");
        rows.push((name.clone(), RecordType::A, addrs(&state.ipv4)));
        let aaaa = if state.ipv6.is_empty() {
            Want::Nodata
        } else {
            addrs(&state.ipv6)
        };
        rows.push((name, RecordType::AAAA, aaaa));
        if rows.len() >= 12 && cells.len() >= 2 || rows.len() >= 18 {
            break;
        }
    }
    assert!(
        cells.len() >= 2,
        "hashed tenants should land on several cells: {cells:?}"
    );
    drop(live);
    rows.push((
        format!("acme.{z}"),
        RecordType::A,
        Want::Addrs([v4("192.0.2.10"), v4("192.0.2.11")].into()),
    ));
    rows.push(("x.example.net.".to_owned(), RecordType::AAAA, Want::Refused));
    measure("hash map", store, &cases(&rows));
}

/// The value of `cellns_dns_rrl_total` for `kind` and `action`.
fn rrl_count(kind: &str, action: &str) -> usize {
    let text = cellns::metrics::render();
    let series = format!("cellns_dns_rrl_total{{kind=\"{kind}\",action=\"{action}\"}} ");
    let alt = format!("cellns_dns_rrl_total{{action=\"{action}\",kind=\"{kind}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series).or_else(|| l.strip_prefix(&alt)))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}")) as usize
}

/// Dropped responses so far, both kinds of the batch.
fn dropped() -> usize {
    rrl_count("positive", "dropped") + rrl_count("nxdomain", "dropped")
}

/// Sends `queries` (IDs 1..=n) and reads answers until every query is
/// either answered or counted as dropped; (full answers, truncated ones).
fn rate_limited_batch(client: &mut Client, queries: &[Vec<u8>]) -> (usize, usize) {
    let dropped_before = dropped();
    for q in queries {
        client.sock.send(q).expect("send query");
    }
    let deadline = Instant::now() + BATCH_DEADLINE;
    let (mut full, mut tc) = (0, 0);
    while full + tc + (dropped() - dropped_before) < queries.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} queries neither answered nor dropped within {BATCH_DEADLINE:?}",
            queries.len() - full - tc - (dropped() - dropped_before),
            queries.len()
        );
        let n = match client.sock.recv(&mut client.buf) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(e) => panic!("receive: {e}"),
        };
        let m = Message::from_vec(&client.buf[..n]).expect("decodable answer");
        if m.metadata.truncation {
            assert!(
                m.answers.is_empty() && m.authorities.is_empty(),
                "a slip has no records"
            );
            assert_eq!(m.queries.len(), 1, "a slip echoes the question");
            tc += 1;
        } else {
            full += 1;
        }
    }
    (full, tc)
}

fn rate_limited_through_the_udp_worker() {
    let store = Arc::new(cellns::dns::prepared::store_of(
        cellns::map::load_example().expect("example"),
    ));
    let rrl = cellns::dns::rrl::Rrl::new(1, 2).map(Arc::new);
    assert!(rrl.is_some(), "rate 1 turns RRL on");
    let sockets = udp::bind("127.0.0.1:0".parse().expect("address"), 1).expect("bind worker");
    let addr = sockets[0].local_addr().expect("worker address");
    let workers = udp::Workers::start(
        sockets,
        Dispatch::new(store, Default::default()).with_rrl(rrl),
    )
    .expect("start worker");
    let mut client = Client::new(addr);
    // Positive answers and NXDOMAIN: two budgets of one response a second.
    let queries: Vec<Vec<u8>> = (0..40u16)
        .map(|i| {
            let name = if i % 2 == 0 {
                "acme.cells.example.com."
            } else {
                "nobody.cells.example.com."
            };
            query(i + 1, name, RecordType::A, Some(false))
        })
        .collect();
    for _ in 0..WARM_UP {
        rate_limited_batch(&mut client, &queries);
    }
    let (dropped_before, slipped_before) = (
        dropped(),
        rrl_count("positive", "slipped") + rrl_count("nxdomain", "slipped"),
    );
    let before = OTHERS.load(Ordering::SeqCst);
    let (mut full, mut tc) = (0, 0);
    for _ in 0..ROUNDS / 5 {
        let (f, t) = rate_limited_batch(&mut client, &queries);
        full += f;
        tc += t;
    }
    let allocated = OTHERS.load(Ordering::SeqCst) - before;
    let dropped_n = dropped() - dropped_before;
    let slipped_n =
        rrl_count("positive", "slipped") + rrl_count("nxdomain", "slipped") - slipped_before;
    workers.stop();
    assert_eq!(
        allocated, 0,
        "the rate-limited UDP worker allocated {allocated} times ({full} answered, {tc} truncated, {dropped_n} dropped)"
    );
    assert!(
        tc > 0 && dropped_n > 0,
        "{full} answered, {tc} truncated, {dropped_n} dropped"
    );
    assert_eq!(tc, slipped_n, "truncated answers as counted");
    // Every second limited response slipped (per network and kind).
    assert!(
        tc.abs_diff(dropped_n) <= 2,
        "{tc} truncated, {dropped_n} dropped"
    );
}
