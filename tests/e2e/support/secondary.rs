//! Real secondaries of cellns: NSD and Knot started from the configuration
//! examples in deploy/secondaries/, changed only to run on loopback, the
//! TSIG key they share with cellns, and a relay that can cut NOTIFY off
//! from a secondary that keeps running.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use super::{dns, repo, require_tool, signal, wait_until};

/// Base64 HMAC-SHA256 secret shared by cellns and the secondaries.
pub const SECRET: &str = "dGVzdC10ZXN0LXRlc3QtdGVzdC10ZXN0LXRlc3QtMTI=";
/// The key name of the examples (deploy/secondaries/*-tsig.conf).
pub const KEY_NAME: &str = "cellns-xfr.";

/// Which secondary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// NSD 4.
    Nsd,
    /// Knot DNS 3.
    Knot,
}

/// A secondary server process, stopped on drop.
pub struct Secondary {
    child: Child,
    /// Its DNS address.
    pub addr: SocketAddr,
    /// Its log (stderr), for failure messages.
    pub log: PathBuf,
}

impl Secondary {
    /// Starts `kind` from its example configuration
    /// (deploy/secondaries/{nsd,knot}[-tsig].conf), changed only to run on
    /// loopback in `dir`: the example addresses become 127.0.0.1 (the
    /// secondary on `port`, cellns at `primary`), the example secret
    /// becomes [`SECRET`], and state and zone files go to `dir`. Returns
    /// once it answers on `port`; `Err(log)` when it could not bind the
    /// port (taken since it was found free: the caller takes another).
    pub fn start(
        kind: Kind,
        tsig: bool,
        dir: &Path,
        port: u16,
        primary: SocketAddr,
    ) -> Result<Self, String> {
        let name = match (kind, tsig) {
            (Kind::Nsd, false) => "nsd.conf",
            (Kind::Nsd, true) => "nsd-tsig.conf",
            (Kind::Knot, false) => "knot.conf",
            (Kind::Knot, true) => "knot-tsig.conf",
        };
        let example = repo().join("deploy/secondaries").join(name);
        let text = std::fs::read_to_string(&example)
            .unwrap_or_else(|e| panic!("read {}: {e}", example.display()));
        let d = dir.display();
        let p = primary.port();
        let conf = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let (text, program, args): (String, &str, Vec<String>) = match kind {
            Kind::Nsd => {
                let t = subst(
                    &text,
                    name,
                    &[
                        ("ip-address: 198.51.100.7", "ip-address: 127.0.0.1"),
                        ("port: 53", &format!("port: {port}")),
                        ("192.0.2.53@53", &format!("127.0.0.1@{p}")),
                        ("allow-notify: 192.0.2.53", "allow-notify: 127.0.0.1"),
                        (
                            "server:\n",
                            &format!(
                                "server:\n    username: \"\"\n    chroot: \"\"\n    \
                                 zonesdir: \"{d}\"\n    database: \"\"\n    \
                                 xfrdfile: \"{d}/xfrd.state\"\n    \
                                 zonelistfile: \"{d}/zone.list\"\n    \
                                 pidfile: \"{d}/nsd.pid\"\n    server-count: 1\n    \
                                 verbosity: 2\n"
                            ),
                        ),
                    ],
                );
                let mut t = if tsig { secret(&t, name) } else { t };
                // Tests run in parallel: no shared control port.
                t.push_str("\nremote-control:\n    control-enable: no\n");
                (
                    t,
                    "nsd",
                    vec!["-d".into(), "-c".into(), conf.display().to_string()],
                )
            }
            Kind::Knot => {
                let t = subst(
                    &text,
                    name,
                    &[
                        ("198.51.100.8@53", &format!("127.0.0.1@{port}")),
                        ("192.0.2.53@53", &format!("127.0.0.1@{p}")),
                        ("address: 192.0.2.53\n", "address: 127.0.0.1\n"),
                        ("server:\n", &format!("server:\n    rundir: \"{d}\"\n")),
                    ],
                );
                let mut t = if tsig { secret(&t, name) } else { t };
                let _ = write!(
                    t,
                    "\nlog:\n  - target: stderr\n    any: info\n\
                     database:\n    storage: \"{d}\"\n\
                     template:\n  - id: default\n    storage: \"{d}\"\n"
                );
                (t, "knotd", vec!["-c".into(), conf.display().to_string()])
            }
        };
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("write {}: {e}", conf.display()));
        let tool = require_tool(program);
        let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create log: {e}"));
        let child = Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        let mut secondary = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
        };
        // Up: it answers (anything: it may not have the zone yet). Down: it
        // exited, which both daemons do at once when the port is taken.
        let mut exited = false;
        let up = wait_until(super::STARTUP, || {
            exited = secondary.child.try_wait().ok().flatten().is_some();
            exited || dns::try_query(secondary.addr, ".", RecordType::SOA).is_some()
        });
        let log = secondary.log_text();
        match (up, exited) {
            (true, false) => Ok(secondary),
            (_, true) if log.contains("already in use") => Err(log),
            _ => panic!("{program} did not come up on port {port}:\n{log}"),
        }
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Secondary {
    fn drop(&mut self) {
        // SIGTERM: NSD's main process then stops the children it forked.
        signal(self.child.id(), "TERM");
        let stopped = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// `text` with each `(from, to)` replaced; each `from` must be there, so
/// the test fails when the example drifts from what it exercises.
fn subst(text: &str, file: &str, pairs: &[(&str, &str)]) -> String {
    let mut t = text.to_owned();
    for (from, to) in pairs {
        assert!(
            t.contains(from),
            "deploy/secondaries/{file} no longer contains `{from}`"
        );
        t = t.replace(from, to);
    }
    t
}

/// The example's placeholder secret replaced by [`SECRET`].
fn secret(text: &str, file: &str) -> String {
    subst(
        text,
        file,
        &[("K2tHkDq0WmDd3wXcd6IyCnwKDV0Pp9o0cZ4yYXOvKXc=", SECRET)],
    )
}

/// Writes cellns's `--tsig-key` file into `dir`.
pub fn key_file(dir: &Path) -> PathBuf {
    let path = dir.join("tsig.key");
    std::fs::write(&path, format!("{KEY_NAME} hmac-sha256 {SECRET}\n"))
        .unwrap_or_else(|e| panic!("write key: {e}"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    path
}

/// A UDP relay for NOTIFY between cellns and a secondary: cellns's
/// `--notify` points at it, it forwards each NOTIFY to the secondary and
/// the answer back (other queries, such as the fleet view's SOA checks, pass
/// through unrecorded), records the serial of every NOTIFY it got, and can
/// play an unreachable secondary (drop everything) while the secondary
/// itself keeps running (a restarted secondary would look at its primary
/// by itself, which would hide whether NOTIFY reached it).
pub struct NotifyRelay {
    /// Where cellns sends NOTIFY.
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<Notified>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// One NOTIFY the relay got.
#[derive(Debug, Clone, Copy)]
pub struct Notified {
    /// When.
    pub at: Instant,
    /// The SOA serial it carried.
    pub serial: u32,
    /// Passed on to the secondary (false: dropped while down).
    pub forwarded: bool,
}

impl NotifyRelay {
    /// A relay to the secondary at `to` (which need not be up yet).
    pub fn start(to: SocketAddr) -> Self {
        let front = UdpSocket::bind("127.0.0.1:0").expect("bind the relay");
        let back = UdpSocket::bind("127.0.0.1:0").expect("bind the relay's back");
        back.connect(to).expect("connect to the secondary");
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(50)))
                .expect("timeout");
        }
        let addr = front.local_addr().expect("addr");
        let up = Arc::new(AtomicBool::new(true));
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        // Who sent each message (by ID), for its answer: NOTIFYs come
        // from cellns's NOTIFY socket, its fleet checks (SOA queries) from
        // others.
        let primary: Arc<Mutex<std::collections::HashMap<u16, SocketAddr>>> =
            Arc::new(Mutex::new(std::collections::HashMap::new()));
        let front = Arc::new(front);
        let back = Arc::new(back);
        let forward = {
            let (front, back, up, stop, seen, primary) = (
                front.clone(),
                back.clone(),
                up.clone(),
                stop.clone(),
                seen.clone(),
                primary.clone(),
            );
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65535];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = front.recv_from(&mut buf) else {
                        continue;
                    };
                    if n < 12 {
                        continue;
                    }
                    let id = u16::from_be_bytes([buf[0], buf[1]]);
                    // Opcode NOTIFY (4): recorded; anything else (cellns's
                    // SOA checks of the fleet view) only passed on.
                    if (buf[2] >> 3) & 0x0F != 4 {
                        if up.load(Ordering::Relaxed) {
                            lock(&primary).insert(id, from);
                            let _ = back.send(&buf[..n]);
                        }
                        continue;
                    }
                    let serial = dns::decode(&buf[..n])
                        .answers
                        .iter()
                        .find_map(|r| match &r.data {
                            hickory_proto::rr::RData::SOA(soa) => Some(soa.serial),
                            _ => None,
                        })
                        .unwrap_or(0);
                    let forwarded = up.load(Ordering::Relaxed);
                    lock(&seen).push(Notified {
                        at: Instant::now(),
                        serial,
                        forwarded,
                    });
                    if forwarded {
                        lock(&primary).insert(id, from);
                        let _ = back.send(&buf[..n]);
                    }
                }
            })
        };
        let answer = {
            let (front, back, up, stop, primary) =
                (front.clone(), back, up.clone(), stop.clone(), primary);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65535];
                while !stop.load(Ordering::Relaxed) {
                    let Ok(n) = back.recv(&mut buf) else {
                        continue;
                    };
                    if n < 12 {
                        continue;
                    }
                    let to = lock(&primary).remove(&u16::from_be_bytes([buf[0], buf[1]]));
                    if let (true, Some(to)) = (up.load(Ordering::Relaxed), to) {
                        let _ = front.send_to(&buf[..n], to);
                    }
                }
            })
        };
        Self {
            addr,
            up,
            stop,
            seen,
            threads: vec![forward, answer],
        }
    }

    /// Reachable (true) or not: while down, NOTIFYs and answers are dropped.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
    }

    /// Every NOTIFY so far.
    pub fn notified(&self) -> Vec<Notified> {
        lock(&self.seen).clone()
    }
}

impl Drop for NotifyRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
