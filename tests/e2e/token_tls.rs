//! HTTPS and client certificates (mTLS) on the token API, with certificates
//! made by `openssl` and requests made by `curl`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::http::*;
use crate::support::require_tool;
use crate::support::server::{Server, serve_fails};

/// A test PKI: a CA, a server certificate for 127.0.0.1, a client
/// certificate from the CA, and one from a CA the server does not trust.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let openssl = require_tool("openssl");
        let dir = tempfile::tempdir().unwrap();
        let run = |args: &[&str]| {
            let out = Command::new(&openssl)
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "rogue-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]);
        }
        for (name, ca, ext) in [
            (
                "server",
                "ca",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            ("client", "ca", "extendedKeyUsage=clientAuth\n"),
            ("rogue", "rogue-ca", "extendedKeyUsage=clientAuth\n"),
        ] {
            std::fs::write(dir.path().join(format!("{name}.ext")), ext).unwrap();
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
                "-subj",
                &format!("/CN={name}"),
            ]);
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{ca}.pem"),
                "-CAkey",
                &format!("{ca}.key"),
                "-CAcreateserial",
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
            ]);
        }
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn p(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }
}

/// curl over HTTPS trusting the test CA: (curl exit code, HTTP status, body).
fn curl(pki: &Pki, url: &str, extra: &[&str]) -> (i32, u16, String) {
    let curl = require_tool("curl");
    let out = Command::new(curl)
        .args([
            "-s",
            "--max-time",
            "10",
            "--cacert",
            &pki.p("ca.pem"),
            "-w",
            "\n%{http_code}",
        ])
        .args(extra)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (
        out.status.code().unwrap_or(-1),
        code.trim().parse().unwrap_or(0),
        body.to_owned(),
    )
}

fn post_args<'a>(key: Option<&'a str>, auth: &'a mut String) -> Vec<&'a str> {
    let mut v = vec![
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"tenant":"acme","subject":"user-42","ttl_seconds":60}"#,
    ];
    if let Some(k) = key {
        *auth = format!("Authorization: Bearer {k}");
        v.extend(["-H", auth.as_str()]);
    }
    v
}

fn start_tls(pki: &Pki, keys_dir: &Path, mtls: bool) -> Server {
    let (_, _) = keygen(keys_dir, "EdDSA");
    let api = api_keys_file(keys_dir.parent().unwrap());
    let mut args = vec![
        "--signing-keys".to_owned(),
        keys_dir.to_str().unwrap().to_owned(),
        "--api-keys".to_owned(),
        api.to_str().unwrap().to_owned(),
        "--tls-cert".to_owned(),
        pki.p("server.pem"),
        "--tls-key".to_owned(),
        pki.p("server.key"),
    ];
    if mtls {
        args.extend(["--client-ca".to_owned(), pki.p("ca.pem")]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Server::start(&args)
}

#[test]
fn token_https_serves_tokens_and_jwks() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = start_tls(&pki, &dir.path().join("keys"), false);
    let base = format!("https://{}", server.http.expect("HTTPS address"));

    let (code, status, body) = curl(&pki, &format!("{base}/.well-known/jwks.json"), &[]);
    assert_eq!((code, status), (0, 200), "{body}");
    let mut auth = String::new();
    let (code, status, body) = curl(
        &pki,
        &format!("{base}/v1/tokens"),
        &post_args(Some(KEY), &mut auth),
    );
    assert_eq!((code, status), (0, 200), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["cell"], "use1-a.cells.example.com");
    // Still no token without an API key.
    let mut auth = String::new();
    let (_, status, _) = curl(
        &pki,
        &format!("{base}/v1/tokens"),
        &post_args(None, &mut auth),
    );
    assert_eq!(status, 401);
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = format!("http://{}/.well-known/jwks.json", server.http.unwrap());
    let (_, status, _) = curl(&pki, &plain, &[]);
    assert_ne!(status, 200);
}

#[test]
fn token_mtls_requires_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let dir = tempfile::tempdir().unwrap();
    let server = start_tls(&pki, &dir.path().join("keys"), true);
    let base = format!("https://{}", server.http.expect("HTTPS address"));
    let url = format!("{base}/v1/tokens");
    let client = [
        "--cert",
        &pki.p("client.pem"),
        "--key",
        &pki.p("client.key"),
    ]
    .map(str::to_owned);
    let rogue = ["--cert", &pki.p("rogue.pem"), "--key", &pki.p("rogue.key")].map(str::to_owned);

    // The JWKS stays public: cells fetch it without a certificate.
    let (code, status, _) = curl(&pki, &format!("{base}/.well-known/jwks.json"), &[]);
    assert_eq!((code, status), (0, 200));

    // API key but no certificate: refused.
    let mut auth = String::new();
    let (_, status, body) = curl(&pki, &url, &post_args(Some(KEY), &mut auth));
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("client_certificate_required"), "{body}");

    // Certificate from the CA and API key: a token.
    let mut auth = String::new();
    let mut args = post_args(Some(KEY), &mut auth);
    args.extend(client.iter().map(String::as_str));
    let (code, status, body) = curl(&pki, &url, &args);
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("\"token\""));

    // Certificate but no API key: refused (both factors are required).
    let mut auth = String::new();
    let mut args = post_args(None, &mut auth);
    args.extend(client.iter().map(String::as_str));
    let (_, status, body) = curl(&pki, &url, &args);
    assert_eq!(status, 401, "{body}");

    // A certificate from another CA fails the handshake: no HTTP at all.
    let mut auth = String::new();
    let mut args = post_args(Some(KEY), &mut auth);
    args.extend(rogue.iter().map(String::as_str));
    let (code, status, body) = curl(&pki, &url, &args);
    assert_ne!(
        code, 0,
        "curl succeeded with a rogue certificate: {status} {body}"
    );
    assert_eq!(status, 0, "{body}");
}

#[test]
fn token_tls_flag_errors() {
    let pki = Pki::new();
    let (code, err) = serve_fails(&[
        "--tls-cert",
        &pki.p("server.pem"),
        "--tls-key",
        &pki.p("missing.key"),
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("missing.key"), "{err}");
}
