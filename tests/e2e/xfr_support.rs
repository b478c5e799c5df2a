//! Support for the zone transfer tests: a map with every kind of answer a
//! secondary must reproduce, NSD and Knot run as secondaries from the
//! configuration examples in deploy/secondaries/, and a UDP client that
//! tolerates a server that is not up yet.

#![allow(dead_code)]

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{RData, RecordType};

use crate::common::{self, wait_until};
use crate::dns_support as s;

/// The zone of the transfer tests (the one the examples serve).
pub const ORIGIN: &str = "cells.example.com.";
/// Base64 HMAC-SHA256 secret shared by cellns and the secondaries.
pub const SECRET: &str = "dGVzdC10ZXN0LXRlc3QtdGVzdC10ZXN0LXRlc3QtMTI=";
/// The key name of the examples (deploy/secondaries/*-tsig.conf).
pub const KEY_NAME: &str = "cellns-xfr.";

/// A map whose SOA refresh and retry are an hour, so a secondary that
/// changes within seconds was told by NOTIFY. Cells: `a` (in-zone name,
/// IPv4 and IPv6), `b`, `c` (down, fails over to `b`), `d` (only an
/// out-of-zone name: a CNAME). Tenants: `acme` on `acme_on`, `downco` on
/// `c`, `cnameco` on `d`, and thirty more (`f00`…`f29`) so that moving one
/// stays within the reload safety gates.
pub fn map(version: &str, acme_on: char) -> String {
    let mut t = format!(
        "version = \"{version}\"\n\
         [zone]\norigin = \"{ORIGIN}\"\nttl = 30\nnegative_ttl = 30\n\
         refresh = 3600\nretry = 3600\n\
         nameservers = [\"ns1.{ORIGIN}\"]\nhostmaster = \"hostmaster.example.test.\"\n\
         [zone.glue]\n\"ns1.{ORIGIN}\" = [\"192.0.2.1\"]\n\
         [cells.a]\nhostname = \"a.{ORIGIN}\"\nipv4 = [\"192.0.2.10\", \"192.0.2.11\"]\n\
         ipv6 = [\"2001:db8::a\"]\nfailover = \"b\"\n\
         [cells.b]\nhostname = \"b.{ORIGIN}\"\nipv4 = [\"192.0.2.20\"]\nipv6 = [\"2001:db8::b\"]\n\
         [cells.c]\nhostname = \"c.{ORIGIN}\"\nipv4 = [\"192.0.2.30\"]\nstatus = \"down\"\n\
         failover = \"b\"\n\
         [cells.d]\nhostname = \"d.lb.example.net.\"\n\
         [tenants]\nacme = \"{acme_on}\"\ndownco = \"c\"\ncnameco = \"d\"\n"
    );
    for i in 0..30 {
        let cell = if i % 2 == 0 { 'a' } else { 'b' };
        let _ = writeln!(t, "f{i:02} = \"{cell}\"");
    }
    t
}

/// Writes `text` to `path` through a temporary file and a rename, as a
/// control plane replaces a map.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename: {e}"));
}

/// A loopback port free for both UDP and TCP right now.
pub fn free_port() -> u16 {
    for _ in 0..64 {
        let Ok(udp) = UdpSocket::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(port) = udp.local_addr().map(|a| a.port()) else {
            continue;
        };
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port");
}

/// One UDP query with a short timeout; `None` when nothing (or nothing
/// decodable with our ID) comes back, e.g. the server is still starting.
pub fn try_query(server: SocketAddr, name: &str, qtype: RecordType) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.connect(server).ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .ok()?;
    let id = rand_id();
    sock.send(&s::wire(&s::query(id, name, qtype, Some(1232))))
        .ok()?;
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(300);
    while Instant::now() < deadline {
        let n = sock.recv(&mut buf).ok()?;
        match Message::from_vec(&buf[..n]) {
            Ok(m) if m.metadata.id == id => return Some(m),
            _ => continue,
        }
    }
    None
}

fn rand_id() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed) ^ (std::process::id() as u16)
}

/// The SOA serial `server` answers for the zone.
pub fn serial(server: SocketAddr) -> Option<u32> {
    let m = try_query(server, ORIGIN, RecordType::SOA)?;
    if m.metadata.response_code != ResponseCode::NoError {
        return None;
    }
    m.answers.iter().find_map(|r| match &r.data {
        RData::SOA(soa) => Some(soa.serial),
        _ => None,
    })
}

/// What a comparison looks at: RCODE, AA, the answer section (sorted),
/// and whether the authority section has the SOA (negative answers).
pub fn essence(m: &Message) -> String {
    let mut answers: Vec<String> = m.answers.iter().map(s::norm_record).collect();
    answers.sort();
    let soa = m
        .authorities
        .iter()
        .any(|r| r.record_type() == RecordType::SOA);
    format!(
        "{} aa={} soa_in_authority={soa} {answers:?}",
        m.metadata.response_code, m.metadata.authoritative
    )
}

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
    kind: Kind,
}

impl Secondary {
    /// Starts `kind` from its example configuration
    /// (deploy/secondaries/{nsd,knot}[-tsig].conf), changed only to run on
    /// loopback in `dir`: the example addresses become 127.0.0.1 (the
    /// secondary on `port`, cellns at `primary`), the example secret
    /// becomes [`SECRET`], and state and zone files go to `dir`.
    pub fn start(kind: Kind, tsig: bool, dir: &Path, port: u16, primary: SocketAddr) -> Self {
        let name = match (kind, tsig) {
            (Kind::Nsd, false) => "nsd.conf",
            (Kind::Nsd, true) => "nsd-tsig.conf",
            (Kind::Knot, false) => "knot.conf",
            (Kind::Knot, true) => "knot-tsig.conf",
        };
        let example = common::repo().join("deploy/secondaries").join(name);
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
        let tool = common::require_tool(program);
        let err = std::fs::File::create(&log).unwrap_or_else(|e| panic!("create log: {e}"));
        let child = Command::new(tool)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {program}: {e}"));
        Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log,
            kind,
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
        common::unsafe_kill(self.child.id(), "TERM");
        let stopped = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = self.kind;
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
