//! Readiness: `/readyz` is 503 while the map is loading (the HTTP API is
//! up before it) and 200 once the map is loaded and DNS is bound; a failed
//! reload shows in the body (and in `/v1/map` and the metrics) without
//! making the server unready.
//!
//! "While the map is loading": the map has a million tenants, which takes
//! seconds to load (the tests run the debug build); the probes below run
//! within milliseconds of the HTTP API coming up, and the test checks that
//! the log had not yet said "map loaded" when they did. (A FIFO used to
//! hold the load deterministically; a map that is not a regular file is
//! now refused at once, see reload_faults.rs.)

use hickory_proto::rr::RecordType;

use crate::support::dns::Udp;
use crate::support::http::{
    self, KEY, TokenServer, api_keys_file, get_auth, keygen, post_token, scrape, token_req,
};
use crate::support::map::{self, MapDir, Mode, ORIGIN};
use crate::support::server::Launch;
use crate::support::{RELOAD, wait_until};

const WAIT: std::time::Duration = RELOAD;

#[test]
fn obs_readyz_is_unready_until_the_map_is_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("map.toml");
    let spec = map::generated(1_000_000, 10, 0, "ready-1");
    std::fs::write(&path, cellns::map::generate::generate_spec(&spec)).expect("write the map");
    let keys = dir.path().join("keys");
    keygen(&keys, "EdDSA");
    let api = api_keys_file(dir.path());
    let s = Launch::new(&[
        "--map",
        path.to_str().unwrap(),
        "--signing-keys",
        keys.to_str().unwrap(),
        "--api-keys",
        api.to_str().unwrap(),
    ])
    .start_early();

    // The server is loading the map: alive, not ready.
    let r = http::get(s.http, "/healthz");
    assert_eq!(r.status, 200, "{}", r.text());
    let r = http::get(s.http, "/readyz");
    assert_eq!(r.status, 503, "{}", r.text());
    let body = r.json();
    assert_eq!(body["ready"], false, "{body}");
    assert_eq!(body["map_loaded"], false, "{body}");
    assert_eq!(body["dns_listening"], false, "{body}");
    assert!(body["map_version"].is_null(), "{body}");
    // Other routes say why they cannot answer yet.
    let r = get_auth(s.http, "/v1/map");
    assert_eq!((r.status, r.error_code().as_str()), (503, "starting"));
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = post_token(s.http, Some(KEY), &token_req("t000001", 60));
    assert_eq!((r.status, r.error_code().as_str()), (503, "starting"));
    // Metrics are served (every DNS series at 0).
    let m = scrape(s.http);
    assert!(m.nonzero("cellns_dns_queries_total").is_empty());
    assert!(
        s.dns().is_none(),
        "DNS must not be up before the map is loaded"
    );
    // All of that happened while the map was loading.
    assert!(
        !s.logs().contains(r#""message":"map loaded""#),
        "the map loaded before the probes ran: this test needs a slower load (more tenants)"
    );

    // Loading completes, DNS binds, readiness flips.
    assert!(
        wait_until(crate::support::STARTUP, || s
            .logs()
            .contains(r#""message":"serving""#)),
        "not serving after the map loaded; logs:\n{}",
        s.logs().text()
    );
    let r = http::get(s.http, "/readyz");
    assert_eq!(r.status, 200, "{}", r.text());
    let body = r.json();
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["map_loaded"], true, "{body}");
    assert_eq!(body["dns_listening"], true, "{body}");
    assert_eq!(body["map_version"], "ready-1", "{body}");
    assert_eq!(body["last_reload_ok"], true, "{body}");
    // And it really serves.
    let dns = s.dns().expect("DNS address logged");
    let a = Udp::new(dns)
        .ask(&format!("t000001.{ORIGIN}"), RecordType::A)
        .unwrap();
    assert_eq!(
        a.addrs,
        map::generated_cell_v4(map::generated_tenant_cell(&spec, 1))
    );
    assert_eq!(body["serial"].as_u64(), Some(u64::from(soa_serial(dns))));
    let r = post_token(s.http, Some(KEY), &token_req("t000001", 60));
    assert_eq!(r.status, 200, "{}", r.text());
    // The two phases were both probed.
    let m = scrape(s.http);
    for status in ["503", "200"] {
        assert_eq!(
            m.value(
                "cellns_http_request_duration_seconds_count",
                &[("route", "/readyz"), ("status", status)]
            ),
            1.0,
            "/readyz answered {status} once"
        );
    }
}

fn soa_serial(dns: std::net::SocketAddr) -> u32 {
    Udp::new(dns)
        .ask(ORIGIN, RecordType::SOA)
        .unwrap()
        .serial
        .expect("SOA serial")
}

#[test]
fn obs_failed_reload_is_reported_but_stays_ready() {
    let mut map = MapDir::new(&map::small("good-1", 'a').toml(), false);
    let s = TokenServer::start(&["--map", &map.arg()]);
    let http = s.http();
    let r = http::get(http, "/readyz");
    assert_eq!(r.status, 200, "{}", r.text());

    // A map that does not parse: rejected, the last good map serves.
    map.write("this is [not a map\n", Mode::Rename);
    let mut body = serde_json::Value::Null;
    assert!(
        wait_until(WAIT, || {
            body = http::get(http, "/readyz").json();
            body["last_reload_ok"] == false
        }),
        "the failed reload never showed in /readyz: {body}"
    );
    let r = http::get(http, "/readyz");
    assert_eq!(r.status, 200, "a failed reload must not make it unready");
    body = r.json();
    assert_eq!(body["ready"], true, "{body}");
    assert_eq!(body["map_version"], "good-1", "{body}");
    assert!(body["last_reload_error_at"].is_string(), "{body}");
    // The message is in /v1/map (authenticated).
    let v = get_auth(http, "/v1/map").json();
    assert_eq!(v["version"], "good-1", "{v}");
    assert_eq!(v["reload"]["failures"], 1, "{v}");
    assert_eq!(v["reload"]["successes"], 0, "{v}");
    let err = v["reload"]["last_error"].as_str().unwrap_or_default();
    assert!(err.contains("map.toml"), "the error names the file: {v}");
    let m = scrape(http);
    assert_eq!(m.value("cellns_map_last_reload_success", &[]), 0.0);
    assert_eq!(
        m.value("cellns_reload_total", &[("result", "failure")]),
        1.0
    );
    assert_eq!(
        m.value("cellns_reload_total", &[("result", "success")]),
        0.0
    );
    assert_eq!(
        m.value("cellns_map_version_info", &[("version", "good-1")]),
        1.0
    );

    // A good map again: reloaded, the failure is cleared.
    map.write(&map::small("good-2", 'a').toml(), Mode::Rename);
    assert!(
        wait_until(WAIT, || {
            body = http::get(http, "/readyz").json();
            body["map_version"] == "good-2"
        }),
        "good-2 never showed in /readyz: {body}"
    );
    assert_eq!(body["last_reload_ok"], true, "{body}");
    assert!(body["last_reload_error_at"].is_null(), "{body}");
    let v = get_auth(http, "/v1/map").json();
    assert_eq!(v["reload"]["successes"], 1, "{v}");
    assert!(v["reload"]["last_error"].is_null(), "{v}");
    let m = scrape(http);
    assert_eq!(m.value("cellns_map_last_reload_success", &[]), 1.0);
    assert_eq!(
        m.value("cellns_reload_total", &[("result", "success")]),
        1.0
    );
    // One series: the version in force (versions served before are not kept).
    assert_eq!(m.family("cellns_map_version_info").len(), 1);
    assert_eq!(
        m.value("cellns_map_version_info", &[("version", "good-2")]),
        1.0
    );
    assert_eq!(m.value("cellns_tenants", &[("cell", "a")]), 21.0);
}
