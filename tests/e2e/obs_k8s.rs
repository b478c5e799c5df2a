//! The map mounted the way Kubernetes mounts a ConfigMap (`map.toml ->
//! ..data/map.toml`, `..data -> ..<timestamp>`, swapped atomically by
//! renaming a new `..data` symlink): the new answer is served, and
//! `/readyz`, `/v1/map`, `/v1/tenants` and the metrics show the new
//! version.

use crate::support::dns::wait_for_answer;
use crate::support::http::{self, TokenServer, get_auth, scrape};
use crate::support::map::{self, MapDir, Mode, ORIGIN, cell_v4};
use crate::support::{RELOAD, wait_until};

/// The small map, moving acme (1 of 21 tenants: over the default gate).
fn test_map(version: &str, acme_on: char) -> String {
    map::small(version, acme_on).no_gate().toml()
}

#[test]
fn obs_kubernetes_configmap_swap_is_served_and_reported() {
    let mut map = MapDir::new(&test_map("cm-1", 'a'), true);
    assert!(
        std::fs::symlink_metadata(map.dir.path().join("..data"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the test map is in the ConfigMap layout"
    );
    let s = TokenServer::start(&["--map", &map.arg()]);
    let (dns, http) = (s.dns(), s.http());
    let acme = format!("acme.{ORIGIN}");
    wait_for_answer(dns, &acme, &cell_v4('a'), RELOAD).expect("cm-1 served");
    assert_eq!(http::get(http, "/readyz").json()["map_version"], "cm-1");

    // The kubelet's update: a new timestamped directory, `..data` renamed
    // over to point at it, the old directory removed.
    map.write(&test_map("cm-2", 'b'), Mode::Kubernetes);
    wait_for_answer(dns, &acme, &cell_v4('b'), RELOAD)
        .unwrap_or_else(|last| panic!("the swapped map was not served; last answer {last}"));

    // DNS moved, so the snapshot is in force; the report follows the same
    // snapshot (the reload status is recorded right after the swap).
    let mut ready = serde_json::Value::Null;
    assert!(
        wait_until(RELOAD, || {
            let r = http::get(http, "/readyz");
            ready = r.json();
            r.status == 200 && ready["map_version"] == "cm-2"
        }),
        "/readyz: {ready}"
    );
    assert_eq!(ready["ready"], true, "{ready}");
    assert_eq!(ready["last_reload_ok"], true, "{ready}");
    let mut v = serde_json::Value::Null;
    assert!(
        wait_until(RELOAD, || {
            v = get_auth(http, "/v1/map").json();
            v["reload"]["successes"] == 1
        }),
        "/v1/map: {v}"
    );
    assert_eq!(v["version"], "cm-2", "{v}");
    // The path given to --map, through the symlinks.
    assert_eq!(v["source"], map.arg(), "{v}");
    assert_eq!(ready["serial"], v["serial"]);
    let t = get_auth(http, "/v1/tenants/acme").json();
    assert_eq!(
        (t["cell"].as_str(), t["map_version"].as_str()),
        (Some("b"), Some("cm-2"))
    );

    let m = scrape(http);
    assert_eq!(
        m.value("cellns_map_version_info", &[("version", "cm-2")]),
        1.0
    );
    // One series: the version in force (versions served before are not kept).
    assert_eq!(m.family("cellns_map_version_info").len(), 1);
    assert_eq!(
        m.value("cellns_map_serial", &[]),
        v["serial"].as_f64().unwrap()
    );
    assert_eq!(
        m.value("cellns_reload_total", &[("result", "success")]),
        1.0
    );
    assert_eq!(m.value("cellns_map_last_reload_success", &[]), 1.0);
    assert_eq!(m.value("cellns_tenants", &[("cell", "b")]), 1.0);
    assert_eq!(m.value("cellns_tenants", &[("cell", "a")]), 20.0);
}
