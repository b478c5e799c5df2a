//! Reloads under faults an operator meets: the map's directory deleted and
//! made again, a file the watches never report, a map that is not a
//! regular file or is far too big, a reload that fails for a passing
//! reason (descriptors exhausted), a state directory that cannot be
//! written, and a map written in two halves. Each time the last good map
//! keeps serving, the failure is visible, and the next good map is served.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::dns::{Udp, serial, wait_for_answer};
use crate::support::http::{self, scrape};
use crate::support::map::{self, Mode, ORIGIN, cell_v4};
use crate::support::server::{Server, serve_fails};
use crate::support::{RELOAD, replace_file, require_tool, wait_until, write_synced};

fn acme() -> String {
    format!("acme.{ORIGIN}")
}

/// The small map with acme on `cell`, no gates.
fn small(version: &str, cell: char) -> String {
    map::small(version, cell).no_gate().toml()
}

/// `/readyz`'s body.
fn readyz(s: &Server) -> serde_json::Value {
    let r = http::get(s.http(), "/readyz");
    assert_eq!(r.status, 200, "/readyz: {}", r.text());
    r.json()
}

/// The peak resident size of process `pid` (VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmHWM")
}

#[test]
fn reload_follows_a_map_directory_deleted_and_made_again() {
    let root = tempfile::tempdir().expect("tempdir");
    let dir = root.path().join("maps");
    std::fs::create_dir(&dir).expect("mkdir");
    let path = dir.join("map.toml");
    write_synced(&path, &small("v0", 'a'));
    // The periodic check once an hour: only the watches can explain a
    // reload within the deadline.
    let s = Server::start(&[
        "--map",
        path.to_str().expect("utf-8"),
        "--map-check-interval-ms",
        "3600000",
    ]);
    let watch_ok = readyz(&s)["map_watch"] == "ok";

    // A volume remount, or a deploy that replaces the directory.
    std::fs::remove_dir_all(&dir).expect("remove the map directory");
    let shown_degraded = wait_until(RELOAD, || readyz(&s)["map_watch"] == "degraded");
    let metric_degraded = scrape(s.http()).get("cellns_map_watch_ok", &[]) == Some(0.0);
    let a = Udp::new(s.dns).ask(&acme(), RecordType::A).expect("answer");
    assert_eq!(a.addrs, cell_v4('a'), "the last good map serves");

    // Back, with a new map in it.
    std::fs::create_dir(&dir).expect("mkdir again");
    write_synced(&path, &small("v1", 'b'));
    wait_for_answer(s.dns, &acme(), &cell_v4('b'), RELOAD).unwrap_or_else(|last| {
        panic!(
            "the map in the recreated directory was not served: {last}\n{}",
            s.logs().text()
        )
    });
    // The watch's state was visible all along.
    assert!(watch_ok, "the watch was not shown ok at start");
    assert!(
        shown_degraded && metric_degraded,
        "the watch of a deleted directory was not shown degraded (readyz: {shown_degraded}, metric: {metric_degraded})"
    );
    assert!(
        wait_until(RELOAD, || readyz(&s)["map_watch"] == "ok"),
        "{}",
        readyz(&s)
    );
    assert_eq!(scrape(s.http()).value("cellns_map_watch_ok", &[]), 1.0);

    // And the re-armed watch keeps working.
    replace_file(&path, &small("v2", 'a'));
    wait_for_answer(s.dns, &acme(), &cell_v4('a'), RELOAD)
        .unwrap_or_else(|last| panic!("a later change was not served: {last}"));
}

#[test]
fn the_periodic_check_finds_a_change_no_event_reported() {
    let mut m = map::MapDir::new(&small("v0", 'a'), false);
    let s = Server::start(&["--map", &m.arg(), "--map-check-interval-ms", "200"]);
    // First a change the watch reports, to know the reload thread is past
    // its first look at the file after arming its watch (a change before
    // that look is found by the look, not by the periodic check).
    m.write(&small("v2", 'a'), Mode::Rename);
    assert!(
        wait_until(RELOAD, || readyz(&s)["map_version"] == "v2"),
        "a renamed map was not loaded"
    );
    // A writer that rewrites the file in place and keeps it open: data
    // writes raise no reload by design (the file may be half written) and
    // no close comes, so only the periodic check can see the new map, once
    // it stays put.
    // Overwritten without truncation (a truncation is a change an event
    // reports, which would reload by another way), so the new map must be
    // exactly as long as the old one.
    let (old, new) = (small("v2", 'a'), small("v1", 'b'));
    assert_eq!(old.len(), new.len(), "the two maps must be the same size");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(&m.path)
        .expect("open for writing");
    f.write_all(new.as_bytes()).expect("write");
    f.sync_all().expect("sync");
    wait_for_answer(s.dns, &acme(), &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("the periodic check did not reload: {last}"));
    drop(f);
    wait_until(RELOAD, || s.logged("map reloaded"));
    assert!(
        scrape(s.http()).value("cellns_map_check_changes_total", &[]) >= 1.0,
        "reloaded, but not by the periodic check; the server said:\n{}",
        s.logs()
            .text()
            .lines()
            .filter(|l| l.contains("reload") || l.contains("watch") || l.contains("check"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(s.logged("the periodic check found a change"));
}

/// Makes `path` a FIFO in place of what is there (through a rename, as a
/// control plane replaces a map).
fn make_fifo(path: &Path) {
    let tmp = path.with_extension("fifo.tmp");
    let st = std::process::Command::new(require_tool("mkfifo"))
        .arg(&tmp)
        .status()
        .expect("mkfifo");
    assert!(st.success(), "mkfifo failed");
    std::fs::rename(&tmp, path).expect("rename the FIFO over the map");
}

/// Makes `path` a symlink to `target`, replacing what is there.
fn make_symlink(target: &str, path: &Path) {
    let tmp = path.with_extension("link.tmp");
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, path).expect("rename the symlink over the map");
}

/// 100 MB of text lines that are no TOML.
fn junk(path: &Path) {
    let tmp = path.with_extension("junk.tmp");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp).expect("create"));
    let line = b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do\n";
    for _ in 0..100_000_000 / line.len() + 1 {
        f.write_all(line).expect("write");
    }
    f.into_inner().expect("flush").sync_all().expect("sync");
    std::fs::rename(&tmp, path).expect("rename the junk over the map");
}

#[test]
fn a_fifo_dev_zero_and_100mb_of_junk_are_refused_and_the_next_good_map_loads() {
    let m = map::MapDir::new(&small("v0", 'a'), false);
    let s = Server::start(&["--map", &m.arg()]);
    let udp = Udp::new(s.dns);
    let mut next = 0;
    let mut check = |what: &str, error: &str| {
        let refused = wait_until(RELOAD, || {
            s.logs()
                .messages("map reload failed; still serving the last good map")
                .iter()
                .any(|l| l["error"].as_str().is_some_and(|e| e.contains(error)))
        });
        assert!(refused, "{what} was not refused:\n{}", s.logs().text());
        next += 1;
        // Still serving the last good map, and ready.
        let a = udp.ask(&acme(), RecordType::A).expect("answered");
        assert_eq!(a.rcode, ResponseCode::NoError, "{what}");
        let r = readyz(&s);
        assert_eq!(r["last_reload_ok"], false, "{what}: {r}");
        assert_eq!(r["reload_retrying"], false, "{what}: {r}");
        // The next good map is loaded (the reload thread is not stuck).
        let (v, c) = if next % 2 == 1 {
            ('b', 'b')
        } else {
            ('a', 'a')
        };
        replace_file(&m.path, &small(&format!("after-{next}-{v}"), c));
        wait_for_answer(s.dns, &acme(), &cell_v4(c), RELOAD).unwrap_or_else(|last| {
            panic!(
                "the good map after {what} was not served: {last}\n{}",
                s.logs().text()
            )
        });
    };

    // A FIFO: reading it would block until someone writes into it.
    make_fifo(&m.path);
    check("a FIFO", "not a FIFO");
    // /dev/zero through a symlink: it never ends.
    make_symlink("/dev/zero", &m.path);
    check("/dev/zero", "not a character device");
    // 100 MB of junk lines: refused without a parse tree of it (the
    // general TOML parser needed 1.4 GB for this).
    let before = peak_rss(s.pid());
    junk(&m.path);
    check("100 MB of junk", "over the limit of");
    let peak = peak_rss(s.pid());
    assert!(
        peak < before + 400 * 1024 * 1024,
        "reading and refusing 100 MB took the peak RSS from {} MB to {} MB",
        before >> 20,
        peak >> 20
    );
}

#[test]
fn a_map_over_the_size_limit_is_refused() {
    let m = map::MapDir::new(&small("v0", 'a'), false);
    let s = Server::start(&["--map", &m.arg(), "--map-max-bytes", "4096"]);
    let big = format!("{}\n{}", small("v1", 'b'), "# padding\n".repeat(1000));
    replace_file(&m.path, &big);
    let failed = s
        .logs()
        .wait_for("ERROR", "map reload failed", RELOAD)
        .expect("the big map was not refused");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("over the limit of 4096 bytes (--map-max-bytes)")),
        "{failed}"
    );
    let a = Udp::new(s.dns).ask(&acme(), RecordType::A).expect("answer");
    assert_eq!(a.addrs, cell_v4('a'));
}

#[test]
fn start_up_refuses_a_fifo_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("map.toml");
    make_fifo(&fifo);
    let (code, stderr) = serve_fails(&["--map", fifo.to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("not a FIFO"), "{stderr}");
}

/// The lowest descriptor number process `pid` does not use: the one its
/// next open gets (a soft limit of this number makes that open fail).
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::BTreeSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("proc fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap_or(0)
}

/// `prlimit --nofile=SOFT:HARD --pid PID`.
fn set_nofile(pid: u32, soft: u64, hard: &str) {
    let st = std::process::Command::new(require_tool("prlimit"))
        .args([
            &format!("--nofile={soft}:{hard}"),
            "--pid",
            &pid.to_string(),
        ])
        .status()
        .expect("prlimit");
    assert!(st.success(), "prlimit failed");
}

#[test]
fn a_reload_that_fails_for_want_of_descriptors_is_retried() {
    let m = map::MapDir::new(&small("v0", 'a'), false);
    // No periodic check within the test: a reload after the failure is the
    // retry, nothing else.
    let s = Server::start(&["--map", &m.arg(), "--map-check-interval-ms", "3600000"]);
    let pid = s.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let nofile: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().skip(3).take(2).collect())
        .expect("Max open files");
    let (soft, hard) = (nofile[0].parse::<u64>().expect("soft limit"), nofile[1]);
    // Not one descriptor more: the next open fails with EMFILE.
    set_nofile(pid, lowest_free_fd(pid), hard);
    replace_file(&m.path, &small("v1", 'b'));
    let failed = s
        .logs()
        .wait_for("ERROR", "map reload failed", RELOAD)
        .unwrap_or_else(|| {
            panic!(
                "the reload did not fail (descriptors were available?):\n{}",
                s.logs().text()
            )
        });
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("Too many open files")),
        "{failed}"
    );
    s.logs()
        .wait_for("WARN", "the map reload will be retried", RELOAD)
        .expect("no retry scheduled");
    // Descriptors back: the retry loads the map, with no new file event.
    set_nofile(pid, soft, hard);
    wait_for_answer(s.dns, &acme(), &cell_v4('b'), RELOAD).unwrap_or_else(|last| {
        panic!(
            "the failed reload was not retried: {last}\n{}",
            s.logs().text()
        )
    });
    let reloaded = s
        .logs()
        .wait_for("INFO", "map reloaded", RELOAD)
        .expect("reload logged");
    assert_eq!(reloaded["trigger"], "retry", "{reloaded}");
    let r = readyz(&s);
    assert_eq!(
        (r["last_reload_ok"].clone(), r["reload_retrying"].clone()),
        (true.into(), false.into()),
        "{r}"
    );
}

/// Makes a directory unwritable for this process until dropped: mode
/// 0555, and for root (which ignores the mode) `chattr +i`.
struct ReadOnly {
    dir: PathBuf,
    chattr: Option<PathBuf>,
}

impl ReadOnly {
    fn new(dir: &Path) -> Self {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let mut guard = Self {
            dir: dir.to_owned(),
            chattr: None,
        };
        if std::fs::write(dir.join(".probe"), "x").is_ok() {
            let _ = std::fs::remove_file(dir.join(".probe"));
            let chattr = require_tool("chattr");
            let st = std::process::Command::new(&chattr)
                .arg("+i")
                .arg(dir)
                .status()
                .expect("chattr");
            assert!(st.success(), "chattr +i {} failed", dir.display());
            guard.chattr = Some(chattr);
            assert!(
                std::fs::write(dir.join(".probe"), "x").is_err(),
                "cannot make {} read-only",
                dir.display()
            );
        }
        guard
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt as _;
        if let Some(chattr) = &self.chattr {
            let _ = std::process::Command::new(chattr)
                .arg("-i")
                .arg(&self.dir)
                .status();
        }
        let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
    }
}

#[test]
fn a_read_only_state_dir_refuses_the_reload_and_a_restart_never_goes_back() {
    let state = tempfile::tempdir().expect("tempdir");
    let state_arg = state.path().to_str().expect("utf-8").to_owned();
    let m = map::MapDir::new(&small("v0", 'a'), false);
    let args = [
        "--map",
        &m.arg(),
        "--state-dir",
        &state_arg,
        "--shutdown-unready-ms",
        "0",
    ];
    let mut s = Server::start(&args);
    let s1 = serial(s.dns, ORIGIN).expect("serial");

    let ro = ReadOnly::new(state.path());
    replace_file(&m.path, &small("v1", 'b'));
    let failed = s
        .logs()
        .wait_for("ERROR", "map reload failed", RELOAD)
        .expect("the reload was not refused");
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("SOA serial cannot be saved")),
        "{failed}"
    );
    // Refused: the old map under the old serial; it shows as a failed
    // reload that is being retried, and the server stays ready.
    let udp = Udp::new(s.dns);
    for _ in 0..20 {
        let a = udp.ask(&acme(), RecordType::A).expect("answer");
        assert_eq!(
            a.addrs,
            cell_v4('a'),
            "a map was served without a saved serial"
        );
    }
    assert_eq!(serial(s.dns, ORIGIN), Some(s1));
    let r = readyz(&s);
    assert_eq!(r["last_reload_ok"], false, "{r}");
    assert_eq!(r["reload_retrying"], true, "{r}");
    assert!(scrape(s.http()).value("cellns_reload_total", &[("result", "failure")]) >= 1.0);

    // Writable again: the retry publishes the map under a saved serial.
    drop(ro);
    wait_for_answer(s.dns, &acme(), &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("not published once the disk was back: {last}"));
    let s2 = serial(s.dns, ORIGIN).expect("serial");
    assert!(s2 > s1, "{s2} after {s1}");
    let saved: u32 = std::fs::read_to_string(state.path().join("serial"))
        .expect("serial file")
        .trim()
        .parse()
        .expect("a number");
    assert_eq!(saved, s2);

    assert!(s.terminate().is_some(), "no exit on SIGTERM");
    drop(s);
    let s = Server::start(&args);
    let s3 = serial(s.dns, ORIGIN).expect("serial");
    assert!(s3 >= s2, "the restart went back from {s2} to {s3}");
}

#[test]
fn serials_never_run_ahead_of_the_clock_and_never_go_back_without_a_state_dir() {
    let mut m = map::MapDir::new(&small("v0", 'a'), false);
    let args = ["--map", &m.arg(), "--shutdown-unready-ms", "0"];
    let mut s = Server::start(&args);
    let mut last = serial(s.dns, ORIGIN).expect("serial");
    // Ten reloads as fast as they are served.
    for k in 1..=10 {
        let c = if k % 2 == 1 { 'b' } else { 'a' };
        m.write(&small(&format!("v{k}"), c), map::Mode::Rename);
        wait_for_answer(s.dns, &acme(), &cell_v4(c), RELOAD).expect("served");
        let now = serial(s.dns, ORIGIN).expect("serial");
        assert!(now > last, "serial {now} after {last}");
        let clock = crate::support::unix_now() as u32;
        assert!(now <= clock, "serial {now} is ahead of the clock ({clock})");
        last = now;
    }
    assert!(s.terminate().is_some(), "no exit on SIGTERM");
    drop(s);
    // A restart at once (no state directory) serves a higher serial.
    let s = Server::start(&args);
    let after = serial(s.dns, ORIGIN).expect("serial");
    assert!(after > last, "restart: {after} after {last}");
}

#[test]
fn primaries_fed_the_same_map_serve_the_same_serial() {
    let text = |version: &str, cell: char, serial: u32| {
        map::small(version, cell)
            .no_gate()
            .set("zone.serial", i64::from(serial))
            .toml()
    };
    let mut m1 = map::MapDir::new(&text("v1", 'a', 1_000_000), false);
    let mut m2 = map::MapDir::new(&text("v1", 'a', 1_000_000), false);
    let a = Server::start(&["--map", &m1.arg()]);
    let b = Server::start(&["--map", &m2.arg()]);
    assert_eq!(serial(a.dns, ORIGIN), Some(1_000_000));
    assert_eq!(serial(b.dns, ORIGIN), Some(1_000_000));
    for m in [&mut m1, &mut m2] {
        m.write(&text("v2", 'b', 1_000_007), map::Mode::Rename);
    }
    for s in [&a, &b] {
        wait_for_answer(s.dns, &acme(), &cell_v4('b'), RELOAD).expect("served");
        assert_eq!(serial(s.dns, ORIGIN), Some(1_000_007));
    }
}

/// A map of `n` listed tenants (`t0000`…) on cells a and b, acme on
/// `acme_on`, with a guard when `guard`; tenants last, as a control plane
/// writes them.
fn many(version: &str, acme_on: char, n: usize, guard: bool) -> String {
    let mut m = map::small(version, acme_on).no_gate();
    for i in 0..n {
        m = m.tenant(&format!("t{i:04}"), if i % 2 == 0 { "a" } else { "b" });
    }
    let text = m.toml();
    if guard {
        // First of the tables (a cut anywhere after it loses tenants); the
        // small map lists acme and f00…f19 besides.
        let at = text.find("\n[").expect("a table") + 1;
        format!(
            "{}[guard]\ntenants = {}\n\n{}",
            &text[..at],
            n + 21,
            &text[at..]
        )
    } else {
        text
    }
}

/// Writes `text` to `path` in place in two parts: 95 % (cut at a line
/// boundary), a pause, then the rest. With `reopen`, the parts are two
/// separate writes (a close after the first); else one open file.
/// `during` runs in the pause.
fn write_in_two_halves(path: &Path, text: &str, reopen: bool, during: impl FnOnce()) {
    let cut = text[..text.len() * 95 / 100].rfind('\n').expect("a line") + 1;
    let mut f = Some(std::fs::File::create(path).expect("create"));
    if let Some(f) = &mut f {
        f.write_all(&text.as_bytes()[..cut]).expect("first part");
        f.sync_all().expect("sync");
    }
    if reopen {
        f = None;
    }
    during();
    let mut f = f.unwrap_or_else(|| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("reopen")
    });
    f.write_all(&text.as_bytes()[cut..]).expect("second part");
    f.sync_all().expect("sync");
}

/// Asks for the last listed tenant for `how_long`: it must be answered
/// (the half-written map lacks it) every time.
fn last_tenant_always_answered(s: &Server, n: usize, how_long: Duration) {
    let udp = Udp::new(s.dns);
    let name = format!("t{:04}.{ORIGIN}", n - 1);
    let mut asked = 0;
    let deadline = std::time::Instant::now() + how_long;
    while std::time::Instant::now() < deadline {
        let a = udp.ask(&name, RecordType::A).expect("answer");
        assert_eq!(
            a.rcode,
            ResponseCode::NoError,
            "{name}: a half-written map is served (after {asked} answers)"
        );
        asked += 1;
    }
}

#[test]
fn a_map_written_in_two_halves_is_never_served_half() {
    const N: usize = 2000;
    let m = map::MapDir::new(&many("v0", 'a', N, false), false);
    let s = Server::start(&["--map", &m.arg()]);
    // One open file, written in two parts with a pause longer than the
    // debounce (and than a reload): only its close may trigger the reload.
    // The missing 5 % pass the safety gates, so nothing else would stop a
    // half map.
    write_in_two_halves(&m.path, &many("v1", 'b', N, false), false, || {
        last_tenant_always_answered(&s, N, Duration::from_millis(1500))
    });
    wait_for_answer(s.dns, &acme(), &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("the complete map was not served: {last}"));
    last_tenant_always_answered(&s, N, Duration::from_millis(100));
}

#[test]
fn a_guarded_map_written_by_two_writers_is_never_served_half() {
    const N: usize = 2000;
    let m = map::MapDir::new(&many("v0", 'a', N, true), false);
    let s = Server::start(&["--map", &m.arg()]);
    // Two writes, each closed: the first close reloads a file cut short,
    // which its guard refuses.
    write_in_two_halves(&m.path, &many("v1", 'b', N, true), true, || {
        let failed = s
            .logs()
            .wait_for("ERROR", "map reload failed", RELOAD)
            .expect("the first half was not looked at (or not refused)");
        assert!(
            failed["error"]
                .as_str()
                .is_some_and(|e| e.contains("guard.tenants")),
            "{failed}"
        );
        last_tenant_always_answered(&s, N, Duration::from_millis(300));
    });
    wait_for_answer(s.dns, &acme(), &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("the complete map was not served: {last}"));
    last_tenant_always_answered(&s, N, Duration::from_millis(100));
}
