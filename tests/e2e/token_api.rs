//! The token API's contract over HTTP: every error status with its stable
//! code, caller authentication (an unauthenticated caller never gets a
//! token), rate limiting, start-up refusals, and the OpenAPI document.

use std::collections::BTreeSet;

use serde_json::json;

use crate::support::http::*;
use crate::support::server::{Server, serve_fails};
use crate::support::{RELOAD, python_json, repo, run_cli, wait_until};

#[test]
fn token_success_shape() {
    let s = TokenServer::start(&[]);
    let r = post_token(
        s.http(),
        Some(KEY),
        &json!({"tenant": "Acme", "subject": "user-42", "ttl_seconds": 900,
                "claims": {"plan": "gold", "exp": 1, "cell": "evil.example."}}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    let body = r.json();
    let keys: BTreeSet<&str> = body
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["token", "cell", "endpoint", "expires_at", "map_version"])
    );
    assert_eq!(body["cell"], "use1-a.cells.example.com");
    assert_eq!(body["endpoint"], "acme.cells.example.com");
    assert_eq!(body["map_version"], "example-1");

    let (header, claims) = decode_unverified(body["token"].as_str().unwrap());
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], s.kid.as_str());
    for c in [
        "iss",
        "aud",
        "sub",
        "iat",
        "nbf",
        "exp",
        "jti",
        "tenant",
        "cell",
        "cell_id",
        "region",
        "map_version",
    ] {
        assert!(claims.get(c).is_some(), "claim {c} missing: {claims}");
    }
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        900
    );
    assert_eq!(claims["tenant"], "acme");
    assert_eq!(claims["cell_id"], "use1-a");
    assert_eq!(claims["region"], "us-east-1");
    // Extra claims are namespaced: they never override registered ones.
    assert_eq!(claims["cell"], "use1-a.cells.example.com");
    assert_eq!(
        claims["ext"],
        json!({"plan": "gold", "exp": 1, "cell": "evil.example."})
    );
    assert_ne!(claims["exp"], 1);
    // expires_at is exp in RFC 3339.
    let exp = claims["exp"].as_i64().unwrap();
    let at = body["expires_at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == 20, "{at}");
    let jti1 = claims["jti"].as_str().unwrap().to_owned();
    let (_, again) = decode_unverified(mint(s.http(), "acme")["token"].as_str().unwrap());
    assert_ne!(again["jti"].as_str().unwrap(), jti1, "jti must be unique");
    assert!(exp > 0);
}

#[test]
fn token_errors_have_status_and_stable_code() {
    let s = TokenServer::start(&["--token-max-ttl", "600"]);
    let a = s.http();
    let auth = format!("Bearer {KEY}");
    let json_h = [
        ("Content-Type", "application/json"),
        ("Authorization", auth.as_str()),
    ];
    let post =
        |h: &[(&str, &str)], body: &[u8]| request(a, "POST", "/v1/tokens", h, Some(body), false);

    let cases: Vec<(&str, Resp, u16, &str)> = vec![
        (
            "malformed JSON",
            post(&json_h, b"{\"tenant\":"),
            400,
            "invalid_request",
        ),
        (
            "not an object",
            post(&json_h, b"[1,2]"),
            400,
            "invalid_request",
        ),
        (
            "unknown field",
            post(
                &json_h,
                br#"{"tenant":"acme","subject":"u","ttl_seconds":60,"admin":true}"#,
            ),
            400,
            "invalid_request",
        ),
        (
            "missing field",
            post(&json_h, br#"{"tenant":"acme","subject":"u"}"#),
            400,
            "invalid_request",
        ),
        (
            "wrong type",
            post(
                &json_h,
                br#"{"tenant":"acme","subject":"u","ttl_seconds":"60"}"#,
            ),
            400,
            "invalid_request",
        ),
        (
            "claims not an object",
            post(
                &json_h,
                br#"{"tenant":"acme","subject":"u","ttl_seconds":60,"claims":[1]}"#,
            ),
            400,
            "invalid_request",
        ),
        (
            "ttl above the cap",
            post_token(a, Some(KEY), &token_req("acme", 601)),
            400,
            "invalid_ttl",
        ),
        (
            "ttl zero",
            post_token(a, Some(KEY), &token_req("acme", 0)),
            400,
            "invalid_ttl",
        ),
        (
            "empty subject",
            post_token(
                a,
                Some(KEY),
                &json!({"tenant": "acme", "subject": "", "ttl_seconds": 60}),
            ),
            400,
            "invalid_subject",
        ),
        (
            "tenant not a label",
            post_token(a, Some(KEY), &token_req("a.b", 60)),
            400,
            "invalid_tenant",
        ),
        (
            "unknown tenant",
            post_token(a, Some(KEY), &token_req("nobody", 60)),
            404,
            "unknown_tenant",
        ),
        (
            "text/plain",
            post(
                &[("Content-Type", "text/plain"), ("Authorization", &auth)],
                br#"{}"#,
            ),
            415,
            "unsupported_media_type",
        ),
        (
            "no content type",
            post(&[("Authorization", &auth)], br#"{}"#),
            415,
            "unsupported_media_type",
        ),
        (
            "declared body too large",
            post(&json_h, &vec![b' '; 16 * 1024 + 1]),
            413,
            "body_too_large",
        ),
        (
            "chunked body too large",
            request(
                a,
                "POST",
                "/v1/tokens",
                &json_h,
                Some(&vec![b' '; 40 * 1024]),
                true,
            ),
            413,
            "body_too_large",
        ),
        ("unknown route", get(a, "/v1/nothing"), 404, "not_found"),
        (
            "wrong method",
            get(a, "/v1/tokens"),
            405,
            "method_not_allowed",
        ),
    ];
    for (what, r, status, code) in cases {
        assert_eq!(r.status, status, "{what}: {}", r.text());
        assert_eq!(r.error_code(), code, "{what}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
        assert!(
            !r.text().contains("eyJ"),
            "{what}: an error carries no token"
        );
    }
    // 405 says what is allowed (RFC 9110 §15.5.6).
    let r = get(a, "/v1/tokens");
    assert!(
        r.header("allow").is_some_and(|v| v.contains("POST")),
        "{:?}",
        r.headers
    );
    // The cap itself is accepted; a body just under the limit is parsed.
    assert_eq!(
        post_token(a, Some(KEY), &token_req("acme", 600)).status,
        200
    );
    let mut padded = token_req("acme", 60);
    padded["subject"] = json!("u");
    let text = padded.to_string();
    let body = format!("{}{}", " ".repeat(16 * 1024 - text.len()), text);
    assert_eq!(
        post(&json_h, body.as_bytes()).status,
        200,
        "a 16 KiB body is accepted"
    );
}

#[test]
fn token_unauthenticated_callers_never_get_a_token() {
    let s = TokenServer::start(&[]);
    let a = s.http();
    let body = token_req("acme", 60).to_string();
    // (what, extra headers, expected code)
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, &'a str);
    let cases: Vec<Case> = vec![
        ("no Authorization", vec![], "unauthenticated"),
        (
            "wrong scheme",
            vec![("Authorization", format!("Basic {KEY}"))],
            "unauthenticated",
        ),
        (
            "empty bearer",
            vec![("Authorization", "Bearer ".into())],
            "unauthenticated",
        ),
        (
            "wrong key",
            vec![("Authorization", "Bearer not-the-key".into())],
            "invalid_api_key",
        ),
        (
            "the stored hash as key",
            vec![(
                "Authorization",
                format!(
                    "Bearer sha256:{}",
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(KEY))
                ),
            )],
            "invalid_api_key",
        ),
        (
            "key with a suffix",
            vec![("Authorization", format!("Bearer {KEY}x"))],
            "invalid_api_key",
        ),
    ];
    for (what, extra, code) in cases {
        let mut h: Vec<(&str, &str)> = vec![("Content-Type", "application/json")];
        h.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
        let r = request(a, "POST", "/v1/tokens", &h, Some(body.as_bytes()), false);
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.error_code(), code, "{what}");
        let challenge = r.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
        assert!(!r.text().contains("eyJ"), "{what}");
    }
    // Authentication comes first: an unauthenticated caller learns nothing
    // about tenants (404) or request validity (400).
    let r = post_token(a, None, &token_req("nobody", 60));
    assert_eq!(r.status, 401);
    let r = post_token(a, Some("wrong"), &json!({"garbage": true}));
    assert_eq!(r.status, 401);
    // The other configured caller is accepted.
    assert_eq!(
        post_token(a, Some(KEY2), &token_req("acme", 60)).status,
        200
    );
}

#[test]
fn token_without_api_keys_refuses_everyone() {
    let server = Server::start(&[]);
    let a = server.http();
    assert!(
        server.logged("no --api-keys"),
        "a warning is logged at start"
    );
    assert!(
        server.logged("DEVELOPMENT SIGNING KEY"),
        "the dev key warning is loud"
    );
    for key in [None, Some(KEY), Some("")] {
        let r = post_token(a, key, &token_req("acme", 60));
        assert_eq!(r.status, 401, "{key:?}: {}", r.text());
    }
    // The JWKS is still served (the dev key).
    let r = get(a, "/.well-known/jwks.json");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["keys"].as_array().unwrap().len(), 1);
}

#[test]
fn token_rate_limit_per_caller() {
    let s = TokenServer::start(&["--rate-limit", "1", "--rate-burst", "3"]);
    let a = s.http();
    // The bucket holds 3 and refills one a second: of 10 requests sent back
    // to back at least 6 are refused whatever the machine's speed (each
    // request would have to take over a second for fewer).
    let mut ok = 0;
    let mut limited = None;
    for _ in 0..10 {
        let r = post_token(a, Some(KEY), &token_req("acme", 60));
        match r.status {
            200 => ok += 1,
            429 => limited = Some(r),
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    assert!(ok >= 3, "the burst is honoured ({ok} accepted)");
    let r = limited.expect("no request was rate limited");
    assert_eq!(r.error_code(), "rate_limited");
    let retry: u64 = r
        .header("retry-after")
        .expect("429 carries Retry-After")
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert!(ok < 10);
    // Another caller has its own bucket.
    assert_eq!(
        post_token(a, Some(KEY2), &token_req("acme", 60)).status,
        200
    );
    // Unauthenticated requests never reach (or drain) a bucket.
    assert_eq!(
        post_token(a, Some("wrong"), &token_req("acme", 60)).status,
        401
    );
}

#[test]
fn token_no_signing_key_is_503() {
    let s = TokenServer::start(&[]);
    assert_eq!(mint(s.http(), "acme")["cell"], "use1-a.cells.example.com");
    for e in std::fs::read_dir(&s.keys).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let mut last = None;
    let emptied = wait_until(RELOAD, || {
        let r = post_token(s.http(), Some(KEY), &token_req("acme", 60));
        let done = r.status == 503;
        last = Some(r);
        done
    });
    let r = last.unwrap();
    assert!(emptied, "still {}: {}", r.status, r.text());
    assert_eq!(r.error_code(), "no_signing_key");
    assert!(s.jwks_kids().is_empty());
    // A new key brings it back, without a restart.
    let (_, kid) = keygen(&s.keys, "ES256");
    assert!(
        wait_until(RELOAD, || {
            post_token(s.http(), Some(KEY), &token_req("acme", 60)).status == 200
        }),
        "a new key did not bring token issuance back"
    );
    let (h, _) = decode_unverified(mint(s.http(), "acme")["token"].as_str().unwrap());
    assert_eq!(h["kid"], kid.as_str());
    assert_eq!(h["alg"], "ES256");
}

#[test]
fn token_startup_refusals() {
    // The development key on a non-loopback address.
    let (code, _, err) = run_cli(&[
        "serve",
        "--dns-listen",
        "127.0.0.1:0",
        "--http-listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("development key") && err.contains("--allow-dev-key"),
        "{err}"
    );

    // A bad API key file names file and line.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("api-keys");
    std::fs::write(&bad, "# ok\nauth sha256:1234\n").unwrap();
    let (code, err) = serve_fails(&["--api-keys", bad.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains(&format!("{}:2:", bad.display())), "{err}");

    // An empty key directory.
    let empty = dir.path().join("keys");
    std::fs::create_dir(&empty).unwrap();
    let (code, err) = serve_fails(&["--signing-keys", empty.to_str().unwrap()]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no signing keys") && err.contains("cellns keygen"),
        "{err}"
    );
}

#[test]
fn token_openapi_documents_every_route() {
    let s = TokenServer::start(&[]);
    let r = get(s.http(), "/openapi.yaml");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/yaml"));
    let served = r.text();
    let in_repo = std::fs::read_to_string(repo().join("openapi/cellns.yaml")).unwrap();
    assert_eq!(
        served, in_repo,
        "the served document is the one in the repo"
    );

    // Parse it with a real YAML parser and list its operations.
    let documented: BTreeSet<(String, String)> = serde_json::from_value(python_json(
        "import json,sys,yaml; d=yaml.safe_load(open(sys.argv[1])); \
         assert d['openapi'].startswith('3.'), d['openapi']; \
         print(json.dumps([[m.upper(), p] for p, ops in d['paths'].items() for m in ops \
           if m in ('get','put','post','delete','patch','head','options')]))",
        &[&repo().join("openapi/cellns.yaml")],
    ))
    .expect("a list of [method, path]");
    let routed: BTreeSet<(String, String)> = cellns::http::route_table()
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(
        documented, routed,
        "openapi/cellns.yaml and the router disagree"
    );
    // And every routed GET is really wired.
    for (m, p) in &routed {
        if m == "GET" && !p.contains('{') {
            let st = get(s.http(), p).status;
            assert!(st != 404 && st != 405, "GET {p}: {st}");
        }
    }
}
