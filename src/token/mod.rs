//! Tokens: JWT issue, signing keys, JWKS, verification.
