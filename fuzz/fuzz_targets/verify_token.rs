//! The token verifier (`cellns_client::PublicKeySet`): bytes as a token
//! checked against a fixed key set (Ed25519 and ES256), or, when the first
//! byte says so, as a JWKS document. Errors are fine; a panic is not, and
//! a token that verifies must carry the expected claims.

#![no_main]

use cellns_client::PublicKeySet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: cellns_fuzz::seeds_requested("verify_token"),
    |data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode == b'J' {
        let _ = PublicKeySet::from_jwks(rest);
        return;
    }
    let Ok(token) = std::str::from_utf8(rest) else {
        return;
    };
    let (keys, expect) = cellns_fuzz::verifier();
    // The first byte also moves the clock, so that time checks are reached
    // on both sides.
    let now = cellns_fuzz::NOW + u64::from(mode) * 37;
    if let Ok(claims) = keys.verify_at(token, expect, now) {
        assert_eq!(claims.cell, cellns_fuzz::CELL, "a verified token is for the expected cell");
    }
});
