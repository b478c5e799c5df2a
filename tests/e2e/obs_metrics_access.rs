//! `/metrics` behind an allow-list and a scrape key (issue 15, finding 9),
//! while the probes stay open to anyone.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use crate::support::connect_from;
use crate::support::server::Server;

/// `GET path` from the loopback address `src`, with a bearer `key`: the
/// status and body.
fn get_from(src: &str, http: SocketAddr, path: &str, key: Option<&str>) -> (u16, String) {
    let mut s = connect_from(src, http).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes(),
    )
    .expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP response: {text}"));
    (status, text)
}

#[test]
fn metrics_behind_an_allow_list_and_a_key_while_probes_stay_open() {
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("metrics-keys");
    std::fs::write(
        &keys,
        format!(
            "# the Prometheus scrape key\nsha256:{}\n",
            hex::encode(Sha256::digest(b"scrape-key-0123"))
        ),
    )
    .expect("write");
    let keys = keys.to_str().expect("utf-8");
    let server = Server::start(&[
        "--metrics-allow",
        "127.0.12.0/24",
        "--metrics-key-file",
        keys,
    ]);
    let http = server.http();
    for src in ["127.0.0.1", "127.0.12.1"] {
        for probe in ["/healthz", "/readyz"] {
            assert_eq!(
                get_from(src, http, probe, None).0,
                200,
                "{probe} from {src}"
            );
        }
    }
    // Outside the allow-list: 403, key or not.
    for key in [None, Some("scrape-key-0123")] {
        let (status, body) = get_from("127.0.0.1", http, "/metrics", key);
        assert_eq!(status, 403, "{body}");
        assert!(!body.contains("cellns_"), "metrics leaked: {body}");
    }
    // Inside: the key is needed too.
    for key in [None, Some("wrong")] {
        let (status, body) = get_from("127.0.12.1", http, "/metrics", key);
        assert_eq!(status, 401, "{body}");
        assert!(!body.contains("cellns_"), "metrics leaked: {body}");
    }
    let (status, body) = get_from("127.0.12.1", http, "/metrics", Some("scrape-key-0123"));
    assert_eq!(status, 200);
    assert!(body.contains("cellns_dns_queries_total"), "{body}");

    // Without --metrics-allow, the key alone decides.
    let server = Server::start(&["--metrics-key-file", keys]);
    let http = server.http();
    assert_eq!(get_from("127.0.0.1", http, "/metrics", None).0, 401);
    assert_eq!(
        get_from("127.0.0.1", http, "/metrics", Some("scrape-key-0123")).0,
        200
    );
    assert_eq!(get_from("127.0.0.1", http, "/readyz", None).0, 200);
}

#[test]
fn a_bad_metrics_rule_refuses_to_start() {
    let (code, err) = crate::support::server::serve_fails(&["--metrics-allow", "10.0.0.1/8"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("--metrics-allow") && err.contains("host bits"),
        "{err}"
    );
}
