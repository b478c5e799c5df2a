//! Malformed input over UDP and TCP: the server answers FORMERR or stays
//! silent, never crashes, and keeps answering valid queries afterwards.

use std::io::Write;
use std::net::{Shutdown, SocketAddr};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::dns_support::{self as s, assert_alive};

/// ID of the valid query sent after each malformed one.
const VALID_ID: u16 = 0x0a11;

/// A header: `id`, RD set, the given section counts.
fn header(id: u16, counts: [u16; 4]) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend([0x01, 0x00]);
    for c in counts {
        h.extend(c.to_be_bytes());
    }
    h
}

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

/// Checks a reply to a malformed message: FORMERR, or (for a readable
/// message) any proper response to the same ID.
#[track_caller]
fn check_reply(what: &str, sent: &[u8], reply: &[u8], structured: bool) {
    assert!(reply.len() >= 12, "{what}: a reply shorter than a header");
    assert!(reply[2] & 0x80 != 0, "{what}: a reply without QR");
    if structured {
        let rcode = reply[3] & 0x0f;
        assert_eq!(
            rcode,
            ResponseCode::FormErr.low(),
            "{what}: answered, but not FORMERR: {reply:02x?}"
        );
        assert_eq!(reply[..2], sent[..2], "{what}: FORMERR echoes the ID");
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

/// UDP: the malformed datagram, then a valid query on the same socket.
/// Every reply before the valid answer must belong to the malformed one.
fn udp_case(server: SocketAddr, what: &str, msg: &[u8], structured: bool) {
    let sock = s::udp_socket(server);
    sock.send(msg).expect("send malformed");
    sock.send(&valid()).expect("send valid");
    let mut buf = vec![0u8; 65535];
    loop {
        let n = sock
            .recv(&mut buf)
            .unwrap_or_else(|e| panic!("UDP {what}: no answer to the valid query after it: {e}"));
        let reply = &buf[..n];
        if is_valid_answer(reply) {
            break;
        }
        check_reply(&format!("UDP {what}"), msg, reply, structured);
    }
}

/// TCP: the malformed message framed, then a valid query on the same
/// connection. Replies come in order: the malformed one's (if any), then
/// the valid answer; or the server closes the connection.
fn tcp_case(server: SocketAddr, what: &str, msg: &[u8], structured: bool) {
    let mut conn = s::tcp_connect(server);
    s::tcp_send(&mut conn, msg);
    s::tcp_send(&mut conn, &valid());
    while let Some(reply) = s::tcp_recv(&mut conn) {
        if is_valid_answer(&reply) {
            return;
        }
        check_reply(&format!("TCP {what}"), msg, &reply, structured);
    }
    // Closed: allowed ("silence"); a new connection must still work.
}

#[test]
fn malformed_udp_gets_formerr_or_silence_and_the_server_lives() {
    let srv = s::start();
    for (i, (what, msg)) in cases().into_iter().enumerate() {
        let structured = what != "random garbage";
        udp_case(srv.addr(), what, &msg, structured);
        if i % 8 == 0 || structured {
            assert_alive(srv.addr(), what);
        }
    }
    assert_alive(srv.addr(), "all malformed datagrams");
}

#[test]
fn malformed_tcp_gets_formerr_or_silence_and_the_server_lives() {
    let srv = s::start();
    for (what, msg) in cases() {
        let structured = what != "random garbage";
        tcp_case(srv.addr(), what, &msg, structured);
        assert_alive(srv.addr(), what);
    }
}

#[test]
fn zero_length_tcp_frame() {
    let srv = s::start();
    let mut conn = s::tcp_connect(srv.addr());
    conn.write_all(&[0, 0]).expect("write empty frame");
    s::tcp_send(&mut conn, &valid());
    // The server may answer the query or close the connection; it must not
    // send anything else, and must keep serving.
    if let Some(reply) = s::tcp_recv(&mut conn) {
        assert!(
            is_valid_answer(&reply),
            "unexpected reply after a zero-length frame: {reply:02x?}"
        );
    }
    assert_alive(srv.addr(), "a zero-length TCP frame");
}

#[test]
fn tcp_length_prefix_longer_than_the_data_then_close() {
    let srv = s::start();
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
        let mut conn = s::tcp_connect(srv.addr());
        conn.write_all(&bytes).expect("write");
        conn.shutdown(Shutdown::Write).expect("half-close");
        // No whole message arrived: the server closes without replying
        // (a read timeout here fails the test).
        assert_eq!(s::tcp_recv(&mut conn), None, "{what}: no reply, then close");
        assert_alive(srv.addr(), what);
    }
}

#[test]
fn many_idle_and_abandoned_tcp_connections_do_not_stop_service() {
    let srv = s::start();
    // Connections left open mid-frame must not block others.
    let mut held = Vec::new();
    for _ in 0..32 {
        let mut c = s::tcp_connect(srv.addr());
        c.write_all(&[0x00, 0x40, 0x12])
            .expect("write partial frame");
        held.push(c);
    }
    assert_alive(srv.addr(), "32 half-sent TCP frames held open");
    drop(held);
    assert_alive(srv.addr(), "32 abandoned TCP connections");
}
