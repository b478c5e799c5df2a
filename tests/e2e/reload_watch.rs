//! Hot reload under load: clients keep querying over UDP and TCP while the
//! map is replaced many times (in place, by rename, by a Kubernetes symlink
//! swap). Every query must be answered, every answer must be one cell's
//! complete address set, and each new map must be served within 1 s of the
//! write. Also: SIGHUP, and SOA serials across reloads and restarts.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use super::common::Server;
use super::reload_support::{
    Answer, MapDir, Mode, ORIGIN, Tcp, Udp, cell_v4, cell_v6, test_map, wait_for_answer,
    wait_for_log,
};

/// The requirement: a new map is served within this long after its write.
const PROPAGATION: Duration = Duration::from_secs(1);
/// Queries the clients must have made, at least, across a test.
const MIN_QUERIES: usize = 3000;
/// Pause between two queries of one client.
const PACE: Duration = Duration::from_micros(500);
/// The test maps move acme (1 of 21 tenants) back and forth: allow it.
const NO_GATE: &str = "[safety]\nmax_moved_fraction = 1.0\n";

fn acme() -> String {
    format!("acme.{ORIGIN}")
}

/// Checks one answer: NOERROR, authoritative, and exactly one cell's
/// addresses of the queried family.
fn check(a: &Answer, rtype: RecordType) -> Result<(), String> {
    if a.rcode != ResponseCode::NoError || !a.authoritative {
        return Err(format!("bad response: {a:?}"));
    }
    let sets: [BTreeSet<IpAddr>; 2] = match rtype {
        RecordType::A => [cell_v4('a'), cell_v4('b')],
        _ => [cell_v6('a'), cell_v6('b')],
    };
    if sets.contains(&a.addrs) {
        Ok(())
    } else {
        Err(format!(
            "{rtype} answer is not exactly one cell's address set: {:?}",
            a.addrs
        ))
    }
}

/// Query load: `udp` + `tcp` client threads querying acme A and AAAA in
/// turn until told to stop (and at least [`MIN_QUERIES`] were made).
struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    errors: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(server: SocketAddr, udp: usize, tcp: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let mut threads = Vec::new();
        for i in 0..udp + tcp {
            let (stop, count, errors) = (stop.clone(), count.clone(), errors.clone());
            threads.push(std::thread::spawn(move || {
                let name = acme();
                let mut u = (i < udp).then(|| Udp::new(server));
                let mut t = (i >= udp).then(|| Tcp::new(server, Duration::from_secs(2)));
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) || count.load(Ordering::Relaxed) < MIN_QUERIES {
                    let rtype = if n.is_multiple_of(2) {
                        RecordType::A
                    } else {
                        RecordType::AAAA
                    };
                    n += 1;
                    let res = match (&mut u, &mut t) {
                        (Some(u), _) => u.query(&name, rtype, Duration::from_secs(2)),
                        (_, Some(t)) => t.query(&name, rtype),
                        _ => unreachable!(),
                    };
                    count.fetch_add(1, Ordering::Relaxed);
                    // Pacing, not synchronisation: a few thousand queries a
                    // second are plenty, and leave the CPUs to the server.
                    std::thread::sleep(PACE);
                    if let Err(e) = res.and_then(|a| check(&a, rtype)) {
                        let proto = if i < udp { "UDP" } else { "TCP" };
                        errors
                            .lock()
                            .unwrap()
                            .push(format!("{proto} client {i}: {e}"));
                        // A broken TCP stream cannot be read again.
                        if t.is_some() {
                            return;
                        }
                    }
                }
            }));
        }
        Self {
            stop,
            count,
            errors,
            threads,
        }
    }

    /// Stops the clients; returns (queries, errors).
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("client thread panicked");
        }
        let errors = self.errors.lock().unwrap().clone();
        (self.count.load(Ordering::Relaxed), errors)
    }
}

/// Rewrites the map `modes.len()` times under load, moving acme between
/// cells a and b, and checks every requirement.
fn rewrite_under_load(map: &mut MapDir, server: &Server, modes: &[Mode]) {
    let load = Load::start(server.dns, 2, 2);
    let mut slowest = Duration::ZERO;
    let mut late = Vec::new();
    for (k, &mode) in modes.iter().enumerate() {
        let k = k + 1;
        let cell = if k % 2 == 1 { 'b' } else { 'a' };
        map.write(&test_map(&format!("v{k}"), cell, NO_GATE), mode);
        match wait_for_answer(server.dns, &acme(), &cell_v4(cell), PROPAGATION) {
            Ok(took) => slowest = slowest.max(took),
            Err(last) => late.push(format!("write {k} ({mode:?}): last answer {last}")),
        }
    }
    let (queries, errors) = load.finish();
    assert!(
        late.is_empty(),
        "new maps not served within {PROPAGATION:?}: {late:#?}"
    );
    assert!(
        errors.is_empty(),
        "{} of {queries} queries failed, first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(queries >= MIN_QUERIES, "only {queries} queries");
    // The log line follows the swap: wait for it.
    let mut reloads = 0;
    super::common::wait_until(Duration::from_secs(5), || {
        reloads = super::reload_support::json_logs(&server.logs)
            .iter()
            .filter(|v| v["message"] == "map reloaded")
            .count();
        reloads >= modes.len()
    });
    assert!(
        reloads >= modes.len(),
        "{reloads} reloads logged for {} writes",
        modes.len()
    );
    eprintln!(
        "{} writes, {queries} queries, all answered; slowest propagation {slowest:?}",
        modes.len()
    );
}

#[test]
fn reload_under_load_in_place_and_by_rename() {
    let mut map = MapDir::new(&test_map("v0", 'a', NO_GATE), false);
    let server = Server::start(&["--map", &map.arg()]);
    let modes: Vec<Mode> = (0..12)
        .map(|i| {
            if i % 2 == 0 {
                Mode::InPlace
            } else {
                Mode::Rename
            }
        })
        .collect();
    rewrite_under_load(&mut map, &server, &modes);
}

#[test]
fn reload_under_load_by_kubernetes_symlink_swap() {
    let mut map = MapDir::new(&test_map("v0", 'a', NO_GATE), true);
    let server = Server::start(&["--map", &map.arg()]);
    rewrite_under_load(&mut map, &server, &[Mode::Kubernetes; 8]);
}

#[test]
fn bad_map_keeps_serving_the_last_good_one() {
    let mut map = MapDir::new(&test_map("v0", 'a', NO_GATE), false);
    let server = Server::start(&["--map", &map.arg()]);
    let good = cell_v4('a');
    let mut udp = Udp::new(server.dns);

    // An invalid address in cell b's ipv4.
    let bad = test_map("v1", 'b', NO_GATE).replace("10.9.1.2", "10.9.1.299");
    let bad_line = bad
        .lines()
        .position(|l| l.contains("10.9.1.299"))
        .map(|i| i + 1)
        .expect("bad line");
    map.write(&bad, Mode::Rename);
    let line = wait_for_log(
        &server.logs,
        "ERROR",
        "map reload failed",
        Duration::from_secs(5),
    )
    .expect("no error-level log line about the bad map");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("map.toml:{bad_line}:")) && error.contains("10.9.1.299"),
        "the error does not name file, line and value: {line}"
    );
    for _ in 0..50 {
        let a = udp
            .query(&acme(), RecordType::A, Duration::from_secs(2))
            .expect("answered after a bad map");
        assert_eq!(a.addrs, good, "the bad map (or a part of it) is served");
    }

    // A deleted map file: a warning, and the last good map keeps serving.
    map.remove();
    wait_for_log(
        &server.logs,
        "WARN",
        "map file is gone",
        Duration::from_secs(5),
    )
    .expect("no warning about the deleted map");
    let a = udp
        .query(&acme(), RecordType::A, Duration::from_secs(2))
        .expect("answered without a map file");
    assert_eq!(a.addrs, good);

    // Fixed: the new map is served.
    map.write(&test_map("v2", 'b', NO_GATE), Mode::Rename);
    wait_for_answer(server.dns, &acme(), &cell_v4('b'), PROPAGATION)
        .unwrap_or_else(|last| panic!("fixed map not served within 1 s: {last}"));
}

#[test]
fn sighup_reloads_at_once() {
    let mut map = MapDir::new(&test_map("v0", 'a', NO_GATE), false);
    // An hour of debounce: only SIGHUP can make the change visible in time.
    let server = Server::start(&["--map", &map.arg(), "--reload-debounce-ms", "3600000"]);
    map.write(&test_map("v1", 'b', NO_GATE), Mode::Rename);
    let mut udp = Udp::new(server.dns);
    let a = udp
        .query(&acme(), RecordType::A, Duration::from_secs(2))
        .expect("answer");
    assert_eq!(a.addrs, cell_v4('a'), "reloaded before the debounce ended");
    super::common::unsafe_kill(server.pid(), "HUP");
    wait_for_answer(server.dns, &acme(), &cell_v4('b'), PROPAGATION)
        .unwrap_or_else(|last| panic!("SIGHUP did not reload within 1 s: {last}"));
    assert!(server.logged("SIGHUP"));
}

fn soa_serial(server: SocketAddr) -> u32 {
    Udp::new(server)
        .query(ORIGIN, RecordType::SOA, Duration::from_secs(2))
        .expect("SOA answered")
        .serial
        .expect("SOA in the answer")
}

#[test]
fn soa_serial_grows_on_reload_and_across_restarts() {
    let state = tempfile::tempdir().expect("tempdir");
    // A persisted serial far ahead of the clock: only persistence explains
    // serials above it.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as u32;
    let seed = now + 1_000_000;
    std::fs::write(state.path().join("serial"), format!("{seed}\n")).expect("seed serial");
    let state_arg = state.path().display().to_string();

    let mut map = MapDir::new(&test_map("v0", 'a', NO_GATE), false);
    let mut server = Server::start(&["--map", &map.arg(), "--state-dir", &state_arg]);
    let s1 = soa_serial(server.dns);
    assert_eq!(s1, seed + 1);
    map.write(&test_map("v1", 'b', NO_GATE), Mode::Rename);
    wait_for_answer(server.dns, &acme(), &cell_v4('b'), PROPAGATION).expect("reloaded");
    let s2 = soa_serial(server.dns);
    assert_eq!(s2, s1 + 1);
    let persisted: u32 = std::fs::read_to_string(state.path().join("serial"))
        .expect("serial file")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(persisted, s2);
    assert!(
        server.terminate().is_some(),
        "server did not exit on SIGTERM"
    );
    drop(server);

    let server = Server::start(&["--map", &map.arg(), "--state-dir", &state_arg]);
    assert_eq!(soa_serial(server.dns), s2 + 1);
}

#[test]
fn sighup_without_a_map_file_is_harmless() {
    let server = Server::start(&[]);
    super::common::unsafe_kill(server.pid(), "HUP");
    wait_for_log(
        &server.logs,
        "INFO",
        "SIGHUP ignored",
        Duration::from_secs(5),
    )
    .expect("SIGHUP not logged");
    let a = Udp::new(server.dns)
        .query(
            "acme.cells.example.com.",
            RecordType::A,
            Duration::from_secs(2),
        )
        .expect("still answering after SIGHUP");
    assert_eq!(a.rcode, ResponseCode::NoError);
}
