//! Start-up checks of the secondary settings: a bad `--axfr-allow` or
//! `--tsig-key` stops cellns with a message naming the value, and hash
//! placement with secondaries configured is warned about (secondaries
//! cannot carry hashed tenants).

use crate::support::map;
use crate::support::server::{Server, serve_fails};

#[test]
fn bad_axfr_allow_values_stop_start_up_with_a_clear_error() {
    for (value, why) in [
        (
            "10.0.0.1/8",
            "host bits are set (the network is 10.0.0.0/8)",
        ),
        ("192.0.2.0/33", "prefix length"),
        ("ns1.example.com", "not an IP address"),
    ] {
        let (code, err) = serve_fails(&["--axfr-allow", value]);
        assert_ne!(code, 0, "{value}: {err}");
        assert!(
            err.contains(&format!("invalid --axfr-allow value `{value}`")) && err.contains(why),
            "{value}: {err}"
        );
    }
}

#[test]
fn bad_tsig_key_files_stop_start_up_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.key");
    let (code, err) = serve_fails(&["--tsig-key", missing.to_str().expect("utf-8")]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot read the TSIG key file"), "{err}");
    for (text, why) in [
        (
            "k. hmac-md5 c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LTEyMzQ=",
            "only hmac-sha256",
        ),
        ("k. hmac-sha256 not*base64", "not base64"),
        ("just-a-name", "expected 3"),
    ] {
        let path = dir.path().join("bad.key");
        std::fs::write(&path, text).expect("write key");
        let (code, err) = serve_fails(&["--tsig-key", path.to_str().expect("utf-8")]);
        assert_ne!(code, 0, "{text}");
        assert!(err.contains(why), "{text}: {err}");
    }
}

#[test]
fn hash_placement_with_secondaries_is_warned_about() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("map.toml");
    let text = map::xfr("v1", 'a').set("placement.unknown", "hash").toml();
    std::fs::write(&path, text).expect("write");
    let srv = Server::start(&[
        "--map",
        path.to_str().expect("utf-8"),
        "--axfr-allow",
        "127.0.0.1",
    ]);
    assert!(
        srv.logged("zone transfers cannot carry"),
        "no warning about hash placement:\n{}",
        srv.logs().text()
    );
    // Without secondaries there is nothing to warn about.
    let plain = Server::start(&["--map", path.to_str().expect("utf-8")]);
    assert!(!plain.logged("zone transfers cannot carry"));
}
