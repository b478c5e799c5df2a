//! "Reloads drop no query", at a size that means something: a
//! 100,000-tenant map reloaded four times, each reload moving 4-7% of the
//! tenants (within the default safety gate of 10%), while an open-loop UDP
//! client sends queries at a fixed rate whatever the answers do. Every
//! query has its own ID; answers are matched by it. Asserted: not one query
//! lost, and every answer is the tenant's cell in a map that was in force
//! while the query was in flight: the old map or the new one, never a mix
//! or anything else.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RData;

use crate::support::map::{
    ORIGIN, Spec, generate_spec, generated, generated_cell_v4, generated_tenant_cell, tenant_name,
};
use crate::support::server::Server;
use crate::support::{RELOAD, replace_file, wait_until};

/// Listed tenants.
const TENANTS: usize = 100_000;
/// Cells.
const CELLS: usize = 10;
/// The maps in turn: every `n`th tenant moved to the next cell. From one
/// to the next 5%, 7%, 4% and 5% of the tenants move.
const MOVE_EVERY: [usize; 5] = [0, 20, 25, 0, 20];
/// Queries a second, sent on schedule (open loop).
const RATE: f64 = 4000.0;
/// Load before the first reload and between reloads.
const STEADY: Duration = Duration::from_millis(800);
/// Client sockets (each has its own 16-bit ID space).
const SOCKETS: usize = 4;

/// The tenant query `n` asks about: every other one a tenant that some
/// reload moves (a multiple of 20 or 25), the others anywhere in the map.
fn tenant_of(n: usize) -> usize {
    // xorshift64*, seeded by n: reproducible, spread.
    let mut x = (n as u64).wrapping_add(0x9e37_79b9_7f4a_7c15);
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d) as usize;
    match n % 4 {
        0 => 20 * (1 + r % (TENANTS / 20)),
        2 => 25 * (1 + r % (TENANTS / 25)),
        _ => 1 + r % TENANTS,
    }
}

/// A standard A query (RD clear) for generated tenant `i`, with `id`.
fn query(id: u16, i: usize) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend([0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in format!("{}.{ORIGIN}", tenant_name(i))
        .trim_end_matches('.')
        .split('.')
    {
        q.push(u8::try_from(label.len()).expect("short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.extend([0, 0, 1, 0, 1]);
    q
}

/// A client socket with a large receive buffer (answers wait there while
/// the receiving thread is off the CPU).
fn client_socket(server: SocketAddr) -> UdpSocket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, None).expect("socket");
    let _ = s.set_recv_buffer_size(4 << 20);
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("bind");
    s.connect(&server.into()).expect("connect");
    let s: UdpSocket = s.into();
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    s
}

/// What the sender sent: query `n` went at `sent[n].0` about tenant
/// `sent[n].1`, on socket `n % SOCKETS` with ID `n / SOCKETS`.
type Sent = Vec<(Instant, usize)>;
/// What a receiver got: each datagram and when.
type Received = Vec<(Instant, Vec<u8>)>;

/// The open-loop load: one sender on a fixed schedule, one receiver per
/// socket.
struct Load {
    stop: Arc<AtomicBool>,
    done: Arc<AtomicBool>,
    received: Arc<AtomicUsize>,
    sender: std::thread::JoinHandle<Sent>,
    receivers: Vec<std::thread::JoinHandle<Received>>,
}

impl Load {
    fn start(server: SocketAddr) -> Self {
        let socks: Vec<Arc<UdpSocket>> = (0..SOCKETS)
            .map(|_| Arc::new(client_socket(server)))
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::new(AtomicBool::new(false));
        let received = Arc::new(AtomicUsize::new(0));
        let receivers = socks
            .iter()
            .map(|s| {
                let (s, done, received) = (s.clone(), done.clone(), received.clone());
                std::thread::spawn(move || {
                    let mut got = Vec::new();
                    let mut buf = [0u8; 1500];
                    while !done.load(Ordering::Relaxed) {
                        if let Ok(n) = s.recv(&mut buf) {
                            got.push((Instant::now(), buf[..n].to_vec()));
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    got
                })
            })
            .collect();
        let stop2 = stop.clone();
        let sender = std::thread::spawn(move || {
            let mut sent = Sent::new();
            let start = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                // Everything due by now goes out now: the schedule, not
                // the answers, sets the pace.
                let due = (start.elapsed().as_secs_f64() * RATE) as usize;
                while sent.len() < due {
                    let n = sent.len();
                    let id = u16::try_from(n / SOCKETS).expect("the run outlived the ID space");
                    let i = tenant_of(n);
                    sent.push((Instant::now(), i));
                    socks[n % SOCKETS]
                        .send(&query(id, i))
                        .expect("send a query");
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            sent
        });
        Self {
            stop,
            done,
            received,
            sender,
            receivers,
        }
    }

    /// Stops sending, waits (bounded) for the answers still coming, and
    /// returns what was sent and, per socket, what was received.
    fn finish(self) -> (Sent, Vec<Received>) {
        self.stop.store(true, Ordering::Relaxed);
        let sent = self.sender.join().expect("sender");
        let received = self.received.clone();
        wait_until(RELOAD, || received.load(Ordering::Relaxed) >= sent.len());
        self.done.store(true, Ordering::Relaxed);
        let got = self
            .receivers
            .into_iter()
            .map(|r| r.join().expect("receiver"))
            .collect();
        (sent, got)
    }
}

/// The A set a map (`spec`) gives tenant `i`.
fn expected(spec: &Spec, i: usize) -> BTreeSet<IpAddr> {
    generated_cell_v4(generated_tenant_cell(spec, i))
}

#[test]
fn reloads_of_a_100k_tenant_map_under_open_loop_load_lose_and_mix_nothing() {
    let specs: Vec<Spec> = MOVE_EVERY
        .iter()
        .enumerate()
        .map(|(k, &m)| generated(TENANTS, CELLS, m, &format!("scale-{k}")))
        .collect();
    let moved: Vec<usize> = specs
        .windows(2)
        .map(|w| {
            (1..=TENANTS)
                .filter(|&i| generated_tenant_cell(&w[0], i) != generated_tenant_cell(&w[1], i))
                .count()
        })
        .collect();
    assert!(
        moved.iter().all(|&m| m > 0 && m * 10 <= TENANTS),
        "each reload moves some tenants, within the 10% gate: {moved:?}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    std::fs::write(&path, generate_spec(&specs[0])).expect("write map");
    let server = Server::start(&["--map", path.to_str().expect("utf-8 path")]);
    let texts: Vec<String> = specs[1..].iter().map(generate_spec).collect();

    let load = Load::start(server.dns);
    // (write, observed): the map was replaced at `write`; the test read the
    // server's "map reloaded" line (logged after the swap) at `observed`.
    let mut reloads: Vec<(Instant, Instant)> = Vec::new();
    for (k, text) in texts.iter().enumerate() {
        std::thread::sleep(STEADY);
        let write = Instant::now();
        replace_file(&path, text);
        let mut line = None;
        let logged = wait_until(RELOAD, || {
            line = server
                .logs()
                .json_at()
                .into_iter()
                .filter(|(_, v)| v["message"] == "map reloaded")
                .nth(k);
            line.is_some()
        });
        assert!(
            logged,
            "reload {} not logged within {RELOAD:?}:\n{}",
            k + 1,
            server.logs().text()
        );
        let (observed, v) = line.expect("logged");
        assert_eq!(v["version"], format!("scale-{}", k + 1), "{v}");
        assert_eq!(v["moved"], moved[k], "reload {}: {v}", k + 1);
        reloads.push((write, observed));
    }
    std::thread::sleep(STEADY);
    let (sent, received) = load.finish();
    assert!(
        !server.logged("rejected by the safety gates"),
        "a reload was rejected:\n{}",
        server.logs().text()
    );

    // Match answers to queries by (socket, ID).
    let mut answer: Vec<Option<(Instant, Message)>> = vec![None; sent.len()];
    let mut problems = Vec::new();
    for (socket, got) in received.into_iter().enumerate() {
        for (at, bytes) in got {
            let m = match Message::from_vec(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    problems.push(format!("undecodable answer ({e}): {bytes:02x?}"));
                    continue;
                }
            };
            let n = usize::from(m.metadata.id) * SOCKETS + socket;
            match answer.get_mut(n) {
                Some(slot @ None) => *slot = Some((at, m)),
                Some(Some(_)) => problems.push(format!("query {n} answered twice")),
                None => problems.push(format!("an answer to no query: {m:?}")),
            }
        }
    }

    // Which maps may have answered a query in flight from `s` to `r`: map
    // v came into force between its write and its observation, and left
    // between the next write and the next observation.
    let allowed = |s: Instant, r: Instant| -> Vec<usize> {
        (0..specs.len())
            .filter(|&v| {
                let from_ok = v == 0 || reloads[v - 1].0 <= r;
                let until_ok = v == reloads.len() || s <= reloads[v].1;
                from_ok && until_ok
            })
            .collect()
    };
    let mut lost = Vec::new();
    let mut mixed = Vec::new();
    let mut during_reloads = vec![0usize; reloads.len()];
    for (n, ((s, i), got)) in sent.iter().zip(&answer).enumerate() {
        let Some((r, m)) = got else {
            lost.push(n);
            continue;
        };
        let name = m.queries.first().map(|q| q.name().to_ascii());
        let addrs: BTreeSet<IpAddr> = m
            .answers
            .iter()
            .filter_map(|rr| match &rr.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                _ => None,
            })
            .collect();
        let versions = allowed(*s, *r);
        let fits = m.metadata.response_code == ResponseCode::NoError
            && m.metadata.authoritative
            && m.answers.len() == addrs.len()
            && name.as_deref() == Some(format!("{}.{ORIGIN}", tenant_name(*i)).as_str())
            && versions.iter().any(|&v| expected(&specs[v], *i) == addrs);
        if !fits {
            mixed.push(format!(
                "query {n} ({}): {} aa={} {name:?} {addrs:?} ({} records); maps in force meanwhile {versions:?} give {:?}",
                tenant_name(*i),
                m.metadata.response_code,
                m.metadata.authoritative,
                m.answers.len(),
                versions
                    .iter()
                    .map(|&v| expected(&specs[v], *i))
                    .collect::<Vec<_>>()
            ));
        }
        for (k, (w, o)) in reloads.iter().enumerate() {
            if *s < *o && *r > *w {
                during_reloads[k] += 1;
            }
        }
    }
    let elapsed = sent
        .last()
        .map(|(t, _)| t.duration_since(sent[0].0))
        .unwrap_or_default();
    eprintln!(
        "{} queries in {elapsed:?} ({:.0}/s); reloads took {:?}; queries in flight during each: {during_reloads:?}",
        sent.len(),
        sent.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        reloads.iter().map(|(w, o)| *o - *w).collect::<Vec<_>>()
    );
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(
        lost.is_empty(),
        "{} of {} queries lost (no answer within {RELOAD:?} of the end), first: {:?}",
        lost.len(),
        sent.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(
        mixed.is_empty(),
        "{} answers match neither the old nor the new map, first: {:#?}",
        mixed.len(),
        &mixed[..mixed.len().min(5)]
    );
    // The load ran across every reload (the test measured something).
    assert!(
        during_reloads.iter().all(|&d| d > 0),
        "no query in flight during a reload: {during_reloads:?}"
    );
}
