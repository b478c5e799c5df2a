//! Tokens checked by independent verifiers with keys fetched over HTTP:
//! PyJWT, and `cellns verify-token`; key rotation without restart.

use std::time::Duration;

use crate::common;
use crate::token_support::*;

const CELL: &str = "use1-a.cells.example.com";

#[test]
fn token_verified_by_pyjwt_with_jwks_over_http() {
    for alg in ["EdDSA", "ES256"] {
        let s = TokenServer::start(&[]);
        // The newest key signs: add one of the algorithm under test.
        let (_, kid) = keygen(&s.keys, alg);
        assert!(
            common::wait_until(Duration::from_secs(30), || s.jwks_kids().contains(&kid)),
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
    let (code, _, err) = common::run_cli(&[
        "verify-token",
        "--jwks",
        &s.jwks_url(),
        "--cell",
        CELL,
        "--audience",
        "x",
        &token,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("wrong_audience"), "{err}");
    let (code, _, err) = common::run_cli(&[
        "verify-token",
        "--jwks",
        &s.jwks_url(),
        "--cell",
        CELL,
        "--issuer",
        "x",
        &token,
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("wrong_issuer"), "{err}");
    let (code, _, err) = verify_cli(&s.jwks_url(), CELL, "not.a.token");
    assert_eq!(code, 1);
    assert!(err.contains("malformed"), "{err}");
}

#[test]
fn token_key_rotation_without_restart() {
    let s = TokenServer::start(&[]);
    let old_kid = s.kid.clone();
    let old_file = std::fs::read_dir(&s.keys)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let t_old = mint(s.http(), "acme")["token"].as_str().unwrap().to_owned();
    assert_eq!(decode_unverified(&t_old).0["kid"], old_kid.as_str());

    // A new key: published and signing, the old one still published.
    let (_, new_kid) = keygen(&s.keys, "EdDSA");
    assert!(
        common::wait_until(Duration::from_secs(30), || {
            let (h, _) = decode_unverified(mint(s.http(), "acme")["token"].as_str().unwrap());
            h["kid"] == new_kid.as_str()
        }),
        "new tokens do not carry the new kid"
    );
    let kids = s.jwks_kids();
    assert!(
        kids.contains(&old_kid) && kids.contains(&new_kid),
        "{kids:?}"
    );
    assert!(s.server.logged("signing keys changed"));
    let t_new = mint(s.http(), "acme")["token"].as_str().unwrap().to_owned();

    // Tokens of both keys verify, with PyJWT and with cellns.
    for t in [&t_old, &t_new] {
        let (code, _, err) = pyjwt_verify(&s.jwks_url(), t, "cells", "cellns");
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = verify_cli(&s.jwks_url(), CELL, t);
        assert_eq!(code, 0, "{err}");
    }

    // The old key's file removed: its tokens stop verifying, new ones do.
    std::fs::remove_file(&old_file).unwrap();
    assert!(
        common::wait_until(Duration::from_secs(30), || !s
            .jwks_kids()
            .contains(&old_kid)),
        "the removed key is still published"
    );
    assert_eq!(s.jwks_kids(), vec![new_kid.clone()]);
    let (code, _, err) = verify_cli(&s.jwks_url(), CELL, &t_old);
    assert_eq!(code, 1);
    assert!(err.contains("unknown_kid"), "{err}");
    let (code, _, err) = pyjwt_verify(&s.jwks_url(), &t_old, "cells", "cellns");
    assert_eq!(code, 1, "PyJWT still accepts the removed key: {err}");
    let (code, _, err) = verify_cli(&s.jwks_url(), CELL, &t_new);
    assert_eq!(code, 0, "{err}");
}
