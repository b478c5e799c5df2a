//! The DNS request path: bytes in as the UDP worker hands them to the
//! dispatch (fast path first, the general path for the rest), over the
//! example map and its hash-placement variant. Beyond "no panic": a
//! response is never longer than its buffer, never sent for a response or
//! a short datagram, and whatever the fast path answers the general path
//! answers with the same bytes (the fast path's contract).

#![no_main]

use std::net::SocketAddr;

use cellns::dns::fast::{Fast, RESPONSE_BUF, respond};
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: cellns_fuzz::seeds_requested("dns_datagram"),
    |data: &[u8]| {
    // The first byte picks the map and whether the kernel cut the datagram.
    let Some((&mode, query)) = data.split_first() else {
        return;
    };
    let (store, dispatch) = cellns_fuzz::dispatch(mode & 1 == 1);
    let truncated = mode & 2 == 2;
    let src: SocketAddr = "192.0.2.1:5353".parse().expect("address");
    let live = store.load();
    let mut out = [0u8; RESPONSE_BUF];
    let answered = dispatch.datagram(&live, query, src, truncated, &mut out);
    if let Some(n) = answered {
        assert!(n >= 12 && n <= RESPONSE_BUF, "response of {n} bytes");
        assert!(out[2] & 0x80 != 0, "the response has QR set");
        assert_eq!(out[..2], query[..2], "the response echoes the ID");
    }
    if query.len() < 12 || query[2] & 0x80 != 0 {
        assert_eq!(answered, None, "a short datagram or a response is never answered");
    }
    if truncated {
        return;
    }
    let mut fast_out = [0u8; RESPONSE_BUF];
    if let Fast::Answered(n, ..) = respond(&live, query, &mut fast_out) {
        let mut general = [0u8; RESPONSE_BUF];
        let g = dispatch.general_datagram(query, src, &mut general);
        assert_eq!(
            Some(&general[..g.unwrap_or(0)]),
            g.map(|_| &fast_out[..n]),
            "the fast and the general path differ for {query:02x?}"
        );
    }
});
