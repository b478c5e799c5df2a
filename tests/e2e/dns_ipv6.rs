//! An IPv6 listen address (`--dns-listen [::1]:0`): the whole answer table
//! over UDP and TCP, with hickory messages and with dig, and truncation
//! with the retry over TCP.

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
