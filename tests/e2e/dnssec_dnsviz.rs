//! DNSViz, the DNSSEC analyser, on a signed cellns: `dnsviz probe`
//! queries the server (only it: the map's glue points at loopback and the
//! probe is told the nameservers' address and port), `dnsviz grok` checks
//! what it saw against the zone's KSK as trust anchor, and must report no
//! error and no warning, and every answer and denial secure. The keys are
//! split (a KSK signs the DNSKEY set, a ZSK the rest).
//!
//! `ldns-verify-zone` and `kzonecheck` check a whole signed zone file; a
//! zone signed online with compact denial has none (transfers are refused,
//! see docs/dnssec.md), so they have nothing to check here.

use std::process::Command;

use hickory_proto::rr::RecordType;

use crate::support::map::Map;
use crate::support::server::Launch;
use crate::support::table::ORIGIN;
use crate::support::{dnssec_ds, dnssec_keygen, require_tool};

/// `dnsviz grok` through /usr/bin/python3, working around Debian 12's
/// packaging: dnsviz 0.9.4 checks `pygraphviz.release`, which pygraphviz
/// 1.7 no longer has (grok itself draws nothing).
const GROK: &str = r#"
import sys, types, runpy, pygraphviz
try:
    from pygraphviz import release
except ImportError:
    m = types.ModuleType('pygraphviz.release')
    m.version = pygraphviz.__version__
    sys.modules['pygraphviz.release'] = m
    pygraphviz.release = m
sys.argv = ['dnsviz'] + sys.argv[1:]
runpy.run_path('/usr/bin/dnsviz', run_name='__main__')
"#;

/// Every `errors` and `warnings` entry of a grok report, with where.
fn findings(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if (k == "errors" || k == "warnings")
                    && let Some(list) = v.as_array()
                {
                    for e in list {
                        out.push(format!("{k} at {path}: {e}"));
                    }
                }
                findings(v, &format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(list) => {
            for (i, v) in list.iter().enumerate() {
                findings(v, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Every `status` value of a grok report, with where.
fn statuses(v: &serde_json::Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "status"
                    && let Some(s) = v.as_str()
                {
                    out.push((path.to_owned(), s.to_owned()));
                }
                statuses(v, &format!("{path}/{k}"), out);
            }
        }
        serde_json::Value::Array(list) => {
            for v in list {
                statuses(v, path, out);
            }
        }
        _ => {}
    }
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dnsviz_finds_no_dnssec_errors() {
    require_tool("dnsviz");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let keys = d.join("keys");
    let ksk = dnssec_keygen(&keys, &["--role", "ksk"]);
    dnssec_keygen(&keys, &["--role", "zsk"]);
    let ds = dnssec_ds(&keys, ORIGIN);
    assert_eq!(ds.len(), 1, "only the KSK has a DS: {ds:?}");
    assert!(ds[0].contains(&format!(" DS {ksk} 13 2 ")), "{ds:?}");

    // The example map, its nameservers' glue on loopback.
    let map = Map::example()
        .glue("ns1.cells.example.com.", &["127.0.0.1"])
        .glue("ns2.cells.example.com.", &["127.0.0.1"]);
    let map_path = d.join("map.toml");
    std::fs::write(&map_path, map.toml()).expect("write map");
    let srv = Launch::new(&[
        "--map",
        map_path.to_str().expect("utf-8"),
        "--dnssec-keys",
        keys.to_str().expect("utf-8"),
    ])
    .start();
    let port = srv.dns.port();

    // The trust anchor: the KSK's DNSKEY, as the server publishes it.
    let dnskeys =
        crate::support::dns::try_query(srv.dns, ORIGIN, RecordType::DNSKEY).expect("DNSKEY answer");
    let anchor: Vec<String> = dnskeys
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::DNSKEY && r.data.to_string().starts_with("257 "))
        .map(|r| format!("{} {} IN DNSKEY {}", r.name, r.ttl, r.data))
        .collect();
    assert_eq!(anchor.len(), 1, "{dnskeys}");
    let ta = d.join("trusted-keys");
    std::fs::write(&ta, anchor.join("\n") + "\n").expect("write trust anchor");

    let probe = d.join("probe.json");
    let servers = format!(
        "{ORIGIN}+:ns1.cells.example.com=127.0.0.1:{port},ns2.cells.example.com=127.0.0.1:{port}"
    );
    let names = [
        "cells.example.com",
        "acme.cells.example.com",    // a tenant
        "hooli.cells.example.com",   // failed over
        "initech.cells.example.com", // no IPv6: NODATA for AAAA
        "use1-a.cells.example.com",  // a cell hostname
        "nobody.cells.example.com",  // does not exist
        "www.acme.cells.example.com",
    ];
    run(
        Command::new(require_tool("dnsviz"))
            .args(["probe", "-4", "-b", "127.0.0.1", "-A", "-x", &servers, "-o"])
            .arg(&probe)
            .args(names),
        "dnsviz probe",
    );
    let grok = d.join("grok.json");
    run(
        Command::new("/usr/bin/python3")
            .args(["-c", GROK, "grok", "-t"])
            .arg(&ta)
            .arg("-r")
            .arg(&probe)
            .arg("-o")
            .arg(&grok),
        "dnsviz grok",
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&grok).expect("read the grok report"))
            .expect("grok JSON");

    let mut found = Vec::new();
    findings(&report, "", &mut found);
    assert!(found.is_empty(), "dnsviz reports:\n{}", found.join("\n"));

    let mut st = Vec::new();
    statuses(&report, "", &mut st);
    let secure = |kind: &str| {
        st.iter()
            .filter(|(p, _)| p.ends_with(&format!("/{kind}")))
            .collect::<Vec<_>>()
    };
    let zone = secure("zone");
    assert!(
        !zone.is_empty() && zone.iter().all(|(_, s)| s == "SECURE"),
        "{zone:?}"
    );
    for kind in ["answer", "nodata", "dnskey"] {
        let all = secure(kind);
        assert!(!all.is_empty(), "no {kind} in the report");
        let bad: Vec<_> = all.iter().filter(|(_, s)| s != "SECURE").collect();
        assert!(bad.is_empty(), "{kind} not secure: {bad:?}");
    }
    let rrsigs: Vec<_> = st.iter().filter(|(p, _)| p.ends_with("/rrsig")).collect();
    assert!(rrsigs.len() > 10, "{rrsigs:?}");
    assert!(rrsigs.iter().all(|(_, s)| s == "VALID"), "{rrsigs:?}");
}
