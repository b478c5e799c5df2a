//! Helpers of the observability tests: scraping and parsing `/metrics`,
//! authenticated GETs, raw DNS messages the usual clients will not send,
//! and a server started with only its HTTP side up.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

use super::common;
use super::token_support::{self, KEY, Resp};

/// One scrape of `/metrics`: `name{label="value",...}` (labels sorted) →
/// value.
#[derive(Debug, Clone)]
pub struct Metrics(pub BTreeMap<String, f64>);

/// The series key of `name` with `labels` (any order).
pub fn series(name: &str, labels: &[(&str, &str)]) -> String {
    let mut l: Vec<(&str, &str)> = labels.to_vec();
    l.sort();
    if l.is_empty() {
        return name.to_owned();
    }
    let inner: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

/// Parses the Prometheus text format (the subset cellns writes: no
/// escaped quotes or commas in label values, no timestamps).
pub fn parse_metrics(text: &str) -> Metrics {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad metrics line: {line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|e| panic!("bad value in {line}: {e}")),
        };
        let key = match key.split_once('{') {
            None => key.to_owned(),
            Some((name, rest)) => {
                let inner = rest
                    .strip_suffix('}')
                    .unwrap_or_else(|| panic!("bad labels: {line}"));
                let labels: Vec<(&str, &str)> = inner
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p
                            .split_once('=')
                            .unwrap_or_else(|| panic!("bad label {p} in {line}"));
                        (k, v.trim_matches('"'))
                    })
                    .collect();
                series(name, &labels)
            }
        };
        out.insert(key, value);
    }
    Metrics(out)
}

impl Metrics {
    /// The value of a series; `None` when it is not exposed.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0.get(&series(name, labels)).copied()
    }

    /// The value of a series that must be exposed.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or_else(|| {
            panic!(
                "{} is not exposed; {name} series: {:#?}",
                series(name, labels),
                self.family(name)
            )
        })
    }

    /// Every series of metric `name` (exactly that name) → value.
    pub fn family(&self, name: &str) -> BTreeMap<String, f64> {
        self.0
            .iter()
            .filter(|(k, _)| k.as_str() == name || k.starts_with(&format!("{name}{{")))
            .map(|(k, v)| (k.clone(), *v))
            .collect()
    }

    /// The series of `name` whose value is not zero.
    pub fn nonzero(&self, name: &str) -> BTreeMap<String, f64> {
        self.family(name)
            .into_iter()
            .filter(|(_, v)| *v != 0.0)
            .collect()
    }

    /// Metric names exposed (histogram suffixes kept).
    pub fn names(&self) -> std::collections::BTreeSet<String> {
        self.0
            .keys()
            .map(|k| k.split('{').next().unwrap_or(k).to_owned())
            .collect()
    }
}

/// Scrapes `GET /metrics`.
pub fn scrape(http: SocketAddr) -> Metrics {
    let r = token_support::get(http, "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "content type {:?}",
        r.header("content-type")
    );
    parse_metrics(&r.text())
}

/// `GET path` with the test caller's API key.
pub fn get_auth(http: SocketAddr, path: &str) -> Resp {
    get_with_key(http, path, Some(KEY))
}

/// `GET path` with `key` as the bearer key, if any.
pub fn get_with_key(http: SocketAddr, path: &str, key: Option<&str>) -> Resp {
    let auth = key.map(|k| format!("Bearer {k}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    token_support::request(http, "GET", path, &headers, None, false)
}

// ---------------------------------------------------------------------------
// Raw DNS.

/// A query for `name`/`rtype` with `opcode`, and an OPT record of EDNS
/// `edns_version` when given.
pub fn query_msg(
    id: u16,
    name: &str,
    rtype: RecordType,
    opcode: OpCode,
    edns_version: Option<u8>,
) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, opcode);
    m.add_query(Query::query(
        Name::from_ascii(name).unwrap_or_else(|e| panic!("bad name {name}: {e}")),
        rtype,
    ));
    if let Some(v) = edns_version {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        e.set_version(v);
        m.set_edns(e);
    }
    m.to_vec().unwrap_or_else(|e| panic!("encode: {e}"))
}

/// A header promising one question, followed by a cut-off name: the header
/// decodes, the message does not.
pub fn undecodable(id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    m.extend_from_slice(&[5, b'a', b'c']);
    m
}

/// A query with no question at all (QDCOUNT 0).
pub fn no_question(id: u16) -> Vec<u8> {
    let mut m = id.to_be_bytes().to_vec();
    m.extend_from_slice(&[0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0]);
    m
}

/// The rcode (with the EDNS extension bits) of a response.
pub fn rcode_of(resp: &[u8]) -> u16 {
    match Message::from_vec(resp) {
        Ok(m) => u16::from(m.metadata.response_code),
        // A bare header (FORMERR) still has its 4-bit rcode.
        Err(_) if resp.len() >= 12 => u16::from(resp[3] & 0x0F),
        Err(e) => panic!("undecodable response ({e}): {resp:?}"),
    }
}

/// Sends `msg` over UDP and returns the response with the same ID.
pub fn udp_exchange(server: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    sock.connect(server).expect("connect");
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    // UDP: resend on loss (loopback hardly loses, but never hang on it).
    while Instant::now() < deadline {
        sock.send(msg).expect("send");
        if let Ok(n) = sock.recv(&mut buf)
            && n >= 2
            && buf[..2] == msg[..2]
        {
            return buf[..n].to_vec();
        }
    }
    panic!("no UDP response to {msg:?}");
}

/// Sends `msg` over a new TCP connection and returns the response.
pub fn tcp_exchange(server: SocketAddr, msg: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("TCP connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    s.write_all(&framed).expect("TCP send");
    let mut len = [0u8; 2];
    s.read_exact(&mut len).expect("TCP response length");
    let mut resp = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut resp).expect("TCP response");
    resp
}

// ---------------------------------------------------------------------------
// A server observed from its first log line.

/// `cellns serve` started without waiting for DNS: for watching start-up.
pub struct EarlyServer {
    child: Child,
    /// The HTTP address (logged before the map is loaded).
    pub http: SocketAddr,
    /// Every log line so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl EarlyServer {
    /// Starts `cellns --log-format json serve` on ephemeral loopback ports
    /// with `extra` args; returns once "HTTP listening" is logged.
    pub fn start(extra: &[&str]) -> Self {
        let mut child = common::serve_command(true, extra)
            .env("RUST_LOG", "info")
            .spawn()
            .expect("spawn cellns");
        let (logs, rx) = common::read_logs(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut http = None;
        while http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                break;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if v["message"] == "HTTP listening" {
                http = v["addr"].as_str().and_then(|a| a.parse().ok());
            }
        }
        let Some(http) = http else {
            let _ = child.kill();
            panic!(
                "cellns did not report its HTTP address within 30 s; logs:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        Self { child, http, logs }
    }

    /// The DNS address, once logged.
    pub fn dns(&self) -> Option<SocketAddr> {
        super::reload_support::json_logs(&self.logs)
            .iter()
            .find(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("DNS listening"))
            })
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
    }
}

impl Drop for EarlyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
