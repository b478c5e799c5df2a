//! The Verifier's checks, one test per failure, with tokens signed here by
//! keys made from fixed bytes (the server's own tokens are verified by the
//! server crate's tests).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};

use super::*;
use crate::claims::MAX_NUMERIC_DATE;

const CELL: &str = "use1-a.cells.example.com";
/// The time the tests verify at, Unix seconds.
const NOW: u64 = 1_800_000_000;

enum Signer {
    Ed(ed25519_dalek::SigningKey),
    Ec(p256::ecdsa::SigningKey),
}

/// One signing key, and the public key set that publishes it.
struct Fixture {
    signer: Signer,
    kid: String,
    keys: PublicKeySet,
}

fn fixture(alg: Alg, seed: u8) -> Fixture {
    let signer = match alg {
        Alg::EdDSA => Signer::Ed(ed25519_dalek::SigningKey::from_bytes(&[seed; 32])),
        Alg::ES256 => Signer::Ec(p256::ecdsa::SigningKey::from_slice(&[seed; 32]).unwrap()),
    };
    let mut f = Fixture {
        signer,
        kid: format!("{}-{seed}", alg.as_str()),
        keys: PublicKeySet::default(),
    };
    f.keys = PublicKeySet::from_jwks(jwks(&[f.jwk()]).as_bytes()).unwrap();
    f
}

fn jwks(keys: &[Value]) -> String {
    json!({ "keys": keys }).to_string()
}

fn expect() -> Expectations {
    Expectations::new("cellns", "cells", CELL).unwrap()
}

fn b64(b: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

impl Fixture {
    fn alg(&self) -> Alg {
        match self.signer {
            Signer::Ed(_) => Alg::EdDSA,
            Signer::Ec(_) => Alg::ES256,
        }
    }

    fn jwk(&self) -> Value {
        match &self.signer {
            Signer::Ed(k) => json!({
                "kty": "OKP", "crv": "Ed25519", "x": b64(k.verifying_key().as_bytes()),
                "kid": self.kid, "alg": "EdDSA", "use": "sig"
            }),
            Signer::Ec(k) => {
                let p = k.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC", "crv": "P-256", "x": b64(p.x().unwrap()), "y": b64(p.y().unwrap()),
                    "kid": self.kid, "alg": "ES256", "use": "sig"
                })
            }
        }
    }

    /// The raw JWS signature of `input`; ES256 in its low-S form, as the
    /// cellns issuer signs.
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        match &self.signer {
            Signer::Ed(k) => {
                use ed25519_dalek::Signer as _;
                k.sign(input).to_bytes().to_vec()
            }
            Signer::Ec(k) => {
                use p256::ecdsa::signature::Signer as _;
                let sig: p256::ecdsa::Signature = k.sign(input);
                sig.normalize_s().unwrap_or(sig).to_bytes().to_vec()
            }
        }
    }

    /// Signs arbitrary header and payload JSON.
    fn sign_raw(&self, header: &Value, payload: &Value) -> String {
        let mut t = b64(header.to_string());
        t.push('.');
        t.push_str(&b64(payload.to_string()));
        let sig = self.sign(t.as_bytes());
        t.push('.');
        t.push_str(&b64(sig));
        t
    }

    fn header(&self) -> Value {
        json!({"alg": self.alg().as_str(), "typ": "JWT", "kid": self.kid})
    }

    /// The claims of a token issued at `iat` for `ttl` seconds.
    fn payload_at(&self, iat: u64, ttl: u64) -> Value {
        json!({
            "iss": "cellns", "aud": "cells", "sub": "u", "iat": iat, "nbf": iat,
            "exp": iat + ttl, "jti": "j", "tenant": "acme", "cell": CELL,
            "cell_id": "use1-a", "region": "us-east-1", "map_version": "v"
        })
    }

    fn payload(&self) -> Value {
        self.payload_at(NOW, 600)
    }

    fn mint_with(&self, payload: &Value) -> String {
        self.sign_raw(&self.header(), payload)
    }

    fn mint(&self) -> String {
        self.mint_with(&self.payload())
    }

    fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        self.keys.verify_at(token, &expect(), NOW)
    }
}

#[test]
fn valid_tokens_verify_for_both_algorithms() {
    for alg in [Alg::EdDSA, Alg::ES256] {
        let f = fixture(alg, 1);
        let claims = f.verify(&f.mint()).unwrap();
        assert_eq!(claims.cell, CELL);
        assert_eq!(claims.tenant, "acme");
        assert_eq!(claims.cell_id, "use1-a");
        assert_eq!(claims.region, "us-east-1");
        // Case and a trailing dot do not matter, on either side.
        let e = Expectations::new("cellns", "cells", "USE1-A.cells.example.com.").unwrap();
        f.keys.verify_at(&f.mint(), &e, NOW).unwrap();
        let mut p = f.payload();
        p["cell"] = "Use1-A.Cells.Example.Com.".into();
        f.verify(&f.mint_with(&p)).unwrap();
        // And at the real current time.
        let t = f.mint_with(&f.payload_at(unix_now(), 600));
        f.keys.verify(&t, &expect()).unwrap();
    }
}

#[test]
fn rejects_alg_none() {
    let f = fixture(Alg::EdDSA, 1);
    let mut h = f.header();
    h["alg"] = "none".into();
    let t = format!("{}.{}.", b64(h.to_string()), b64(f.payload().to_string()));
    assert_eq!(f.verify(&t), Err(VerifyError::AlgNone));
    h["alg"] = "NONE".into();
    let t = f.sign_raw(&h, &f.payload());
    assert_eq!(f.verify(&t), Err(VerifyError::AlgNone));
}

#[test]
fn rejects_hs256_signed_with_the_public_key() {
    // Algorithm confusion: an attacker HMACs a token with the published
    // public key as the secret, hoping the verifier uses it as one. The
    // verifier refuses the algorithm before it looks at a key or the
    // signature, so the signature's bytes do not matter here.
    let f = fixture(Alg::EdDSA, 1);
    let mut h = f.header();
    h["alg"] = "HS256".into();
    let t = format!(
        "{}.{}.{}",
        b64(h.to_string()),
        b64(f.payload().to_string()),
        b64([9u8; 32])
    );
    assert_eq!(
        f.verify(&t),
        Err(VerifyError::DisallowedAlgorithm("HS256".into()))
    );
    for alg in ["RS256", "ES384", "eddsa", "Ed25519"] {
        h["alg"] = alg.into();
        assert_eq!(
            f.verify(&f.sign_raw(&h, &f.payload())),
            Err(VerifyError::DisallowedAlgorithm(alg.into()))
        );
    }
}

#[test]
fn rejects_alg_that_does_not_match_the_key() {
    let f = fixture(Alg::EdDSA, 1);
    let mut h = f.header();
    h["alg"] = "ES256".into();
    assert!(matches!(
        f.verify(&f.sign_raw(&h, &f.payload())),
        Err(VerifyError::DisallowedAlgorithm(_))
    ));
}

#[test]
fn rejects_expired() {
    let f = fixture(Alg::EdDSA, 1);
    let t = f.mint_with(&f.payload_at(NOW - 1000, 60));
    assert_eq!(f.verify(&t), Err(VerifyError::Expired));
    // Within the leeway it still verifies, up to exp + leeway included
    // (as in every SDK); one second later it does not.
    let t = f.mint_with(&f.payload_at(NOW - 70, 60));
    f.verify(&t).unwrap();
    let t = f.mint_with(&f.payload_at(NOW - 90, 60));
    f.verify(&t).unwrap();
    let t = f.mint_with(&f.payload_at(NOW - 91, 60));
    assert_eq!(f.verify(&t), Err(VerifyError::Expired));
}

#[test]
fn rejects_not_yet_valid() {
    let f = fixture(Alg::EdDSA, 1);
    let mut p = f.payload();
    p["nbf"] = (NOW + 600).into();
    assert_eq!(f.verify(&f.mint_with(&p)), Err(VerifyError::NotYetValid));
    p["nbf"] = (NOW + 10).into();
    f.verify(&f.mint_with(&p)).unwrap();
}

#[test]
fn rejects_issued_in_future() {
    // nbf now, iat in an hour: the old verifier did not look at iat.
    let f = fixture(Alg::EdDSA, 1);
    let mut p = f.payload();
    p["iat"] = (NOW + 3600).into();
    p["exp"] = (NOW + 7200).into();
    assert_eq!(f.verify(&f.mint_with(&p)), Err(VerifyError::IssuedInFuture));
    // Within the leeway it is clock skew, not an error.
    p["iat"] = (NOW + 30).into();
    f.verify(&f.mint_with(&p)).unwrap();
    // The issuer's nbf = iat: a token minted in the future is first
    // not yet valid (nbf is checked before iat).
    let t = f.mint_with(&f.payload_at(NOW + 600, 600));
    assert_eq!(f.verify(&t), Err(VerifyError::NotYetValid));
}

#[test]
fn rejects_lifetime_too_long() {
    let f = fixture(Alg::ES256, 1);
    // exp in the year 9999: the old verifier accepted it.
    let mut p = f.payload();
    p["exp"] = 253_402_300_799u64.into();
    assert_eq!(
        f.verify(&f.mint_with(&p)),
        Err(VerifyError::LifetimeTooLong {
            lifetime_secs: 253_402_300_799 - NOW,
            max_secs: DEFAULT_MAX_LIFETIME_SECS
        })
    );
    // The default maximum is a day; exactly a day passes.
    f.verify(&f.mint_with(&f.payload_at(NOW, DEFAULT_MAX_LIFETIME_SECS)))
        .unwrap();
    let t = f.mint_with(&f.payload_at(NOW, DEFAULT_MAX_LIFETIME_SECS + 1));
    assert_eq!(f.verify(&t).unwrap_err().code(), "lifetime_too_long");
    // Configurable.
    let short = expect().with_max_lifetime_secs(300).unwrap();
    assert_eq!(
        f.keys.verify_at(&f.mint(), &short, NOW),
        Err(VerifyError::LifetimeTooLong {
            lifetime_secs: 600,
            max_secs: 300
        })
    );
    assert_eq!(
        expect().with_max_lifetime_secs(0),
        Err(ExpectationsError::ZeroMaxLifetime)
    );
}

#[test]
fn rejects_wrong_audience_and_issuer() {
    let f = fixture(Alg::EdDSA, 1);
    let t = f.mint();
    let e = Expectations::new("cellns", "other-cells", CELL).unwrap();
    assert_eq!(
        f.keys.verify_at(&t, &e, NOW),
        Err(VerifyError::WrongAudience {
            expected: "other-cells".into()
        })
    );
    let e = Expectations::new("someone-else", "cells", CELL).unwrap();
    assert_eq!(
        f.keys.verify_at(&t, &e, NOW),
        Err(VerifyError::WrongIssuer {
            expected: "someone-else".into()
        })
    );
}

#[test]
fn rejects_unknown_kid() {
    let f = fixture(Alg::EdDSA, 1);
    let other = fixture(Alg::EdDSA, 2);
    assert_eq!(
        other.verify(&f.mint()),
        Err(VerifyError::UnknownKid(f.kid.clone()))
    );
}

#[test]
fn rejects_tampered_payload() {
    for alg in [Alg::EdDSA, Alg::ES256] {
        let f = fixture(alg, 1);
        let t = f.mint();
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        let mut claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
        claims["tenant"] = "globex".into();
        parts[1] = b64(claims.to_string());
        assert_eq!(f.verify(&parts.join(".")), Err(VerifyError::BadSignature));
        // A signature of the wrong length, or by another key of the same
        // kid's algorithm, is as bad.
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        parts[2] = b64([1u8; 63]);
        assert_eq!(f.verify(&parts.join(".")), Err(VerifyError::BadSignature));
        let other = fixture(alg, 2);
        let forged = other.sign_raw(&f.header(), &f.payload());
        assert_eq!(f.verify(&forged), Err(VerifyError::BadSignature));
    }
}

#[test]
fn rejects_high_s_es256_signatures() {
    // (r, n - s) verifies like (r, s): the old verifier accepted this
    // second encoding of the same token.
    let f = fixture(Alg::ES256, 1);
    let t = f.mint();
    let (input, sig) = t.rsplit_once('.').unwrap();
    let sig = p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(sig).unwrap()).unwrap();
    let (r, s) = sig.split_scalars();
    let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    assert!(
        high.normalize_s().is_some(),
        "the flipped S is the high one"
    );
    let twin = format!("{input}.{}", b64(high.to_bytes()));
    assert_eq!(f.verify(&twin), Err(VerifyError::NonCanonicalSignature));
    assert_eq!(
        f.verify(&twin).unwrap_err().code(),
        "non_canonical_signature"
    );
    // The low-S original verifies; a tampered high-S one is just bad.
    f.verify(&t).unwrap();
    let mut p = f.payload();
    p["tenant"] = "globex".into();
    let tampered = format!(
        "{}.{}.{}",
        b64(f.header().to_string()),
        b64(p.to_string()),
        b64(high.to_bytes())
    );
    assert_eq!(f.verify(&tampered), Err(VerifyError::BadSignature));
}

#[test]
fn rejects_too_large_before_parsing() {
    let f = fixture(Alg::EdDSA, 1);
    // A validly signed token that is too long: refused for its size.
    let mut p = f.payload();
    p["ext"] = json!({ "blob": "x".repeat(MAX_TOKEN_LEN) });
    let t = f.mint_with(&p);
    assert_eq!(
        f.verify(&t),
        Err(VerifyError::TooLarge {
            len: t.len(),
            max: MAX_TOKEN_LEN
        })
    );
    assert_eq!(
        f.verify(&"a".repeat(MAX_TOKEN_LEN + 1)).unwrap_err().code(),
        "too_large"
    );
    // Just under the cap, it is parsed (and verified).
    let mut p = f.payload();
    p["ext"] = json!({ "blob": "" });
    let base = f.mint_with(&p).len();
    // Each base64 char is 6 bits: 3 bytes of JSON per 4 chars.
    p["ext"] = json!({ "blob": "x".repeat((MAX_TOKEN_LEN - base) / 4 * 3) });
    let t = f.mint_with(&p);
    assert!(t.len() <= MAX_TOKEN_LEN, "{}", t.len());
    f.verify(&t).unwrap();
}

#[test]
fn rejects_wrong_cell() {
    let f = fixture(Alg::EdDSA, 1);
    let mut p = f.payload();
    p["cell"] = "use1-b.cells.example.com".into();
    assert_eq!(
        f.verify(&f.mint_with(&p)),
        Err(VerifyError::WrongCell {
            expected: CELL.into(),
            got: "use1-b.cells.example.com".into()
        })
    );
}

#[test]
fn rejects_malformed() {
    let f = fixture(Alg::EdDSA, 1);
    for t in ["", "a.b", "a.b.c.d", "!!!.e30.", "e30.e30.AAAA"] {
        assert!(
            matches!(f.verify(t), Err(VerifyError::Malformed(_))),
            "{t:?}"
        );
    }
    let mut p = f.payload();
    p.as_object_mut().unwrap().remove("cell");
    assert!(matches!(
        f.verify(&f.mint_with(&p)),
        Err(VerifyError::Malformed(_))
    ));
    // Claims of the wrong type: a time with a fraction, an `ext` that is
    // not an object, an array `aud`, a negative time, a boolean time, a
    // time beyond 2^53 - 1 (JavaScript would read another number).
    for (claim, value) in [
        ("exp", json!((NOW + 600) as f64)),
        ("iat", json!(true)),
        ("exp", json!(MAX_NUMERIC_DATE + 1)),
        ("nbf", json!(u64::MAX)),
        ("ext", json!("x")),
        ("aud", json!(["cells"])),
        ("iat", json!(-1)),
    ] {
        let mut p = f.payload();
        p[claim] = value;
        assert!(
            matches!(f.verify(&f.mint_with(&p)), Err(VerifyError::Malformed(_))),
            "{claim}"
        );
    }
    let mut h = f.header();
    h["crit"] = json!(["exp"]);
    assert!(matches!(
        f.verify(&f.sign_raw(&h, &f.payload())),
        Err(VerifyError::Malformed(_))
    ));
    // No kid, a kid that is not a string.
    let mut h = f.header();
    h.as_object_mut().unwrap().remove("kid");
    assert!(matches!(
        f.verify(&f.sign_raw(&h, &f.payload())),
        Err(VerifyError::Malformed(_))
    ));
    h["kid"] = json!(7);
    assert!(matches!(
        f.verify(&f.sign_raw(&h, &f.payload())),
        Err(VerifyError::Malformed(_))
    ));
    // A header whose base64url decodes only leniently (unused bits of the
    // last character set), even with a valid signature over it.
    let mut h = f.header();
    while b64(h.to_string()).len().is_multiple_of(4) {
        h["typ"] = format!("{}x", h["typ"].as_str().unwrap()).into();
    }
    let enc = b64(h.to_string());
    const ALPHABET: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let last = ALPHABET.find(enc.chars().last().unwrap()).unwrap();
    let lenient = format!(
        "{}{}",
        &enc[..enc.len() - 1],
        ALPHABET.as_bytes()[last ^ 1] as char
    );
    let mut t = format!("{lenient}.{}", b64(f.payload().to_string()));
    let sig = f.sign(t.as_bytes());
    t.push('.');
    t.push_str(&b64(sig));
    assert!(
        matches!(f.verify(&t), Err(VerifyError::Malformed(_))),
        "{t}"
    );
    // A signature that is not base64url.
    let t = f.mint();
    let (input, _) = t.rsplit_once('.').unwrap();
    assert!(matches!(
        f.verify(&format!("{input}.!!!")),
        Err(VerifyError::Malformed(_))
    ));
}

#[test]
fn rejects_an_empty_cell_claim_as_malformed() {
    // The old verifier compared "" with the expected cell (and, with an
    // empty expected cell, accepted it).
    let f = fixture(Alg::EdDSA, 1);
    for empty in ["", "."] {
        let mut p = f.payload();
        p["cell"] = empty.into();
        assert_eq!(
            f.verify(&f.mint_with(&p)).unwrap_err().code(),
            "malformed",
            "{empty:?}"
        );
    }
}

#[test]
fn rejects_a_header_or_payload_that_is_not_an_object() {
    // serde fills a struct from an array of its fields in order; a JOSE
    // header or claims set must be an object.
    let f = fixture(Alg::EdDSA, 1);
    let sign = |header: String, payload: String| {
        let mut t = format!("{}.{}", b64(header), b64(payload));
        let sig = f.sign(t.as_bytes());
        t.push('.');
        t.push_str(&b64(sig));
        t
    };
    let header = format!(r#"["EdDSA","{}",null]"#, f.kid);
    let t = sign(header, f.payload().to_string());
    assert!(matches!(f.verify(&t), Err(VerifyError::Malformed(_))));
    let p = f.payload();
    let fields: Vec<Value> = [
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
    ]
    .iter()
    .map(|k| p[*k].clone())
    .collect();
    let t = sign(f.header().to_string(), Value::Array(fields).to_string());
    assert!(matches!(f.verify(&t), Err(VerifyError::Malformed(_))));
}

#[test]
fn rejects_a_header_member_given_twice() {
    // Parsers disagree on which copy of a duplicated member wins.
    let f = fixture(Alg::EdDSA, 1);
    let header = format!(r#"{{"alg":"EdDSA","alg":"none","kid":"{}"}}"#, f.kid);
    let mut t = b64(header);
    t.push('.');
    t.push_str(&b64(f.payload().to_string()));
    let sig = f.sign(t.as_bytes());
    t.push('.');
    t.push_str(&b64(sig));
    assert!(matches!(f.verify(&t), Err(VerifyError::Malformed(_))));
}

#[test]
fn rejects_a_claim_given_twice_and_keeps_other_claims() {
    let f = fixture(Alg::EdDSA, 1);
    let sign = |payload: String| {
        let mut t = format!("{}.{}", b64(f.header().to_string()), b64(payload));
        let sig = f.sign(t.as_bytes());
        t.push('.');
        t.push_str(&b64(sig));
        t
    };
    // Parsers disagree on which copy wins: "cell" twice is malformed.
    let p = f.payload().to_string();
    let twice = format!(r#"{{"cell":"use1-b.cells.example.com",{}"#, &p[1..]);
    assert!(matches!(
        f.verify(&sign(twice)),
        Err(VerifyError::Malformed(_))
    ));
    // Members cellns does not issue come back as they are; times up to
    // 2^53 - 1 are read.
    let mut p = f.payload();
    p["scope"] = json!({"read": true});
    p["ext"] = json!({"plan": "pro"});
    let claims = f.verify(&sign(p.to_string())).unwrap();
    assert_eq!(serde_json::to_value(&claims).unwrap(), p);
    assert_eq!(claims.other.len(), 1);
    let mut p = f.payload();
    p["exp"] = json!(MAX_NUMERIC_DATE);
    assert_eq!(
        f.verify(&sign(p.to_string())).unwrap_err().code(),
        "lifetime_too_long"
    );
}

#[test]
fn expectations_refuse_empty_values_and_a_large_leeway() {
    assert_eq!(
        Expectations::new("cellns", "cells", ""),
        Err(ExpectationsError::Empty("cell"))
    );
    assert_eq!(
        Expectations::new("cellns", "cells", "."),
        Err(ExpectationsError::Empty("cell"))
    );
    assert_eq!(
        Expectations::new("", "cells", CELL),
        Err(ExpectationsError::Empty("issuer"))
    );
    assert_eq!(
        Expectations::new("cellns", "", CELL),
        Err(ExpectationsError::Empty("audience"))
    );
    let e = expect();
    assert_eq!(e.cell(), CELL);
    assert_eq!(e.leeway_secs(), DEFAULT_LEEWAY_SECS);
    assert_eq!(e.max_lifetime_secs(), DEFAULT_MAX_LIFETIME_SECS);
    assert_eq!(
        expect()
            .with_leeway_secs(MAX_LEEWAY_SECS)
            .unwrap()
            .leeway_secs(),
        MAX_LEEWAY_SECS
    );
    assert_eq!(
        expect().with_leeway_secs(MAX_LEEWAY_SECS + 1),
        Err(ExpectationsError::LeewayTooLarge {
            secs: MAX_LEEWAY_SECS + 1,
            max: MAX_LEEWAY_SECS
        })
    );
    // The leeway is applied: a token expired 100 s ago passes with 120 s.
    let f = fixture(Alg::EdDSA, 1);
    let t = f.mint_with(&f.payload_at(NOW - 700, 600));
    assert_eq!(f.verify(&t), Err(VerifyError::Expired));
    let lenient = expect().with_leeway_secs(120).unwrap();
    f.keys.verify_at(&t, &lenient, NOW).unwrap();
}

#[test]
fn jwks_round_trip_and_bad_keys() {
    let a = fixture(Alg::EdDSA, 1);
    let b = fixture(Alg::ES256, 2);
    let parsed = PublicKeySet::from_jwks(jwks(&[a.jwk(), b.jwk()]).as_bytes()).unwrap();
    let mut kids: Vec<&str> = parsed.kids().collect();
    kids.sort();
    let mut want = vec![a.kid.as_str(), b.kid.as_str()];
    want.sort();
    assert_eq!(kids, want);
    // Unknown key types, other uses and algorithms are skipped.
    let other = json!({"keys": [
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"},
        {"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "x"},
        {"kty": "OKP", "crv": "Ed25519", "x": a.jwk()["x"], "kid": "enc", "use": "enc"},
        {"kty": "OKP", "crv": "Ed25519", "x": a.jwk()["x"], "kid": "es", "alg": "ES256"},
        {"kty": "OKP", "crv": "Ed25519", "x": a.jwk()["x"]},
    ]});
    let set = PublicKeySet::from_jwks(other.to_string().as_bytes()).unwrap();
    assert_eq!(set.kids().count(), 0);
    // Not a key set at all.
    for doc in [&b"not json"[..], b"{}", br#"{"keys": {}}"#] {
        assert_eq!(
            PublicKeySet::from_jwks(doc).unwrap_err().code(),
            "jwks_unavailable"
        );
    }
}

#[test]
fn jwks_skips_a_key_with_bad_material_and_keeps_the_others() {
    // Issue 15: one malformed key made the whole set refused, so a single
    // broken entry took every cell's verification down. It is skipped
    // (and logged) now, as in every SDK (sdk/vectors/jwks.json).
    let good = fixture(Alg::EdDSA, 1);
    let ec = fixture(Alg::ES256, 2);
    let mut short = good.jwk();
    short["kid"] = "short".into();
    short["x"] = "AAAA".into();
    let mut off_curve = ec.jwk();
    off_curve["kid"] = "off-curve".into();
    off_curve["y"] = b64([1u8; 32]).into();
    let mut no_y = ec.jwk();
    no_y["kid"] = "no-y".into();
    no_y.as_object_mut().unwrap().remove("y");
    let mut weak = good.jwk();
    weak["kid"] = "weak".into();
    // The identity point: small order, would accept forged signatures.
    let mut identity = [0u8; 32];
    identity[0] = 1;
    weak["x"] = b64(identity).into();
    // y = 3 + p: the point y = 3 (of full order) written non-canonically.
    let mut non_canonical = good.jwk();
    non_canonical["kid"] = "y-not-reduced".into();
    let mut y = [0xffu8; 32];
    y[0] = 0xed + 3;
    y[31] = 0x7f;
    non_canonical["x"] = b64(y).into();
    for bad in [short, off_curve, no_y, weak, non_canonical] {
        let doc = jwks(&[good.jwk(), bad.clone(), ec.jwk()]);
        let set = PublicKeySet::from_jwks(doc.as_bytes()).unwrap();
        let kid = bad["kid"].as_str().unwrap();
        assert_eq!(set.algorithm(kid), None, "{bad}");
        assert_eq!(set.kids().count(), 2, "{bad}");
        set.verify_at(&good.mint(), &expect(), NOW).unwrap();
        set.verify_at(&ec.mint(), &expect(), NOW).unwrap();
    }
    let set = PublicKeySet::from_jwks(jwks(&[good.jwk(), ec.jwk()]).as_bytes()).unwrap();
    assert_eq!(set.algorithm(&good.kid), Some("EdDSA"));
    assert_eq!(set.algorithm(&ec.kid), Some("ES256"));
    assert_eq!(set.algorithm("nope"), None);
}

#[test]
fn jwks_larger_than_the_cap_is_refused() {
    let good = fixture(Alg::EdDSA, 1);
    let mut doc = json!({"keys": [good.jwk()]});
    doc["pad"] = "x".repeat(1 << 20).into();
    let e = PublicKeySet::from_jwks(doc.to_string().as_bytes()).unwrap_err();
    assert_eq!(e.code(), "jwks_unavailable");
}

#[test]
fn jwks_drops_a_duplicated_kid_entirely() {
    // Two keys under one kid: the old parser kept the last one silently,
    // so which key verified depended on the order of the document.
    let a = fixture(Alg::EdDSA, 1);
    let b = fixture(Alg::EdDSA, 2);
    let c = fixture(Alg::ES256, 3);
    let mut b_as_a = b.jwk();
    b_as_a["kid"] = a.kid.clone().into();
    for doc in [
        jwks(&[a.jwk(), b_as_a.clone(), c.jwk()]),
        jwks(&[b_as_a.clone(), a.jwk(), c.jwk()]),
    ] {
        let set = PublicKeySet::from_jwks(doc.as_bytes()).unwrap();
        assert_eq!(set.kids().collect::<Vec<_>>(), vec![c.kid.as_str()]);
        assert_eq!(
            set.verify_at(&a.mint(), &expect(), NOW),
            Err(VerifyError::UnknownKid(a.kid.clone()))
        );
        set.verify_at(&c.mint(), &expect(), NOW).unwrap();
    }
}

#[test]
fn codes_are_the_documented_list_in_check_order() {
    // docs/tokens.md lists these, in this order, for the verifiers in
    // other languages; the table there must match.
    let all = [
        VerifyError::TooLarge { len: 0, max: 0 },
        VerifyError::Malformed(String::new()),
        VerifyError::AlgNone,
        VerifyError::DisallowedAlgorithm(String::new()),
        VerifyError::UnknownKid(String::new()),
        VerifyError::BadSignature,
        VerifyError::NonCanonicalSignature,
        VerifyError::Expired,
        VerifyError::NotYetValid,
        VerifyError::IssuedInFuture,
        VerifyError::LifetimeTooLong {
            lifetime_secs: 0,
            max_secs: 0,
        },
        VerifyError::WrongIssuer {
            expected: String::new(),
        },
        VerifyError::WrongAudience {
            expected: String::new(),
        },
        VerifyError::WrongCell {
            expected: String::new(),
            got: String::new(),
        },
        VerifyError::Jwks(String::new()),
    ];
    let codes: Vec<&str> = all.iter().map(VerifyError::code).collect();
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/tokens.md"))
        .unwrap();
    // The rows of the table of codes: "| N | `code` | ...", in the
    // section of that name.
    let section = doc
        .split("\n### Verification error codes\n")
        .nth(1)
        .expect("docs/tokens.md has a section \"Verification error codes\"");
    let section = section.split("\n#").next().unwrap_or(section);
    let documented: Vec<&str> = section
        .lines()
        .filter_map(|l| {
            let mut cells = l.split('|').map(str::trim);
            cells.next()?;
            cells.next()?.parse::<u32>().ok()?;
            cells.next()?.strip_prefix('`')?.strip_suffix('`')
        })
        .collect();
    assert_eq!(documented, codes);
}

/// A JWKS server whose document the test swaps; counts fetches. Plain
/// HTTP/1.1, one request per connection.
async fn jwks_server(doc: Arc<Mutex<String>>, fetches: Arc<AtomicUsize>) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let doc = doc.clone();
            let fetches = fetches.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                fetches.fetch_add(1, Ordering::SeqCst);
                let body = doc.lock().unwrap().clone();
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            });
        }
    });
    format!("http://{addr}/jwks")
}

#[tokio::test]
async fn remote_jwks_refetches_on_unknown_kid_within_the_floor() {
    let old = fixture(Alg::EdDSA, 1);
    let new = fixture(Alg::ES256, 2);
    let doc = Arc::new(Mutex::new(jwks(&[old.jwk()])));
    let fetches = Arc::new(AtomicUsize::new(0));
    let url = jwks_server(doc.clone(), fetches.clone()).await;
    let now = unix_now();

    // A long floor: an unknown kid is not refetched yet.
    let slow = Verifier::from_jwks_url_with(
        &url,
        expect(),
        JwksOptions {
            refetch_floor: Duration::from_secs(3600),
            ..JwksOptions::default()
        },
    )
    .await
    .unwrap();
    // No floor: an unknown kid triggers a refetch.
    let eager = Verifier::from_jwks_url_with(
        &url,
        expect(),
        JwksOptions {
            refetch_floor: Duration::ZERO,
            ..JwksOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 2);
    eager
        .verify(&old.mint_with(&old.payload_at(now, 600)))
        .await
        .unwrap();
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        2,
        "known kid: served from cache"
    );

    // Rotation: the issuer publishes the new key.
    *doc.lock().unwrap() = jwks(&[old.jwk(), new.jwk()]);
    let t_new = new.mint_with(&new.payload_at(now, 600));
    assert_eq!(
        slow.verify(&t_new).await,
        Err(VerifyError::UnknownKid(new.kid.clone()))
    );
    assert_eq!(fetches.load(Ordering::SeqCst), 2, "the floor holds");
    eager.verify(&t_new).await.unwrap();
    assert_eq!(fetches.load(Ordering::SeqCst), 3);
    // A made-up kid refetches (floor zero) and is still refused.
    let mut h = old.header();
    h["kid"] = "made-up".into();
    let forged = old.sign_raw(&h, &old.payload_at(now, 600));
    assert_eq!(
        eager.verify(&forged).await,
        Err(VerifyError::UnknownKid("made-up".into()))
    );
    // A token refused before any key is looked at costs no fetch.
    let before = fetches.load(Ordering::SeqCst);
    assert_eq!(
        eager
            .verify(&"a".repeat(MAX_TOKEN_LEN + 1))
            .await
            .unwrap_err()
            .code(),
        "too_large"
    );
    assert_eq!(fetches.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn remote_jwks_unreachable_is_an_error() {
    let e = Verifier::from_jwks_url("http://127.0.0.1:1/jwks", expect())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "jwks_unavailable");
}
