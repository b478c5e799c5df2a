//! deploy/ agrees with the code: `scripts/check-deploy` passes (promtool on
//! the alert rules and their unit tests, the dashboard's PromQL, the
//! Kubernetes manifests against the offline schemas), every metric and
//! label the rules and the dashboard query is one the server exposes,
//! every `CELLNS_*` variable and every flag of a `cellns` command line in
//! deploy/ exists, and the probes point at real routes and ports.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::dns::Udp;
use crate::support::http::{KEY, TokenServer, get_auth, post_token, scrape, token_req};
use crate::support::map::{self, MapDir, ORIGIN};
use crate::support::{python, python_json, repo, require_tool, run_cli};

/// Every file under deploy/.
fn deploy_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo().join("deploy"), &mut out);
    out.sort();
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Words matching `[A-Za-z0-9_]` runs that start with `prefix`.
fn words_with_prefix(text: &str, prefix: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(prefix) && w.len() > prefix.len())
        .map(str::to_owned)
        .collect()
}

/// Runs scripts/check-deploy with `python` as the test python and `path`
/// as PATH (None: the test's own); (success, stdout and stderr).
fn check_deploy(python: &Path, path: Option<&Path>) -> (bool, String) {
    let mut cmd = Command::new(repo().join("scripts/check-deploy"));
    cmd.env("CELLNS_TEST_PYTHON", python);
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    let out = cmd.output().expect("run scripts/check-deploy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn obs_deploy_check_script_passes() {
    for tool in ["promtool", "systemd-analyze"] {
        require_tool(tool);
    }
    let (ok, text) = check_deploy(&python(), None);
    assert!(ok, "scripts/check-deploy failed:\n{text}");
    for step in [
        "promtool check rules",
        "promtool test rules",
        "dashboard queries parse as PromQL",
        "kubernetes-validate",
        "systemd-analyze verify deploy/systemd/cellns.service",
        "hadolint deploy/Dockerfile",
    ] {
        assert!(text.contains(step), "step `{step}` did not run:\n{text}");
    }
}

#[test]
fn obs_deploy_check_script_fails_naming_a_missing_tool() {
    // A PATH with only what the script needs before its tool checks, and
    // the tools given: each missing one stops it with its name.
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("mkdir");
    let link = |tool: &str| {
        std::os::unix::fs::symlink(require_tool(tool), bin.join(tool)).expect("symlink");
    };
    for tool in ["bash", "dirname", "promtool"] {
        link(tool);
    }
    let (ok, text) = check_deploy(&python(), Some(&bin));
    assert!(!ok, "passed without systemd-analyze:\n{text}");
    assert!(
        text.contains("check-deploy: systemd-analyze missing"),
        "{text}"
    );

    // systemd-analyze there, hadolint neither on PATH nor next to python
    // (a python that is the test venv's, called from elsewhere).
    link("systemd-analyze");
    let py = dir.path().join("python");
    std::fs::write(
        &py,
        format!("#!/bin/sh\nexec '{}' \"$@\"\n", python().display()),
    )
    .expect("write the python wrapper");
    std::fs::set_permissions(&py, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (ok, text) = check_deploy(&py, Some(&bin));
    assert!(!ok, "passed without hadolint:\n{text}");
    assert!(text.contains("check-deploy: hadolint missing"), "{text}");
}

/// `(metric, {label → values compared with =})` of every selector in the
/// PromQL of the alert rules and the dashboard.
fn selectors() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in deploy_files() {
        let name = f.to_string_lossy();
        if !(name.ends_with("cellns-alerts.yaml") || name.ends_with(".json")) {
            continue;
        }
        // JSON escapes quotes; undo it so both files read alike.
        let text = read(&f).replace("\\\"", "\"");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("cellns_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            let metric = &tail[..end];
            let labels = out.entry(metric.to_owned()).or_default();
            if let Some(sel) = tail[end..].strip_prefix('{') {
                let sel = &sel[..sel.find('}').unwrap_or(sel.len())];
                for m in sel.split(',') {
                    let m = m.trim();
                    let Some(op) = ["=~", "!=", "!~", "="].iter().find(|op| m.contains(**op))
                    else {
                        continue;
                    };
                    let (k, v) = m.split_once(op).unwrap();
                    let values = labels.entry(k.trim().to_owned()).or_default();
                    if *op == "=" {
                        values.insert(v.trim().trim_matches('"').to_owned());
                    }
                }
            }
            rest = &tail[end..];
        }
    }
    out
}

#[test]
fn obs_deploy_queries_only_what_the_server_exposes() {
    // A server that has seen a bit of everything, a probed cell included
    // (its endpoint refuses: a loopback address nothing listens on), and a
    // secondary to NOTIFY (nobody answers on that port, which only makes it
    // retry).
    let closed = std::net::TcpListener::bind("127.31.9.1:0").expect("bind");
    let port = closed.local_addr().expect("addr").port();
    drop(closed);
    let probed = crate::support::map::Cell::new(&format!("h.{ORIGIN}"))
        .ipv4(["127.31.9.1"])
        .set(
            "health",
            crate::health_probe::health_table("tcp", port, 250, 200, 1, 1),
        );
    let map = MapDir::new(&map::small("deploy-1", 'a').cell("h", probed).toml(), false);
    let notify = format!("127.0.0.1:{}", crate::support::free_port());
    let s = TokenServer::start(&[
        "--map",
        &map.arg(),
        "--notify",
        &notify,
        "--axfr-allow",
        "127.0.0.1",
    ]);
    let http = s.http();
    assert!(
        crate::support::wait_until(crate::support::RELOAD, || {
            crate::health_probe::cell_json(http, "h")["health"]["endpoints"][0]["verdict"] == "down"
        }),
        "the probed cell was never probed"
    );
    Udp::new(s.dns())
        .ask(&format!("acme.{ORIGIN}"), hickory_proto::rr::RecordType::A)
        .unwrap();
    assert_eq!(
        post_token(http, Some(KEY), &token_req("acme", 60)).status,
        200
    );
    assert_eq!(post_token(http, None, &token_req("acme", 60)).status, 401);
    assert_eq!(get_auth(http, "/v1/map").status, 200);
    assert_eq!(get_auth(http, "/v1/fleet").status, 200);
    // A zone transfer (its duration histogram has series from then on).
    let mut tcp = crate::support::dns::Tcp::connect(s.dns());
    tcp.send(&crate::support::dns::wire(&crate::support::dns::query(
        7,
        ORIGIN,
        hickory_proto::rr::RecordType::AXFR,
        None,
    )));
    assert!(tcp.recv().is_some(), "no AXFR answer");
    let mut m = scrape(http);
    assert!(
        crate::support::wait_until(crate::support::RELOAD, || {
            m = scrape(http);
            m.get("cellns_xfr_transfers_total", &[("kind", "axfr")])
                .is_some_and(|v| v >= 1.0)
        }),
        "the AXFR was not counted"
    );

    // label name → values per exposed metric name.
    let mut exposed: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for key in m.0.keys() {
        let (name, labels) = key.split_once('{').unwrap_or((key, "}"));
        let entry = exposed.entry(name.to_owned()).or_default();
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let (k, v) = pair.split_once('=').unwrap();
            entry
                .entry(k.to_owned())
                .or_default()
                .insert(v.trim_matches('"').to_owned());
        }
    }
    let queried = selectors();
    assert!(
        queried.len() >= 10,
        "few metrics found in deploy/: {queried:?}"
    );
    for (metric, labels) in &queried {
        let Some(have) = exposed.get(metric) else {
            panic!(
                "deploy/ queries {metric}, which the server does not expose; it exposes {:?}",
                exposed.keys().collect::<Vec<_>>()
            );
        };
        for (label, values) in labels {
            // Added by Prometheus at scrape time.
            if label == "job" || label == "instance" {
                continue;
            }
            let Some(have_values) = have.get(label) else {
                panic!("deploy/ selects {metric} by `{label}`, a label it does not have: {have:?}");
            };
            for v in values {
                assert!(
                    have_values.contains(v),
                    "deploy/ selects {metric}{{{label}=\"{v}\"}}, but the server's values are {have_values:?}"
                );
            }
        }
    }
    // And the code's list of names is what deploy/ may use.
    for metric in queried.keys() {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| metric.strip_suffix(s))
            .unwrap_or(metric);
        assert!(
            cellns::metrics::ALL.contains(&base),
            "{metric} is not in cellns::metrics::ALL"
        );
    }
}

#[test]
fn obs_deploy_env_flags_probes_and_ports_exist() {
    let serve_help = run_cli(&["serve", "--help"]).1;
    let top_help = run_cli(&["--help"]).1;
    // Every CELLNS_* variable named in deploy/ is read by the binary.
    for f in deploy_files() {
        for var in words_with_prefix(&read(&f), "CELLNS_") {
            assert!(
                serve_help.contains(&format!("env: {var}="))
                    || top_help.contains(&format!("env: {var}=")),
                "{}: {var} is not an environment variable of cellns",
                f.display()
            );
        }
    }
    // Every flag after `cellns <command>` on a command line in deploy/
    // exists for that command (backslash continuations joined).
    let mut checked = 0;
    for f in deploy_files() {
        let text = read(&f).replace("\\\n", " ");
        for line in text.lines() {
            for (i, _) in line.match_indices("cellns ") {
                let mut words = line[i + 7..].split_whitespace();
                let Some(cmd) = words.next() else { continue };
                if ![
                    "serve",
                    "check",
                    "explain",
                    "diff",
                    "keygen",
                    "verify-token",
                    "gen-map",
                ]
                .contains(&cmd)
                {
                    continue;
                }
                let help = run_cli(&[cmd, "--help"]).1;
                for w in words.take_while(|w| !["|", "&&", ";", "#"].contains(w)) {
                    let Some(flag) = w.strip_prefix("--") else {
                        continue;
                    };
                    let flag = flag.split('=').next().unwrap();
                    let flag = flag.trim_end_matches(['`', ')', ',', '"', '\'']);
                    assert!(
                        help.contains(&format!("--{flag}")),
                        "{}: `cellns {cmd} --{flag}` is not a flag of `cellns {cmd}`:\n{line}",
                        f.display()
                    );
                    checked += 1;
                }
            }
        }
    }
    assert!(checked >= 3, "only {checked} flags found in deploy/");

    // The probes and the scrape path are routes; the ports agree with the
    // listen addresses the manifests set.
    let routes: BTreeSet<String> = cellns::http::route_table()
        .into_iter()
        .map(|r| r.path.to_owned())
        .collect();
    let d = python_json(
        r#"import json, sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
c = d["spec"]["template"]["spec"]["containers"][0]
env = {e["name"]: e.get("value") for e in c.get("env", [])}
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
probes = {k: c[k]["httpGet"] for k in ("livenessProbe", "readinessProbe")}
ann = d["spec"]["template"]["metadata"].get("annotations", {})
print(json.dumps({"env": env, "ports": ports, "probes": probes, "ann": ann}))"#,
        &[&repo().join("deploy/kubernetes/deployment.yaml")],
    );
    let port_of = |addr: &serde_json::Value| -> u64 {
        addr.as_str()
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("not ADDR:PORT: {addr}"))
    };
    assert_eq!(
        d["ports"]["http"].as_u64(),
        Some(port_of(&d["env"]["CELLNS_HTTP_LISTEN"]))
    );
    assert_eq!(
        d["ports"]["dns-udp"].as_u64(),
        Some(port_of(&d["env"]["CELLNS_DNS_LISTEN"]))
    );
    assert_eq!(
        d["ports"]["dns-tcp"].as_u64(),
        Some(port_of(&d["env"]["CELLNS_DNS_LISTEN"]))
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(d["probes"][probe]["path"], path, "{probe}");
        assert_eq!(d["probes"][probe]["port"], "http", "{probe}");
        assert!(routes.contains(path), "{path} is not a route");
    }
    let scrape_path = d["ann"]["prometheus.io/path"]
        .as_str()
        .unwrap_or("/metrics");
    assert!(routes.contains(scrape_path), "{scrape_path} is not a route");
    assert_eq!(
        d["ann"]["prometheus.io/port"].as_str().map(str::to_owned),
        Some(d["ports"]["http"].to_string())
    );
}
