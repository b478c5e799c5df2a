//! A CSK roll, end to end, with a validating resolver in front and a
//! signed parent, every TTL two seconds, while a client keeps asking
//! through the resolver: not one answer may fail to validate.
//!
//! The chain: unbound, anchored at the parent's KSK (Knot, serving
//! example.com. with its own keys), finds the DS of cells.example.com. at
//! the parent and the zone's DNSKEY at cellns. The roll is the double-DS
//! one of docs/dnssec.md, the parent following the CDS records cellns
//! publishes, as a registry does (RFC 7344):
//!
//! 1. the new key K2 is published (not active): DNSKEY {K1, K2}, CDS {K1, K2};
//! 2. the parent adds DS(K2); wait until the resolver has both DS;
//! 3. at one moment T (the key files' timing), K2 becomes active and K1
//!    retired: everything is signed by K2; CDS {K2};
//! 4. the parent removes DS(K1);
//! 5. at T + 8 s (more than the TTLs of everything K1 signed) K1 is removed:
//!    DNSKEY {K2}.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::dnssec::rdata::DNSSECRData;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::support::map::Map;
use crate::support::resolver::{self, Config, PARENT, Parent};
use crate::support::server::Launch;
use crate::support::table::ORIGIN;
use crate::support::{RELOAD, dnssec_ds, dnssec_keygen, run_cli, unix_now, wait_until};

/// Every TTL of both zones.
const TTL: u32 = 2;
/// How long the test waits for one step (a key event takes at most a
/// second at cellns; caches hold things at most TTL).
const STEP: Duration = RELOAD;

/// Key tags in the `rtype` RRset of `m` (DNSKEY: their tags; DS, CDS: the
/// tags they name; RRSIG: the signers).
fn tags(m: &Message, rtype: RecordType) -> BTreeSet<u16> {
    m.answers
        .iter()
        .filter_map(|r| match (&r.data, rtype) {
            (RData::DNSSEC(DNSSECRData::DNSKEY(k)), RecordType::DNSKEY) => {
                k.calculate_key_tag().ok()
            }
            (RData::DNSSEC(DNSSECRData::DS(d)), RecordType::DS) => Some(d.key_tag()),
            (RData::DNSSEC(DNSSECRData::CDS(d)), RecordType::CDS) => Some(d.key_tag()),
            (RData::DNSSEC(DNSSECRData::RRSIG(s)), RecordType::RRSIG) => Some(s.input().key_tag),
            _ => None,
        })
        .collect()
}

fn set(t: &[u16]) -> BTreeSet<u16> {
    t.iter().copied().collect()
}

/// What cellns itself publishes for `qtype` (asked with DO).
fn at_cellns(server: SocketAddr, qname: &str, qtype: RecordType) -> Option<Message> {
    let mut q =
        crate::support::dns::query(crate::support::dns::next_id(), qname, qtype, Some(1232));
    if let Some(e) = q.edns.as_mut() {
        e.set_dnssec_ok(true);
    }
    let udp = crate::support::dns::Udp::new(server);
    udp.send(&crate::support::dns::wire(&q));
    let bytes = udp.recv_id(q.metadata.id.to_be_bytes(), Duration::from_secs(1))?;
    Message::from_vec(&bytes).ok()
}

/// A client asking through the resolver until stopped; every answer that
/// is not NOERROR with AD is a failure.
struct Client {
    stop: Arc<AtomicBool>,
    failures: Arc<Mutex<Vec<String>>>,
    asked: Arc<Mutex<usize>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Client {
    fn start(resolver: SocketAddr, steps: Arc<Mutex<String>>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let asked = Arc::new(Mutex::new(0));
        let (s, f, a) = (stop.clone(), failures.clone(), asked.clone());
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let questions = [
                ("acme.cells.example.com.", RecordType::A),
                ("hooli.cells.example.com.", RecordType::AAAA),
                ("acme.cells.example.com.", RecordType::TXT),
                ("nobody.cells.example.com.", RecordType::A),
                (ORIGIN, RecordType::DNSKEY),
                (ORIGIN, RecordType::SOA),
            ];
            while !s.load(Ordering::Relaxed) {
                for (qname, qtype) in questions {
                    let m = resolver::ask(resolver, qname, qtype, true);
                    *a.lock().expect("count") += 1;
                    if m.metadata.response_code != ResponseCode::NoError
                        || !m.metadata.authentic_data
                    {
                        let step = steps.lock().expect("step").clone();
                        f.lock().expect("failures").push(format!(
                            "{:.1}s ({step}): {qname} {qtype}: {} AD={}",
                            started.elapsed().as_secs_f64(),
                            m.metadata.response_code,
                            m.metadata.authentic_data
                        ));
                    }
                }
                // Pacing, not synchronisation: a steady trickle of queries.
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        Self {
            stop,
            failures,
            asked,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("client thread");
        }
        let asked = *self.asked.lock().expect("count");
        let failures = self.failures.lock().expect("failures").clone();
        (asked, failures)
    }
}

fn settime(keys: &Path, tag: u16, args: &[&str]) {
    let k = keys.to_str().expect("utf-8");
    let t = tag.to_string();
    let mut all = vec!["dnssec", "settime", k, &t];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_cli(&all);
    assert_eq!(code, 0, "{all:?}: {stdout}{stderr}");
}

#[test]
fn a_csk_roll_never_fails_validation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let keys = d.join("keys");
    let k1 = dnssec_keygen(&keys, &[]);

    let map = Map::example()
        .set("zone.ttl", i64::from(TTL))
        .set("zone.apex_ttl", i64::from(TTL))
        .set("zone.negative_ttl", i64::from(TTL))
        .glue("ns1.cells.example.com.", &["127.0.0.1"])
        .glue("ns2.cells.example.com.", &["127.0.0.1"]);
    let map_path = d.join("map.toml");
    std::fs::write(&map_path, map.toml()).expect("write map");
    let srv = Launch::new(&[
        "--map",
        map_path.to_str().expect("utf-8"),
        "--dnssec-keys",
        keys.to_str().expect("utf-8"),
    ])
    .start();

    let parent_dir = d.join("parent");
    std::fs::create_dir(&parent_dir).expect("mkdir");
    let delegation: Vec<String> = [
        "cells NS ns1.cells",
        "cells NS ns2.cells",
        "ns1.cells A 127.0.0.1",
        "ns2.cells A 127.0.0.1",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut parent = Parent::start(&parent_dir, &delegation, &dnssec_ds(&keys, ORIGIN), TTL);
    let ub_dir = d.join("unbound");
    std::fs::create_dir(&ub_dir).expect("mkdir");
    let ub = resolver::start(
        &ub_dir,
        &Config {
            stubs: vec![
                (ORIGIN.to_owned(), srv.dns),
                (PARENT.to_owned(), parent.addr),
            ],
            rest: srv.dns,
            trust_anchors: vec![parent.anchor()],
        },
    );
    // The chain validates before the roll starts.
    let m = ub.resolve_dnssec(ORIGIN, RecordType::DNSKEY);
    assert!(
        m.metadata.authentic_data,
        "the chain does not validate: {m}\n{}\n{}",
        ub.log(),
        parent.log_text()
    );
    assert_eq!(tags(&m, RecordType::DNSKEY), set(&[k1]));

    let steps = Arc::new(Mutex::new("K1 alone".to_owned()));
    let step = |s: &str| *steps.lock().expect("step") = s.to_owned();
    let client = Client::start(ub.addr, steps.clone());
    let cellns =
        |qtype| at_cellns(srv.dns, ORIGIN, qtype).map_or_else(BTreeSet::new, |m| tags(&m, qtype));
    let resolved = |qname: &str, qtype| {
        let m = ub.resolve_dnssec(qname, qtype);
        (tags(&m, qtype), m.metadata.authentic_data)
    };

    // 1. K2 published, not active.
    step("K2 published");
    let k2 = dnssec_keygen(&keys, &["--activate", "none"]);
    assert!(
        wait_until(STEP, || cellns(RecordType::CDS) == set(&[k1, k2])),
        "cellns did not publish K2's CDS"
    );
    assert_eq!(cellns(RecordType::DNSKEY), set(&[k1, k2]));

    // 2. The parent adds DS(K2), following the CDS.
    step("parent has DS(K1), DS(K2)");
    parent.set_ds(&dnssec_ds(&keys, ORIGIN), TTL);
    assert!(
        wait_until(STEP, || resolved(ORIGIN, RecordType::DS)
            == (set(&[k1, k2]), true)),
        "the resolver never saw both DS: {}",
        parent.log_text()
    );
    assert!(wait_until(STEP, || {
        resolved(ORIGIN, RecordType::DNSKEY) == (set(&[k1, k2]), true)
    }));

    // 3. The switch, at one moment for both key files.
    let t = unix_now() as u64 + 3;
    let (switch, delete) = (t.to_string(), (t + 8).to_string());
    settime(&keys, k2, &["--activate", &switch]);
    settime(&keys, k1, &["--inactive", &switch, "--delete", &delete]);
    step("switch scheduled");
    assert!(
        wait_until(STEP, || {
            at_cellns(srv.dns, "acme.cells.example.com.", RecordType::A)
                .is_some_and(|m| tags(&m, RecordType::RRSIG) == set(&[k2]))
        }),
        "K2 never took over the signing"
    );
    step("K2 signs, K1 retired");
    assert_eq!(cellns(RecordType::CDS), set(&[k2]));
    assert_eq!(cellns(RecordType::DNSKEY), set(&[k1, k2]));

    // The registry takes its time: the zone, signed by K2 alone, must
    // validate through the DS(K2) added in step 2 (without it, answers
    // fail within a TTL).
    let until = Instant::now() + Duration::from_secs(2 * u64::from(TTL) + 1);
    wait_until(STEP, || Instant::now() >= until);

    // 4. The parent drops DS(K1).
    parent.set_ds(&dnssec_ds(&keys, ORIGIN), TTL);
    step("parent has DS(K2)");
    assert!(wait_until(STEP, || resolved(ORIGIN, RecordType::DS)
        == (set(&[k2]), true)));

    // 5. K1 leaves the DNSKEY set.
    assert!(
        wait_until(STEP, || cellns(RecordType::DNSKEY) == set(&[k2])),
        "K1 was never removed"
    );
    step("K1 removed");
    assert!(wait_until(STEP, || {
        resolved(ORIGIN, RecordType::DNSKEY) == (set(&[k2]), true)
    }));
    // One more TTL of asking with K2 alone.
    let until = Instant::now() + Duration::from_secs(u64::from(TTL) + 1);
    wait_until(STEP, || Instant::now() >= until);

    let (asked, failures) = client.finish();
    assert!(
        failures.is_empty(),
        "{} of {asked} answers failed validation during the roll:\n{}\nunbound:\n{}",
        failures.len(),
        failures.join("\n"),
        ub.log()
    );
    assert!(asked > 100, "only {asked} questions asked during the roll");
    assert!(srv.logged("DNSSEC keys changed: new zone version"));
}
