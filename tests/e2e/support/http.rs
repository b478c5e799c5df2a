//! HTTP for the tests: a minimal HTTP/1.1 client over std sockets, the
//! token API (keys, callers, minting), the metrics scrape and parser, and
//! the independent verifiers (PyJWT, `cellns verify-token`).

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use super::server::{Launch, Server};
use super::{EXCHANGE, python, repo, run_cli};

/// The bearer key of the test caller `auth`.
pub const KEY: &str = "test-key-auth-0123456789";
/// The bearer key of the test caller `batch`.
pub const KEY2: &str = "test-key-batch-9876543210";

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

/// An API key file for callers `auth` (KEY) and `batch` (KEY2) in `dir`.
pub fn api_keys_file(dir: &Path) -> PathBuf {
    let h = |k: &str| hex::encode(Sha256::digest(k.as_bytes()));
    let path = dir.join("api-keys");
    std::fs::write(
        &path,
        format!(
            "# test callers\nauth sha256:{}\n\nbatch sha256:{}  # second caller\n",
            h(KEY),
            h(KEY2)
        ),
    )
    .expect("write the API key file");
    path
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
