//! What the fuzz targets share: the zone versions the DNS target answers
//! from, the keys the verifier target checks with, and the seeds.
//!
//! Each target writes its seeds and exits when run with
//! `CELLNS_FUZZ_SEEDS=DIR` (see [`seeds_requested`]): no second build.

use std::sync::{Arc, OnceLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cellns::dns::Store;
use cellns::dns::dispatch::Dispatch;
use cellns_client::{Expectations, PublicKeySet};

mod seeds;

/// Called from each target's `init`: when `CELLNS_FUZZ_SEEDS` names a
/// directory, writes the seeds of `target` there and exits the process.
pub fn seeds_requested(target: &str) {
    if let Some(dir) = std::env::var_os("CELLNS_FUZZ_SEEDS") {
        seeds::write_seeds(target, std::path::Path::new(&dir));
        std::process::exit(0);
    }
}

/// The cell hostname the verifier target expects.
pub const CELL: &str = "use1-a.cells.example.com";
/// The time tokens are verified at (Unix seconds).
pub const NOW: u64 = 1_800_000_000;

/// A dispatch over a zone version of the example map, as the server runs
/// it; `hash` picks the map that places unknown tenants by hashing.
pub fn dispatch(hash: bool) -> &'static (Arc<Store>, Dispatch) {
    static PLAIN: OnceLock<(Arc<Store>, Dispatch)> = OnceLock::new();
    static HASH: OnceLock<(Arc<Store>, Dispatch)> = OnceLock::new();
    let cell = if hash { &HASH } else { &PLAIN };
    cell.get_or_init(|| {
        let text = if hash {
            cellns::map::EXAMPLE_MAP.replace("unknown = \"nxdomain\"", "unknown = \"hash\"")
        } else {
            cellns::map::EXAMPLE_MAP.to_owned()
        };
        let snap = cellns::map::load_str(cellns::map::Source {
            text: &text,
            format: cellns::map::Format::Toml,
            name: "example.toml",
        })
        .expect("the example map loads");
        let store = Arc::new(cellns::dns::prepared::store_of(snap));
        let d = Dispatch::new(store.clone(), Default::default());
        (store, d)
    })
}

/// The Ed25519 signing key of the verifier target (fixed bytes).
pub fn ed_key() -> ed25519_dalek::SigningKey {
    ed25519_dalek::SigningKey::from_bytes(&[7; 32])
}

/// The ES256 signing key of the verifier target (fixed bytes).
pub fn ec_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_slice(&[9; 32]).expect("a valid P-256 scalar")
}

/// The JWKS publishing both keys (`kid` "ed" and "ec").
pub fn jwks() -> String {
    let ed = ed_key().verifying_key().to_bytes();
    let ec = ec_key().verifying_key().to_encoded_point(false);
    let x = ec.x().expect("uncompressed point");
    let y = ec.y().expect("uncompressed point");
    serde_json::json!({ "keys": [
        { "kty": "OKP", "crv": "Ed25519", "kid": "ed", "alg": "EdDSA", "use": "sig",
          "x": URL_SAFE_NO_PAD.encode(ed) },
        { "kty": "EC", "crv": "P-256", "kid": "ec", "alg": "ES256", "use": "sig",
          "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y) },
    ]})
    .to_string()
}

/// The key set and expectations the verifier target checks tokens with.
pub fn verifier() -> &'static (PublicKeySet, Expectations) {
    static V: OnceLock<(PublicKeySet, Expectations)> = OnceLock::new();
    V.get_or_init(|| {
        (
            PublicKeySet::from_jwks(jwks().as_bytes()).expect("the fixture JWKS parses"),
            Expectations::new("cellns", "cells", CELL).expect("expectations"),
        )
    })
}

/// A token over `payload`, signed by the key `kid` ("ed" or "ec").
pub fn sign(kid: &str, payload: &serde_json::Value) -> String {
    use ed25519_dalek::Signer as _;
    let alg = if kid == "ed" { "EdDSA" } else { "ES256" };
    let header = serde_json::json!({ "alg": alg, "typ": "JWT", "kid": kid });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(payload.to_string())
    );
    let sig = if kid == "ed" {
        ed_key().sign(input.as_bytes()).to_bytes().to_vec()
    } else {
        let s: p256::ecdsa::Signature =
            p256::ecdsa::signature::Signer::sign(&ec_key(), input.as_bytes());
        s.normalize_s().unwrap_or(s).to_bytes().to_vec()
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}
