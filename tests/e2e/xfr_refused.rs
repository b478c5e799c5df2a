//! Who may transfer the zone, checked with kdig and dig: a source outside
//! `--axfr-allow` is REFUSED; with `--tsig-key`, an unsigned request is
//! REFUSED and a wrong key or secret NOTAUTH (RFC 8945); AXFR over UDP is
//! FORMERR (RFC 5936 §4.2); the right key from an allowed source gets the
//! zone, signed (the clients verify it).

use std::process::Command;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::common::{Server, require_tool};
use crate::dns_support as s;
use crate::xfr_support as x;

/// Runs kdig or dig; stdout and stderr together.
fn run(tool: &str, args: &[String]) -> String {
    let out = Command::new(require_tool(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// kdig AXFR from `source` to `srv`, with `extra` options.
fn kdig_axfr(srv: &Server, source: &str, extra: &[&str]) -> String {
    let mut args: Vec<String> = vec![
        "-b".into(),
        source.into(),
        format!("@{}", srv.dns.ip()),
        "-p".into(),
        srv.dns.port().to_string(),
        "+timeout=5".into(),
        "+retry=0".into(),
    ];
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    args.extend(["AXFR".into(), x::ORIGIN.into()]);
    run("kdig", &args)
}

/// Records kdig printed as transferred (`;; Received N B (M messages, R records)`).
fn transferred_records(out: &str) -> Option<usize> {
    let line = out.lines().find(|l| l.starts_with(";; Received"))?;
    let (_, rest) = line.split_once("messages, ")?;
    rest.split_whitespace().next()?.parse().ok()
}

fn start(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("map.toml");
    std::fs::write(&map, x::map("v1", 'a')).expect("write map");
    let mut args = vec!["--map", map.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    (Server::start(&args), dir)
}

#[test]
fn transfer_from_a_source_outside_axfr_allow_is_refused() {
    let (srv, _dir) = start(&["--axfr-allow", "127.0.0.2/32"]);
    let out = kdig_axfr(&srv, "127.0.0.1", &[]);
    assert!(out.contains("REFUSED"), "from 127.0.0.1:\n{out}");
    assert_eq!(transferred_records(&out), None, "{out}");
    // The allowed source gets it: the refusal was the ACL's doing.
    let out = kdig_axfr(&srv, "127.0.0.2", &[]);
    // 2 SOA, NS, glue, 6 cell host records, 3 + 1 + 1 + 30×(3 or 2).
    let records = transferred_records(&out).unwrap_or_else(|| panic!("no transfer:\n{out}"));
    assert!(records > 90, "{records} records:\n{out}");
    // dig, IXFR: the same rules.
    let out = run(
        "dig",
        &[
            "-b".into(),
            "127.0.0.1".into(),
            format!("@{}", srv.dns.ip()),
            "-p".into(),
            srv.dns.port().to_string(),
            "+tcp".into(),
            "+tries=1".into(),
            "IXFR=1".into(),
            x::ORIGIN.into(),
        ],
    );
    assert!(
        out.contains("REFUSED") || out.contains("Transfer failed"),
        "{out}"
    );
    assert!(!out.contains("XFR size"), "{out}");
}

#[test]
fn transfer_without_the_right_tsig_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = x::key_file(dir.path());
    let (srv, _map) = start(&[
        "--axfr-allow",
        "127.0.0.0/8",
        "--tsig-key",
        key.to_str().expect("utf-8 path"),
    ]);
    let right = format!("hmac-sha256:{}:{}", x::KEY_NAME, x::SECRET);
    let wrong_secret = format!(
        "hmac-sha256:{}:d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=",
        x::KEY_NAME
    );
    let wrong_name = format!("hmac-sha256:someone-else.:{}", x::SECRET);

    let out = kdig_axfr(&srv, "127.0.0.1", &["-y", &wrong_secret]);
    assert!(
        out.contains("BADSIG") || out.contains("NOTAUTH"),
        "wrong secret:\n{out}"
    );
    assert_eq!(transferred_records(&out), None, "{out}");

    let out = kdig_axfr(&srv, "127.0.0.1", &["-y", &wrong_name]);
    assert!(
        out.contains("BADKEY") || out.contains("NOTAUTH"),
        "wrong key name:\n{out}"
    );
    assert_eq!(transferred_records(&out), None, "{out}");

    let out = kdig_axfr(&srv, "127.0.0.1", &[]);
    assert!(out.contains("REFUSED"), "unsigned:\n{out}");
    assert_eq!(transferred_records(&out), None, "{out}");

    // The right key: the whole zone, every message's TSIG verified by kdig
    // (it fails the transfer otherwise), and by dig.
    let out = kdig_axfr(&srv, "127.0.0.1", &["-y", &right]);
    let records = transferred_records(&out).unwrap_or_else(|| panic!("no transfer:\n{out}"));
    assert!(records > 90, "{records} records:\n{out}");
    assert!(!out.contains("WARNING"), "{out}");
    let out = run(
        "dig",
        &[
            format!("@{}", srv.dns.ip()),
            "-p".into(),
            srv.dns.port().to_string(),
            "-y".into(),
            right.clone(),
            "AXFR".into(),
            x::ORIGIN.into(),
        ],
    );
    assert!(out.contains("XFR size"), "dig with the key:\n{out}");
    assert!(!out.contains("failed"), "dig with the key:\n{out}");
}

#[test]
fn axfr_over_udp_is_formerr_and_ixfr_over_udp_is_the_soa() {
    let (srv, _dir) = start(&["--axfr-allow", "127.0.0.1"]);
    let m = s::exchange(
        srv.dns,
        s::Transport::Udp,
        &s::query(3, x::ORIGIN, RecordType::AXFR, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.answers.is_empty());
    let m = s::exchange(
        srv.dns,
        s::Transport::Udp,
        &s::query(4, x::ORIGIN, RecordType::IXFR, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
}
