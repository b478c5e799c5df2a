//! DNS limits (issue 15): connection caps and deadlines on DNS over TCP
//! (finding 2), response rate limiting on UDP, log lines an outsider can
//! trigger (finding 7), and the file descriptor budget.

use std::io::{ErrorKind, Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::dns::{Tcp, Udp, decode, query, wire};
use crate::support::http::scrape;
use crate::support::server::{Launch, Server};
use crate::support::{EXCHANGE, STARTUP, connect_from, raise_nofile, udp_from, wait_until};

const TENANT: &str = "acme.cells.example.com.";

/// A framed TCP query for `TENANT`.
fn framed_query(id: u16) -> Vec<u8> {
    let q = wire(&query(id, TENANT, RecordType::A, None));
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend(q);
    f
}

/// Whether the server has closed `s` (EOF or reset), reading and dropping
/// whatever it sent before; `s` must be non-blocking.
fn is_closed(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}

fn tcp_closed(server: &Server, reason: &str) -> f64 {
    scrape(server.http())
        .get("cellns_dns_tcp_closed_total", &[("reason", reason)])
        .unwrap_or(0.0)
}

/// One host holding 1,100 connections (each with a query answered, then
/// kept open) does not lock others out: its connections beyond its share
/// are refused, and a client from another address is answered at once.
/// Before, the 1,024 slots were one pool: the fresh client waited in the
/// kernel's backlog until a slot freed.
#[test]
fn a_host_holding_1100_connections_leaves_a_fresh_client_served() {
    let nofile = raise_nofile(4096);
    assert!(
        nofile >= 2600,
        "this test needs 2,600 descriptors (1,100 connections and the server's ends); RLIMIT_NOFILE is {nofile}"
    );
    let server = Server::start(&[]);
    let mut held = Vec::new();
    for i in 0..1100u16 {
        let Ok(mut s) = TcpStream::connect_timeout(&server.dns, EXCHANGE) else {
            continue;
        };
        // A refused connection is reset: writing may fail, which is fine.
        let _ = s.write_all(&framed_query(i));
        let _ = s.set_nonblocking(true);
        held.push(s);
    }
    // A fresh client from another address is served promptly.
    let started = Instant::now();
    let mut fresh = Tcp::from_stream(connect_from("127.0.0.2", server.dns).expect("connect"));
    let a = fresh
        .ask(TENANT, RecordType::A)
        .expect("the fresh client is answered");
    assert_eq!(a.rcode, ResponseCode::NoError);
    assert!(
        started.elapsed() < EXCHANGE,
        "answered after {:?}",
        started.elapsed()
    );
    // The greedy host kept its share (32), the rest were refused.
    let mut open = 0;
    wait_until(STARTUP, || {
        open = held.iter_mut().map(is_closed).filter(|c| !c).count();
        open <= 32
    });
    assert!(open <= 32, "{open} connections of one host still open");
    assert!(tcp_closed(&server, "source_limit") >= 1000.0);
}

/// The idle deadline runs from the last complete exchange: a query
/// trickled a byte at a time does not extend it; and complete queries
/// trickled within the idle timeout do not keep a connection past its
/// lifetime.
#[test]
fn trickled_bytes_and_trickled_queries_do_not_hold_a_connection() {
    let server = Server::start(&[
        "--tcp-idle-timeout-ms",
        "1500",
        "--tcp-max-lifetime-ms",
        "4000",
    ]);
    // A byte every ~200 ms of one query: never complete within 1.5 s.
    let mut s = connect_from("127.0.10.1", server.dns).expect("connect");
    s.set_nonblocking(true).expect("nonblocking");
    let q = framed_query(7);
    let t = Instant::now();
    let mut at = 0;
    let mut last = Instant::now() - Duration::from_secs(1);
    let closed = wait_until(STARTUP, || {
        if last.elapsed() >= Duration::from_millis(200) && at < q.len() - 1 {
            let _ = s.write(&q[at..at + 1]);
            at += 1;
            last = Instant::now();
        }
        is_closed(&mut s)
    });
    assert!(
        closed,
        "a trickled query held its connection for {STARTUP:?}"
    );
    assert!(
        t.elapsed() >= Duration::from_millis(1200),
        "{:?}",
        t.elapsed()
    );

    // A complete query every 500 ms: each within the idle timeout, but the
    // connection ends at its lifetime (4 s).
    let mut c = Tcp::from_stream(connect_from("127.0.10.2", server.dns).expect("connect"));
    let t = Instant::now();
    let mut last = Instant::now() - Duration::from_secs(1);
    let mut answered = 0;
    let ended = wait_until(STARTUP, || {
        if last.elapsed() < Duration::from_millis(500) {
            return false;
        }
        last = Instant::now();
        match c.ask(TENANT, RecordType::A) {
            Ok(_) => {
                answered += 1;
                false
            }
            Err(_) => true,
        }
    });
    assert!(
        ended,
        "a trickle of queries held a connection for {STARTUP:?}"
    );
    assert!(answered >= 3, "only {answered} answered before the end");
    assert!(
        t.elapsed() >= Duration::from_millis(3500),
        "closed after {:?}",
        t.elapsed()
    );
    assert!(tcp_closed(&server, "idle_timeout") >= 1.0);
    assert!(tcp_closed(&server, "lifetime") >= 1.0);
}

/// When every slot is taken by idle connections, the one idle the longest
/// is closed so that a newcomer is served (RFC 7766 §6.2.3).
#[test]
fn when_full_the_longest_idle_connection_makes_room() {
    let server = Server::start(&[
        "--tcp-max-connections",
        "20",
        "--tcp-max-connections-per-source",
        "5",
    ]);
    let mut conns = Vec::new();
    for src in 1..=4 {
        for _ in 0..5 {
            let mut c = Tcp::from_stream(
                connect_from(&format!("127.0.11.{src}"), server.dns).expect("connect"),
            );
            c.ask(TENANT, RecordType::A).expect("answered");
            conns.push(c);
        }
    }
    // Every connection but the first is used again: the first is idle the
    // longest by a wide margin, even if the machine is slow to let its task
    // mark it idle after its answer.
    for c in &mut conns[1..] {
        c.ask(TENANT, RecordType::A).expect("answered again");
    }
    let mut fresh = Tcp::from_stream(connect_from("127.0.11.9", server.dns).expect("connect"));
    fresh
        .ask(TENANT, RecordType::A)
        .expect("the newcomer is served");
    // The oldest was closed, and only it.
    let mut closed = Vec::new();
    wait_until(STARTUP, || {
        closed = conns
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| {
                c.stream().set_nonblocking(true).expect("nonblocking");
                let gone = is_closed(c.stream());
                c.stream().set_nonblocking(false).expect("blocking");
                gone.then_some(i)
            })
            .collect();
        !closed.is_empty()
    });
    assert_eq!(
        closed,
        [0],
        "closed to make room (metrics {:?})",
        scrape(server.http()).family("cellns_dns_tcp_closed_total")
    );
    conns
        .last_mut()
        .expect("connections")
        .ask(TENANT, RecordType::A)
        .expect("a younger connection still answers");
    assert!(tcp_closed(&server, "evicted") >= 1.0);
}

/// Response rate limiting: a flood from one /24 gets the configured rate of
/// full answers (after a burst of one second's worth), every second
/// limited answer a truncated one (TC) and the rest nothing, while a client
/// in another /24 is answered in full meanwhile. The counts match the
/// server's metrics exactly.
#[test]
fn rrl_limits_a_flooding_network_and_answers_another_in_full() {
    const RATE: f64 = 20.0;
    let server = Server::start(&["--rrl-rate", "20", "--rrl-slip", "2", "--udp-workers", "1"]);
    let flood = udp_from("127.0.1.1", server.dns);
    let _ = socket2::SockRef::from(&flood).set_recv_buffer_size(8 << 20);
    flood
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let other = Udp::new_from("127.0.2.1", server.dns);

    const FLOOD: usize = 600;
    let started = Instant::now();
    for i in 0..FLOOD {
        flood
            .send(&wire(&query(i as u16, TENANT, RecordType::A, Some(1232))))
            .expect("send");
    }
    let sent_for = started.elapsed();
    // The other network, meanwhile: every answer full.
    for _ in 0..15 {
        let a = other
            .ask(TENANT, RecordType::A)
            .expect("the other network is answered");
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(
            !a.addrs.is_empty(),
            "the other network got no addresses (truncated?)"
        );
    }
    // What the server withheld, then the answers it sent.
    let m = scrape(server.http());
    let series = |action: &str| {
        m.value(
            "cellns_dns_rrl_total",
            &[("kind", "positive"), ("action", action)],
        ) as usize
    };
    let (dropped, slipped) = (series("dropped"), series("slipped"));
    let expect_received = FLOOD - dropped;
    let (mut full, mut tc) = (0usize, 0usize);
    let mut buf = vec![0u8; 4096];
    wait_until(STARTUP, || {
        while let Ok(n) = flood.recv(&mut buf) {
            let r = decode(&buf[..n]);
            if r.metadata.truncation {
                assert!(r.answers.is_empty(), "a slip carries no records");
                assert_eq!(r.queries.len(), 1, "a slip echoes the question");
                tc += 1;
            } else {
                assert_eq!(r.metadata.response_code, ResponseCode::NoError);
                assert!(!r.answers.is_empty());
                full += 1;
            }
        }
        full + tc >= expect_received
    });
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!(
        "flood of {FLOOD} sent in {sent_for:?}: {full} full, {tc} truncated, {dropped} dropped in {elapsed:.2} s"
    );
    assert_eq!(full + tc, expect_received, "answers received");
    assert_eq!(tc, slipped, "truncated answers, as counted by the server");
    let limited = FLOOD - full;
    assert_eq!(limited, dropped + slipped);
    assert_eq!(slipped, limited / 2, "every second limited answer slips");
    // The burst (one second's worth), then the rate.
    assert!(
        full as f64 >= RATE,
        "{full} full answers: less than the burst"
    );
    assert!(
        full as f64 <= RATE * (1.0 + elapsed) + 1.0,
        "{full} full answers in {elapsed:.2} s at {RATE}/s"
    );
}

/// A query whose EDNS option is malformed (hickory-proto warns about each
/// one it decodes) logs at most a few lines, however many arrive; the rest
/// are counted in a "log lines suppressed" line.
#[test]
fn malformed_edns_floods_do_not_flood_the_log() {
    let server = Server::start(&[]);
    let mut q = wire(&query(1, TENANT, RecordType::A, Some(1232)));
    // The OPT's RDATA: a cookie option of 2 bytes with only 1 present.
    let n = q.len();
    q[n - 2..].copy_from_slice(&5u16.to_be_bytes());
    q.extend([0, 10, 0, 2, 1]);
    let udp = Udp::new(server.dns);
    for i in 0..5000u16 {
        q[..2].copy_from_slice(&i.to_be_bytes());
        udp.send(&q);
        if i % 500 == 499 {
            // Keep pace with the server: one answer back per 500 sent.
            let _ = udp.recv_id(i.to_be_bytes(), EXCHANGE);
        }
    }
    let needle = "poorly formatted EDNS";
    // The suppressed lines are reported within a window (10 s).
    let reported = server
        .logs()
        .wait_for("WARN", "log lines suppressed", STARTUP)
        .is_some();
    let logged = server
        .logs()
        .json()
        .iter()
        .filter(|v| v["message"].as_str().is_some_and(|m| m.contains(needle)))
        .count();
    assert!(logged >= 1, "the malformed option was never logged");
    assert!(
        logged <= 20,
        "{logged} log lines for 5,000 malformed packets"
    );
    assert!(reported, "no 'log lines suppressed' report");
}

/// With a descriptor limit too small for the connection limits, they are
/// lowered (a warning says so) so that connections can never take the
/// descriptors reloads and UDP need, and the server serves.
#[test]
fn connection_limits_fit_the_descriptor_budget() {
    let server = Launch::new(&[]).nofile(700).start();
    let warned = server
        .logs()
        .wait_for("WARN", "connection limits do not fit", STARTUP)
        .expect("a warning about the lowered limits");
    let tcp = warned["tcp_lowered_to"].as_u64().expect("tcp_lowered_to");
    let http = warned["http_lowered_to"].as_u64().expect("http_lowered_to");
    assert!(tcp >= 1 && http >= 1 && tcp + http <= 700 - 256, "{warned}");
    let mut c = Tcp::connect(server.dns);
    c.ask(TENANT, RecordType::A).expect("DNS over TCP answers");
    assert_eq!(
        scrape(server.http()).value("cellns_dns_tcp_connections", &[]),
        1.0
    );
}
