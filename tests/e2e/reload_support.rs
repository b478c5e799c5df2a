//! Helpers of the reload tests: a blocking DNS client (UDP and TCP), the
//! test maps, and the three ways a control plane replaces a map file.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

use super::common::wait_until;

/// The zone of the test maps.
pub const ORIGIN: &str = "cells.example.test.";

/// What matters of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Response code.
    pub rcode: ResponseCode,
    /// AA flag.
    pub authoritative: bool,
    /// Addresses in the answer section.
    pub addrs: BTreeSet<IpAddr>,
    /// SOA serial in the answer section, if any.
    pub serial: Option<u32>,
}

fn query_bytes(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    let name = Name::from_ascii(name).unwrap_or_else(|e| panic!("bad name {name}: {e}"));
    m.add_query(Query::query(name, rtype));
    m.to_vec().unwrap_or_else(|e| panic!("encode query: {e}"))
}

fn parse(id: u16, bytes: &[u8]) -> Result<Option<Answer>, String> {
    let m = Message::from_vec(bytes).map_err(|e| format!("undecodable response: {e}"))?;
    if m.metadata.id != id {
        return Ok(None);
    }
    let mut addrs = BTreeSet::new();
    let mut serial = None;
    for r in &m.answers {
        match &r.data {
            RData::A(a) => {
                addrs.insert(IpAddr::V4(a.0));
            }
            RData::AAAA(a) => {
                addrs.insert(IpAddr::V6(a.0));
            }
            RData::SOA(soa) => serial = Some(soa.serial),
            _ => {}
        }
    }
    Ok(Some(Answer {
        rcode: m.metadata.response_code,
        authoritative: m.metadata.authoritative,
        addrs,
        serial,
    }))
}

/// A UDP client bound to loopback, talking to one server.
pub struct Udp {
    sock: UdpSocket,
    next_id: u16,
}

impl Udp {
    /// A client for `server`.
    pub fn new(server: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        sock.connect(server)
            .unwrap_or_else(|e| panic!("connect: {e}"));
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        Self {
            sock,
            next_id: std::process::id() as u16,
        }
    }

    /// One query; an error when no matching response comes within `timeout`.
    pub fn query(
        &mut self,
        name: &str,
        rtype: RecordType,
        timeout: Duration,
    ) -> Result<Answer, String> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        self.sock
            .send(&query_bytes(id, name, rtype))
            .map_err(|e| format!("send: {e}"))?;
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            match self.sock.recv(&mut buf) {
                Ok(n) => {
                    if let Some(a) = parse(id, &buf[..n])? {
                        return Ok(a);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("recv: {e}")),
            }
        }
        Err(format!(
            "no UDP answer to {name} {rtype} within {timeout:?}"
        ))
    }
}

/// One TCP connection (RFC 7766: several queries per connection).
pub struct Tcp {
    stream: TcpStream,
    next_id: u16,
}

impl Tcp {
    /// Connects to `server`.
    pub fn new(server: SocketAddr, timeout: Duration) -> Self {
        let stream = TcpStream::connect_timeout(&server, timeout)
            .unwrap_or_else(|e| panic!("TCP connect: {e}"));
        stream
            .set_read_timeout(Some(timeout))
            .unwrap_or_else(|e| panic!("timeout: {e}"));
        let _ = stream.set_nodelay(true);
        Self { stream, next_id: 7 }
    }

    /// One query over the connection.
    pub fn query(&mut self, name: &str, rtype: RecordType) -> Result<Answer, String> {
        self.next_id = self.next_id.wrapping_add(1);
        let id = self.next_id;
        let q = query_bytes(id, name, rtype);
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&q);
        self.stream
            .write_all(&framed)
            .map_err(|e| format!("TCP send: {e}"))?;
        let mut len = [0u8; 2];
        self.stream
            .read_exact(&mut len)
            .map_err(|e| format!("TCP recv length: {e}"))?;
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        self.stream
            .read_exact(&mut buf)
            .map_err(|e| format!("TCP recv: {e}"))?;
        parse(id, &buf)?.ok_or_else(|| "TCP answer with another id".to_owned())
    }
}

/// The endpoints of test cell `c` (`a`, `b`, ...): two A, one AAAA.
pub fn cell_v4(c: char) -> BTreeSet<IpAddr> {
    let n = c as u8 - b'a';
    [format!("10.9.{n}.1"), format!("10.9.{n}.2")]
        .iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// The AAAA endpoint of test cell `c`.
pub fn cell_v6(c: char) -> BTreeSet<IpAddr> {
    let n = c as u8 - b'a';
    [format!("2001:db8:9:{n}::1")]
        .iter()
        .map(|s| s.parse().unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// A map with cells `a` and `b`, tenant `acme` on `acme_on`, twenty more
/// tenants (`f00` … `f19`) on `a`, and `extra` TOML appended before
/// `[tenants]`. `version` makes otherwise equal maps differ.
pub fn test_map(version: &str, acme_on: char, extra: &str) -> String {
    let mut t = format!(
        "version = \"{version}\"\n\
         [zone]\norigin = \"{ORIGIN}\"\nttl = 5\nnameservers = [\"ns1.{ORIGIN}\"]\n\
         hostmaster = \"hostmaster.{ORIGIN}\"\n\
         [zone.glue]\n\"ns1.{ORIGIN}\" = [\"192.0.2.1\"]\n"
    );
    for c in ['a', 'b'] {
        let v4: Vec<String> = cell_v4(c).iter().map(|a| format!("\"{a}\"")).collect();
        let v6: Vec<String> = cell_v6(c).iter().map(|a| format!("\"{a}\"")).collect();
        t.push_str(&format!(
            "[cells.{c}]\nhostname = \"{c}.{ORIGIN}\"\nipv4 = [{}]\nipv6 = [{}]\n",
            v4.join(", "),
            v6.join(", ")
        ));
    }
    t.push_str(extra);
    t.push_str(&format!("\n[tenants]\nacme = \"{acme_on}\"\n"));
    for i in 0..20 {
        t.push_str(&format!("f{i:02} = \"a\"\n"));
    }
    t
}

/// How the control plane replaces the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Truncate and rewrite the file itself.
    InPlace,
    /// Write a temporary file in the same directory and rename it over.
    Rename,
    /// Kubernetes ConfigMap volume: `map.toml -> ..data/map.toml`,
    /// `..data -> ..<timestamp>`; an update writes a new timestamped
    /// directory and renames a new `..data` symlink over the old one.
    Kubernetes,
}

/// A map file in a temporary directory, laid out for one [`Mode`] family
/// (plain file for InPlace/Rename, symlinks for Kubernetes).
pub struct MapDir {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// The path given to `--map`.
    pub path: PathBuf,
    k8s: bool,
    generation: usize,
}

fn write_synced(path: &Path, text: &str) {
    let mut f =
        std::fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    f.sync_all().unwrap_or_else(|e| panic!("sync: {e}"));
}

impl MapDir {
    /// A map directory holding `text`, as a plain file or in the
    /// Kubernetes layout.
    pub fn new(text: &str, k8s: bool) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("map.toml");
        let m = Self {
            dir,
            path,
            k8s,
            generation: 0,
        };
        if k8s {
            let data = m.k8s_dir(0);
            std::fs::create_dir(&data).unwrap_or_else(|e| panic!("mkdir: {e}"));
            write_synced(&data.join("map.toml"), text);
            symlink(&m.k8s_name(0), &m.dir.path().join("..data"));
            symlink(Path::new("..data/map.toml"), &m.path);
        } else {
            write_synced(&m.path, text);
        }
        m
    }

    fn k8s_name(&self, generation: usize) -> PathBuf {
        PathBuf::from(format!(
            "..2026_11_27_10_00_{generation:02}.{generation:09}"
        ))
    }

    fn k8s_dir(&self, generation: usize) -> PathBuf {
        self.dir.path().join(self.k8s_name(generation))
    }

    /// Replaces the map with `text` the way `mode` says (the Kubernetes
    /// layout always uses the symlink swap).
    pub fn write(&mut self, text: &str, mode: Mode) {
        if self.k8s || mode == Mode::Kubernetes {
            assert!(
                self.k8s,
                "this map directory is not in the Kubernetes layout"
            );
            let old = self.k8s_dir(self.generation);
            self.generation += 1;
            let new = self.k8s_dir(self.generation);
            std::fs::create_dir(&new).unwrap_or_else(|e| panic!("mkdir: {e}"));
            write_synced(&new.join("map.toml"), text);
            let tmp = self.dir.path().join("..data_tmp");
            symlink(&self.k8s_name(self.generation), &tmp);
            std::fs::rename(&tmp, self.dir.path().join("..data"))
                .unwrap_or_else(|e| panic!("swap ..data: {e}"));
            std::fs::remove_dir_all(&old).unwrap_or_else(|e| panic!("rm old data: {e}"));
            return;
        }
        match mode {
            Mode::InPlace => {
                std::fs::write(&self.path, text).unwrap_or_else(|e| panic!("write in place: {e}"))
            }
            Mode::Rename => {
                let tmp = self.dir.path().join(".map.toml.tmp");
                write_synced(&tmp, text);
                std::fs::rename(&tmp, &self.path).unwrap_or_else(|e| panic!("rename: {e}"));
            }
            Mode::Kubernetes => unreachable!(),
        }
    }

    /// Removes the map file (the symlink, in the Kubernetes layout).
    pub fn remove(&self) {
        std::fs::remove_file(&self.path).unwrap_or_else(|e| panic!("rm map: {e}"));
    }

    /// `--map PATH` as a string.
    pub fn arg(&self) -> String {
        self.path.display().to_string()
    }
}

fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("symlink {} -> {}: {e}", link.display(), target.display()));
}

/// Polls (UDP) until `name` A is answered with `want`, for at most
/// `within`; returns how long it took, or the last answer seen.
pub fn wait_for_answer(
    server: SocketAddr,
    name: &str,
    want: &BTreeSet<IpAddr>,
    within: Duration,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut udp = Udp::new(server);
    let mut last = String::from("no answer");
    let ok = wait_until(within, || {
        match udp.query(name, RecordType::A, Duration::from_millis(500)) {
            Ok(a) if &a.addrs == want => true,
            Ok(a) => {
                last = format!("{a:?}");
                false
            }
            Err(e) => {
                last = e;
                false
            }
        }
    });
    if ok { Ok(start.elapsed()) } else { Err(last) }
}

/// The JSON log lines of `logs` (unparseable lines are skipped).
pub fn json_logs(logs: &std::sync::Mutex<Vec<String>>) -> Vec<serde_json::Value> {
    logs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Waits until a log line at `level` whose message contains `needle` was
/// logged; returns it.
pub fn wait_for_log(
    logs: &std::sync::Mutex<Vec<String>>,
    level: &str,
    needle: &str,
    within: Duration,
) -> Option<serde_json::Value> {
    let mut found = None;
    wait_until(within, || {
        found = json_logs(logs).into_iter().find(|v| {
            v["level"].as_str() == Some(level)
                && v["message"].as_str().is_some_and(|m| m.contains(needle))
        });
        found.is_some()
    });
    found
}
