//! Health probing cost: what probing 1,000 cells × 4 endpoints every
//! second costs the cellns process in CPU and memory.
//!
//! Run with `cargo bench --bench health` (`cargo test` builds this file and
//! runs it without `--bench`, which returns at once). Knobs (environment):
//! `CELLNS_BENCH_CELLS` (1000), `CELLNS_BENCH_ENDPOINTS` (4 per cell),
//! `CELLNS_BENCH_INTERVAL_MS` (1000), `CELLNS_BENCH_PROBE` (`http`),
//! `CELLNS_BENCH_WARMUP_SECS` (10), `CELLNS_BENCH_SECS` (30).
//!
//! Method:
//! 1. This process serves every endpoint: one listener per address
//!    (127.40.A.B, loopback only) on one port, answering each HTTP request
//!    with `200 OK` (or accepting and closing, for TCP), on its own tokio
//!    runtime. Its CPU is not counted.
//! 2. The release binary serves a generated map of those cells (one listed
//!    tenant each), twice: without health tables (the baseline), then with
//!    a `[cells.<id>.health]` table on every cell (interval as set, timeout
//!    half of it, rise 2, fall 3).
//! 3. After the warm-up, the server's user + system CPU time
//!    (`/proc/PID/stat`) is read at the start and end of the measured
//!    window, and its VmRSS, VmHWM and thread count at the end
//!    (`/proc/PID/status`); the endpoints' request counter gives the probe
//!    rate actually achieved.
//!
//! It asserts that the probes ran at the configured rate (at least 90 %),
//! and reports the probes that failed (none should, unless the machine is
//! too busy to answer within the timeout) and why.

#[path = "../tests/e2e/support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("health benchmark: skipped (run it with `cargo bench --bench health`)");
        return;
    }
    let cells: usize = env_or("CELLNS_BENCH_CELLS", 1000);
    let per_cell: usize = env_or("CELLNS_BENCH_ENDPOINTS", 4);
    let interval_ms: u64 = env_or("CELLNS_BENCH_INTERVAL_MS", 1000);
    let probe: String = env_or("CELLNS_BENCH_PROBE", "http".to_owned());
    let warmup = Duration::from_secs(env_or("CELLNS_BENCH_WARMUP_SECS", 10));
    let window = Duration::from_secs(env_or("CELLNS_BENCH_SECS", 30));
    let addrs: Vec<Vec<Ipv4Addr>> = (0..cells)
        .map(|c| {
            (0..per_cell)
                .map(|e| {
                    let i = c * per_cell + e;
                    Ipv4Addr::new(127, 40, (i / 250) as u8, (i % 250 + 1) as u8)
                })
                .collect()
        })
        .collect();
    println!(
        "health benchmark: {cells} cells × {per_cell} endpoints, {probe} probes every {interval_ms} ms \
         (expected {:.0} probes/s); warm-up {warmup:?}, window {window:?}; {} CPU(s)",
        (cells * per_cell) as f64 * 1000.0 / interval_ms as f64,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let (port, requests) = serve_endpoints(&addrs, probe == "http");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut results = Vec::new();
    for with_health in [false, true] {
        let path = dir.path().join(format!("map-{with_health}.toml"));
        std::fs::write(
            &path,
            map(
                &addrs,
                with_health.then_some((probe.as_str(), port, interval_ms)),
            ),
        )
        .expect("write map");
        let server = support::server::Launch::new(&[
            "--map",
            &path.display().to_string(),
            "--udp-workers",
            "1",
        ])
        .start();
        let pid = server.pid();
        std::thread::sleep(warmup);
        let (cpu0, r0, t0) = (
            cpu_secs(pid),
            requests.load(Ordering::Relaxed),
            Instant::now(),
        );
        std::thread::sleep(window);
        let (cpu1, r1, elapsed) = (
            cpu_secs(pid),
            requests.load(Ordering::Relaxed),
            t0.elapsed(),
        );
        let secs = elapsed.as_secs_f64();
        let r = Row {
            label: if with_health {
                "with health"
            } else {
                "no health (baseline)"
            },
            cpu_pct: 100.0 * (cpu1.0 + cpu1.1 - cpu0.0 - cpu0.1) / secs,
            user_pct: 100.0 * (cpu1.0 - cpu0.0) / secs,
            sys_pct: 100.0 * (cpu1.1 - cpu0.1) / secs,
            rss_kb: proc_kb(pid, "VmRSS"),
            hwm_kb: proc_kb(pid, "VmHWM"),
            threads: proc_kb(pid, "Threads"),
            probes_per_s: (r1 - r0) as f64 / elapsed.as_secs_f64(),
        };
        if with_health {
            let metrics = support::http::get(server.http(), "/metrics").text();
            let sum = |prefix: &str| -> f64 {
                metrics
                    .lines()
                    .filter(|l| l.starts_with(prefix))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum()
            };
            let total = sum("cellns_health_probes_total{");
            let failures: f64 = metrics
                .lines()
                .filter(|l| {
                    l.starts_with("cellns_health_probes_total{") && l.contains("result=\"failure\"")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum();
            let mut errors = std::collections::BTreeMap::<String, usize>::new();
            for v in server.logs().messages("endpoint down") {
                *errors
                    .entry(v["error"].as_str().unwrap_or("").to_owned())
                    .or_default() += 1;
            }
            println!(
                "probes since start: {total:.0}, failed: {failures:.0}; endpoint-down verdicts by last error: {errors:?}"
            );
            let expected = (cells * per_cell) as f64 * 1000.0 / interval_ms as f64;
            assert!(
                r.probes_per_s >= 0.9 * expected,
                "{:.0} probes/s, expected {expected:.0}",
                r.probes_per_s
            );
        }
        println!(
            "{:<22} CPU {:>6.2} % of one core (user {:.2}, sys {:.2})   VmRSS {:>7} KiB   VmHWM {:>7} KiB   threads {:>3}   probes {:>7.0}/s",
            r.label,
            r.cpu_pct,
            r.user_pct,
            r.sys_pct,
            r.rss_kb,
            r.hwm_kb,
            r.threads,
            r.probes_per_s
        );
        results.push(r);
        drop(server);
    }
    let (base, health) = (&results[0], &results[1]);
    println!(
        "cost of probing: {:.2} % of one core ({:.2} µs of CPU per probe), {:+} KiB RSS ({:+.0} bytes per endpoint)",
        health.cpu_pct - base.cpu_pct,
        (health.cpu_pct - base.cpu_pct) / 100.0 * 1e6 / health.probes_per_s.max(1.0),
        health.rss_kb as i64 - base.rss_kb as i64,
        (health.rss_kb as f64 - base.rss_kb as f64) * 1024.0 / (cells * per_cell) as f64
    );
}

struct Row {
    label: &'static str,
    cpu_pct: f64,
    user_pct: f64,
    sys_pct: f64,
    rss_kb: u64,
    hwm_kb: u64,
    threads: u64,
    probes_per_s: f64,
}

/// The map: cell i on `addrs[i]`, tenant t<i> on it, a health table on
/// every cell when `health` is `(probe, port, interval)`.
fn map(addrs: &[Vec<Ipv4Addr>], health: Option<(&str, u16, u64)>) -> String {
    let mut s = String::from(
        "version = \"health-bench\"\n[zone]\norigin = \"cells.example.test.\"\n\
         nameservers = [\"ns.example.net.\"]\nhostmaster = \"h.example.net.\"\n",
    );
    for (i, a) in addrs.iter().enumerate() {
        let list: Vec<String> = a.iter().map(|ip| format!("\"{ip}\"")).collect();
        s.push_str(&format!(
            "[cells.c{i:04}]\nhostname = \"c{i:04}.cells.example.test.\"\nipv4 = [{}]\n",
            list.join(", ")
        ));
        if let Some((probe, port, interval)) = health {
            let path = if probe == "http" {
                "path = \"/healthz\"\n"
            } else {
                ""
            };
            s.push_str(&format!(
                "[cells.c{i:04}.health]\nprobe = \"{probe}\"\nport = {port}\n{path}\
                 interval_ms = {interval}\ntimeout_ms = {}\nrise = 2\nfall = 3\n",
                interval / 2
            ));
        }
    }
    s.push_str("[tenants]\n");
    for i in 0..addrs.len() {
        s.push_str(&format!("t{i:04} = \"c{i:04}\"\n"));
    }
    s
}

/// Listeners on every address (one port for all), on a runtime of their
/// own; returns the port and the count of requests (or connections)
/// served.
fn serve_endpoints(addrs: &[Vec<Ipv4Addr>], http: bool) -> (u16, Arc<AtomicU64>) {
    let requests = Arc::new(AtomicU64::new(0));
    let all: Vec<Ipv4Addr> = addrs.iter().flatten().copied().collect();
    let (tx, rx) = std::sync::mpsc::channel();
    let counter = requests.clone();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let mut port = 0;
            let mut listeners = Vec::new();
            'retry: for _ in 0..20 {
                listeners.clear();
                for (i, ip) in all.iter().enumerate() {
                    let addr = SocketAddr::new(IpAddr::V4(*ip), if i == 0 { 0 } else { port });
                    match tokio::net::TcpListener::bind(addr).await {
                        Ok(l) => {
                            if i == 0 {
                                port = l.local_addr().expect("addr").port();
                            }
                            listeners.push(l);
                        }
                        Err(_) => continue 'retry,
                    }
                }
                break;
            }
            assert_eq!(listeners.len(), all.len(), "cannot bind every endpoint");
            tx.send(port).expect("send port");
            for l in listeners {
                let counter = counter.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok((mut s, _)) = l.accept().await else {
                            continue;
                        };
                        let counter = counter.clone();
                        tokio::spawn(async move {
                            if http {
                                let mut buf = [0u8; 1024];
                                let mut n = 0;
                                while n < buf.len() && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                    match s.read(&mut buf[n..]).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(k) => n += k,
                                    }
                                }
                                let _ = s
                                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                                    .await;
                            }
                            counter.fetch_add(1, Ordering::Relaxed);
                        });
                    }
                });
            }
            std::future::pending::<()>().await;
        });
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("endpoints bound");
    (port, requests)
}

/// User and system CPU seconds of process `pid`.
fn cpu_secs(pid: u32) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (
        f[11].parse::<f64>().expect("utime") / hz,
        f[12].parse::<f64>().expect("stime") / hz,
    )
}

/// A field of `/proc/PID/status` (KiB, or a count).
fn proc_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
