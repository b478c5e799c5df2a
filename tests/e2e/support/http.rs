//! HTTP for the tests: a minimal HTTP/1.1 client over std sockets, the
//! token API (keys, callers, minting), the metrics scrape and parser, and
//! the independent verifiers (PyJWT, `cellns verify-token`).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use super::server::{Launch, Server};
use super::{EXCHANGE, python, repo, run_cli};

/// The bearer key of the test caller `auth`.
pub const KEY: &str = "test-key-auth-0123456789";
/// The bearer key of the test caller `batch`.
pub const KEY2: &str = "test-key-batch-9876543210";
/// The bearer key of the test caller `ops` (scopes `read,admin`: operator
/// overrides, no tokens).
pub const ADMIN_KEY: &str = "test-key-ops-admin-5555555555";

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
}

impl Resp {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }

    /// The stable error code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.text()))
            .to_owned()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) with extra header lines and an
/// optional body (sent with Content-Length unless `chunked`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    chunked: bool,
) -> Resp {
    let mut s = TcpStream::connect_timeout(&addr, EXCHANGE).expect("connect to the HTTP API");
    s.set_read_timeout(Some(2 * EXCHANGE)).expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    match (body, chunked) {
        (Some(b), false) => req.push_str(&format!("Content-Length: {}\r\n\r\n", b.len())),
        (Some(_), true) => req.push_str("Transfer-Encoding: chunked\r\n\r\n"),
        (None, _) => req.push_str("\r\n"),
    }
    let mut out = req.into_bytes();
    if let Some(b) = body {
        if chunked {
            for chunk in b.chunks(1000) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(b);
        }
    }
    // The server may answer (413) and close before reading everything.
    let _ = s.write_all(&out);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    if headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"))
    {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(nl) = b.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = usize::from_str_radix(String::from_utf8_lossy(&b[..nl]).trim(), 16).unwrap_or(0);
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[nl + 2..nl + 2 + size]);
        b = &b[nl + 2 + size + 2..];
    }
}

/// `GET path`, no credentials.
pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], None, false)
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
    request(http, "GET", path, &headers, None, false)
}

/// `POST /v1/tokens` with `key` (if any) and a JSON body.
pub fn post_token(addr: SocketAddr, key: Option<&str>, body: &serde_json::Value) -> Resp {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(a) = &auth {
        h.push(("Authorization", a));
    }
    request(
        addr,
        "POST",
        "/v1/tokens",
        &h,
        Some(body.to_string().as_bytes()),
        false,
    )
}

/// A token request body.
pub fn token_req(tenant: &str, ttl: u64) -> serde_json::Value {
    serde_json::json!({"tenant": tenant, "subject": "user-42", "ttl_seconds": ttl})
}

/// Mints a token for `tenant` as the caller `auth`; the full JSON answer.
pub fn mint(addr: SocketAddr, tenant: &str) -> serde_json::Value {
    let r = post_token(addr, Some(KEY), &token_req(tenant, 600));
    assert_eq!(r.status, 200, "token request failed: {}", r.text());
    r.json()
}

/// The decoded header and claims of a JWT (no verification).
pub fn decode_unverified(token: &str) -> (serde_json::Value, serde_json::Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "not a JWS: {token}");
    let dec = |p: &str| {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON part")
    };
    (dec(parts[0]), dec(parts[1]))
}

/// The SHA-256 of `key` in hex, as the API key file holds it.
pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// An API key file for callers `auth` (KEY) and `batch` (KEY2), both with
/// the default scopes (tokens, read), and `ops` (ADMIN_KEY, read and
/// admin) in `dir`.
pub fn api_keys_file(dir: &Path) -> PathBuf {
    let path = dir.join("api-keys");
    std::fs::write(
        &path,
        format!(
            "# test callers\nauth sha256:{}\n\nbatch sha256:{}  # second caller\nops sha256:{} scopes=read,admin\n",
            key_hash(KEY),
            key_hash(KEY2),
            key_hash(ADMIN_KEY)
        ),
    )
    .expect("write the API key file");
    path
}

/// `method path` with `key` as the bearer key (if any) and a JSON body (if
/// any).
pub fn send_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&serde_json::Value>,
) -> Resp {
    let auth = key.map(|k| format!("Bearer {k}"));
    let mut h = Vec::new();
    if body.is_some() {
        h.push(("Content-Type", "application/json"));
    }
    if let Some(a) = &auth {
        h.push(("Authorization", a.as_str()));
    }
    let text = body.map(ToString::to_string);
    request(
        addr,
        method,
        path,
        &h,
        text.as_deref().map(str::as_bytes),
        false,
    )
}

/// Runs `cellns keygen --out dir --alg alg`; the key file and kid.
pub fn keygen(dir: &Path, alg: &str) -> (PathBuf, String) {
    let dir = dir.to_str().expect("utf-8 path");
    let (code, out, err) = run_cli(&["keygen", "--out", dir, "--alg", alg]);
    assert_eq!(code, 0, "keygen failed: {err}");
    // "wrote PATH (ALG, kid KID)"
    let path = out
        .strip_prefix("wrote ")
        .and_then(|r| r.split(" (").next())
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("unexpected keygen output: {out}"));
    let kid = out
        .rsplit("kid ")
        .next()
        .map(|k| k.trim().trim_end_matches(')').to_owned())
        .unwrap_or_else(|| panic!("no kid in keygen output: {out}"));
    (path, kid)
}

/// A server with a key directory (one EdDSA key) and the test callers.
#[derive(Debug)]
pub struct TokenServer {
    /// The server (dropped first: killed before its files go).
    pub server: Server,
    /// Holds the keys and the API key file.
    _dir: tempfile::TempDir,
    /// The key directory.
    pub keys: PathBuf,
    /// The kid of the first key.
    pub kid: String,
}

impl TokenServer {
    /// Starts `cellns serve` with keys, callers and `extra` args.
    pub fn start(extra: &[&str]) -> Self {
        Self::launch(extra, |l| l)
    }

    /// As [`TokenServer::start`], the launch adjusted by `adjust`.
    pub fn launch(extra: &[&str], adjust: impl FnOnce(Launch) -> Launch) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let (_, kid) = keygen(&keys, "EdDSA");
        let api = api_keys_file(dir.path());
        let mut args = vec![
            "--signing-keys",
            keys.to_str().expect("utf-8 path"),
            "--api-keys",
            api.to_str().expect("utf-8 path"),
        ];
        args.extend_from_slice(extra);
        let server = adjust(Launch::new(&args)).start();
        Self {
            server,
            _dir: dir,
            keys,
            kid,
        }
    }

    /// The HTTP address.
    pub fn http(&self) -> SocketAddr {
        self.server.http()
    }

    /// The DNS address.
    pub fn dns(&self) -> SocketAddr {
        self.server.dns
    }

    /// The JWKS URL.
    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.http())
    }

    /// The kids the JWKS publishes now.
    pub fn jwks_kids(&self) -> Vec<String> {
        let r = get(self.http(), "/.well-known/jwks.json");
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["keys"]
            .as_array()
            .expect("keys array")
            .iter()
            .map(|k| k["kid"].as_str().expect("kid").to_owned())
            .collect()
    }
}

/// `cellns verify-token` against a JWKS URL: (exit code, stdout, stderr).
pub fn verify_cli(jwks: &str, cell: &str, token: &str) -> (i32, String, String) {
    run_cli(&["verify-token", "--jwks", jwks, "--cell", cell, token])
}

/// Verifies `token` with PyJWT, keys fetched from `jwks_url`: (exit code,
/// stdout = claims JSON, stderr).
pub fn pyjwt_verify(
    jwks_url: &str,
    token: &str,
    audience: &str,
    issuer: &str,
) -> (i32, String, String) {
    let out = Command::new(python())
        .arg(repo().join("tests/pyjwt_verify.py"))
        .args([jwks_url, token, audience, issuer])
        .output()
        .expect("run python");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---------------------------------------------------------------------------
// Metrics.

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
    let r = get(http, "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}", r.text());
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")),
        "content type {:?}",
        r.header("content-type")
    );
    parse_metrics(&r.text())
}

// ---------------------------------------------------------------------------
// Toy health endpoints.

/// What a toy endpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToyKind {
    /// Answers each HTTP request with 200 or 503 (see [`ToyMode`]).
    Http,
    /// Accepts connections and closes them.
    Tcp,
}

/// How a toy HTTP endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToyMode {
    /// 200.
    Healthy,
    /// 503.
    Failing,
    /// 503 and 200 in turn, starting with 503.
    Flapping,
}

#[derive(Debug)]
struct ToyState {
    mode: ToyMode,
    /// Every answer given, in order: true for 200.
    answers: Vec<bool>,
    /// Answers given when the mode last changed.
    switched_at: usize,
    /// Hold the answer to the request whose outcome is the `n`th of its
    /// kind (success or failure) since the last switch, until released.
    hold: Option<(bool, usize)>,
    /// A request is held now.
    holding: bool,
}

/// A health endpoint for cellns to probe, on one loopback address, that
/// the test flips between healthy, failing, flapping and closed
/// (connection refused). It keeps every answer it gave, so a test can
/// compare cellns's probe accounting with what the endpoint really said,
/// and it can hold one answer back: the test then knows exactly how many
/// results cellns has seen while it looks at the answers.
#[derive(Debug)]
pub struct Toy {
    /// Where it listens.
    pub addr: SocketAddr,
    kind: ToyKind,
    shared: std::sync::Arc<(std::sync::Mutex<ToyState>, std::sync::Condvar)>,
    /// The accept thread's stop switch, while open.
    open: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Toy {
    /// A toy of `kind` on `addr` (port 0: any), healthy and open.
    pub fn bind(kind: ToyKind, addr: SocketAddr) -> Self {
        let mut t = Self {
            addr,
            kind,
            shared: std::sync::Arc::new((
                std::sync::Mutex::new(ToyState {
                    mode: ToyMode::Healthy,
                    answers: Vec::new(),
                    switched_at: 0,
                    hold: None,
                    holding: false,
                }),
                std::sync::Condvar::new(),
            )),
            open: None,
        };
        t.open();
        t
    }

    /// Toys of `kind` on `ips`, all on one port (each cell probes one port
    /// on every address). Retries with another port on a clash.
    pub fn bind_all(kind: ToyKind, ips: &[&str]) -> Vec<Toy> {
        for _ in 0..20 {
            let first = Toy::bind(kind, SocketAddr::new(ips[0].parse().expect("ip"), 0));
            let port = first.addr.port();
            let mut all = vec![first];
            for ip in &ips[1..] {
                let addr = SocketAddr::new(ip.parse().expect("ip"), port);
                match std::net::TcpListener::bind(addr) {
                    Ok(l) => {
                        drop(l);
                        all.push(Toy::bind(kind, addr));
                    }
                    Err(_) => break,
                }
            }
            if all.len() == ips.len() {
                return all;
            }
        }
        panic!("no common free port for {ips:?}");
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ToyState> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Listens again (after [`Toy::close`]).
    pub fn open(&mut self) {
        if self.open.is_some() {
            return;
        }
        let listener = std::net::TcpListener::bind(self.addr)
            .unwrap_or_else(|e| panic!("toy endpoint cannot bind {}: {e}", self.addr));
        self.addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (shared, kind, flag) = (self.shared.clone(), self.kind, stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                if kind == ToyKind::Tcp {
                    continue;
                }
                let shared = shared.clone();
                std::thread::spawn(move || toy_answer(conn, &shared));
            }
        });
        self.open = Some(stop);
    }

    /// Stops listening: connections are refused.
    pub fn close(&mut self) {
        if let Some(stop) = self.open.take() {
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
            // Wake the accept loop so that it drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, EXCHANGE);
            // Refused from now on (the listener is gone once this fails).
            super::wait_until(EXCHANGE, || {
                TcpStream::connect_timeout(&self.addr, EXCHANGE).is_err()
            });
        }
    }

    /// Answers in `mode` from now on.
    pub fn set(&self, mode: ToyMode) {
        let mut s = self.lock();
        s.mode = mode;
        s.switched_at = s.answers.len();
        s.hold = None;
    }

    /// Answers in `mode` from now on, holding back the answer that is the
    /// `n`th success (`ok`) or failure since this switch.
    pub fn set_holding(&self, mode: ToyMode, ok: bool, n: usize) {
        let mut s = self.lock();
        s.mode = mode;
        s.switched_at = s.answers.len();
        s.hold = Some((ok, n));
    }

    /// Holds back the next answer like the one held now (the `n+1`th), and
    /// lets the held one go.
    pub fn hold_next(&self) {
        let mut s = self.lock();
        if let Some((ok, n)) = s.hold {
            s.hold = Some((ok, n + 1));
        }
        self.shared.1.notify_all();
    }

    /// Lets every held answer go and holds no more.
    pub fn release(&self) {
        self.lock().hold = None;
        self.shared.1.notify_all();
    }

    /// Waits until an answer is held back.
    pub fn wait_held(&self, within: Duration) -> bool {
        super::wait_until(within, || self.lock().holding)
    }

    /// Every answer given so far (true: 200).
    pub fn answers(&self) -> Vec<bool> {
        self.lock().answers.clone()
    }

    /// Answers given before the last switch of mode.
    pub fn switched_at(&self) -> usize {
        self.lock().switched_at
    }
}

impl Drop for Toy {
    fn drop(&mut self) {
        self.release();
        self.close();
    }
}

/// Reads one request head and answers it as the toy's state says.
fn toy_answer(mut conn: TcpStream, shared: &(std::sync::Mutex<ToyState>, std::sync::Condvar)) {
    let _ = conn.set_read_timeout(Some(EXCHANGE));
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let (lock, cv) = shared;
    let mut s = lock.lock().unwrap_or_else(|e| e.into_inner());
    let since = s.answers.len() - s.switched_at;
    let ok = match s.mode {
        ToyMode::Healthy => true,
        ToyMode::Failing => false,
        ToyMode::Flapping => since % 2 == 1,
    };
    let nth = s.answers[s.switched_at..]
        .iter()
        .filter(|a| **a == ok)
        .count()
        + 1;
    // Counted when decided, so that the next request (after a held one)
    // is the next in line.
    s.answers.push(ok);
    if s.hold == Some((ok, nth)) {
        s.holding = true;
        let deadline = std::time::Instant::now() + 6 * EXCHANGE;
        while s.hold == Some((ok, nth)) && std::time::Instant::now() < deadline {
            s = cv
                .wait_timeout(s, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        s.holding = false;
    }
    drop(s);
    let reply: &[u8] = if ok {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    } else {
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\nsick"
    };
    let _ = conn.write_all(reply);
}
