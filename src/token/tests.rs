//! Tokens the issuer mints, read and verified by the client crate as SDKs
//! and cells do (`cellns_client::read_claims`, `cellns_client::Verifier`).

use std::sync::Arc;
use std::time::Duration;

use cellns_client::{Expectations, PublicKeySet, Verifier, VerifyError, read_claims};

use super::keys::KeySet;
use super::{Alg, Issuer, IssuerConfig, KeyRing, SigningKey, TokenRequest};

const CELL: &str = "use1-a.cells.example.com";

fn issuer(key: &Arc<SigningKey>) -> Issuer {
    Issuer::new(
        IssuerConfig {
            issuer: "cellns".into(),
            audience: "cells".into(),
            max_ttl: 3600,
        },
        Arc::new(KeyRing::fixed(vec![key.clone()])),
    )
}

fn req(tenant: &str, ttl: u64) -> TokenRequest {
    TokenRequest {
        tenant: tenant.into(),
        subject: "user-42".into(),
        ttl_seconds: ttl,
        claims: None,
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The server converts its keys through their public JWKs.
fn public(key: &Arc<SigningKey>) -> PublicKeySet {
    PublicKeySet::from_jwks(KeySet::new(vec![key.clone()]).jwks_json()).unwrap()
}

#[tokio::test]
async fn issued_tokens_verify_for_both_algorithms() {
    let snap = crate::live::View::of_map(Arc::new(crate::map::load_example().unwrap()));
    for alg in [Alg::EdDSA, Alg::ES256] {
        let key = Arc::new(SigningKey::generate(alg));
        let issued = issuer(&key).issue(&snap, &req("acme", 600), now()).unwrap();
        let expect = Expectations::new("cellns", "cells", CELL).unwrap();
        let verifier = Verifier::from_key_set(public(&key), expect);
        let claims = verifier.verify(&issued.token).await.unwrap();
        assert_eq!(claims.cell, CELL);
        assert_eq!(claims.tenant, "acme");
        assert_eq!(claims.cell_id, "use1-a");
        assert_eq!(claims.region, "us-east-1");
        assert_eq!(claims.map_version, snap.map().version);
        assert_eq!(claims.jti.len(), 22, "128 bits, base64url");
        // Case and a trailing dot do not matter.
        let e = Expectations::new("cellns", "cells", "USE1-A.cells.example.com.").unwrap();
        public(&key).verify(&issued.token, &e).unwrap();
        // A tenant of another cell is refused with the wrong-cell error.
        let other = issuer(&key)
            .issue(&snap, &req("globex", 600), now())
            .unwrap();
        assert_eq!(
            verifier.verify(&other.token).await,
            Err(VerifyError::WrongCell {
                expected: CELL.into(),
                got: "use1-b.cells.example.com".into()
            })
        );
    }
}

#[test]
fn issued_tokens_in_the_past_or_future_are_refused() {
    let snap = crate::live::View::of_map(Arc::new(crate::map::load_example().unwrap()));
    let key = Arc::new(SigningKey::generate(Alg::EdDSA));
    let keys = public(&key);
    let expect = Expectations::new("cellns", "cells", CELL).unwrap();
    let mint = |iat: u64, ttl: u64| issuer(&key).issue(&snap, &req("acme", ttl), iat).unwrap();
    assert_eq!(
        keys.verify(&mint(now() - 1000, 60).token, &expect),
        Err(VerifyError::Expired)
    );
    assert_eq!(
        keys.verify(&mint(now() + 600, 600).token, &expect),
        Err(VerifyError::NotYetValid)
    );
    keys.verify(&mint(now() - 70, 60).token, &expect).unwrap();
    keys.verify(&mint(now() + 10, 600).token, &expect).unwrap();
}

#[test]
fn reads_the_claims_of_an_issued_token() {
    let key = Arc::new(SigningKey::generate(Alg::EdDSA));
    let snap = crate::live::View::of_map(Arc::new(crate::map::load_example().unwrap()));
    let issued = issuer(&key)
        .issue(&snap, &req("ACME", 900), 1_700_000_000)
        .unwrap();
    let c = read_claims(&issued.token).unwrap();
    assert_eq!(c.tenant, "acme");
    assert_eq!(c.cell, issued.cell);
    assert_eq!(c.cell, "use1-a.cells.example.com");
    assert_eq!(c.iat, 1_700_000_000);
    assert_eq!(c.exp, 1_700_000_900);
    assert_eq!(c.map_version, issued.map_version);
    assert_eq!(c.lifetime(), Duration::from_secs(900));
}
