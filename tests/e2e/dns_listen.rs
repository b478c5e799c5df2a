//! The DNS listen address: IPv6 (`--dns-listen [::1]:0`: the whole answer
//! table over UDP and TCP, with hickory messages and with dig, truncation
//! with the retry over TCP), and the UDP port is cellns's alone.

use hickory_proto::rr::RecordType;

use crate::support::dns::{TRANSPORTS, Transport, exchange, query, seen};
use crate::support::table::{self as t, BIG_CELL_ADDRS, check_row};

#[test]
fn ipv6_listen_address_answers_over_udp_and_tcp() {
    let srv = t::start_on("[::1]:0");
    let dns = srv.addr();
    assert!(
        dns.is_ipv6() && dns.ip().is_loopback(),
        "the DNS address logged is {dns}, not on ::1"
    );
    for transport in TRANSPORTS {
        for (i, row) in t::table().into_iter().enumerate() {
            let m = exchange(
                dns,
                transport,
                &query(0x600 + i as u16, row.name, row.qtype, None),
            );
            check_row(&row, &format!("over {transport:?} on [::1]"), &seen(&m));
        }
    }
    // dig over IPv6 too, both transports.
    for opts in [&["+short"][..], &["+short", "+tcp"]] {
        let out = crate::support::dns::dig(dns, opts, "acme.cells.example.com.", "A");
        let mut got: Vec<&str> = out.lines().collect();
        got.sort_unstable();
        assert_eq!(got, ["192.0.2.10", "192.0.2.11"], "dig {opts:?} @{dns}");
    }
    // Truncation works the same: TC over UDP without EDNS, whole over TCP.
    let big = query(0x700, "bigco.cells.example.com.", RecordType::AAAA, None);
    let m = exchange(dns, Transport::Udp, &big);
    assert!(m.metadata.truncation && m.answers.is_empty(), "{m:?}");
    let m = exchange(dns, Transport::Tcp, &big);
    assert_eq!(m.answers.len(), BIG_CELL_ADDRS);
}

/// Another socket of the same user may join the UDP port (SO_REUSEPORT,
/// which cellns's workers need), but it gets none of the queries: the
/// steering program cellns attaches to the port sends every datagram to
/// one of its own workers. Found by this suite: before the program, such a
/// socket took a share of the queries, existing flows included.
#[test]
fn a_socket_that_joins_the_dns_port_gets_no_queries() {
    use socket2::{Domain, Socket, Type};

    use crate::support::EXCHANGE;
    use crate::support::dns::{Udp, wire};

    let srv = t::start();
    // (Were a query delivered to the intruder, its client would go
    // unanswered: the per-query check below catches it first.)
    let intruder = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
    intruder.set_reuse_port(true).expect("SO_REUSEPORT");
    intruder
        .bind(&srv.addr().into())
        .expect("the same user can join the port");
    let intruder: std::net::UdpSocket = intruder.into();
    intruder
        .set_nonblocking(true)
        .expect("non-blocking intruder");
    // Many flows (one client socket each, so many source ports), as the
    // kernel's default spreading is per flow.
    for i in 0..200u16 {
        let id = 0x4000 + i;
        let udp = Udp::new(srv.addr());
        udp.send(&wire(&query(
            id,
            "acme.cells.example.com.",
            RecordType::A,
            None,
        )));
        assert!(
            udp.recv_id(id.to_be_bytes(), EXCHANGE).is_some(),
            "query {i} was not answered by cellns"
        );
    }
    let mut buf = [0u8; 512];
    let mut stolen = 0;
    while intruder.recv(&mut buf).is_ok() {
        stolen += 1;
    }
    assert_eq!(stolen, 0, "the intruder received {stolen} of 200 queries");
}
