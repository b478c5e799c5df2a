//! Malformed input over UDP and TCP: for each message the test states what
//! the server must do (FORMERR echoing the ID, no reply, or over TCP closing
//! the connection without an answer) and checks exactly that; the server
//! never crashes and keeps answering valid queries afterwards.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::dns::{self as s, Tcp, Udp, raw_header as header};
use crate::support::table::{self as t, assert_alive};

/// ID of the valid query sent after each malformed one.
const VALID_ID: u16 = 0x0a11;

/// One question whose name is the raw bytes `name`, type A, class IN.
fn with_question(id: u16, name: &[u8]) -> Vec<u8> {
    let mut m = header(id, [1, 0, 0, 0]);
    m.extend_from_slice(name);
    m.extend([0, 1, 0, 1]);
    m
}

/// `n` labels of `len` bytes each, then the root.
fn labels(n: usize, len: u8) -> Vec<u8> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(len);
        v.extend(std::iter::repeat_n(b'a', usize::from(len)));
    }
    v.push(0);
    v
}

/// What the server must do with a malformed message that has a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Must {
    /// Nothing: no reply (the next query on the socket or connection is
    /// answered).
    Ignore,
    /// FORMERR echoing the message's ID (RFC 1035 §4.1.1), then the next
    /// query is answered.
    Formerr,
    /// Exactly one reply with the message's ID (random bytes may happen to
    /// form a query the server can answer), then the next query.
    Reply,
}

/// What the server must do with `msg` over TCP (`tcp`) or UDP, `declared`
/// being what its case says for a message with a header. `None`: close the
/// connection without a word (over TCP an empty frame is not a DNS message).
fn must(msg: &[u8], declared: Must, tcp: bool) -> Option<Must> {
    if msg.is_empty() && tcp {
        return None;
    }
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        // No header to answer, or a response (never answered: reflection).
        return Some(Must::Ignore);
    }
    Some(declared)
}

/// The malformed messages, each with a name for failure messages.
fn cases() -> Vec<(&'static str, Vec<u8>)> {
    let mut cases = vec![
        ("empty datagram", Vec::new()),
        ("truncated header (3 bytes)", vec![0xde, 0xad, 0x01]),
        (
            "truncated header (11 bytes)",
            header(0xbad0, [1, 0, 0, 0])[..11].to_vec(),
        ),
        (
            "header promising a question it lacks",
            header(0xbad1, [1, 0, 0, 0]),
        ),
        ("question cut inside the name", {
            let mut m = with_question(0xbad2, b"\x04acme\x05cells");
            m.truncate(12 + 8);
            m
        }),
        ("question without type and class", {
            let mut m = header(0xbad3, [1, 0, 0, 0]);
            m.extend(b"\x04acme\x00");
            m
        }),
        // A name that is a pointer to itself.
        (
            "compression pointer to itself",
            with_question(0xbad4, &[0xc0, 0x0c]),
        ),
        // Two pointers pointing at each other.
        ("compression pointer loop of two", {
            let mut m = header(0xbad5, [1, 0, 0, 0]);
            m.extend([0x01, b'a', 0xc0, 0x0e, 0xc0, 0x0c]);
            m.extend([0, 1, 0, 1]);
            m
        }),
        (
            "compression pointer past the end",
            with_question(0xbad6, &[0xc3, 0xff]),
        ),
        ("compression pointer forward", {
            let mut m = header(0xbad7, [1, 0, 0, 0]);
            m.extend([0xc0, 0x12, 0, 1, 0, 1, 0x01, b'a', 0x00]);
            m
        }),
        // 5 × 64 = 320 bytes of name: over the 255-byte limit.
        ("name over 255 bytes", with_question(0xbad8, &labels(5, 63))),
        ("label of 64 bytes", with_question(0xbad9, &labels(1, 64))),
        (
            "label length 0x7f (reserved label type)",
            with_question(0xbada, &labels(1, 0x7f)),
        ),
        (
            "label length 0x80 (reserved label type)",
            with_question(0xbadb, &[0x80, 0x00]),
        ),
        ("additional record promised, missing", {
            let mut m = with_question(0xbadc, b"\x04acme\x05cells\x07example\x03com\x00");
            m[11] = 1;
            m
        }),
        ("two OPT records", {
            let mut m = with_question(0xbadd, b"\x04acme\x05cells\x07example\x03com\x00");
            m[11] = 2;
            for _ in 0..2 {
                m.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
            }
            m
        }),
        ("OPT with an rdata length past the end", {
            let mut m = with_question(0xbade, b"\x04acme\x05cells\x07example\x03com\x00");
            m[11] = 1;
            m.extend([0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0xff, 0xff]);
            m
        }),
        ("65535 questions announced", {
            let mut m = with_question(0xbadf, b"\x04acme\x05cells\x07example\x03com\x00");
            m[4] = 0xff;
            m[5] = 0xff;
            m
        }),
    ];
    // Random garbage, reproducible (xorshift64*, fixed seed).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    for _ in 0..48 {
        let len = (next() % 700) as usize;
        let mut g: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        // Some of it with a plausible header, so it reaches the parser.
        if g.len() >= 12 && next() % 2 == 0 {
            g[2] &= 0x01; // QR clear, opcode QUERY
            g[4] = 0;
            g[5] = 1;
        }
        cases.push(("random garbage", g));
    }
    cases
}

/// What a case says the server must do with it when it has a header:
/// every structured case is FORMERR; random bytes get one reply.
fn declared(what: &str) -> Must {
    if what == "random garbage" {
        Must::Reply
    } else {
        Must::Formerr
    }
}

/// The valid query that must be answered after each malformed message.
fn valid() -> Vec<u8> {
    s::wire(&s::query(
        VALID_ID,
        "acme.cells.example.com.",
        RecordType::A,
        None,
    ))
}

fn is_valid_answer(reply: &[u8]) -> bool {
    Message::from_vec(reply).is_ok_and(|m| m.metadata.id == VALID_ID && m.answers.len() == 2)
}

/// Checks the replies to `msg` received before the valid answer against
/// what the server must do.
#[track_caller]
fn check_replies(what: &str, msg: &[u8], must: Must, replies: &[Vec<u8>]) {
    match must {
        Must::Ignore => assert!(
            replies.is_empty(),
            "{what}: must get no reply, got {replies:02x?}"
        ),
        Must::Formerr | Must::Reply => {
            assert_eq!(
                replies.len(),
                1,
                "{what}: must get exactly one reply, got {replies:02x?}"
            );
            let r = &replies[0];
            assert!(r.len() >= 12, "{what}: a reply shorter than a header");
            assert!(r[2] & 0x80 != 0, "{what}: a reply without QR");
            assert_eq!(r[..2], msg[..2], "{what}: the reply echoes the ID");
            if must == Must::Formerr {
                assert_eq!(
                    r[3] & 0x0f,
                    ResponseCode::FormErr.low(),
                    "{what}: answered, but not FORMERR: {r:02x?}"
                );
            }
        }
    }
}

/// UDP: the malformed datagram, then a valid query on the same socket;
/// every reply before the valid answer belongs to the malformed one.
fn udp_case(server: SocketAddr, what: &str, msg: &[u8], must: Must) {
    let sock = Udp::new(server);
    sock.send(msg);
    sock.send(&valid());
    let mut replies = Vec::new();
    loop {
        let reply = sock.recv_any().unwrap_or_else(|| {
            panic!("UDP {what}: no answer to the valid query after it (replies: {replies:02x?})")
        });
        if is_valid_answer(&reply) {
            break;
        }
        replies.push(reply);
    }
    check_replies(&format!("UDP {what}"), msg, must, &replies);
}

/// TCP: the malformed message framed, then a valid query on the same
/// connection. Replies come in order: the malformed one's (if any), then
/// the valid answer; or (`must` None) the connection is closed with nothing
/// sent.
fn tcp_case(server: SocketAddr, what: &str, msg: &[u8], must: Option<Must>) {
    let mut conn = Tcp::connect(server);
    conn.send(msg);
    conn.send(&valid());
    let mut replies = Vec::new();
    let answered = loop {
        match conn.recv() {
            None => break false,
            Some(r) if is_valid_answer(&r) => break true,
            Some(r) => replies.push(r),
        }
    };
    let what = format!("TCP {what}");
    match must {
        None => assert!(
            !answered && replies.is_empty(),
            "{what}: must close the connection without an answer; answered: {answered}, replies {replies:02x?}"
        ),
        Some(must) => {
            assert!(
                answered,
                "{what}: the connection was closed; the next query must be answered (replies {replies:02x?})"
            );
            check_replies(&what, msg, must, &replies);
        }
    }
}

#[test]
fn malformed_udp_gets_exactly_what_each_case_must() {
    let srv = t::start();
    for (i, (what, msg)) in cases().into_iter().enumerate() {
        let must = must(&msg, declared(what), false).expect("UDP never closes");
        udp_case(srv.addr(), what, &msg, must);
        if i % 8 == 0 || what != "random garbage" {
            assert_alive(srv.addr(), what);
        }
    }
    assert_alive(srv.addr(), "all malformed datagrams");
}

#[test]
fn malformed_tcp_gets_exactly_what_each_case_must() {
    let srv = t::start();
    let mut closed = 0;
    for (what, msg) in cases() {
        let must = must(&msg, declared(what), true);
        closed += usize::from(must.is_none());
        tcp_case(srv.addr(), what, &msg, must);
        assert_alive(srv.addr(), what);
    }
    // The empty message (an empty frame) at least: the closing path ran.
    assert!(closed >= 1, "no case closes the connection");
}

#[test]
fn zero_length_tcp_frame_closes_the_connection() {
    let srv = t::start();
    let mut conn = Tcp::connect(srv.addr());
    conn.stream().write_all(&[0, 0]).expect("write empty frame");
    conn.send(&valid());
    // Not a DNS message: the server closes without answering anything.
    assert_eq!(conn.recv(), None, "a reply after a zero-length frame");
    assert_alive(srv.addr(), "a zero-length TCP frame");
}

#[test]
fn tcp_length_prefix_longer_than_the_data_then_close() {
    let srv = t::start();
    let body = valid();
    for (what, bytes) in [
        ("a 256-byte frame with 20 bytes", {
            let mut b = vec![0x01, 0x00];
            b.extend_from_slice(&body[..20]);
            b
        }),
        ("a frame of one byte more than sent", {
            let mut b = u16::try_from(body.len() + 1)
                .expect("fits")
                .to_be_bytes()
                .to_vec();
            b.extend_from_slice(&body);
            b
        }),
        ("half a length prefix", vec![0x00]),
        ("a 65535-byte frame with nothing", vec![0xff, 0xff]),
    ] {
        let mut conn = Tcp::connect(srv.addr());
        conn.stream().write_all(&bytes).expect("write");
        conn.stream().shutdown(Shutdown::Write).expect("half-close");
        // No whole message arrived: the server closes without replying
        // (a read timeout here fails the test).
        assert_eq!(conn.recv(), None, "{what}: no reply, then close");
        assert_alive(srv.addr(), what);
    }
}

#[test]
fn many_idle_and_abandoned_tcp_connections_do_not_stop_service() {
    let srv = t::start();
    // Connections left open mid-frame must not block others. Fewer than
    // the per-source cap (--tcp-max-connections-per-source, 32), since the
    // probe comes from the same address; the limits tests cover the cap.
    let mut held = Vec::new();
    for _ in 0..16 {
        let mut c = Tcp::connect(srv.addr());
        c.stream()
            .write_all(&[0x00, 0x40, 0x12])
            .expect("write partial frame");
        held.push(c);
    }
    assert_alive(srv.addr(), "16 half-sent TCP frames held open");
    drop(held);
    assert_alive(srv.addr(), "16 abandoned TCP connections");
}
