//! Who may transfer the zone, checked with kdig and dig: a source outside
//! `--axfr-allow` is REFUSED; with `--tsig-key`, an unsigned request is
//! REFUSED and a wrong secret or key name NOTAUTH with BADSIG or BADKEY
//! (RFC 8945); AXFR over UDP is FORMERR (RFC 5936 §4.2); the right key from
//! an allowed source gets the whole zone, signed (the clients verify it).

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

use crate::support::dns as s;
use crate::support::map::{self, XFR_ORIGIN as ORIGIN, XFR_RECORDS};
use crate::support::run_tool;
use crate::support::secondary::{KEY_NAME, SECRET, key_file};
use crate::support::server::Server;

/// Runs kdig or dig; stdout and stderr together.
fn run(tool: &str, args: &[String]) -> String {
    run_tool(tool, args).1
}

/// kdig `qtype` (AXFR, IXFR=serial) from `source` to `srv`, with `extra`
/// options.
fn kdig_xfr(srv: &Server, source: &str, qtype: &str, extra: &[&str]) -> String {
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
    args.extend([qtype.into(), ORIGIN.into()]);
    run("kdig", &args)
}

/// kdig's line for a transfer the server answered with `rcode`.
fn replied(rcode: &str) -> String {
    format!(";; ERROR: server replied with error '{rcode}'")
}

/// Records kdig printed as transferred (`;; Received N B (M messages, R records)`).
fn transferred_records(out: &str) -> Option<usize> {
    let line = out.lines().find(|l| l.starts_with(";; Received"))?;
    let (_, rest) = line.split_once("messages, ")?;
    rest.split_whitespace().next()?.parse().ok()
}

fn start(extra: &[&str]) -> (Server, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    std::fs::write(&path, map::xfr("v1", 'a').toml()).expect("write map");
    let mut args = vec!["--map", path.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    (Server::start(&args), dir)
}

#[test]
fn transfer_from_a_source_outside_axfr_allow_is_refused() {
    let (srv, _dir) = start(&["--axfr-allow", "127.0.0.2/32"]);
    let out = kdig_xfr(&srv, "127.0.0.1", "AXFR", &[]);
    assert!(out.contains(&replied("REFUSED")), "from 127.0.0.1:\n{out}");
    assert_eq!(transferred_records(&out), None, "{out}");
    // The allowed source gets it: the refusal was the ACL's doing.
    let out = kdig_xfr(&srv, "127.0.0.2", "AXFR", &[]);
    let records = transferred_records(&out).unwrap_or_else(|| panic!("no transfer:\n{out}"));
    assert_eq!(records, XFR_RECORDS, "the whole zone:\n{out}");
    // IXFR: the same rules, answered REFUSED (not a closed connection or
    // another error), with kdig and ISC dig.
    let out = kdig_xfr(&srv, "127.0.0.1", "IXFR=1", &[]);
    assert!(
        out.contains(&replied("REFUSED")),
        "IXFR from 127.0.0.1:\n{out}"
    );
    assert_eq!(transferred_records(&out), None, "{out}");
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
            ORIGIN.into(),
        ],
    );
    // dig prints no rcode for a refused transfer, only this.
    assert!(out.contains("; Transfer failed."), "{out}");
    assert!(!out.contains("XFR size"), "{out}");
    // And the server is still there.
    assert!(
        s::serial(srv.dns, ORIGIN).is_some(),
        "alive after the refusals"
    );
}

#[test]
fn transfer_without_the_right_tsig_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = key_file(dir.path());
    let (srv, _map) = start(&[
        "--axfr-allow",
        "127.0.0.0/8",
        "--tsig-key",
        key.to_str().expect("utf-8 path"),
    ]);
    let right = format!("hmac-sha256:{}:{}", KEY_NAME, SECRET);
    let wrong_secret = format!(
        "hmac-sha256:{}:d3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmctd3Jvbmc=",
        KEY_NAME
    );
    let wrong_name = format!("hmac-sha256:someone-else.:{}", SECRET);

    let out = kdig_xfr(&srv, "127.0.0.1", "AXFR", &["-y", &wrong_secret]);
    assert!(out.contains(&replied("BADSIG")), "wrong secret:\n{out}");
    assert_eq!(transferred_records(&out), None, "{out}");

    let out = kdig_xfr(&srv, "127.0.0.1", "AXFR", &["-y", &wrong_name]);
    assert!(out.contains(&replied("BADKEY")), "wrong key name:\n{out}");
    assert_eq!(transferred_records(&out), None, "{out}");

    let out = kdig_xfr(&srv, "127.0.0.1", "AXFR", &[]);
    assert!(out.contains(&replied("REFUSED")), "unsigned:\n{out}");
    assert_eq!(transferred_records(&out), None, "{out}");

    // The right key: the whole zone, every message's TSIG verified by kdig
    // (it fails the transfer otherwise), and by dig.
    let out = kdig_xfr(&srv, "127.0.0.1", "AXFR", &["-y", &right]);
    let records = transferred_records(&out).unwrap_or_else(|| panic!("no transfer:\n{out}"));
    assert_eq!(records, XFR_RECORDS, "the whole zone:\n{out}");
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
            ORIGIN.into(),
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
        &s::query(3, ORIGIN, RecordType::AXFR, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.answers.is_empty());
    let m = s::exchange(
        srv.dns,
        s::Transport::Udp,
        &s::query(4, ORIGIN, RecordType::IXFR, None),
    );
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::SOA);
}
