//! The one support module of the end-to-end tests: the server launcher and
//! its log reader ([`server`]), one DNS client ([`dns`]), one map builder
//! ([`map`]), the HTTP, token and metrics helpers ([`http`]), the answer
//! table of DESIGN.md ([`table`]), real secondaries ([`secondary`]), a real
//! resolver in front ([`resolver`]: unbound, validating or not) and the
//! SDK demo set-up ([`sdk`]); here, what they all share: paths, tools, and
//! the one "wait until a condition holds or a deadline passes" helper.
//!
//! Deadlines are sized for a loaded 2-core machine (the suite runs two
//! tests at once, each with its own servers): generous, because a deadline
//! only decides how long a broken behaviour takes to fail, never whether a
//! working one passes.

pub mod dns;
pub mod http;
pub mod map;
pub mod resolver;
pub mod sdk;
pub mod secondary;
pub mod server;
pub mod table;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The client side of cellns (claims, resolver, wrong-cell signal, token
/// verifier): the one place the tests name the crate that provides it.
pub use cellns_client as client;

/// How long the server may take to start and log its addresses. Generous:
/// a deadline only bounds a failing test, and the suite also runs on a
/// 2-core machine busy with builds (load averages of 8 to 15 were seen).
pub const STARTUP: Duration = Duration::from_secs(60);
/// How long a map change may take to be served (watch, debounce, parse,
/// swap) on a loaded machine; the reload thread runs at a low priority, so
/// it is the first to wait when the machine is busy.
pub const RELOAD: Duration = Duration::from_secs(30);
/// How long one DNS or HTTP exchange may take before the test fails.
pub const EXCHANGE: Duration = Duration::from_secs(5);

/// Polls `cond` until it holds or `within` passes; returns whether it held.
/// The one way the tests wait: on a condition, with a deadline.
pub fn wait_until(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cellns"))
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example map.
pub fn example_map() -> PathBuf {
    repo().join("zones/example.toml")
}

/// Runs `cellns ARGS` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run cellns");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `tool ARGS` (which must be installed) to completion: (exit code,
/// stdout followed by stderr).
pub fn run_tool(tool: &str, args: &[String]) -> (i32, String) {
    let out = Command::new(require_tool(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Fails with a message naming the tool when `tool` is not on PATH.
pub fn require_tool(tool: &str) -> PathBuf {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain(["/usr/sbin".into(), "/sbin".into()])
    {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "this test needs `{tool}`, which is not installed (run scripts/test, which installs it)"
    );
}

/// The python with PyJWT, PyYAML and kubernetes-validate:
/// CELLNS_TEST_PYTHON or the repository's test venv.
pub fn python() -> PathBuf {
    let p = std::env::var_os("CELLNS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-test/bin/python"));
    assert!(
        p.exists() || p.components().count() == 1,
        "this test needs python with PyJWT[crypto] at {} (set CELLNS_TEST_PYTHON, or run scripts/test, which makes .venv-test)",
        p.display()
    );
    p
}

/// Runs `python -c script ARGS` (the test venv's python) and reads what it
/// prints as JSON; fails the test with python's error output otherwise.
pub fn python_json(script: &str, args: &[&Path]) -> serde_json::Value {
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Sends signal `sig` (a name: TERM, HUP, ...) with the `kill` command.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// A loopback port free for both UDP and TCP right now, for the daemons
/// that cannot be told to take port 0 and report it (unbound, NSD, Knot).
/// It is taken below the kernel's ephemeral range, which port-0 binds
/// (every cellns of the suite, every client socket) never use; the callers
/// still retry on another port when the daemon cannot bind it.
pub fn free_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Spread over the range below `low`, seeded by time and process, so two
    // tests asking at once rarely pick the same port.
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        ^ std::process::id().rotate_left(16);
    let base = 10_000u16;
    let span = u32::from(low.saturating_sub(base).max(1000));
    for i in 0..256u32 {
        let port = base + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok()
            && TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
    panic!("no free loopback port below {low}");
}

/// A TCP connection to `server` from the loopback address `src` (any of
/// 127.0.0.0/8 is ours: tests use 127.0.0.2 and up as other clients).
pub fn connect_from(src: &str, server: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let src: std::net::IpAddr = src.parse().expect("a source address");
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(server),
        socket2::Type::STREAM,
        None,
    )?;
    sock.bind(&SocketAddr::new(src, 0).into())?;
    sock.connect_timeout(&server.into(), EXCHANGE)?;
    Ok(sock.into())
}

/// A UDP socket bound to the loopback address `src`, connected to `server`.
pub fn udp_from(src: &str, server: SocketAddr) -> UdpSocket {
    let sock = UdpSocket::bind((src, 0)).unwrap_or_else(|e| panic!("bind UDP on {src}: {e}"));
    sock.connect(server).expect("connect UDP");
    sock
}

/// The resident memory of process `pid`, in bytes (`VmRSS`).
pub fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS in /proc status")
}

/// Raises this process's soft descriptor limit to at least `n` (up to the
/// hard limit); the limit in force after.
pub fn raise_nofile(n: u64) -> u64 {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read or write one rlimit struct.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        if r.rlim_cur < n {
            r.rlim_cur = n.min(r.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        }
    }
    r.rlim_cur
}

/// Writes `text` to `path` through a temporary file in the same directory
/// and a rename, as a control plane replaces a map: a reader never sees
/// half a file.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, text);
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename over {}: {e}", path.display()));
}

/// Writes `text` to `path` and syncs it to disk.
pub fn write_synced(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut f =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all()
        .unwrap_or_else(|e| panic!("sync {}: {e}", path.display()));
}

/// Seconds since the Unix epoch now.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Seconds since the Unix epoch of an RFC 3339 UTC timestamp as the
/// server logs it (`2026-12-03T07:27:06.638761Z`).
pub fn parse_utc(ts: &str) -> Option<f64> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.splitn(3, ':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

#[test]
fn parse_utc_reads_the_log_timestamps() {
    assert_eq!(parse_utc("1970-01-01T00:00:00Z"), Some(0.0));
    assert_eq!(parse_utc("2000-03-01T00:00:01.5Z"), Some(951_868_801.5));
    assert_eq!(parse_utc("2026-12-03T07:27:06Z"), Some(1_796_282_826.0));
    assert_eq!(parse_utc("not a time"), None);
}

/// `cellns dnssec keygen --out DIR ARGS`: the new key's tag.
pub fn dnssec_keygen(dir: &Path, args: &[&str]) -> u16 {
    let out = dir.to_str().expect("utf-8 path");
    let mut all = vec!["dnssec", "keygen", "--out", out];
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run_cli(&all);
    assert_eq!(code, 0, "cellns {all:?}: {stdout}{stderr}");
    stdout
        .split("key tag ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no key tag in {stdout:?}"))
}

/// `cellns dnssec ds DIR ORIGIN`: the DS records, one a line, in zone-file
/// format (what a parent publishes, or a resolver takes as trust anchor).
pub fn dnssec_ds(dir: &Path, origin: &str) -> Vec<String> {
    let (code, stdout, stderr) =
        run_cli(&["dnssec", "ds", dir.to_str().expect("utf-8 path"), origin]);
    assert_eq!(code, 0, "cellns dnssec ds: {stdout}{stderr}");
    stdout.lines().map(str::to_owned).collect()
}
