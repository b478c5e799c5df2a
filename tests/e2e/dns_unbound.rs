//! A real recursive resolver in front of cellns: unbound with a stub-zone
//! for the origin. Through it a tenant resolves to its cell's addresses
//! and an unknown tenant gets NXDOMAIN.

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;

use crate::support::dns::norm_record;
use crate::support::resolver::{self, Config};
use crate::support::table::{self as t, ORIGIN};

fn addresses(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter(|r| matches!(r.record_type(), RecordType::A | RecordType::AAAA))
        .map(|r| r.data.to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn unbound_resolves_tenants_through_cellns() {
    let srv = t::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let ub = resolver::start(dir.path(), &Config::stub(ORIGIN, srv.addr()));

    for (tenant, qtype, want) in [
        ("acme", RecordType::A, vec!["192.0.2.10", "192.0.2.11"]),
        ("acme", RecordType::AAAA, vec!["2001:db8::10"]),
        ("globex", RecordType::A, vec!["192.0.2.20"]),
        // usw2-a is down: its tenant gets use1-b.
        ("hooli", RecordType::A, vec!["192.0.2.20"]),
        ("initech", RecordType::A, vec!["198.51.100.10"]),
    ] {
        let qname = format!("{tenant}.cells.example.com.");
        let m = ub.resolve(&qname, qtype);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NoError,
            "{qname} {qtype}"
        );
        assert!(m.metadata.recursion_available, "unbound recursed");
        assert_eq!(addresses(&m), want, "{qname} {qtype}: {m:?}");
        assert!(
            m.answers.iter().all(|r| r.ttl <= 30),
            "{qname}: TTL at most zone.ttl"
        );
    }

    for qname in ["nobody.cells.example.com.", "www.acme.cells.example.com."] {
        let m = ub.resolve(qname, RecordType::A);
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "{qname}: {m:?}"
        );
        assert!(m.answers.is_empty());
        let soa: Vec<String> = m.authorities.iter().map(norm_record).collect();
        assert_eq!(soa.len(), 1, "{qname}: SOA in authority: {soa:?}");
        assert!(soa[0].starts_with("cells.example.com. "), "{soa:?}");
        assert!(soa[0].contains(" SOA "), "{soa:?}");
    }

    // NODATA passes through as NOERROR with no answer.
    let m = ub.resolve("acme.cells.example.com.", RecordType::TXT);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
}
