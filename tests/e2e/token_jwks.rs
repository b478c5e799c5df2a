//! Tokens checked by independent verifiers with keys fetched over HTTP:
//! PyJWT, and `cellns verify-token`; key rotation without restart, on the
//! server's one-second rescan.

use crate::support::http::*;
use crate::support::{RELOAD, parse_utc, run_cli, unix_now, wait_until};

/// How long after a key file changed the server may log the new key set:
/// it rescans the directory once a second (README: "takes effect within a
/// second"), plus a second for a loaded machine to schedule the rescan.
const RESCAN: f64 = 2.0;

const CELL: &str = "use1-a.cells.example.com";

#[test]
fn token_verified_by_pyjwt_with_jwks_over_http() {
    for alg in ["EdDSA", "ES256"] {
        let s = TokenServer::start(&[]);
        // The newest key signs: add one of the algorithm under test.
        let (_, kid) = keygen(&s.keys, alg);
        assert!(
            wait_until(RELOAD, || s.jwks_kids().contains(&kid)),
            "the new key was not published"
        );
        let jwks = get(s.http(), "/.well-known/jwks.json");
        assert_eq!(jwks.header("cache-control"), Some("public, max-age=60"));
        assert_eq!(jwks.header("content-type"), Some("application/json"));

        let body = mint(s.http(), "acme");
        let token = body["token"].as_str().unwrap();
        let (h, _) = decode_unverified(token);
        assert_eq!(h["kid"], kid.as_str());

        let (code, out, err) = pyjwt_verify(&s.jwks_url(), token, "cells", "cellns");
        assert_eq!(code, 0, "PyJWT rejected a {alg} token: {err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["alg"], alg);
        assert_eq!(v["claims"]["cell"], CELL);
        assert_eq!(v["claims"]["tenant"], "acme");
        assert_eq!(v["claims"]["map_version"], body["map_version"]);

        // The check has teeth: PyJWT refuses a tampered token and the wrong audience.
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let (_, mut claims) = decode_unverified(token);
        claims["cell"] = "use1-b.cells.example.com".into();
        use base64::Engine as _;
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims.to_string());
        let (code, _, err) = pyjwt_verify(&s.jwks_url(), &parts.join("."), "cells", "cellns");
        assert_eq!(code, 1, "PyJWT accepted a tampered token");
        assert!(err.contains("Signature"), "{err}");
        let (code, _, _) = pyjwt_verify(&s.jwks_url(), token, "other", "cellns");
        assert_eq!(code, 1, "PyJWT accepted the wrong audience");

        // And cellns verify-token agrees.
        let (code, out, err) = verify_cli(&s.jwks_url(), CELL, token);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("\"tenant\": \"acme\""), "{out}");
    }
}

#[test]
fn token_verify_cli_distinct_errors() {
    let s = TokenServer::start(&[]);
    let token = mint(s.http(), "acme")["token"].as_str().unwrap().to_owned();
    let (code, _, err) = verify_cli(&s.jwks_url(), "use1-b.cells.example.com", &token);
    assert_eq!(code, 1);
    assert!(
        err.contains("wrong_cell") && err.contains("refresh"),
        "{err}"
    );
    for (flag, code_name) in [
        ("--audience", "wrong_audience"),
        ("--issuer", "wrong_issuer"),
    ] {
        let (code, _, err) = run_cli(&[
            "verify-token",
            "--jwks",
            &s.jwks_url(),
            "--cell",
            CELL,
            flag,
            "x",
            &token,
        ]);
        assert_eq!(code, 1, "{flag} x: {err}");
        assert!(err.contains(code_name), "{flag} x: {err}");
    }
    let (code, _, err) = verify_cli(&s.jwks_url(), CELL, "not.a.token");
    assert_eq!(code, 1);
    assert!(err.contains("malformed"), "{err}");
}

/// Asserts that the server logged its `n`th "signing keys changed" (with
/// `published` kids) within [`RESCAN`] of `changed_at` (seconds since the
/// epoch, taken right after the key directory changed).
#[track_caller]
fn assert_rescanned(s: &TokenServer, n: usize, changed_at: f64, published: &[&str]) {
    let line = s
        .server
        .logs()
        .wait_for_nth("INFO", "signing keys changed", n, RELOAD)
        .unwrap_or_else(|| panic!("key change {n} not logged:\n{}", s.server.logs().text()));
    let at = line["timestamp"]
        .as_str()
        .and_then(parse_utc)
        .unwrap_or_else(|| panic!("no timestamp: {line}"));
    assert!(
        at - changed_at <= RESCAN,
        "the key directory changed at {changed_at:.3}, the server noticed at {at:.3}: \
         {:.3} s, over the 1 s rescan cadence (+1 s slack): {line}",
        at - changed_at
    );
    let mut kids: Vec<&str> = line["published"]
        .as_str()
        .map(|p| {
            p.trim_matches(['[', ']'])
                .split(", ")
                .map(|k| k.trim_matches('"'))
                .collect()
        })
        .unwrap_or_default();
    kids.sort_unstable();
    let mut want = published.to_vec();
    want.sort_unstable();
    assert_eq!(kids, want, "published kids: {line}");
}

#[test]
fn token_key_rotation_without_restart() {
    let s = TokenServer::start(&[]);
    let old_kid = s.kid.clone();
    let old_file = std::fs::read_dir(&s.keys)
        .expect("key directory")
        .next()
        .expect("one key")
        .expect("entry")
        .path();
    let t_old = mint(s.http(), "acme")["token"]
        .as_str()
        .expect("token")
        .to_owned();
    assert_eq!(decode_unverified(&t_old).0["kid"], old_kid.as_str());

    // A new key: noticed on the next rescan, published and signing, the
    // old one still published.
    let (_, new_kid) = keygen(&s.keys, "EdDSA");
    assert_rescanned(&s, 1, unix_now(), &[&old_kid, &new_kid]);
    let (h, _) = decode_unverified(mint(s.http(), "acme")["token"].as_str().expect("token"));
    assert_eq!(h["kid"], new_kid.as_str(), "new tokens carry the new kid");
    let kids = s.jwks_kids();
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    let t_new = mint(s.http(), "acme")["token"]
        .as_str()
        .expect("token")
        .to_owned();

    // Tokens of both keys verify, with PyJWT and with cellns.
    for t in [&t_old, &t_new] {
        let (code, _, err) = pyjwt_verify(&s.jwks_url(), t, "cells", "cellns");
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = verify_cli(&s.jwks_url(), CELL, t);
        assert_eq!(code, 0, "{err}");
    }

    // The old key's file removed: noticed on the next rescan; its tokens
    // stop verifying, new ones do.
    std::fs::remove_file(&old_file).expect("remove the old key");
    assert_rescanned(&s, 2, unix_now(), &[&new_kid]);
    assert_eq!(s.jwks_kids(), vec![new_kid.clone()]);
    let (code, _, err) = verify_cli(&s.jwks_url(), CELL, &t_old);
    assert_eq!(code, 1);
    assert!(err.contains("unknown_kid"), "{err}");
    let (code, _, err) = pyjwt_verify(&s.jwks_url(), &t_old, "cells", "cellns");
    assert_eq!(code, 1, "PyJWT still accepts the removed key: {err}");
    let (code, _, err) = verify_cli(&s.jwks_url(), CELL, &t_new);
    assert_eq!(code, 0, "{err}");
}
