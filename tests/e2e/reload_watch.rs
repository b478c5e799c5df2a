//! Hot reload under load: clients keep querying over UDP and TCP while the
//! map is replaced many times (in place, by rename, by a Kubernetes symlink
//! swap). Every query must be answered, every answer must be one cell's
//! complete address set, every client must have queries in flight across
//! every reload, and each new map must be served (within a deadline sized
//! for a loaded machine). Also: SIGHUP, and SOA serials across reloads and
//! restarts.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::dns::{Answer, Tcp, Udp, wait_for_answer};
use crate::support::map::{self, MapDir, Mode, ORIGIN, cell_v4, cell_v6, line_of};
use crate::support::server::Server;
use crate::support::{RELOAD, signal, wait_until};

/// Pause between two queries of one client.
const PACE: Duration = Duration::from_micros(500);

/// The small map, moving acme (1 of 21 tenants: over the default gate).
fn test_map(version: &str, acme_on: char) -> String {
    map::small(version, acme_on).no_gate().toml()
}

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

/// One query a client made: when it was sent and answered (or failed).
struct Sent {
    start: Instant,
    end: Instant,
    result: Result<(), String>,
}

/// Query load: `udp` + `tcp` client threads querying acme A and AAAA in
/// turn until told to stop, each query recorded.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<Vec<Sent>>>,
}

impl Load {
    fn start(server: SocketAddr, udp: usize, tcp: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..udp + tcp)
            .map(|i| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let name = acme();
                    let u = (i < udp).then(|| Udp::new(server));
                    let mut t = (i >= udp).then(|| Tcp::connect(server));
                    let mut sent = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let rtype = if sent.len() % 2 == 0 {
                            RecordType::A
                        } else {
                            RecordType::AAAA
                        };
                        let start = Instant::now();
                        let res = match (&u, &mut t) {
                            (Some(u), _) => u.ask(&name, rtype),
                            (_, Some(t)) => t.ask(&name, rtype),
                            _ => unreachable!(),
                        };
                        let proto = if i < udp { "UDP" } else { "TCP" };
                        let result = res
                            .and_then(|a| check(&a, rtype))
                            .map_err(|e| format!("{proto} client {i}: {e}"));
                        let failed = result.is_err();
                        sent.push(Sent {
                            start,
                            end: Instant::now(),
                            result,
                        });
                        // A broken TCP stream cannot be read again.
                        if failed && t.is_some() {
                            break;
                        }
                        // Pacing, not synchronisation: a few thousand
                        // queries a second are plenty, and leave the CPUs
                        // to the server.
                        std::thread::sleep(PACE);
                    }
                    sent
                })
            })
            .collect();
        Self { stop, threads }
    }

    /// Stops the clients; returns every query each made.
    fn finish(self) -> Vec<Vec<Sent>> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("client thread panicked"))
            .collect()
    }
}

/// Rewrites the map `modes.len()` times under load, moving acme between
/// cells a and b: every query is answered with one cell's whole address
/// set, every client has queries in flight across every reload, and each
/// new map is served.
fn rewrite_under_load(map: &mut MapDir, server: &Server, modes: &[Mode]) {
    let load = Load::start(server.dns, 2, 2);
    let mut windows = Vec::new();
    let mut late = Vec::new();
    let mut slowest = Duration::ZERO;
    for (k, &mode) in modes.iter().enumerate() {
        let k = k + 1;
        let cell = if k % 2 == 1 { 'b' } else { 'a' };
        let written = Instant::now();
        map.write(&test_map(&format!("v{k}"), cell), mode);
        match wait_for_answer(server.dns, &acme(), &cell_v4(cell), RELOAD) {
            Ok(took) => slowest = slowest.max(took),
            Err(last) => late.push(format!("write {k} ({mode:?}): last answer {last}")),
        }
        windows.push((written, Instant::now()));
    }
    let clients = load.finish();
    assert!(
        late.is_empty(),
        "new maps not served within {RELOAD:?}: {late:#?}"
    );
    let errors: Vec<&String> = clients
        .iter()
        .flatten()
        .filter_map(|q| q.result.as_ref().err())
        .collect();
    let queries: usize = clients.iter().map(Vec::len).sum();
    assert!(
        errors.is_empty(),
        "{} of {queries} queries failed, first: {:#?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    // The load really ran across the reloads: each client had a query in
    // flight between each write and the new map being served.
    for (i, sent) in clients.iter().enumerate() {
        for (k, (from, to)) in windows.iter().enumerate() {
            let during = sent
                .iter()
                .filter(|q| q.start < *to && q.end > *from)
                .count();
            assert!(
                during > 0,
                "client {i} made no query during reload {} ({:?} long)",
                k + 1,
                *to - *from
            );
        }
    }
    // The log line follows the swap: wait for it.
    assert!(
        wait_until(RELOAD, || server.logs().messages("map reloaded").len()
            >= modes.len()),
        "fewer than {} reloads logged: {}",
        modes.len(),
        server.logs().text()
    );
    eprintln!(
        "{} writes, {queries} queries, all answered; slowest propagation {slowest:?}",
        modes.len()
    );
}

#[test]
fn reload_under_load_in_place_and_by_rename() {
    let mut map = MapDir::new(&test_map("v0", 'a'), false);
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
    let mut map = MapDir::new(&test_map("v0", 'a'), true);
    let server = Server::start(&["--map", &map.arg()]);
    rewrite_under_load(&mut map, &server, &[Mode::Kubernetes; 8]);
    // A swap is routine: no warning (the file watcher's own complaints
    // about the old timestamped directory included).
    let warnings: Vec<serde_json::Value> = server
        .logs()
        .json()
        .into_iter()
        .filter(|l| l["level"] == "WARN")
        .filter(|l| {
            let m = l["message"].as_str().unwrap_or_default();
            // Start-up warnings about the configuration, not the swaps.
            !m.starts_with("DEVELOPMENT SIGNING KEY")
                && !m.starts_with("no --api-keys")
                && !m.starts_with("no --state-dir")
        })
        .collect();
    assert!(warnings.is_empty(), "warnings during swaps: {warnings:#?}");
}

#[test]
fn bad_map_keeps_serving_the_last_good_one() {
    let mut map = MapDir::new(&test_map("v0", 'a'), false);
    let server = Server::start(&["--map", &map.arg()]);
    let good = cell_v4('a');
    let udp = Udp::new(server.dns);

    // An invalid address in cell b's ipv4.
    let bad = test_map("v1", 'b').replace("10.9.1.2", "10.9.1.299");
    let bad_line = bad
        .lines()
        .position(|l| l.contains("10.9.1.299"))
        .map(|i| i + 1)
        .expect("bad line");
    map.write(&bad, Mode::Rename);
    let line = server
        .logs()
        .wait_for("ERROR", "map reload failed", RELOAD)
        .expect("no error-level log line about the bad map");
    let error = line["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("map.toml:{bad_line}:")) && error.contains("10.9.1.299"),
        "the error does not name file, line and value: {line}"
    );
    for _ in 0..50 {
        let a = udp
            .ask(&acme(), RecordType::A)
            .expect("answered after a bad map");
        assert_eq!(a.addrs, good, "the bad map (or a part of it) is served");
    }

    // A deleted map file: a warning, and the last good map keeps serving.
    map.remove();
    server
        .logs()
        .wait_for("WARN", "map file is gone", RELOAD)
        .expect("no warning about the deleted map");
    let a = udp
        .ask(&acme(), RecordType::A)
        .expect("answered without a map file");
    assert_eq!(a.addrs, good);

    // Fixed: the new map is served.
    map.write(&test_map("v2", 'b'), Mode::Rename);
    wait_for_answer(server.dns, &acme(), &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("fixed map not served within {RELOAD:?}: {last}"));
}

#[test]
fn json_map_is_served_and_hot_reloaded() {
    let json = |version: &str, acme_on: char| map::small(version, acme_on).no_gate().json();
    let mut map = MapDir::named("map.json", &json("j1", 'a'), false);
    let server = Server::start(&["--map", &map.arg()]);
    let loaded = server.logs().messages("map loaded");
    assert_eq!(loaded.len(), 1, "{}", server.logs().text());
    assert_eq!(loaded[0]["version"], "j1", "{}", loaded[0]);
    let a = Udp::new(server.dns)
        .ask(&acme(), RecordType::A)
        .expect("answer");
    assert_eq!(a.addrs, cell_v4('a'), "served from the JSON map");

    // Changed on disk: the new JSON is served.
    map.write(&json("j2", 'b'), Mode::Rename);
    wait_for_answer(server.dns, &acme(), &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("the new JSON map was not served: {last}"));
    let reloaded = server
        .logs()
        .wait_for("INFO", "map reloaded", RELOAD)
        .expect("reload logged");
    assert_eq!(reloaded["version"], "j2", "{reloaded}");
    assert_eq!(reloaded["moved"], 1, "{reloaded}");

    // An invalid JSON map: rejected with file and line, the last good one
    // (j2) keeps serving.
    let bad = json("j3", 'a').replace("10.9.1.2", "10.9.1.299");
    let line = line_of(&bad, "\"b\": {", "\"ipv4\"");
    map.write(&bad, Mode::Rename);
    let failed = server
        .logs()
        .wait_for("ERROR", "map reload failed", RELOAD)
        .expect("no error-level log line about the bad map");
    let error = failed["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("map.json:{line}:")) && error.contains("10.9.1.299"),
        "the error does not name file, line and value: {failed}"
    );
    let a = Udp::new(server.dns)
        .ask(&acme(), RecordType::A)
        .expect("answer");
    assert_eq!(
        a.addrs,
        cell_v4('b'),
        "the bad map (or a part of it) is served"
    );
}

#[test]
fn sighup_reloads_at_once() {
    let mut map = MapDir::new(&test_map("v0", 'a'), false);
    // An hour of debounce: only SIGHUP can make the change visible in time.
    let server = Server::start(&["--map", &map.arg(), "--reload-debounce-ms", "3600000"]);
    map.write(&test_map("v1", 'b'), Mode::Rename);
    let a = Udp::new(server.dns)
        .ask(&acme(), RecordType::A)
        .expect("answer");
    assert_eq!(a.addrs, cell_v4('a'), "reloaded before the debounce ended");
    signal(server.pid(), "HUP");
    wait_for_answer(server.dns, &acme(), &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("SIGHUP did not reload within {RELOAD:?}: {last}"));
    assert!(server.logged("SIGHUP"));
}

fn soa_serial(server: SocketAddr) -> u32 {
    Udp::new(server)
        .ask(ORIGIN, RecordType::SOA)
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

    let mut map = MapDir::new(&test_map("v0", 'a'), false);
    let mut server = Server::start(&["--map", &map.arg(), "--state-dir", &state_arg]);
    let s1 = soa_serial(server.dns);
    assert_eq!(s1, seed + 1);
    map.write(&test_map("v1", 'b'), Mode::Rename);
    wait_for_answer(server.dns, &acme(), &cell_v4('b'), RELOAD).expect("reloaded");
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
    signal(server.pid(), "HUP");
    server
        .logs()
        .wait_for("INFO", "SIGHUP ignored", RELOAD)
        .expect("SIGHUP not logged");
    let a = Udp::new(server.dns)
        .ask("acme.cells.example.com.", RecordType::A)
        .expect("still answering after SIGHUP");
    assert_eq!(a.rcode, ResponseCode::NoError);
}
