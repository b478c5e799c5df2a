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

/// BUG, found by this suite (see the helper's report on issue 20): the UDP
/// workers bind with SO_REUSEPORT, so any process of the same user can
/// bind the same port with SO_REUSEPORT and the kernel hands it a share of
/// cellns's queries, existing flows included (demonstrated by hand: after
/// such a bind, 3 of 8 client sockets were answered by the intruder). With
/// `--dns-listen ADDR:0` two cellns of one user can even land on one port
/// by chance (a port-0 bind with SO_REUSEPORT may return a port another
/// SO_REUSEPORT socket holds), and then split each other's queries: a rare
/// failure of any e2e test that runs beside another. Ignored until src/dns
/// binds the port exclusively (e.g. one socket shared by the workers).
#[test]
#[ignore = "BUG: another process can join cellns's UDP port with SO_REUSEPORT and take a share of its queries (src/dns/udp.rs bind)"]
fn no_other_socket_can_join_the_dns_port() {
    use socket2::{Domain, Socket, Type};
    let srv = t::start();
    let intruder = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
    intruder.set_reuse_port(true).expect("SO_REUSEPORT");
    let joined = intruder.bind(&srv.addr().into());
    assert!(
        joined.is_err(),
        "a socket that is not cellns's joined its UDP port {} and now gets a share of its queries",
        srv.addr()
    );
}
