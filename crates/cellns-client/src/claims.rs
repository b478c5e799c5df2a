//! Reading a token's routing claims without verifying it: [`read_claims`].

use std::time::Duration;

use base64::Engine as _;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde::Deserialize;

use crate::host::{canonical_host, is_hostname};

/// Largest token accepted, in bytes, by [`read_claims`] and by the
/// [`crate::Verifier`] (`too_large`). cellns tokens are well under 1 KiB;
/// the bound keeps a hostile "token" from costing memory.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Longest lifetime (`exp - iat`, seconds) [`read_claims`] accepts: 30
/// days. A client keeps times as `received + lifetime`; a token claiming
/// to live for centuries is nonsense (no verifier accepts it: their
/// default maximum is a day) and must not overflow the clock arithmetic.
pub const MAX_TOKEN_LIFETIME_SECS: u64 = 30 * 86_400;

/// Largest `iat`, `nbf` or `exp` accepted, by [`read_claims`] and by the
/// [`crate::Verifier`]: 2^53 − 1, the largest integer every JSON reader
/// (JavaScript's included) holds exactly, so the SDKs in every language
/// read the same number or refuse the token alike.
pub const MAX_NUMERIC_DATE: u64 = (1 << 53) - 1;

/// Deserialises a JSON integer in `[0, MAX_NUMERIC_DATE]` (serde already
/// refuses fractions, exponents, negatives, booleans and strings).
pub(crate) fn numeric_date<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(d)?;
    if n > MAX_NUMERIC_DATE {
        return Err(serde::de::Error::custom(format_args!(
            "{n} is above 2^53 - 1, the largest time accepted"
        )));
    }
    Ok(n)
}

/// `bytes` as a JSON object deserialised into `T`. serde would also fill a
/// struct from an array of its fields in order; a JOSE header or claims set
/// is an object, nothing else. An object anywhere in it with a member name
/// twice is refused: JSON parsers disagree on which copy wins (serde keeps
/// the last of a map, refuses a struct field given twice, ignores unknown
/// ones), so the SDKs all refuse such a document (sdk/vectors). The rest
/// of serde_json's grammar (no unpaired surrogate escape, no number beyond
/// a double's range, at most 127 nested arrays and objects) is the one the
/// Python and TypeScript SDKs follow too.
pub(crate) fn json_object<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.trim_ascii_start().first() != Some(&b'{') {
        return Err("not a JSON object".into());
    }
    serde_json::from_slice::<UniqueMembers>(bytes).map_err(|e| e.to_string())?;
    serde_json::from_slice(bytes).map_err(|e| e.to_string())
}

/// Any JSON value in which no object has a member name twice (names
/// compared after unescaping); only checked, nothing kept.
struct UniqueMembers;

impl<'de> Deserialize<'de> for UniqueMembers {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueMembers)
    }
}

impl<'de> serde::de::Visitor<'de> for UniqueMembers {
    type Value = UniqueMembers;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value without duplicate member names")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_str<E>(self, _: &str) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_unit<E>(self) -> Result<Self, E> {
        Ok(self)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self, A::Error> {
        while seq.next_element::<UniqueMembers>()?.is_some() {}
        Ok(self)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(name) = map.next_key::<String>()? {
            map.next_value::<UniqueMembers>()?;
            if seen.contains(&name) {
                return Err(serde::de::Error::custom(format_args!(
                    "member {name:?} appears twice in one object"
                )));
            }
            seen.insert(name);
        }
        Ok(self)
    }
}

/// base64url that accepts the payload with or without `=` padding (JWS
/// forbids padding, but some libraries add it).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a token's claims could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClaimsError {
    /// Not three dot-separated parts, or longer than [`MAX_TOKEN_LEN`].
    #[error("not a JWT: {0}")]
    NotJwt(&'static str),
    /// The payload is not base64url-encoded JSON with the routing claims
    /// (or an object in it has a member name twice).
    #[error("token payload: {0}")]
    Payload(String),
    /// A claim has a value a client must not use (e.g. a `cell` that is not
    /// a hostname, which would otherwise end up in a URL).
    #[error("claim {claim}: {reason}")]
    Invalid {
        /// The claim.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `exp - iat` is longer than [`MAX_TOKEN_LIFETIME_SECS`] (or than the
    /// client's clock can represent from now).
    #[error(
        "token lifetime (exp - iat) of {lifetime_secs} s is longer than the {max_secs} s a client accepts"
    )]
    LifetimeTooLong {
        /// `exp - iat`, seconds.
        lifetime_secs: u64,
        /// The largest accepted.
        max_secs: u64,
    },
}

/// The claims a client routes by, read from a token it has **not**
/// verified. Treat them as hints about where to connect: the cell verifies
/// the token and refuses it ([`crate::WrongCell`]) when they are wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaims {
    /// The tenant id (one DNS label, lowercase).
    pub tenant: String,
    /// The hostname of the tenant's cell, in canonical form
    /// ([`canonical_host`]). This is where to connect.
    pub cell: String,
    /// Issued at, Unix seconds (the issuer's clock).
    pub iat: u64,
    /// Expiry, Unix seconds (the issuer's clock).
    pub exp: u64,
    /// The version of the map the cell was taken from (for logs).
    pub map_version: String,
}

impl TokenClaims {
    /// The token's lifetime as the issuer set it (`exp - iat`; at most
    /// [`MAX_TOKEN_LIFETIME_SECS`] for claims [`read_claims`] returned).
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(self.exp.saturating_sub(self.iat))
    }
}

/// Reads the routing claims of `token` (a JWS compact serialisation)
/// without verifying its signature: base64url-decodes the payload (padding
/// optional) and parses `tenant`, `cell`, `map_version` (strings), `iat`
/// and `exp` (integers up to [`MAX_NUMERIC_DATE`]). Other claims are
/// ignored, but no object of the payload may have a member name twice
/// ([`ClaimsError::Payload`]). `cell` must be a hostname and `tenant` a DNS label, since a
/// client puts them into names and URLs; `exp` must be after `iat`, by at
/// most [`MAX_TOKEN_LIFETIME_SECS`].
pub fn read_claims(token: &str) -> Result<TokenClaims, ClaimsError> {
    #[derive(Deserialize)]
    struct Raw {
        tenant: String,
        cell: String,
        #[serde(deserialize_with = "numeric_date")]
        iat: u64,
        #[serde(deserialize_with = "numeric_date")]
        exp: u64,
        map_version: String,
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(ClaimsError::NotJwt("longer than 16 KiB"));
    }
    let mut parts = token.trim().split('.');
    let (Some(_), Some(payload), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(ClaimsError::NotJwt("not three parts separated by dots"));
    };
    let json = B64URL
        .decode(payload)
        .map_err(|e| ClaimsError::Payload(format!("not base64url: {e}")))?;
    let raw: Raw = json_object(&json)
        .map_err(|e| ClaimsError::Payload(format!("not the expected JSON: {e}")))?;
    let cell = canonical_host(&raw.cell);
    if !is_hostname(&cell) {
        return Err(ClaimsError::Invalid {
            claim: "cell",
            reason: "not a hostname (letters, digits, '-', '_' and dots, at most 253 bytes)",
        });
    }
    let tenant = raw.tenant.to_ascii_lowercase();
    if tenant.contains('.') || !is_hostname(&tenant) {
        return Err(ClaimsError::Invalid {
            claim: "tenant",
            reason: "not one DNS label",
        });
    }
    if raw.exp <= raw.iat {
        return Err(ClaimsError::Invalid {
            claim: "exp",
            reason: "not after iat: the token has no lifetime",
        });
    }
    let lifetime_secs = raw.exp - raw.iat;
    if lifetime_secs > MAX_TOKEN_LIFETIME_SECS {
        return Err(ClaimsError::LifetimeTooLong {
            lifetime_secs,
            max_secs: MAX_TOKEN_LIFETIME_SECS,
        });
    }
    Ok(TokenClaims {
        tenant,
        cell,
        iat: raw.iat,
        exp: raw.exp,
        map_version: raw.map_version,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    /// A token with this payload and a signature no one checks.
    pub(crate) fn token_with(payload: serde_json::Value) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","typ":"JWT","kid":"k"}"#),
            URL_SAFE_NO_PAD.encode(payload.to_string()),
            URL_SAFE_NO_PAD.encode([7u8; 64])
        )
    }

    /// A token for `cell` living `ttl` seconds (signature not valid: the
    /// client never checks it).
    pub(crate) fn token(cell: &str, ttl: u64) -> String {
        token_with(serde_json::json!({
            "iss": "cellns", "aud": "cells", "sub": "u", "iat": 1_000_000, "nbf": 1_000_000,
            "exp": 1_000_000 + ttl, "jti": "j", "tenant": "acme", "cell": cell,
            "cell_id": "x", "region": "r", "map_version": "v1"
        }))
    }

    #[test]
    fn claims_are_normalised_and_padding_is_tolerated() {
        // Payloads one, two and three bytes longer: one of them needs
        // padding.
        let t = (1..=3)
            .map(|n| {
                token_with(serde_json::json!({
                    "tenant": "acme", "cell": "USE1-A.Cells.Example.COM.", "iat": 10,
                    "exp": 20, "map_version": "v", "pad": "x".repeat(n)
                }))
            })
            .find(|t| !t.split('.').nth(1).unwrap().len().is_multiple_of(4))
            .unwrap();
        assert_eq!(read_claims(&t).unwrap().cell, "use1-a.cells.example.com");
        let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
        while !parts[1].len().is_multiple_of(4) {
            parts[1].push('=');
        }
        assert_eq!(
            read_claims(&parts.join(".")).unwrap().cell,
            "use1-a.cells.example.com"
        );
    }

    #[test]
    fn refuses_what_is_not_a_usable_token() {
        let not_jwt = ["", "a.b", "a.b.c.d", "x.!!!.y"];
        for t in not_jwt {
            assert!(read_claims(t).is_err(), "{t:?}");
        }
        assert!(matches!(
            read_claims(&"a".repeat(MAX_TOKEN_LEN + 1)),
            Err(ClaimsError::NotJwt(_))
        ));
        let base = || serde_json::json!({"tenant": "acme", "cell": "a.example", "iat": 10, "exp": 20, "map_version": "v"});
        assert!(read_claims(&token_with(base())).is_ok());
        for missing in ["tenant", "cell", "iat", "exp", "map_version"] {
            let mut p = base();
            p.as_object_mut().unwrap().remove(missing);
            assert!(
                matches!(read_claims(&token_with(p)), Err(ClaimsError::Payload(_))),
                "{missing}"
            );
        }
        // A cell claim that would inject into a URL, a tenant with dots,
        // no lifetime: refused.
        for (claim, value) in [
            ("cell", serde_json::json!("evil.example/path?x=")),
            ("cell", serde_json::json!("a..b")),
            ("cell", serde_json::json!("a.example..")),
            ("cell", serde_json::json!("")),
            ("cell", serde_json::json!("user@host")),
            ("tenant", serde_json::json!("a.b")),
            ("exp", serde_json::json!(10)),
        ] {
            let mut p = base();
            p[claim] = value;
            assert!(
                matches!(
                    read_claims(&token_with(p)),
                    Err(ClaimsError::Invalid { .. })
                ),
                "{claim}"
            );
        }
    }

    #[test]
    fn refuses_a_member_given_twice_at_any_depth() {
        let with = |payload: &str| {
            let t = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(br#"{"alg":"EdDSA","kid":"k"}"#),
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode([7u8; 64])
            );
            read_claims(&t)
        };
        let base = r#""tenant":"acme","cell":"a.example","iat":10,"exp":20,"map_version":"v""#;
        assert!(with(&format!("{{{base}}}")).is_ok());
        // The same name in different objects is fine.
        assert!(with(&format!(r#"{{{base},"x":{{"x":{{"x":1}}}}}}"#)).is_ok());
        for dup in [
            r#""cell":"b.example""#,
            r#""unread":1,"unread":2"#,
            r#""x":[{"a":1,"a":1}]"#,
            r#""x":{"y":{"a":1,"a":1}}"#,
        ] {
            let e = with(&format!("{{{base},{dup}}}")).unwrap_err();
            assert!(matches!(e, ClaimsError::Payload(_)), "{dup}: {e}");
            assert!(e.to_string().contains("twice"), "{e}");
        }
    }

    #[test]
    fn refuses_a_lifetime_longer_than_the_bound() {
        let at = |iat: u64, exp: u64| {
            read_claims(&token_with(serde_json::json!({
                "tenant": "acme", "cell": "a.example", "iat": iat, "exp": exp, "map_version": "v"
            })))
        };
        assert_eq!(
            at(0, MAX_TOKEN_LIFETIME_SECS).unwrap().lifetime(),
            Duration::from_secs(MAX_TOKEN_LIFETIME_SECS)
        );
        assert_eq!(
            at(0, MAX_TOKEN_LIFETIME_SECS + 1),
            Err(ClaimsError::LifetimeTooLong {
                lifetime_secs: MAX_TOKEN_LIFETIME_SECS + 1,
                max_secs: MAX_TOKEN_LIFETIME_SECS
            })
        );
        // The review's token: exp in the far future.
        assert!(matches!(
            at(0, MAX_NUMERIC_DATE),
            Err(ClaimsError::LifetimeTooLong { .. })
        ));
        // Beyond 2^53 - 1 a time is not read at all (JavaScript could not).
        assert!(matches!(
            at(0, MAX_NUMERIC_DATE + 1),
            Err(ClaimsError::Payload(_))
        ));
        assert!(matches!(at(0, u64::MAX), Err(ClaimsError::Payload(_))));
    }
}
