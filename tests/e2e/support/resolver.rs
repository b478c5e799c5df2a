//! A real recursive resolver in front of cellns: unbound, on a loopback
//! port, sending each zone to the server given for it (stub zones) and
//! everything else to a server that refuses it, so nothing leaves
//! loopback. Validating (DNSSEC) when given trust anchors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, ResponseCode};
use hickory_proto::rr::RecordType;

use super::dns::{self as s, Udp};
use super::{STARTUP, free_port, require_tool, wait_until};

/// What unbound is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// Zones and the server each one is sent to (`stub-zone`). The first
    /// one's apex SOA is what start-up waits for.
    pub stubs: Vec<(String, SocketAddr)>,
    /// Where everything else goes (a cellns, which refuses it).
    pub rest: SocketAddr,
    /// Trust anchors (`trust-anchor:` lines: DS or DNSKEY records in zone
    /// file format). Unbound validates when there is any.
    pub trust_anchors: Vec<String>,
}

impl Config {
    /// One zone at `server`, which also gets the rest; not validating.
    pub fn stub(zone: &str, server: SocketAddr) -> Self {
        Self {
            stubs: vec![(zone.to_owned(), server)],
            rest: server,
            trust_anchors: Vec::new(),
        }
    }

    /// The same, validating with `anchors`.
    pub fn validating(mut self, anchors: impl IntoIterator<Item = String>) -> Self {
        self.trust_anchors = anchors.into_iter().collect();
        self
    }
}

/// A running unbound, killed on drop.
pub struct Unbound {
    child: Child,
    /// Its address (UDP and TCP).
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Drop for Unbound {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_conf(dir: &Path, port: u16, cfg: &Config) -> PathBuf {
    let conf = dir.join("unbound.conf");
    let d = dir.display();
    let validating = !cfg.trust_anchors.is_empty();
    let mut text = format!(
        r#"server:
    interface: 127.0.0.1
    port: {port}
    do-ip6: no
    do-daemonize: no
    use-syslog: no
    logfile: "{d}/unbound.log"
    chroot: ""
    username: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    do-not-query-localhost: no
    module-config: "{modules}"
    access-control: 127.0.0.0/8 allow
    # Randomise the case of names sent upstream (0x20) and insist that
    # replies keep it.
    use-caps-for-id: yes
    verbosity: 1
    # Why a validation failed, in the log (for failure messages).
    val-log-level: 2
"#,
        modules = if validating {
            "validator iterator"
        } else {
            "iterator"
        },
    );
    for ta in &cfg.trust_anchors {
        text.push_str(&format!("    trust-anchor: \"{}\"\n", ta.trim()));
    }
    for (zone, server) in &cfg.stubs {
        text.push_str(&format!(
            "\nstub-zone:\n    name: \"{zone}\"\n    stub-addr: {}@{}\n",
            server.ip(),
            server.port()
        ));
    }
    // Everything else goes to a server that refuses it: the test must not
    // reach past loopback.
    text.push_str(&format!(
        "\nstub-zone:\n    name: \".\"\n    stub-addr: {}@{}\n",
        cfg.rest.ip(),
        cfg.rest.port()
    ));
    std::fs::write(&conf, text).expect("write unbound.conf");
    conf
}

/// Starts unbound in `dir` and waits until it answers the first stub zone's
/// apex SOA (which needs the server behind it, and the chain of trust when
/// validating).
pub fn start(dir: &Path, cfg: &Config) -> Unbound {
    start_until(dir, cfg, true)
}

/// Starts unbound in `dir` and waits until it answers the first stub zone's
/// apex SOA with anything, SERVFAIL included (a resolver that must fail
/// to validate).
pub fn start_unchecked(dir: &Path, cfg: &Config) -> Unbound {
    start_until(dir, cfg, false)
}

fn start_until(dir: &Path, cfg: &Config, noerror: bool) -> Unbound {
    let bin = require_tool("unbound");
    let checkconf = require_tool("unbound-checkconf");
    let mut last_err = String::new();
    // The free port may be taken between our check and unbound's bind:
    // then unbound exits, and we try another port.
    for _ in 0..3 {
        let port = free_port();
        let conf = write_conf(dir, port, cfg);
        let check = Command::new(&checkconf)
            .arg(&conf)
            .output()
            .expect("run unbound-checkconf");
        assert!(
            check.status.success(),
            "unbound-checkconf rejects the config: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(&bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn unbound");
        let mut ub = Unbound {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: dir.join("unbound.log"),
        };
        let apex = cfg
            .stubs
            .first()
            .map_or(".", |(z, _)| z.as_str())
            .to_owned();
        match wait_ready(&mut ub, &apex, noerror) {
            Ok(()) => return ub,
            Err(e) => {
                let log = ub.log();
                drop(ub);
                last_err = format!("{e}; unbound's log:\n{log}");
            }
        }
    }
    panic!("unbound did not come up: {last_err}");
}

/// Polls unbound with `apex` SOA until it answers (NOERROR with an answer
/// if `noerror`), unbound exits, or the start-up deadline passes.
fn wait_ready(ub: &mut Unbound, apex: &str, noerror: bool) -> Result<(), String> {
    let client = Udp::new(ub.addr);
    let mut exited = None;
    let ready = wait_until(STARTUP, || {
        if let Ok(Some(status)) = ub.child.try_wait() {
            exited = Some(status);
            return true;
        }
        let mut q = s::query(0x7000, apex, RecordType::SOA, Some(1232));
        q.metadata.recursion_desired = true;
        client.send(&s::wire(&q));
        client
            .recv_id(0x7000u16.to_be_bytes(), Duration::from_millis(250))
            .and_then(|r| Message::from_vec(&r).ok())
            .is_some_and(|m| {
                !noerror
                    || m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()
            })
    });
    match (ready, exited) {
        (_, Some(status)) => Err(format!("unbound exited: {status}")),
        (true, None) => Ok(()),
        (false, None) => Err(format!("no answer within {STARTUP:?}")),
    }
}

/// Asks the resolver at `addr` (RD and AD set, EDNS 1232, DO as given)
/// over UDP; for threads that query a resolver while the test goes on.
pub fn ask(addr: SocketAddr, qname: &str, qtype: RecordType, dnssec_ok: bool) -> Message {
    let mut q = s::query(s::next_id(), qname, qtype, None);
    q.metadata.recursion_desired = true;
    // AD in the query: the client understands AD in the response, so a
    // validating resolver sets it on what it validated (RFC 6840 §5.7).
    q.metadata.authentic_data = true;
    let mut e = Edns::new();
    e.set_max_payload(1232);
    e.set_dnssec_ok(dnssec_ok);
    q.set_edns(e);
    s::decode(&s::udp_exchange(addr, &s::wire(&q)))
}

impl Unbound {
    /// Asks unbound (RD and AD set, EDNS 1232) over UDP.
    pub fn resolve(&self, qname: &str, qtype: RecordType) -> Message {
        self.ask(qname, qtype, false)
    }

    /// Asks unbound with the DO bit too: it returns the RRSIGs and NSECs,
    /// and sets AD on what it validated.
    pub fn resolve_dnssec(&self, qname: &str, qtype: RecordType) -> Message {
        self.ask(qname, qtype, true)
    }

    fn ask(&self, qname: &str, qtype: RecordType, dnssec_ok: bool) -> Message {
        ask(self.addr, qname, qtype, dnssec_ok)
    }

    /// Unbound's log (validation failures are logged at `val-log-level: 2`).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A signed parent zone: Knot serving `example.com.` with its own online
/// policy (automatic keys, NSEC), delegating `cells.example.com.` with the
/// DS records it is given, as a registry would. The chain of trust of a
/// roll test starts at its KSK.
pub struct Parent {
    child: Child,
    /// Its DNS address.
    pub addr: SocketAddr,
    dir: PathBuf,
    conf: PathBuf,
    log: PathBuf,
    serial: u32,
    /// The child's NS and glue records.
    delegation: Vec<String>,
}

/// The parent zone.
pub const PARENT: &str = "example.com.";

impl Drop for Parent {
    fn drop(&mut self) {
        super::signal(self.child.id(), "TERM");
        let stopped = wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Parent {
    /// Starts Knot in `dir` with the zone delegating `cells.example.com.`
    /// to `delegation` (NS and glue lines, zone-file format) with `ds`;
    /// every TTL is `ttl` seconds. Returns once it answers the zone signed.
    pub fn start(dir: &Path, delegation: &[String], ds: &[String], ttl: u32) -> Self {
        let knotd = require_tool("knotd");
        let d = dir.display();
        let mut last = String::new();
        for _ in 0..3 {
            let port = free_port();
            let conf = dir.join("knot.conf");
            std::fs::write(
                &conf,
                format!(
                    r#"server:
    rundir: "{d}"
    listen: 127.0.0.1@{port}
control:
    listen: "{d}/knot.sock"
log:
  - target: stderr
    any: info
database:
    storage: "{d}"
policy:
  - id: parent
    algorithm: ecdsap256sha256
    ksk-lifetime: 0
    zsk-lifetime: 0
    dnskey-ttl: {ttl}
    zone-max-ttl: {ttl}
    propagation-delay: 0
template:
  - id: default
    storage: "{d}"
zone:
  - domain: {PARENT}
    file: "{d}/parent.zone"
    dnssec-signing: on
    dnssec-policy: parent
    zonefile-load: difference-no-serial
    journal-content: all
"#
                ),
            )
            .expect("write knot.conf");
            let log = dir.join("knot.log");
            write_zone(dir, 1, delegation, ds, ttl);
            let mut p = Self {
                child: Command::new(&knotd)
                    .arg("-c")
                    .arg(&conf)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).expect("create knot log"))
                    .spawn()
                    .expect("start knotd"),
                addr: SocketAddr::from(([127, 0, 0, 1], port)),
                dir: dir.to_owned(),
                conf,
                log,
                serial: 1,
                delegation: delegation.to_vec(),
            };
            let mut exited = false;
            let up = wait_until(STARTUP, || {
                exited = p.child.try_wait().ok().flatten().is_some();
                exited
                    || s::try_query(p.addr, PARENT, RecordType::DNSKEY)
                        .is_some_and(|m| !m.answers.is_empty())
            });
            last = p.log_text();
            if up && !exited {
                return p;
            }
            if !last.contains("in use") {
                break;
            }
        }
        panic!("knotd did not serve the parent zone:\n{last}");
    }

    /// Replaces the child's DS records (the registry acting on the child's
    /// CDS) and has Knot load and sign the change.
    pub fn set_ds(&mut self, ds: &[String], ttl: u32) {
        self.serial += 1;
        write_zone(&self.dir, self.serial, &self.delegation, ds, ttl);
        self.reload();
    }

    fn reload(&self) {
        let knotc = require_tool("knotc");
        let out = Command::new(knotc)
            .arg("-c")
            .arg(&self.conf)
            .args(["zone-reload", PARENT])
            .output()
            .expect("run knotc");
        assert!(
            out.status.success(),
            "knotc zone-reload: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_text()
        );
    }

    /// The parent's KSK as a trust anchor line.
    pub fn anchor(&self) -> String {
        let m = s::try_query(self.addr, PARENT, RecordType::DNSKEY).expect("parent DNSKEY");
        m.answers
            .iter()
            .filter(|r| r.record_type() == RecordType::DNSKEY)
            .map(|r| format!("{} DNSKEY {}", r.name, r.data))
            .find(|l| l.contains(" DNSKEY 257 "))
            .unwrap_or_else(|| panic!("no KSK in {m}"))
    }

    /// Knot's log.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Writes the parent zone file (atomically: Knot may be reading).
fn write_zone(dir: &Path, serial: u32, delegation: &[String], ds: &[String], ttl: u32) {
    let mut z = format!(
        "$ORIGIN {PARENT}\n$TTL {ttl}\n@ SOA ns.{PARENT} hostmaster.{PARENT} {serial} 60 60 600 {ttl}\n@ NS ns.{PARENT}\nns A 127.0.0.1\n"
    );
    for l in delegation.iter().chain(ds) {
        z.push_str(l);
        z.push('\n');
    }
    let tmp = dir.join("parent.zone.tmp");
    std::fs::write(&tmp, z).expect("write the parent zone");
    std::fs::rename(&tmp, dir.join("parent.zone")).expect("replace the parent zone");
}
