//! Operator overrides end to end: `PUT /v1/cells/{id}/status` takes
//! effect at once (DNS and tokens), survives a reload and a restart,
//! expires when asked and is cleared by `DELETE`; every change is in the
//! audit log; only callers with the `admin` scope may make one, the API
//! key file is re-read without a restart, and bad requests change nothing.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::health_probe::{a_of, cell_json, ips};
use crate::support::http::{
    ADMIN_KEY, KEY, TokenServer, api_keys_file, get, key_hash, mint, send_json,
};
use crate::support::map::{Cell, Map, MapDir, Mode};
use crate::support::{RELOAD, wait_until};

const ORIGIN: &str = "ovr.example.test.";

/// Cells a (192.0.2.1) and b (192.0.2.2) failing over to each other, c
/// (192.0.2.3) failing over to a; acme on a.
fn map(version: &str) -> Map {
    Map::new(ORIGIN, version)
        .cell(
            "a",
            Cell::new(&format!("a.{ORIGIN}"))
                .ipv4(["192.0.2.1"])
                .set("failover", "b"),
        )
        .cell(
            "b",
            Cell::new(&format!("b.{ORIGIN}"))
                .ipv4(["192.0.2.2"])
                .set("failover", "a"),
        )
        .cell(
            "c",
            Cell::new(&format!("c.{ORIGIN}"))
                .ipv4(["192.0.2.3"])
                .set("failover", "a"),
        )
        .tenant("acme", "a")
}

fn put(
    http: SocketAddr,
    key: Option<&str>,
    cell: &str,
    body: serde_json::Value,
) -> crate::support::http::Resp {
    send_json(
        http,
        "PUT",
        &format!("/v1/cells/{cell}/status"),
        key,
        Some(&body),
    )
}

fn acme(dns: SocketAddr) -> std::collections::BTreeSet<std::net::IpAddr> {
    a_of(dns, &format!("acme.{ORIGIN}"))
}

fn host(id: &str) -> String {
    format!("{id}.{}", ORIGIN.trim_end_matches('.'))
}

fn audit(state: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(state.join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object a line"))
        .collect()
}

#[test]
fn health_override_takes_effect_at_once_survives_reload_and_restart_and_expires() {
    let mut dir = MapDir::new(&map("o1").toml(), false);
    let state = tempfile::tempdir().expect("tempdir");
    let state_arg = state.path().to_str().expect("utf-8").to_owned();
    let args = ["--map", &dir.arg(), "--state-dir", &state_arg];
    let s = TokenServer::start(&args);
    let (http, dns) = (s.http(), s.dns());
    assert_eq!(acme(dns), ips(&["192.0.2.1"]));

    // At once: answered from the moment the PUT returns.
    let r = put(
        http,
        Some(ADMIN_KEY),
        "a",
        serde_json::json!({"status": "down", "reason": "OPS-1 db failover"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["persisted"], true, "{body}");
    assert!(body.get("warning").is_none(), "{body}");
    assert_eq!(body["override"]["actor"], "ops", "{body}");
    assert_eq!(body["effective"]["status"], "down", "{body}");
    assert_eq!(body["effective"]["serving"], "b", "{body}");
    assert_eq!(acme(dns), ips(&["192.0.2.2"]));
    assert_eq!(mint(http, "acme")["cell"], host("b"));
    let a = cell_json(http, "a");
    assert_eq!(a["status_source"], "override", "{a}");
    assert_eq!(a["override"]["reason"], "OPS-1 db failover", "{a}");
    let t = crate::support::http::get_auth(http, "/v1/tenants/acme").json();
    assert!(
        t["why"].as_str().is_some_and(
            |w| w.contains("`a` is down by an override of ops (\"OPS-1 db failover\")")
        ),
        "{t}"
    );
    let m = crate::support::http::scrape(http);
    assert_eq!(m.value("cellns_overrides", &[]), 1.0);
    assert_eq!(
        m.value(
            "cellns_cell_status_source",
            &[("cell", "a"), ("source", "override")]
        ),
        1.0
    );

    // A reload keeps it.
    dir.write(&map("o2").toml(), Mode::Rename);
    assert!(
        wait_until(RELOAD, || {
            crate::support::http::get_auth(http, "/v1/map").json()["version"] == "o2"
        }),
        "o2 not loaded"
    );
    // Its audit line follows the publish; the restart below must not cut it.
    assert!(
        wait_until(RELOAD, || audit(state.path())
            .iter()
            .any(|l| l["what"] == "reload_accepted" && l["after"] == "o2")),
        "the reload was not audited"
    );
    assert_eq!(acme(dns), ips(&["192.0.2.2"]));

    // A restart keeps it, from the first answer on.
    drop(s);
    let s = TokenServer::start(&args);
    let (http, dns) = (s.http(), s.dns());
    assert_eq!(acme(dns), ips(&["192.0.2.2"]));
    assert_eq!(cell_json(http, "a")["override"]["status"], "down");

    // Cleared by DELETE, at once.
    let r = send_json(http, "DELETE", "/v1/cells/a/status", Some(ADMIN_KEY), None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["previous"]["status"], "down");
    assert_eq!(r.json()["override"], serde_json::Value::Null);
    assert_eq!(acme(dns), ips(&["192.0.2.1"]));
    // Clearing again changes nothing.
    let r = send_json(http, "DELETE", "/v1/cells/a/status", Some(ADMIN_KEY), None);
    assert_eq!(
        (r.status, &r.json()["previous"]),
        (200, &serde_json::Value::Null)
    );

    // Expires when asked.
    let set = Instant::now();
    let r = put(
        http,
        Some(ADMIN_KEY),
        "a",
        serde_json::json!({"status": "draining", "reason": "short", "expires_in_seconds": 1}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json()["override"]["expires_at"].is_string());
    let r = put(
        http,
        Some(ADMIN_KEY),
        "c",
        serde_json::json!({"status": "down", "reason": "brief", "expires_in_seconds": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(a_of(dns, &format!("c.{ORIGIN}")), ips(&["192.0.2.3"]));
    assert!(
        wait_until(RELOAD, || cell_json(http, "c")["override"].is_null()),
        "the override of c did not expire: {}",
        cell_json(http, "c")
    );
    assert!(
        set.elapsed() >= Duration::from_millis(1900),
        "expired early: {:?}",
        set.elapsed()
    );
    assert_eq!(cell_json(http, "c")["status"], "active");
    assert!(cell_json(http, "a")["override"].is_null());

    // The audit log has every step, with its actor (an expiry's line is
    // written just after the change it records is visible).
    let mut lines = Vec::new();
    wait_until(RELOAD, || {
        lines = audit(state.path());
        lines
            .iter()
            .filter(|l| l["what"] == "override_expired")
            .count()
            >= 2
    });
    let find = |what: &str, cell: &str, actor: &str| {
        lines
            .iter()
            .any(|l| l["what"] == what && l["cell"] == cell && l["actor"] == actor)
    };
    assert!(find("override_set", "a", "ops"), "{lines:#?}");
    assert!(find("override_cleared", "a", "ops"), "{lines:#?}");
    assert!(find("override_expired", "c", "timer"), "{lines:#?}");
    assert!(find("override_expired", "a", "timer"), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l["what"] == "reload_accepted" && l["after"] == "o2" && l["tenants"] == 1),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l["what"] == "status" && l["cell"] == "a" && l["after"] == "down (override)")
    );
    let set_line = lines
        .iter()
        .find(|l| l["what"] == "override_set")
        .expect("set");
    assert_eq!(set_line["reason"], "OPS-1 db failover");
    assert_eq!(set_line["after"], "down");
    assert!(set_line["time"].as_str().is_some_and(|t| t.ends_with('Z')));
    // A rejected reload is audited too.
    dir.write("not a map [", Mode::Rename);
    assert!(
        wait_until(RELOAD, || audit(state.path())
            .iter()
            .any(|l| l["what"] == "reload_rejected")),
        "no reload_rejected line"
    );
}

#[test]
fn health_override_needs_admin_and_refuses_bad_requests() {
    let dir = MapDir::new(&map("o3").toml(), false);
    let s = TokenServer::start(&["--map", &dir.arg()]);
    let (http, dns) = (s.http(), s.dns());
    let down = serde_json::json!({"status": "down", "reason": "test"});

    // 401 without a valid key, 403 without the admin scope.
    let r = put(http, None, "a", down.clone());
    assert_eq!(
        (r.status, r.error_code()),
        (401, "unauthenticated".to_owned())
    );
    let r = put(http, Some("wrong"), "a", down.clone());
    assert_eq!(
        (r.status, r.error_code()),
        (401, "invalid_api_key".to_owned())
    );
    let r = put(http, Some(KEY), "a", down.clone());
    assert_eq!(
        (r.status, r.error_code()),
        (403, "insufficient_scope".to_owned())
    );
    assert!(r.text().contains("lacks the `admin` scope"), "{}", r.text());
    let r = send_json(http, "DELETE", "/v1/cells/a/status", Some(KEY), None);
    assert_eq!(r.status, 403);
    // The admin caller has no `tokens` scope.
    let r = crate::support::http::post_token(
        http,
        Some(ADMIN_KEY),
        &crate::support::http::token_req("acme", 60),
    );
    assert_eq!(
        (r.status, r.error_code()),
        (403, "insufficient_scope".to_owned())
    );

    // Bad requests: each its code, nothing changes.
    for (body, code) in [
        (serde_json::json!({"status": "broken", "reason": "x"}), 400),
        (serde_json::json!({"status": "down"}), 400),
        (serde_json::json!({"status": "down", "reason": "  "}), 400),
        (
            serde_json::json!({"status": "down", "reason": "x", "extra": 1}),
            400,
        ),
        (
            serde_json::json!({"status": "down", "reason": "x", "expires_in_seconds": 0}),
            400,
        ),
    ] {
        let r = put(http, Some(ADMIN_KEY), "a", body.clone());
        assert_eq!(
            (r.status, r.error_code()),
            (code, "invalid_request".to_owned()),
            "{body}: {}",
            r.text()
        );
    }
    let r = put(http, Some(ADMIN_KEY), "nope", down.clone());
    assert_eq!((r.status, r.error_code()), (404, "unknown_cell".to_owned()));
    let r = send_json(
        http,
        "DELETE",
        "/v1/cells/nope/status",
        Some(ADMIN_KEY),
        None,
    );
    assert_eq!(r.status, 404);
    let auth = format!("Bearer {ADMIN_KEY}");
    let r = crate::support::http::request(
        http,
        "PUT",
        "/v1/cells/a/status",
        &[("Authorization", &auth), ("Content-Type", "text/plain")],
        Some(b"down"),
        false,
    );
    assert_eq!(r.status, 415);
    let big = serde_json::json!({"status": "down", "reason": "x".repeat(20_000)});
    assert_eq!(put(http, Some(ADMIN_KEY), "a", big).status, 413);
    assert_eq!(acme(dns), ips(&["192.0.2.1"]));

    // Down on a is fine; down on b too would strand both (a ↔ b): 409.
    let r = put(http, Some(ADMIN_KEY), "a", down.clone());
    assert_eq!(r.status, 200, "{}", r.text());
    // No --state-dir: said in the answer and at start-up.
    assert_eq!(r.json()["persisted"], false);
    assert!(
        r.json()["warning"]
            .as_str()
            .is_some_and(|w| w.contains("not persisted"))
    );
    assert!(
        s.server
            .logged("operator overrides are kept in memory only")
    );
    let r = put(http, Some(ADMIN_KEY), "b", down.clone());
    assert_eq!(
        (r.status, r.error_code()),
        (409, "would_strand".to_owned()),
        "{}",
        r.text()
    );
    let msg = r.json()["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(msg.contains("b → a → b"), "{msg}");
    assert_eq!(cell_json(http, "b")["status"], "active");
    assert_eq!(acme(dns), ips(&["192.0.2.2"]));
    assert_eq!(
        get(http, "/readyz").json()["overrides_persisted"],
        serde_json::json!(false)
    );
}

#[test]
fn health_api_key_file_is_reread_without_a_restart() {
    let dir = MapDir::new(&map("o4").toml(), false);
    let s = TokenServer::start(&["--map", &dir.arg()]);
    let http = s.http();
    let down = serde_json::json!({"status": "draining", "reason": "test"});
    assert_eq!(put(http, Some(KEY), "a", down.clone()).status, 403);
    // The file the server reads (written by TokenServer next to the keys).
    let keys_dir = s.keys.parent().expect("dir").to_owned();
    let path = api_keys_file(&keys_dir);
    // `auth` gets admin; `ops` is revoked.
    crate::support::replace_file(
        &path,
        &format!("auth sha256:{} scopes=tokens,read,admin\n", key_hash(KEY)),
    );
    assert!(
        wait_until(RELOAD, || put(http, Some(KEY), "a", down.clone()).status
            == 200),
        "the new scopes were not picked up: {}",
        s.server.logs().text()
    );
    assert_eq!(put(http, Some(ADMIN_KEY), "a", down.clone()).status, 401);
    // A broken file keeps the callers read before.
    crate::support::replace_file(&path, "auth not-a-hash\n");
    assert!(
        s.server
            .logs()
            .wait_for("ERROR", "API key file is invalid", RELOAD)
            .is_some(),
        "{}",
        s.server.logs().text()
    );
    assert_eq!(put(http, Some(KEY), "a", down).status, 200);
    assert_eq!(
        crate::support::http::scrape(http).value("cellns_api_keys_last_reload_success", &[]),
        0.0
    );
}

#[test]
fn health_corrupt_override_file_is_reported_and_ignored() {
    let dir = MapDir::new(&map("o5").toml(), false);
    let state = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        state.path().join("overrides.json"),
        "{\"format\": 1, \"overr",
    )
    .expect("write");
    let state_arg = state.path().to_str().expect("utf-8").to_owned();
    let s = TokenServer::start(&["--map", &dir.arg(), "--state-dir", &state_arg]);
    let (http, dns) = (s.http(), s.dns());
    assert_eq!(acme(dns), ips(&["192.0.2.1"]));
    let r = get(http, "/readyz");
    assert_eq!(r.status, 200);
    let body = r.json();
    assert!(
        body["overrides_error"]
            .as_str()
            .is_some_and(|e| e.contains("overrides.json")),
        "{body}"
    );
    assert!(
        s.server
            .logs()
            .wait_for("ERROR", "cannot load the operator overrides", RELOAD)
            .is_some(),
        "{}",
        s.server.logs().text()
    );
    // The next change rewrites the file.
    let r = put(
        http,
        Some(ADMIN_KEY),
        "c",
        serde_json::json!({"status": "draining", "reason": "x"}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let text = std::fs::read_to_string(state.path().join("overrides.json")).expect("file");
    assert!(
        serde_json::from_str::<serde_json::Value>(&text).is_ok(),
        "{text}"
    );
}
