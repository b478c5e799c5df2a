//! Reload benchmark: a 1,000,000-tenant map, reloaded with a tenth of the
//! tenants moved, while a UDP client queries the server continuously.
//!
//! Run with `cargo bench --bench reload` (`cargo test` builds this file and
//! runs it without `--bench`, which returns at once). Knobs (environment):
//! `CELLNS_BENCH_TENANTS` (1000000), `CELLNS_BENCH_CELLS` (100),
//! `CELLNS_BENCH_FORMATS` (`json,toml`), `CELLNS_BENCH_ROUNDS` (3 reloads per
//! format), `CELLNS_BENCH_STEADY_SECS` (3), `CELLNS_BENCH_RATE` (0: one
//! closed-loop client; N > 0: an open-loop client offering N queries per
//! second whatever the answers, latency measured from each query's
//! scheduled send time, so that a stalled server or client cannot hide
//! its delays).
//!
//! Method, per format:
//! 1. In-process breakdown of a reload's steps (parse, validate, compile,
//!    diff): time, and growth of this process's peak RSS during each step.
//! 2. The release binary serves the base map (`--reload-debounce-ms 20`).
//!    One client thread sends A queries for random listed tenants over UDP,
//!    one at a time (closed loop), and records each round-trip time; or,
//!    with `CELLNS_BENCH_RATE`, a sender thread offers that rate (open loop)
//!    and a receiver thread matches answers by ID.
//! 3. Steady state: `CELLNS_BENCH_STEADY_SECS` of queries → p50/p99/max;
//!    the server's VmRSS. Then the server's peak-RSS counter is reset
//!    (`echo 5 > /proc/PID/clear_refs`), so VmHWM afterwards is the peak of
//!    the reloads alone (not of the start-up load).
//! 4. Reloads: the next map (a tenth of the tenants moved relative to the
//!    previous one, with a fresh `allow_mass_change`) is written to a
//!    temporary file and renamed over the map; the window runs from the
//!    rename until the server logs "map reloaded". Query latencies whose send
//!    time falls in a window are the "during reload" sample. The server's own
//!    log gives `build_ms` (read → parse → validate → compile) and
//!    `total_ms` (+ diff, serial, swap).
//! 5. Peak RSS during reloads = VmHWM after the last reload.
//!
//! It asserts what it is for: every query answered (no query lost to a
//! reload), and queries measured during the reloads; the ratios it prints
//! against their goals are for the reader.

// The end-to-end tests' support module: the same server launcher.
#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cellns::map::generate::{Spec, generate_spec, tenant_name};
use cellns::map::{Format, Source, compile, diff, load_str, parse, validate};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("reload benchmark: skipped (run it with `cargo bench --bench reload`)");
        return;
    }
    let tenants: usize = env_or("CELLNS_BENCH_TENANTS", 1_000_000);
    let cells: usize = env_or("CELLNS_BENCH_CELLS", 100);
    let rounds: usize = env_or("CELLNS_BENCH_ROUNDS", 3);
    let steady = Duration::from_secs(env_or("CELLNS_BENCH_STEADY_SECS", 3));
    let formats: String = env_or("CELLNS_BENCH_FORMATS", "json,toml".to_owned());
    let rate: u64 = env_or("CELLNS_BENCH_RATE", 0);
    println!(
        "reload benchmark: {tenants} tenants, {cells} cells, {rounds} reload(s) per format, \
         each moving a tenth of the tenants; {} CPU(s); {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        if rate == 0 {
            "one closed-loop client".to_owned()
        } else {
            format!("open-loop client at {rate} q/s")
        }
    );
    for f in formats.split(',') {
        let format = match f.trim() {
            "json" => Format::Json,
            "toml" => Format::Toml,
            other => panic!("unknown format {other}"),
        };
        bench_format(format, tenants, cells, rounds, steady, rate);
    }
}

/// The map of round `r`: round 0 is the base; odd rounds move every 10th
/// tenant, even rounds move them back.
fn map_text(format: Format, tenants: usize, cells: usize, r: usize) -> String {
    let mut s = Spec::new(tenants, cells, format);
    s.move_every = if r % 2 == 1 { 10 } else { 0 };
    s.version = Some(format!("bench-{r}"));
    s.allow_mass_change = (r > 0).then(|| format!("benchmark round {r}"));
    generate_spec(&s)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn bench_format(
    format: Format,
    tenants: usize,
    cells: usize,
    rounds: usize,
    steady: Duration,
    rate: u64,
) {
    let ext = match format {
        Format::Json => "json",
        Format::Toml => "toml",
    };
    println!("\n== {ext} ==");
    let texts: Vec<String> = (0..=rounds)
        .map(|r| map_text(format, tenants, cells, r))
        .collect();
    println!("map size: {:.1} MB", texts[0].len() as f64 / 1e6);

    // 1. In-process breakdown: time and memory of each step. Memory is the
    // growth of this process's peak RSS during the step (VmHWM reset before
    // it), with the allocator tuned as the server tunes it.
    {
        // SAFETY: mallopt only changes allocator settings.
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        }
        let step = |label: &str, f: &mut dyn FnMut()| {
            let base = proc_kb(std::process::id(), "VmRSS");
            std::fs::write("/proc/self/clear_refs", "5").expect("reset VmHWM");
            let t = Instant::now();
            f();
            let took = t.elapsed();
            let peak = proc_kb(std::process::id(), "VmHWM");
            println!(
                "  {label:<28} {:>6.0} ms  peak +{:.1} MB",
                ms(took),
                peak.saturating_sub(base) as f64 / 1024.0
            );
        };
        let src = |text| Source {
            text,
            format,
            name: "bench",
        };
        println!("in-process steps:");
        let mut old = None;
        step("load_str (old map)", &mut || {
            old = Some(load_str(src(&texts[0])).unwrap_or_else(|e| panic!("{e}")));
        });
        let mut file = None;
        step("parse (new map)", &mut || {
            file = Some(parse(src(&texts[1])).unwrap_or_else(|e| panic!("{e}")));
        });
        let mut checked = None;
        // As the reload does: validation consumes the parsed map (the new
        // index takes over its name arena; the rest is freed at the end).
        step("validate", &mut || {
            checked = file
                .take()
                .map(|f| validate::validate_owned(f).unwrap_or_else(|_| panic!("invalid")));
        });
        let mut new = None;
        step("compile", &mut || {
            new = checked
                .take()
                .map(|c| compile(c, "new".into(), "bench".into()));
        });
        let (old, new) = (old.expect("old"), new.expect("new"));
        step("diff", &mut || {
            let d = diff::diff(&old, &new);
            assert_eq!(d.moved.len(), tenants / 10);
        });
    }

    // 2. The server.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(format!("map.{ext}"));
    std::fs::write(&path, &texts[0]).expect("write map");
    let started = Instant::now();
    let server = support::server::Server::start(&[
        "--map",
        &path.display().to_string(),
        "--reload-debounce-ms",
        "20",
    ]);
    println!(
        "server start-up (initial load): {:.0} ms",
        ms(started.elapsed())
    );
    let pid = server.pid();

    let client = if rate == 0 {
        Client::start(server.dns, tenants)
    } else {
        Client::open_loop(server.dns, tenants, rate)
    };
    // Warm-up, then steady state.
    std::thread::sleep(Duration::from_millis(500));
    let s0 = client.now();
    std::thread::sleep(steady);
    let s1 = client.now();
    let rss_steady = proc_kb(pid, "VmRSS");
    let hwm_startup = proc_kb(pid, "VmHWM");
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("reset VmHWM");
    let hwm_reset = proc_kb(pid, "VmHWM");

    // 4. Reloads.
    let mut windows = Vec::new();
    for (r, text) in texts.iter().enumerate().skip(1) {
        let tmp = dir.path().join(format!(".map.{ext}.tmp"));
        std::fs::write(&tmp, text).expect("write map");
        let before = server.logs().messages("map reloaded").len();
        let w0 = client.now();
        std::fs::rename(&tmp, &path).expect("rename");
        let ok = support::wait_until(Duration::from_secs(60), || {
            server.logs().messages("map reloaded").len() > before
        });
        let w1 = client.now();
        assert!(ok, "round {r}: no reload within 60 s");
        let line = server
            .logs()
            .messages("map reloaded")
            .pop()
            .expect("log line");
        println!(
            "reload {r}: build {} ms, total {} ms (server log); write → served {:.0} ms",
            line["build_ms"],
            line["total_ms"],
            (w1 - w0) as f64 / 1e6
        );
        windows.push((w0, w1));
        // Let the old snapshot go and the client settle.
        std::thread::sleep(Duration::from_millis(500));
    }
    let hwm_reload = proc_kb(pid, "VmHWM");
    let rss_after = proc_kb(pid, "VmRSS");
    let samples = client.finish();

    let steady_lat: Vec<u64> = samples
        .iter()
        .filter(|s| s.0 >= s0 && s.0 < s1)
        .map(|s| s.1)
        .collect();
    let during: Vec<u64> = samples
        .iter()
        .filter(|s| windows.iter().any(|&(a, b)| s.0 >= a && s.0 < b))
        .map(|s| s.1)
        .collect();
    let (st, du) = (Stats::of(steady_lat), Stats::of(during));
    println!("query latency steady: {st}");
    println!("query latency during reloads: {du}");
    println!(
        "p99 during / steady: {:.2}x (goal ≤ 1.5x); p99.9 during / steady: {:.2}x",
        du.p99 as f64 / st.p99.max(1) as f64,
        du.p999 as f64 / st.p999.max(1) as f64
    );
    println!(
        "RSS steady {:.1} MB (start-up peak {:.1} MB); peak during reloads {:.1} MB \
         (HWM right after reset {:.1} MB); after {:.1} MB",
        rss_steady as f64 / 1024.0,
        hwm_startup as f64 / 1024.0,
        hwm_reload as f64 / 1024.0,
        hwm_reset as f64 / 1024.0,
        rss_after as f64 / 1024.0
    );
    println!(
        "peak RSS during reload / steady RSS: {:.2}x (goal ≤ 2.2x)",
        hwm_reload as f64 / rss_steady.max(1) as f64
    );
    let lost = samples.iter().filter(|s| s.1 == u64::MAX).count();
    println!(
        "queries: {} sent, {lost} unanswered within 1 s",
        samples.len()
    );
    drop(server);
    // The claim the benchmark backs ("reloads drop no query"): checked, not
    // only printed. A failed assertion fails `cargo bench`.
    assert_eq!(
        lost,
        0,
        "{lost} of {} queries were not answered within 1 s",
        samples.len()
    );
    assert!(
        du.n > 0,
        "no query was answered while a reload ran: the benchmark measured nothing"
    );
}

/// A field of /proc/PID/status, in kB.
fn proc_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

struct Stats {
    n: usize,
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Stats {
    fn of(mut v: Vec<u64>) -> Self {
        v.retain(|&x| x != u64::MAX);
        v.sort_unstable();
        let p = |q: f64| {
            if v.is_empty() {
                0
            } else {
                v[((v.len() - 1) as f64 * q).round() as usize]
            }
        };
        Self {
            n: v.len(),
            p50: p(0.5),
            p99: p(0.99),
            p999: p(0.999),
            max: v.last().copied().unwrap_or(0),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={:.1}µs p99={:.1}µs p99.9={:.1}µs max={:.1}µs",
            self.n,
            self.p50 as f64 / 1e3,
            self.p99 as f64 / 1e3,
            self.p999 as f64 / 1e3,
            self.max as f64 / 1e3
        )
    }
}

/// A UDP client: (send time ns since start, RTT ns or u64::MAX).
struct Client {
    start: Instant,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<(u64, u64)>>,
}

/// Pre-encoded queries for pseudo-random listed tenants.
fn packets(tenants: usize) -> Vec<Vec<u8>> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x % tenants as u64) as usize + 1;
            query(&format!("{}.cells.example.test.", tenant_name(i)))
        })
        .collect()
}

impl Client {
    /// Open loop: a sender offers `rate` queries per second on schedule
    /// (query k is due at k / rate; a late sender catches up, it never
    /// skips), a receiver matches answers by ID. Latency runs from the
    /// scheduled send time; a query unanswered within 1 s counts as lost.
    fn open_loop(server: SocketAddr, tenants: usize, rate: u64) -> Self {
        use std::sync::atomic::AtomicU64;
        const IDS: usize = 1 << 16;
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").expect("bind"));
        sock.connect(server).expect("connect");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        // Per ID: scheduled send time (ns since start) + 1; 0 = answered.
        let due: Arc<Vec<AtomicU64>> = Arc::new((0..IDS).map(|_| AtomicU64::new(0)).collect());
        let packets = packets(tenants);
        let sent = Arc::new(AtomicU64::new(0));
        let sender = {
            let (sock, due, stop, sent) = (sock.clone(), due.clone(), stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let period = 1e9 / rate as f64;
                let mut k: u64 = 0;
                let mut out = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let now = start.elapsed().as_nanos() as u64;
                    while (k as f64 * period) as u64 <= now {
                        let at = (k as f64 * period) as u64;
                        let id = (k % IDS as u64) as usize;
                        let prev = due[id].swap(at + 1, Ordering::AcqRel);
                        if prev != 0 {
                            // The query that had this ID 65,536 queries ago
                            // was never answered.
                            out.push((prev - 1, u64::MAX));
                        }
                        let mut q = packets[(k % packets.len() as u64) as usize].clone();
                        q[..2].copy_from_slice(&(id as u16).to_be_bytes());
                        let _ = sock.send(&q);
                        k += 1;
                    }
                    sent.store(k, Ordering::Relaxed);
                    std::thread::sleep(Duration::from_micros(100));
                }
                out
            })
        };
        let receiver = {
            let (sock, due, stop) = (sock.clone(), due.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 1500];
                let mut out = Vec::with_capacity(1 << 22);
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = sock.recv(&mut buf) else { continue };
                    let now = start.elapsed().as_nanos() as u64;
                    if n < 4 {
                        continue;
                    }
                    assert_eq!(buf[3] & 0x0f, 0, "rcode not NOERROR");
                    let id = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    let at = due[id].swap(0, Ordering::AcqRel);
                    if at != 0 {
                        out.push((at - 1, now.saturating_sub(at - 1)));
                    }
                }
                out
            })
        };
        let thread = std::thread::spawn(move || {
            let mut out = sender.join().expect("sender");
            out.extend(receiver.join().expect("receiver"));
            // Still unanswered at the end: lost only when older than 1 s.
            let end = start.elapsed().as_nanos() as u64;
            for d in due.iter() {
                let at = d.load(Ordering::Acquire);
                if at != 0 && end - (at - 1) > 1_000_000_000 {
                    out.push((at - 1, u64::MAX));
                }
            }
            out.sort_unstable();
            println!(
                "open loop: {} queries offered at {rate} q/s",
                sent.load(Ordering::Relaxed)
            );
            out
        });
        Self {
            start,
            stop,
            thread,
        }
    }

    /// Closed loop: one query at a time.
    fn start(server: SocketAddr, tenants: usize) -> Self {
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let packets = packets(tenants);
        let thread = std::thread::spawn(move || {
            let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
            sock.connect(server).expect("connect");
            sock.set_read_timeout(Some(Duration::from_secs(1)))
                .expect("timeout");
            let mut out = Vec::with_capacity(1 << 20);
            let mut buf = [0u8; 1500];
            let mut id: u16 = 0;
            while !s.load(Ordering::Relaxed) {
                for p in &packets {
                    if s.load(Ordering::Relaxed) {
                        break;
                    }
                    id = id.wrapping_add(1);
                    let mut q = p.clone();
                    q[..2].copy_from_slice(&id.to_be_bytes());
                    let t0 = Instant::now();
                    if sock.send(&q).is_err() {
                        out.push(((t0 - start).as_nanos() as u64, u64::MAX));
                        continue;
                    }
                    let rtt = loop {
                        match sock.recv(&mut buf) {
                            Ok(n) if n >= 4 && buf[..2] == id.to_be_bytes() => {
                                assert_eq!(buf[3] & 0x0f, 0, "rcode not NOERROR");
                                break t0.elapsed().as_nanos() as u64;
                            }
                            Ok(_) => continue,
                            Err(_) => break u64::MAX,
                        }
                    };
                    out.push(((t0 - start).as_nanos() as u64, rtt));
                }
            }
            out
        });
        Self {
            start,
            stop,
            thread,
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn finish(self) -> Vec<(u64, u64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("client thread")
    }
}

/// A standard query (RD clear) for `name` A, id 0.
fn query(name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}
