//! Helpers of the token tests: a minimal HTTP/1.1 client over std sockets,
//! key and API key set-up, DNS look-ups with dig, the PyJWT verifier.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest as _, Sha256};

use crate::common::{self, Server};

/// The bearer key of the test caller `auth`.
pub const KEY: &str = "test-key-auth-0123456789";
/// The bearer key of the test caller `batch`.
pub const KEY2: &str = "test-key-batch-9876543210";

/// An HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The stable error code of a JSON error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", String::from_utf8_lossy(&self.body)))
            .to_owned()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request (`Connection: close`) with raw extra header lines and
/// an optional body (sent with Content-Length unless `chunked`).
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    chunked: bool,
) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP API");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
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

pub fn get(addr: SocketAddr, path: &str) -> Resp {
    request(addr, "GET", path, &[], None, false)
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
    let dec = |p: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap();
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
    .unwrap();
    path
}

/// Runs `cellns keygen --out dir [--alg alg]`; the key file and kid.
pub fn keygen(dir: &Path, alg: &str) -> (PathBuf, String) {
    let (code, out, err) =
        common::run_cli(&["keygen", "--out", dir.to_str().unwrap(), "--alg", alg]);
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
        .unwrap();
    (path, kid)
}

/// A server with a key directory (one EdDSA key) and the test callers.
pub struct TokenServer {
    pub server: Server,
    pub dir: tempfile::TempDir,
    pub keys: PathBuf,
    pub kid: String,
}

impl TokenServer {
    pub fn start(extra: &[&str]) -> TokenServer {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        let (_, kid) = keygen(&keys, "EdDSA");
        let api = api_keys_file(dir.path());
        let mut args = vec![
            "--signing-keys",
            keys.to_str().unwrap(),
            "--api-keys",
            api.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let server = Server::start(&args);
        assert!(server.http.is_some(), "no HTTP address logged");
        TokenServer {
            server,
            dir,
            keys,
            kid,
        }
    }

    pub fn http(&self) -> SocketAddr {
        self.server.http.expect("HTTP address")
    }

    pub fn jwks_url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.http())
    }

    /// The kids the JWKS publishes now.
    pub fn jwks_kids(&self) -> Vec<String> {
        let r = get(self.http(), "/.well-known/jwks.json");
        assert_eq!(r.status, 200);
        r.json()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// `cellns verify-token` against a JWKS URL: (exit code, stdout, stderr).
pub fn verify_cli(jwks: &str, cell: &str, token: &str) -> (i32, String, String) {
    common::run_cli(&["verify-token", "--jwks", jwks, "--cell", cell, token])
}

/// The sorted A/AAAA/CNAME data dig gets for `name` from `dns`.
pub fn dig(dns: SocketAddr, name: &str) -> Vec<String> {
    let dig = common::require_tool("dig");
    let out = Command::new(dig)
        .args([
            &format!("@{}", dns.ip()),
            "-p",
            &dns.port().to_string(),
            "+short",
            "+norecurse",
            "+time=2",
            "+tries=2",
            name,
            "A",
        ])
        .output()
        .expect("run dig");
    assert!(
        out.status.success(),
        "dig failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with(';'))
        .collect();
    lines.sort();
    lines
}

/// The python with PyJWT: CELLNS_TEST_PYTHON or the repo's test venv.
pub fn python() -> PathBuf {
    let p = std::env::var_os("CELLNS_TEST_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo().join(".venv-test/bin/python"));
    assert!(
        p.exists() || p.components().count() == 1,
        "this test needs python with PyJWT[crypto] at {} (set CELLNS_TEST_PYTHON, or run scripts/test, which makes .venv-test)",
        p.display()
    );
    p
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
        .arg(common::repo().join("tests/pyjwt_verify.py"))
        .args([jwks_url, token, audience, issuer])
        .output()
        .expect("run python");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
