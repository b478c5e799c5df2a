//! Signed answers through the real dispatch, each signature checked with
//! hickory-proto's own canonical form (`TBS`) and the published DNSKEY,
//! so these tests do not trust `sign`'s encoding of the signed data.

use std::str::FromStr;
use std::sync::Arc;

use hickory_proto::dnssec::rdata::{DNSSECRData, NSEC, RRSIG};
use hickory_proto::dnssec::{PublicKey as _, TBS};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::keys::{Algorithm, KeygenSpec, Role, Timing, keygen, now};
use super::sign::NXNAME;
use super::{DEFAULT_VALIDITY, Dnssec, DnssecConfig};
use crate::dns::dispatch::Dispatch;
use crate::dns::fast::{self, Fast, RESPONSE_BUF};
use crate::dns::prepared::{Store, signed_store_of};

/// A signed store over the example map with one key of `algorithm` (a CSK).
fn signed(algorithm: Algorithm, hash: bool) -> (tempfile::TempDir, Arc<Dnssec>, Arc<Store>) {
    let dir = tempfile::tempdir().unwrap();
    let t = now();
    keygen(
        dir.path(),
        &KeygenSpec {
            algorithm,
            role: Role::Csk,
            timing: Timing {
                created: t,
                publish: Some(t),
                activate: Some(t),
                inactive: None,
                delete: None,
            },
        },
    )
    .unwrap();
    let d = Dnssec::open(&DnssecConfig {
        keys: dir.path().to_owned(),
        cache_entries: 10_000,
        cache_bytes: 16 << 20,
        validity: DEFAULT_VALIDITY,
    })
    .unwrap();
    let mut text = crate::map::EXAMPLE_MAP.to_owned();
    if hash {
        text = text.replace("unknown = \"nxdomain\"", "unknown = \"hash\"");
    }
    signed_map(dir, d, &text)
}

/// A signed store over the map `text`, with the keys of `d` (in `dir`).
fn signed_map(
    dir: tempfile::TempDir,
    d: Arc<Dnssec>,
    text: &str,
) -> (tempfile::TempDir, Arc<Dnssec>, Arc<Store>) {
    let map = crate::map::load_str(crate::map::Source {
        text,
        format: crate::map::Format::Toml,
        name: "t.toml",
    })
    .unwrap();
    let store = Arc::new(signed_store_of(map, d.clone()));
    (dir, d, store)
}

fn query(name: &str, t: RecordType, edns: Option<(u16, bool, bool)>) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some((size, dnssec_ok, co)) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        e.set_dnssec_ok(dnssec_ok);
        if co {
            e.flags_mut().z |= 0x4000;
        }
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

/// Asks over UDP through the dispatch (fast path first, as the workers do).
fn ask_udp(store: &Arc<Store>, q: &[u8]) -> Message {
    let d = Dispatch::new(store.clone(), Default::default());
    let mut out = [0u8; RESPONSE_BUF];
    let live = store.load();
    let n = d
        .datagram(&live, q, "127.0.0.1:5300".parse().unwrap(), false, &mut out)
        .expect("an answer");
    Message::from_vec(&out[..n]).unwrap()
}

fn ask(store: &Arc<Store>, name: &str, t: RecordType) -> Message {
    ask_udp(store, &query(name, t, Some((1232, true, false))))
}

fn rrsig(r: &Record) -> Option<&RRSIG> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::RRSIG(s)) => Some(s),
        _ => None,
    }
}

fn nsec(r: &Record) -> Option<&NSEC> {
    match &r.data {
        RData::DNSSEC(DNSSECRData::NSEC(n)) => Some(n),
        _ => None,
    }
}

/// Checks every RRSIG of `records` against the RRset it covers and the
/// zone's DNSKEYs; returns how many verified. Fails on one that does not,
/// and on an RRset without one.
fn verify(store: &Arc<Store>, records: &[Record]) -> usize {
    let dnskeys = ask(store, "cells.example.com.", RecordType::DNSKEY);
    let keys: Vec<_> = dnskeys
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::DNSSEC(DNSSECRData::DNSKEY(k)) => Some(k.clone()),
            _ => None,
        })
        .collect();
    assert!(!keys.is_empty());
    let mut verified = 0;
    for r in records {
        if r.record_type() == RecordType::RRSIG {
            continue;
        }
        let sigs: Vec<&RRSIG> = records
            .iter()
            .filter(|s| s.name == r.name)
            .filter_map(rrsig)
            .filter(|s| s.input().type_covered == r.record_type())
            .collect();
        assert!(!sigs.is_empty(), "no RRSIG covers {r}");
    }
    for r in records {
        let Some(sig) = rrsig(r) else { continue };
        let input = sig.input();
        let covered: Vec<Record> = records
            .iter()
            .filter(|c| c.name == r.name && c.record_type() == input.type_covered)
            .cloned()
            .collect();
        assert!(!covered.is_empty(), "{r}: covers nothing");
        assert_eq!(r.ttl, covered[0].ttl, "RRSIG TTL = the RRset's TTL");
        assert_eq!(input.original_ttl, covered[0].ttl);
        assert_eq!(
            input.signer_name,
            Name::from_str("cells.example.com.").unwrap()
        );
        assert_eq!(input.num_labels, r.name.num_labels());
        let t = now() as u32;
        assert!(input.sig_inception.get() < t && t < input.sig_expiration.get());
        let tbs = TBS::from_input(&r.name, DNSClass::IN, input, covered.iter()).unwrap();
        let key = keys
            .iter()
            .find(|k| super::keys::key_tag(k) == input.key_tag)
            .unwrap_or_else(|| panic!("{r}: no DNSKEY with tag {}", input.key_tag));
        key.public_key()
            .verify(tbs.as_ref(), sig.sig())
            .unwrap_or_else(|e| panic!("{r}: bad signature: {e}"));
        verified += 1;
    }
    verified
}

#[test]
fn tenant_answers_are_signed_and_verify() {
    for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
        let (_dir, _d, store) = signed(alg, false);
        for (name, t, n) in [
            ("acme.cells.example.com.", RecordType::A, 2),
            ("acme.cells.example.com.", RecordType::AAAA, 1),
            ("hooli.cells.example.com.", RecordType::A, 1),
            ("umbrella.cells.example.com.", RecordType::A, 1),
            ("use1-a.cells.example.com.", RecordType::A, 2),
            ("ns1.cells.example.com.", RecordType::A, 1),
            ("cells.example.com.", RecordType::SOA, 1),
            ("cells.example.com.", RecordType::NS, 2),
            ("cells.example.com.", RecordType::DNSKEY, 1),
            ("cells.example.com.", RecordType::CDS, 1),
            ("cells.example.com.", RecordType::CDNSKEY, 1),
        ] {
            let m = ask(&store, name, t);
            assert_eq!(
                m.metadata.response_code,
                ResponseCode::NoError,
                "{name} {t}"
            );
            assert!(m.metadata.authoritative);
            let data: Vec<_> = m
                .answers
                .iter()
                .filter(|r| r.record_type() != RecordType::RRSIG)
                .collect();
            assert_eq!(data.len(), n, "{name} {t}: {m}");
            assert_eq!(verify(&store, &m.answers), 1, "{alg} {name} {t}");
            assert!(m.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok));
            // Glue is not signed.
            assert!(
                m.additionals
                    .iter()
                    .all(|r| r.record_type() != RecordType::RRSIG)
            );
        }
    }
}

#[test]
fn a_moving_tenant_is_signed_with_the_short_ttl() {
    let (dir, d, _) = signed(Algorithm::Ed25519, false);
    // globex moves to euw1-a 20 s from now: inside the short-TTL window
    // (zone.ttl 30, move_ttl 5 by default).
    let at = time::OffsetDateTime::from_unix_timestamp(now() as i64 + 20)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let text = format!(
        "{}\n[moves.globex]\nto = \"euw1-a\"\nat = \"{at}\"\n",
        crate::map::EXAMPLE_MAP
    );
    let (_dir, _d, store) = signed_map(dir, d, &text);
    let m = ask(&store, "globex.cells.example.com.", RecordType::A);
    let a: Vec<_> = m
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .collect();
    assert_eq!(a.len(), 1, "{m}");
    assert_eq!(a[0].ttl, 5, "the short TTL: {m}");
    let sig = m.answers.iter().find_map(rrsig).expect("signed");
    assert_eq!(sig.input().original_ttl, 5, "RRSIG original TTL");
    assert_eq!(verify(&store, &m.answers), 1);
    // A tenant without a move keeps the normal TTL, signed as such.
    let m = ask(&store, "acme.cells.example.com.", RecordType::A);
    assert_eq!(m.answers[0].ttl, 30);
    assert_eq!(verify(&store, &m.answers), 1);
}

#[test]
fn nonexistent_names_get_a_compact_denial() {
    let (_dir, _d, store) = signed(Algorithm::EcdsaP256Sha256, false);
    for name in [
        "nobody.cells.example.com.",
        "x.acme.cells.example.com.",
        "a.b.c.cells.example.com.",
    ] {
        for t in [RecordType::A, RecordType::TXT, RecordType::DS] {
            let m = ask(&store, name, t);
            // NOERROR, not NXDOMAIN (RFC 9824 §3.2)
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(m.answers.is_empty());
            assert_eq!(verify(&store, &m.authorities), 2, "{name}: {m}");
            let soa = &m.authorities[0];
            assert_eq!(soa.record_type(), RecordType::SOA);
            let ns = m.authorities.iter().find(|r| nsec(r).is_some()).unwrap();
            assert_eq!(ns.name.to_ascii(), name, "NSEC owned by the query name");
            assert_eq!(ns.ttl, 30, "min(SOA TTL, MINIMUM)");
            let n = nsec(ns).unwrap();
            assert_eq!(n.next_domain_name().to_ascii(), format!("\\000.{name}"));
            let types: Vec<RecordType> = n.type_bit_maps().collect();
            assert_eq!(types, [RecordType::RRSIG, RecordType::NSEC, NXNAME]);
        }
    }
    // With the Compact Answers OK flag: NXDOMAIN, and CO in the response.
    let m = ask_udp(
        &store,
        &query(
            "nobody.cells.example.com.",
            RecordType::A,
            Some((1232, true, true)),
        ),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.edns.as_ref().map(|e| e.flags().z & 0x4000), Some(0x4000));
    assert_eq!(verify(&store, &m.authorities), 2);
    // An existing name with CO: NOERROR as always.
    let m = ask_udp(
        &store,
        &query(
            "acme.cells.example.com.",
            RecordType::TXT,
            Some((1232, true, true)),
        ),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[test]
fn nodata_lists_the_types_the_name_has() {
    let (_dir, _d, store) = signed(Algorithm::EcdsaP256Sha256, false);
    use RecordType as T;
    for (name, t, want) in [
        ("acme.cells.example.com.", T::TXT, vec![T::A, T::AAAA]),
        ("initech.cells.example.com.", T::AAAA, vec![T::A]),
        ("euw1-a.cells.example.com.", T::AAAA, vec![T::A]),
        ("ns2.cells.example.com.", T::AAAA, vec![T::A]),
        (
            "cells.example.com.",
            T::DS,
            vec![T::NS, T::SOA, T::DNSKEY, T::CDS, T::CDNSKEY],
        ),
    ] {
        let m = ask(&store, name, t);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty(), "{name} {t}: {m}");
        assert_eq!(verify(&store, &m.authorities), 2);
        let n = m.authorities.iter().find_map(nsec).unwrap();
        let mut want = want;
        want.extend([T::RRSIG, T::NSEC]);
        want.sort();
        let got: Vec<T> = n.type_bit_maps().collect();
        assert_eq!(got, want, "{name}");
        assert!(!got.contains(&t));
    }
}

#[test]
fn hashed_tenants_are_signed() {
    let (_dir, _d, store) = signed(Algorithm::EcdsaP256Sha256, true);
    for tenant in ["newco", "startup-42", "zz"] {
        let m = ask(
            &store,
            &format!("{tenant}.cells.example.com."),
            RecordType::A,
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(!m.answers.is_empty());
        assert_eq!(verify(&store, &m.answers), 1);
    }
}

#[test]
fn case_randomised_queries_hit_the_cache() {
    let (_dir, d, store) = signed(Algorithm::EcdsaP256Sha256, false);
    let first = ask(&store, "acme.cells.example.com.", RecordType::A);
    let before = d.cache.stats();
    let again = ask(&store, "AcMe.CeLLs.eXample.COM.", RecordType::A);
    let after = d.cache.stats();
    assert_eq!(after.hits, before.hits + 1, "{before:?} {after:?}");
    assert_eq!(after.misses, before.misses);
    // The same signature, owned by the name as asked.
    let sig = |m: &Message| m.answers.iter().find_map(rrsig).unwrap().sig().to_vec();
    assert_eq!(sig(&first), sig(&again));
    assert_eq!(
        again.answers.last().unwrap().name.to_ascii(),
        "AcMe.CeLLs.eXample.COM.",
        "{again}"
    );
    assert_eq!(verify(&store, &again.answers), 1);
    // A new zone version that leaves the RRset as it was keeps it cached.
    store.republish("test").expect("serial");
    let before = d.cache.stats();
    let _ = ask(&store, "acme.cells.example.com.", RecordType::A);
    assert_eq!(d.cache.stats().hits, before.hits + 1);
}

#[test]
fn unsigned_queries_take_the_fast_path_and_carry_no_dnssec() {
    let (_dir, _d, store) = signed(Algorithm::EcdsaP256Sha256, false);
    let live = store.load();
    let mut out = [0u8; RESPONSE_BUF];
    for edns in [None, Some((1232, false, false))] {
        for (name, t) in [
            ("acme.cells.example.com.", RecordType::A),
            ("acme.cells.example.com.", RecordType::TXT),
            ("nobody.cells.example.com.", RecordType::A),
        ] {
            let q = query(name, t, edns);
            assert!(
                matches!(fast::respond(&live, &q, &mut out), Fast::Answered(..)),
                "{name} {t} {edns:?}"
            );
            let m = ask_udp(&store, &q);
            let all = m.answers.iter().chain(&m.authorities).chain(&m.additionals);
            assert!(
                all.clone().all(|r| !matches!(r.data, RData::DNSSEC(_))),
                "{m}"
            );
            if name.starts_with("nobody") {
                assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
            }
        }
    }
    // The DO bit goes to the general path, and only in a signed zone.
    let q = query(
        "acme.cells.example.com.",
        RecordType::A,
        Some((1232, true, false)),
    );
    assert_eq!(fast::respond(&live, &q, &mut out), Fast::General);
    let plain = Arc::new(crate::dns::prepared::store_of(
        crate::map::load_example().unwrap(),
    ));
    assert!(matches!(
        fast::respond(&plain.load(), &q, &mut out),
        Fast::Answered(..)
    ));
}

#[test]
fn signed_answers_that_do_not_fit_truncate_whole() {
    let (dir, d, store) = signed(Algorithm::EcdsaP256Sha256, false);
    // Three active keys: the DNSKEY answer with three RRSIGs is over 512
    // bytes.
    for _ in 0..2 {
        let t = now();
        keygen(
            dir.path(),
            &KeygenSpec {
                algorithm: Algorithm::EcdsaP256Sha256,
                role: Role::Csk,
                timing: Timing {
                    created: t,
                    publish: Some(t),
                    activate: Some(t),
                    inactive: None,
                    delete: None,
                },
            },
        )
        .unwrap();
    }
    assert!(d.tick(now()));
    store.republish("test").expect("serial");
    let q = query(
        "cells.example.com.",
        RecordType::DNSKEY,
        Some((512, true, false)),
    );
    let m = ask_udp(&store, &q);
    assert!(m.metadata.truncation, "{m}");
    assert!(m.answers.is_empty() && m.authorities.is_empty());
    // With room it is whole, each key's signature verifying.
    let m = ask(&store, "cells.example.com.", RecordType::DNSKEY);
    assert!(!m.metadata.truncation);
    assert_eq!(verify(&store, &m.answers), 3);
    // Over TCP it is whole whatever the payload size.
    let q = query(
        "cells.example.com.",
        RecordType::DNSKEY,
        Some((512, true, false)),
    );
    let dispatch = Dispatch::new(store.clone(), Default::default());
    let reply = futures_lite(dispatch.message(
        q,
        "127.0.0.1:5300".parse().unwrap(),
        crate::metrics::Transport::Tcp,
    ));
    let crate::dns::dispatch::Reply::Message(bytes) = reply else {
        panic!("no TCP answer");
    };
    let m = Message::from_vec(&bytes).unwrap();
    assert!(!m.metadata.truncation);
    assert_eq!(verify(&store, &m.answers), 3);
}

/// Runs a future that never waits (the general path) to completion.
fn futures_lite<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f
        .as_mut()
        .poll(&mut std::task::Context::from_waker(std::task::Waker::noop()))
    {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => panic!("the general path waited"),
    }
}

#[test]
fn nsec_rrsig_and_nxname_questions() {
    let (_dir, _d, store) = signed(Algorithm::EcdsaP256Sha256, false);
    let m = ask(&store, "acme.cells.example.com.", RecordType::NSEC);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(verify(&store, &m.answers), 1);
    assert!(m.answers.iter().any(|r| nsec(r).is_some()));
    let m = ask(&store, "acme.cells.example.com.", RecordType::RRSIG);
    assert_eq!(m.answers.len(), 1, "{m}");
    assert_eq!(
        rrsig(&m.answers[0]).map(|s| s.input().type_covered),
        Some(RecordType::A)
    );
    let m = ask(&store, "acme.cells.example.com.", NXNAME);
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
}

#[test]
fn a_key_event_changes_the_zone_and_the_signers() {
    let (dir, d, store) = signed(Algorithm::EcdsaP256Sha256, false);
    let t = now();
    // A second CSK, published now, active in an hour: in the DNSKEY set
    // and the CDS set, signing nothing yet.
    let k2 = keygen(
        dir.path(),
        &KeygenSpec {
            algorithm: Algorithm::EcdsaP256Sha256,
            role: Role::Csk,
            timing: Timing {
                created: t,
                publish: Some(t),
                activate: Some(t + 3600),
                inactive: None,
                delete: None,
            },
        },
    )
    .unwrap();
    assert!(d.tick(t), "a published key is a new zone version");
    assert!(!d.tick(t), "nothing changed since");
    store.republish("test").expect("serial");
    let m = ask(&store, "cells.example.com.", RecordType::DNSKEY);
    assert_eq!(
        m.answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .count(),
        2
    );
    // Signed by the active key only.
    assert_eq!(verify(&store, &m.answers), 1);
    let cds = ask(&store, "cells.example.com.", RecordType::CDS);
    assert_eq!(
        cds.answers
            .iter()
            .filter(|r| r.record_type() == RecordType::CDS)
            .count(),
        2
    );
    // An hour later both are active: double signatures.
    assert!(d.tick(t + 3600));
    store.republish("test").expect("serial");
    let m = ask(&store, "acme.cells.example.com.", RecordType::A);
    assert_eq!(verify(&store, &m.answers), 2);
    assert!(
        m.answers
            .iter()
            .filter_map(rrsig)
            .any(|s| s.input().key_tag == k2.tag())
    );
}
