//! Micro benchmarks of the query path (criterion).
//!
//! - `lookup`: tenant → cell ([`cellns::route::lookup`]) on a snapshot of
//!   N tenants, for listed and unlisted names.
//! - `fast`: answer building on the fast path ([`cellns::dns::fast::respond`]):
//!   hit (A), NXDOMAIN, out-of-zone REFUSED, from query bytes to response bytes;
//!   `fast/N/10-cells` repeats it on the same tenants spread over 10 cells
//!   instead of 1000, to show what the number of cells costs per query.
//! - `general`: the same queries through the general path
//!   ([`cellns::dns::dispatch::Dispatch::general_datagram`]), for comparison.
//! - `udp_roundtrip`: end to end over loopback UDP against a running
//!   fast-path worker: `/1` one query at a time (latency, dominated by
//!   thread wake-ups), `/32` 32 queries in flight (per-query cost of client
//!   and server syscalls plus the server's work).
//! - `load`: parse + validate + compile of the map text (the start-up cost).
//!
//! The map is generated in-process with the load harness's layout
//! (`benches/loadtest/gen_zone.py`): tenants `t000001`… over 1000 cells with
//! in-zone hostnames, 2 A + 1 AAAA each. `cargo bench` (which passes
//! `--bench`) uses N = 1,000,000; `cargo test --all-targets` runs every
//! benchmark once on N = 1,000 so the test suite stays fast.
//!
//! Run: `cargo bench --bench micro` (or `-- fast` to filter).

use std::fmt::Write as _;
use std::hint::black_box;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use cellns::dns::dispatch::Dispatch;
use cellns::dns::fast::{self, Fast, RESPONSE_BUF};
use cellns::dns::udp;
use cellns::dns::{Live, Store};
use cellns::map::{Format, Source, load_str};
use criterion::{BatchSize, Criterion, Throughput};

const ORIGIN: &str = "cells.example.test.";
const CELLS: usize = 1000;
/// Distinct prepared queries per case: more than fit in L2, so lookups see
/// realistic cache misses on a large tenant table.
const QUERIES: usize = 1 << 16;
/// Queries in flight in the pipelined round-trip benchmark (well below the
/// sockets' buffers, so none is dropped).
const PIPELINE: usize = 32;

/// The harness's map (see `benches/loadtest/gen_zone.py`) as JSON, with
/// `cells` cells.
fn map_json(n: usize, cells: usize) -> String {
    let mut s = String::with_capacity(n * 24 + cells * 200 + 1024);
    let _ = write!(
        s,
        "{{\"version\":\"micro-{n}\",\"zone\":{{\"origin\":\"{ORIGIN}\",\"ttl\":30,\
         \"negative_ttl\":30,\"apex_ttl\":30,\"nameservers\":[\"ns1.{ORIGIN}\"],\
         \"hostmaster\":\"hostmaster.{ORIGIN}\",\"glue\":{{\"ns1.{ORIGIN}\":[\"192.0.2.1\"]}}}},\
         \"cells\":{{"
    );
    for k in 0..cells {
        let sep = if k == 0 { "" } else { "," };
        let (hi, lo) = ((k >> 8) & 255, k & 255);
        let _ = write!(
            s,
            "{sep}\"c{k:04}\":{{\"hostname\":\"c{k:04}.{ORIGIN}\",\
             \"ipv4\":[\"10.255.{hi}.{lo}\",\"100.127.{hi}.{lo}\"],\
             \"ipv6\":[\"2001:db8:ffff:{k:x}::1\"],\"region\":\"r{}\",\
             \"status\":\"active\",\"weight\":100}}",
            k % 4
        );
    }
    s.push_str("},\"placement\":{\"unknown\":\"nxdomain\"},\"tenants\":{");
    for i in 1..=n {
        let sep = if i == 1 { "" } else { "," };
        let _ = write!(s, "{sep}\"t{i:06}\":\"c{:04}\"", i % cells);
    }
    s.push_str("}}");
    s
}

fn load(text: &str) -> Store {
    cellns::dns::prepared::store_of(
        load_str(Source {
            text,
            format: Format::Json,
            name: "micro.json",
        })
        .expect("generated benchmark map is valid"),
    )
}

/// A query in wire format: no EDNS, RD clear (as dnsperf sends them).
fn query(name: &str, qtype: u16, id: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// A deterministic pseudo-random sequence (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Tenant names and queries for the three cases, as the load harness draws them.
struct Corpus {
    hit_labels: Vec<Vec<u8>>,
    miss_labels: Vec<Vec<u8>>,
    hit: Vec<Vec<u8>>,
    nxdomain: Vec<Vec<u8>>,
    refused: Vec<Vec<u8>>,
}

fn corpus(n: usize) -> Corpus {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let count = QUERIES.min(n.max(1) * 4);
    let mut c = Corpus {
        hit_labels: Vec::with_capacity(count),
        miss_labels: Vec::with_capacity(count),
        hit: Vec::with_capacity(count),
        nxdomain: Vec::with_capacity(count),
        refused: Vec::with_capacity(count),
    };
    for k in 0..count {
        let t = format!("t{:06}", 1 + rng.below(n));
        let miss = if k % 2 == 1 {
            format!("t{:06}", n + 1 + rng.below(10 * n + 1000))
        } else {
            format!("x{:07}", 1 + rng.below(10 * n))
        };
        let id = k as u16;
        c.hit.push(query(&format!("{t}.{ORIGIN}"), 1, id));
        c.nxdomain.push(query(&format!("{miss}.{ORIGIN}"), 1, id));
        c.refused.push(query(
            &format!("{t}.other{}.example.org.", rng.below(100)),
            1,
            id,
        ));
        c.hit_labels.push(t.into_bytes());
        c.miss_labels.push(miss.into_bytes());
    }
    c
}

/// Cycles through `items` one per call.
struct Cycle<'a, T> {
    items: &'a [T],
    at: usize,
}
impl<'a, T> Cycle<'a, T> {
    fn new(items: &'a [T]) -> Self {
        Self { items, at: 0 }
    }
    #[inline]
    fn next(&mut self) -> &'a T {
        let x = &self.items[self.at];
        self.at += 1;
        if self.at == self.items.len() {
            self.at = 0;
        }
        x
    }
}

fn bench_lookup(c: &mut Criterion, live: &Live, corpus: &Corpus, n: usize) {
    let snap = &*live.view;
    let mut g = c.benchmark_group(format!("lookup/{n}"));
    g.throughput(Throughput::Elements(1));
    let mut hits = Cycle::new(&corpus.hit_labels);
    g.bench_function("listed", |b| {
        b.iter(|| black_box(cellns::route::lookup(snap, black_box(hits.next()))))
    });
    let mut misses = Cycle::new(&corpus.miss_labels);
    g.bench_function("unlisted", |b| {
        b.iter(|| black_box(cellns::route::lookup(snap, black_box(misses.next()))))
    });
    g.finish();
}

fn bench_fast(c: &mut Criterion, snap: &Live, corpus: &Corpus, group: &str) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(1));
    let mut out = Box::new([0u8; RESPONSE_BUF]);
    for (case, queries) in [
        ("hit_a", &corpus.hit),
        ("nxdomain", &corpus.nxdomain),
        ("refused", &corpus.refused),
    ] {
        // Every query of the corpus must take the fast path, or this
        // benchmark would measure something else.
        for q in queries.iter().take(64) {
            let r = fast::respond(snap, q, &mut out);
            assert!(matches!(r, Fast::Answered(..)), "{case}: {r:?}");
        }
        let mut qs = Cycle::new(queries);
        g.bench_function(case, |b| {
            b.iter(|| black_box(fast::respond(snap, black_box(qs.next()), &mut out)))
        });
    }
    g.finish();
}

fn bench_general(c: &mut Criterion, store: &Arc<Store>, corpus: &Corpus, n: usize) {
    let mut g = c.benchmark_group(format!("general/{n}"));
    g.throughput(Throughput::Elements(1));
    let dispatch = Dispatch::new(store.clone(), Default::default());
    let src: SocketAddr = "127.0.0.1:40000".parse().expect("literal address");
    let mut out = Box::new([0u8; RESPONSE_BUF]);
    for (case, queries) in [
        ("hit_a", &corpus.hit),
        ("nxdomain", &corpus.nxdomain),
        ("refused", &corpus.refused),
    ] {
        let mut qs = Cycle::new(queries);
        g.bench_function(case, |b| {
            b.iter(|| black_box(dispatch.general_datagram(black_box(qs.next()), src, &mut out)))
        });
    }
    g.finish();
}

fn bench_roundtrip(c: &mut Criterion, store: &Arc<Store>, corpus: &Corpus, n: usize) {
    let sockets =
        udp::bind("127.0.0.1:0".parse().expect("literal address"), 1).expect("bind UDP worker");
    let addr = sockets[0]
        .local_addr()
        .expect("bound socket has an address");
    let workers = udp::Workers::start(sockets, Dispatch::new(store.clone(), Default::default()))
        .expect("start UDP worker");
    let client = UdpSocket::bind("127.0.0.1:0").expect("bind client");
    client.connect(addr).expect("connect client");
    client
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("set timeout");
    let mut g = c.benchmark_group(format!("udp_roundtrip/{n}"));
    let mut buf = [0u8; 2048];
    for (case, queries) in [("hit_a", &corpus.hit), ("nxdomain", &corpus.nxdomain)] {
        let mut qs = Cycle::new(queries);
        // One query at a time: the latency of a lone query, which on a VM
        // is mostly the wake-up of the other thread.
        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("{case}/1"), |b| {
            b.iter(|| {
                client.send(qs.next()).expect("send query");
                let len = client.recv(&mut buf).expect("answer within 2 s");
                black_box(len)
            })
        });
        // PIPELINE queries in flight: the per-query cost of both sides'
        // syscalls and the server's work, with wake-ups amortised.
        g.throughput(Throughput::Elements(PIPELINE as u64));
        g.bench_function(format!("{case}/{PIPELINE}"), |b| {
            b.iter(|| {
                for _ in 0..PIPELINE {
                    client.send(qs.next()).expect("send query");
                }
                for _ in 0..PIPELINE {
                    black_box(client.recv(&mut buf).expect("answer within 2 s"));
                }
            })
        });
    }
    g.finish();
    workers.stop();
}

fn bench_load(c: &mut Criterion, text: &str, n: usize) {
    let mut g = c.benchmark_group(format!("load/{n}"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(if n >= 1_000_000 { 30 } else { 5 }));
    g.bench_function("json", |b| {
        b.iter_batched(|| (), |()| black_box(load(text)), BatchSize::PerIteration)
    });
    g.finish();
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let n = if full { 1_000_000 } else { 1_000 };
    let text = map_json(n, CELLS);
    let store = Arc::new(load(&text));
    let corpus = corpus(n);
    let mut c = Criterion::default().configure_from_args();
    let live = store.load_full();
    bench_lookup(&mut c, &live, &corpus, n);
    bench_fast(&mut c, &live, &corpus, &format!("fast/{n}"));
    drop(live);
    // The same tenants over 10 cells: what the number of cells (each an
    // in-zone hostname the fast path must not answer as a tenant) costs.
    let few = load(&map_json(n, 10));
    bench_fast(&mut c, &few.load(), &corpus, &format!("fast/{n}/10-cells"));
    drop(few);
    bench_general(&mut c, &store, &corpus, n);
    bench_roundtrip(&mut c, &store, &corpus, n);
    bench_load(&mut c, &text, n);
    c.final_summary();
}
