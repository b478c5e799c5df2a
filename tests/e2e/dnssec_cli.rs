//! The DNSSEC commands and flags: `cellns dnssec keygen` writes a private
//! key file with its role and timing, `cellns dnssec ds` prints what
//! ldns-key2ds computes from the DNSKEY the server publishes, `settime`
//! reschedules a key; `serve --dnssec-keys` refuses to start with zone
//! transfers or a bad key directory, shows its keys in `/v1/dnssec` and
//! the metrics, and takes a key added while it serves as a new zone
//! version.

use std::path::Path;
use std::process::Command;

use hickory_proto::rr::RecordType;

use crate::support::dns::{serial, try_query};
use crate::support::http::{api_keys_file, get_auth, scrape};
use crate::support::server::{Launch, serve_fails};
use crate::support::table::ORIGIN;
use crate::support::{
    RELOAD, dnssec_ds, dnssec_keygen, example_map, require_tool, run_cli, wait_until,
};

fn key_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("read the key directory")
        .map(|e| e.expect("entry").path())
        .collect();
    v.sort();
    v
}

#[test]
fn keygen_writes_a_private_key_with_its_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let tag = dnssec_keygen(
        &keys,
        &[
            "--role",
            "ksk",
            "--algorithm",
            "ed25519",
            "--publish",
            "2026-01-01T00:00:00Z",
            "--activate",
            "2026-01-02T00:00:00Z",
            "--inactive",
            "2036-01-01T00:00:00Z",
        ],
    );
    let files = key_files(&keys);
    assert_eq!(files.len(), 1);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&files[0])
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the key file is private");
        let dmode = std::fs::metadata(&keys).expect("stat").permissions().mode();
        assert_eq!(dmode & 0o777, 0o700, "the key directory is private");
    }
    let text = std::fs::read_to_string(&files[0]).expect("read key");
    for line in [
        "role = \"ksk\"",
        "algorithm = \"ed25519\"",
        &format!("key_tag = {tag}"),
        "publish = \"2026-01-01T00:00:00Z\"",
        "activate = \"2026-01-02T00:00:00Z\"",
        "inactive = \"2036-01-01T00:00:00Z\"",
        "# delete = (never)",
        "-----BEGIN PRIVATE KEY-----",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }
    // OpenSSL reads the private keys past the header lines.
    dnssec_keygen(&keys, &[]);
    for file in key_files(&keys) {
        let header = std::fs::read_to_string(&file).expect("read key");
        let want = if header.contains("algorithm = \"ed25519\"") {
            "ED25519"
        } else {
            "prime256v1"
        };
        let out = Command::new(require_tool("openssl"))
            .args(["pkey", "-noout", "-text", "-in"])
            .arg(&file)
            .output()
            .expect("run openssl");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(want),
            "{}: {text}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // Bad input: a clear error, nothing written.
    for (args, want) in [
        (vec!["--publish", "tomorrow"], "--publish"),
        (
            vec!["--publish", "+2h", "--activate", "+1h"],
            "before publish",
        ),
        (vec!["--algorithm", "rsasha256"], "rsasha256"),
        (vec!["--role", "boss"], "boss"),
    ] {
        let out = keys.to_str().expect("utf-8");
        let mut all = vec!["dnssec", "keygen", "--out", out];
        all.extend(args.iter().copied());
        let (code, stdout, stderr) = run_cli(&all);
        assert_ne!(code, 0, "{all:?}: {stdout}");
        assert!(stderr.contains(want), "{all:?}: {stderr}");
    }
    assert_eq!(key_files(&keys).len(), 2, "a refused keygen wrote nothing");
}

#[test]
fn ds_matches_ldns_and_follows_the_schedule() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let csk = dnssec_keygen(&keys, &[]);
    let ds = dnssec_ds(&keys, "cells.example.com");
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert!(
        ds[0].starts_with(&format!("cells.example.com. IN DS {csk} 13 2 ")),
        "{ds:?}"
    );

    // ldns computes the same DS from the DNSKEY the server publishes.
    let map = dir.path().join("map.toml");
    std::fs::copy(example_map(), &map).expect("copy map");
    let srv = Launch::new(&[
        "--map",
        map.to_str().expect("utf-8"),
        "--dnssec-keys",
        keys.to_str().expect("utf-8"),
    ])
    .start();
    let m = try_query(srv.dns, ORIGIN, RecordType::DNSKEY).expect("DNSKEY");
    let dnskey = m
        .answers
        .iter()
        .find(|r| r.record_type() == RecordType::DNSKEY)
        .expect("a DNSKEY");
    let keyfile = dir.path().join("Kcells.key");
    std::fs::write(
        &keyfile,
        format!("{} {} IN DNSKEY {}\n", dnskey.name, dnskey.ttl, dnskey.data),
    )
    .expect("write key file");
    let out = Command::new(require_tool("ldns-key2ds"))
        .args(["-n", "-2"])
        .arg(&keyfile)
        .output()
        .expect("run ldns-key2ds");
    let theirs = String::from_utf8_lossy(&out.stdout);
    let field = |s: &str| -> Vec<String> {
        let v: Vec<String> = s.split_whitespace().map(str::to_ascii_lowercase).collect();
        v[v.len() - 4..].to_vec()
    };
    assert_eq!(field(&ds[0]), field(&theirs), "ours {ds:?}, ldns {theirs}");

    // A second CSK published in an hour, active in two: before it is
    // published it has no DS; after, both do; once the first is inactive,
    // only the second.
    let next = dnssec_keygen(&keys, &["--publish", "+1h", "--activate", "+2h"]);
    let (code, stdout, _) = run_cli(&[
        "dnssec",
        "settime",
        keys.to_str().expect("utf-8"),
        &csk.to_string(),
        "--inactive",
        "+2h",
        "--delete",
        "+3h",
    ]);
    assert_eq!(code, 0, "{stdout}");
    assert!(stdout.contains("now active"), "{stdout}");
    let at = |when: &str| -> Vec<String> {
        let (code, stdout, stderr) = run_cli(&[
            "dnssec",
            "ds",
            keys.to_str().expect("utf-8"),
            ORIGIN,
            "--at",
            when,
        ]);
        assert_eq!(code, 0, "{stderr}");
        stdout
            .lines()
            .map(|l| l.split_whitespace().nth(3).expect("tag").to_owned())
            .collect()
    };
    assert_eq!(at("now"), [csk.to_string()]);
    let mut both = at("+90m");
    both.sort();
    let mut want = vec![csk.to_string(), next.to_string()];
    want.sort();
    assert_eq!(both, want);
    assert_eq!(at("+150m"), [next.to_string()]);

    // No key wants a DS (only a ZSK): exit 1, nothing on stdout.
    let zsk_only = dir.path().join("zsk");
    dnssec_keygen(&zsk_only, &["--role", "zsk"]);
    let (code, stdout, stderr) =
        run_cli(&["dnssec", "ds", zsk_only.to_str().expect("utf-8"), ORIGIN]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stdout.is_empty());
    assert!(stderr.contains("no key should have a DS"), "{stderr}");
}

#[test]
fn serve_refuses_transfers_and_bad_key_directories() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    dnssec_keygen(&keys, &[]);
    let k = keys.to_str().expect("utf-8");
    for extra in [
        ["--axfr-allow", "127.0.0.1/32"],
        ["--notify", "127.0.0.1:53000"],
    ] {
        let mut args = vec!["--dnssec-keys", k];
        args.extend(extra);
        let (code, stderr) = serve_fails(&args);
        assert_ne!(code, 0);
        assert!(
            stderr.contains("--dnssec-keys cannot be combined with --axfr-allow or --notify")
                && stderr.contains("list the tenants"),
            "{stderr}"
        );
    }
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let (code, stderr) = serve_fails(&["--dnssec-keys", empty.to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("no DNSSEC keys"), "{stderr}");
    let bad = dir.path().join("bad");
    std::fs::create_dir(&bad).expect("mkdir");
    std::fs::write(bad.join("dnssec-1-1.pem"), "role = \"csk\"\n").expect("write");
    let (code, stderr) = serve_fails(&["--dnssec-keys", bad.to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(stderr.contains("dnssec-1-1.pem:"), "{stderr}");
}

#[test]
fn the_signer_shows_its_keys_and_follows_the_directory() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    let first = dnssec_keygen(&keys, &[]);
    let api = api_keys_file(dir.path());
    let srv = Launch::new(&[
        "--dnssec-keys",
        keys.to_str().expect("utf-8"),
        "--api-keys",
        api.to_str().expect("utf-8"),
    ])
    .start();
    let http = srv.http();

    let v = get_auth(http, "/v1/dnssec").json();
    assert_eq!(v["signing"], true, "{v}");
    let k = &v["keys"][0];
    assert_eq!(k["tag"], first, "{v}");
    assert_eq!(k["role"], "csk");
    assert_eq!(k["state"], "active");
    assert_eq!(k["signs"], "zone and keys");
    assert!(k["ds"].as_str().is_some_and(|d| d.contains(" DS ")), "{k}");

    // Signed answers, twice each: the second from the cache.
    for _ in 0..2 {
        let mut q = crate::support::dns::query(
            crate::support::dns::next_id(),
            "acme.cells.example.com.",
            RecordType::A,
            Some(1232),
        );
        if let Some(e) = q.edns.as_mut() {
            e.set_dnssec_ok(true);
        }
        let m = crate::support::dns::exchange(srv.dns, crate::support::dns::Transport::Udp, &q);
        assert!(
            m.answers
                .iter()
                .any(|r| r.record_type() == RecordType::RRSIG),
            "{m}"
        );
    }
    let metrics = scrape(http);
    assert_eq!(
        metrics.value(
            "cellns_dnssec_keys",
            &[("role", "csk"), ("state", "active")]
        ),
        1.0
    );
    assert!(metrics.value("cellns_dnssec_cache_hits_total", &[]) >= 1.0);
    assert!(metrics.value("cellns_dnssec_signatures_total", &[("result", "ok")]) >= 1.0);
    assert!(metrics.value("cellns_dnssec_cache_entries", &[]) >= 1.0);

    // A key added while serving: published within a few seconds, as a new
    // zone version (the serial goes up).
    let before = serial(srv.dns, ORIGIN).expect("serial");
    let second = dnssec_keygen(&keys, &["--activate", "+1d"]);
    let published = wait_until(RELOAD, || {
        try_query(srv.dns, ORIGIN, RecordType::DNSKEY).is_some_and(|m| {
            m.answers
                .iter()
                .filter(|r| r.record_type() == RecordType::DNSKEY)
                .count()
                == 2
        })
    });
    assert!(published, "the new key was not published");
    assert!(serial(srv.dns, ORIGIN).expect("serial") > before);
    let v = get_auth(http, "/v1/dnssec").json();
    let states: Vec<(u64, String)> = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| {
            (
                k["tag"].as_u64().expect("tag"),
                k["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect();
    assert!(
        states.contains(&(u64::from(second), "published".to_owned())),
        "{v}"
    );
    assert!(
        states.contains(&(u64::from(first), "active".to_owned())),
        "{v}"
    );
    assert!(srv.logged("DNSSEC keys changed: new zone version"));

    // Unsigned servers say so.
    let plain = Launch::new(&["--api-keys", api.to_str().expect("utf-8")]).start();
    let r = get_auth(plain.http(), "/v1/dnssec");
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "dnssec_off");
}
