//! Signing keys: PEM files in a key directory, the one that signs, the
//! public keys that are published, and `cellns keygen`.
//!
//! A key directory holds PKCS#8 PEM private keys (`*.pem`; Ed25519 or
//! P-256, which may also be SEC 1 `EC PRIVATE KEY`). Every key in it is
//! published in the JWKS; the key whose **file name sorts last** signs.
//! `cellns keygen` names keys `key-<unix seconds>-<alg>.pem`, always sorting
//! after every key already there, so the key it writes is the newest and
//! signs from the next rescan on.
//!
//! [`KeyRing`] holds the key set in force behind an `ArcSwap` (lock-free
//! reads on the issuing path) and [`KeyRing::rescan`] replaces it when the
//! directory changes; the server rescans once a second, so adding or
//! removing a key file takes effect without a restart. A directory that
//! turns unreadable or gains a bad key file keeps the last good set.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use p256::pkcs8::LineEnding;
use rand::rngs::OsRng;
use serde::Serialize;
use sha2::{Digest as _, Sha256};

use crate::keydir::Fingerprint;

/// A JWS signature algorithm cellns signs with and accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    /// EdDSA over Ed25519 (RFC 8037).
    EdDSA,
    /// ECDSA over P-256 with SHA-256 (RFC 7518 §3.4).
    ES256,
}

impl Alg {
    /// The JOSE `alg` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::ES256 => "ES256",
        }
    }

    /// Parses a JOSE `alg` value (exact match, as RFC 7515 requires).
    pub fn from_jose(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDSA),
            "ES256" => Some(Self::ES256),
            _ => None,
        }
    }

    /// The lowercase word used in key file names.
    fn file_word(self) -> &'static str {
        match self {
            Self::EdDSA => "eddsa",
            Self::ES256 => "es256",
        }
    }
}

impl fmt::Display for Alg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a key or key directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file is not a supported private key.
    #[error(
        "{path}: not an Ed25519 or P-256 private key in PEM (PKCS#8 `PRIVATE KEY` or SEC 1 `EC PRIVATE KEY`)"
    )]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
    /// The directory holds no key.
    #[error("{dir}: no signing keys (*.pem); create one with `cellns keygen --out {dir}`")]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
    /// A key could not be encoded.
    #[error("cannot encode the key: {0}")]
    Encode(String),
}

/// A private key, parsed once, ready to sign. The RustCrypto key parses,
/// generates and exports; `ring`'s signs (its assembly is two to eight
/// times faster, and signing is most of the cost of issuing a token).
enum Secret {
    Ed25519(ed25519_dalek::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

enum Signer {
    Ed25519(ring::signature::Ed25519KeyPair),
    P256(ring::signature::EcdsaKeyPair, ring::rand::SystemRandom),
}

impl Signer {
    fn new(secret: &Secret) -> Option<Self> {
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair};
        Some(match secret {
            Secret::Ed25519(k) => Self::Ed25519(
                Ed25519KeyPair::from_seed_and_public_key(
                    k.as_bytes(),
                    k.verifying_key().as_bytes(),
                )
                .ok()?,
            ),
            Secret::P256(k) => {
                let rng = ring::rand::SystemRandom::new();
                let public = k.verifying_key().to_encoded_point(false);
                let pair = EcdsaKeyPair::from_private_key_and_public_key(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    &k.to_bytes(),
                    public.as_bytes(),
                    &rng,
                )
                .ok()?;
                Self::P256(pair, rng)
            }
        })
    }
}

/// One signing key: the private half, and what is published of it.
pub struct SigningKey {
    secret: Secret,
    signer: Signer,
    alg: Alg,
    kid: String,
    jwk: PublicJwk,
    /// The JWS protected header (`{"alg","typ","kid"}`), base64url, followed
    /// by the `.` that separates it from the payload.
    header_b64_dot: String,
    source: String,
}

impl fmt::Debug for SigningKey {
    // Never print the private half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh random key.
    pub fn generate(alg: Alg) -> Self {
        let secret = match alg {
            Alg::EdDSA => Secret::Ed25519(ed25519_dalek::SigningKey::generate(&mut OsRng)),
            Alg::ES256 => Secret::P256(p256::ecdsa::SigningKey::random(&mut OsRng)),
        };
        Self::from_secret(secret, "generated".to_owned())
            .unwrap_or_else(|| panic!("ring refused a freshly generated {alg} key"))
    }

    /// Parses a PEM private key (PKCS#8 Ed25519 or P-256, or SEC 1 P-256).
    /// `source` names it in errors and logs.
    pub fn from_pem(pem: &str, source: &Path) -> Result<Self, KeyError> {
        let secret = if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            Secret::Ed25519(k)
        } else if let Ok(k) = p256::SecretKey::from_pkcs8_pem(pem) {
            Secret::P256(k.into())
        } else if let Ok(k) = p256::SecretKey::from_sec1_pem(pem) {
            Secret::P256(k.into())
        } else {
            return Err(KeyError::Unsupported {
                path: source.to_owned(),
            });
        };
        Self::from_secret(secret, source.display().to_string()).ok_or_else(|| {
            KeyError::Unsupported {
                path: source.to_owned(),
            }
        })
    }

    /// `None` only if `ring` refuses a key RustCrypto accepted (it never
    /// should: both check the same curve rules).
    fn from_secret(secret: Secret, source: String) -> Option<Self> {
        let signer = Signer::new(&secret)?;
        let (alg, jwk) = match &secret {
            Secret::Ed25519(k) => (
                Alg::EdDSA,
                PublicJwk::okp(URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes())),
            ),
            Secret::P256(k) => {
                let point = k.verifying_key().to_encoded_point(false);
                // An uncompressed point always has both coordinates.
                let x = point.x().map(|x| URL_SAFE_NO_PAD.encode(x));
                let y = point.y().map(|y| URL_SAFE_NO_PAD.encode(y));
                (
                    Alg::ES256,
                    PublicJwk::ec(x.unwrap_or_default(), y.unwrap_or_default()),
                )
            }
        };
        let kid = jwk.thumbprint();
        let jwk = PublicJwk {
            kid: kid.clone(),
            alg: alg.as_str(),
            ..jwk
        };
        let header = format!(
            r#"{{"alg":"{}","typ":"JWT","kid":"{}"}}"#,
            alg.as_str(),
            kid
        );
        let mut header_b64_dot = URL_SAFE_NO_PAD.encode(header);
        header_b64_dot.push('.');
        Some(Self {
            secret,
            signer,
            alg,
            kid,
            jwk,
            header_b64_dot,
            source,
        })
    }

    /// The algorithm this key signs with.
    pub fn alg(&self) -> Alg {
        self.alg
    }

    /// The key id: the RFC 7638 JWK thumbprint (SHA-256, base64url).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.jwk
    }

    /// Where the key came from (file path, or `generated`).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// `base64url(header) + "."`, ready for the payload.
    pub(crate) fn header_b64_dot(&self) -> &str {
        &self.header_b64_dot
    }

    /// Signs `signing_input` (`header.payload`), returning the raw JWS
    /// signature (64 bytes for both algorithms; ES256 as `r || s`, with S
    /// in the low half: see [`low_s`]).
    pub(crate) fn sign(&self, signing_input: &[u8]) -> [u8; 64] {
        let mut out = [0u8; 64];
        match &self.signer {
            Signer::Ed25519(k) => out.copy_from_slice(k.sign(signing_input).as_ref()),
            Signer::P256(k, rng) => match k.sign(rng, signing_input) {
                Ok(sig) => out.copy_from_slice(sig.as_ref()),
                // ring fails only when the OS random source does; fall back
                // to RustCrypto's deterministic (RFC 6979) nonces.
                Err(_) => {
                    use p256::ecdsa::signature::Signer as _;
                    if let Secret::P256(k) = &self.secret {
                        let sig: p256::ecdsa::Signature = k.sign(signing_input);
                        out.copy_from_slice(&sig.to_bytes());
                    }
                }
            },
        }
        if let Signer::P256(..) = self.signer {
            low_s(&mut out);
        }
        out
    }

    /// The private key as PKCS#8 PEM. Ed25519 keys are written as PKCS#8
    /// v1 (RFC 5208: no public key attribute), which OpenSSL 3 and
    /// python-cryptography read; the v2 form ed25519-dalek writes by
    /// default (RFC 5958, with the public key) they refuse. Both forms are
    /// read ([`SigningKey::from_pem`]).
    pub fn to_pkcs8_pem(&self) -> Result<String, KeyError> {
        let pem = match &self.secret {
            Secret::Ed25519(k) => ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: k.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_pem(LineEnding::LF),
            Secret::P256(k) => {
                use p256::pkcs8::EncodePrivateKey as _;
                p256::SecretKey::from(k).to_pkcs8_pem(LineEnding::LF)
            }
        }
        .map_err(|e| KeyError::Encode(e.to_string()))?;
        Ok(pem.to_string())
    }
}

/// Folds an ECDSA P-256 signature `r || s` into its low-S form: `(r, s)`
/// and `(r, n - s)` both verify, so a token would have two valid
/// encodings; verifiers (`cellns_client`'s `non_canonical_signature`)
/// accept only `s <= n/2`. `ring` returns either, half of the time the high
/// one.
fn low_s(sig: &mut [u8; 64]) {
    if let Ok(parsed) = p256::ecdsa::Signature::from_slice(sig)
        && let Some(low) = parsed.normalize_s()
    {
        sig.copy_from_slice(&low.to_bytes());
    }
}

/// A public key as published in the JWKS (RFC 7517; OKP per RFC 8037).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PublicJwk {
    /// Key type: `OKP` (Ed25519) or `EC` (P-256).
    pub kty: &'static str,
    /// Curve: `Ed25519` or `P-256`.
    pub crv: &'static str,
    /// The public key (OKP) or its x coordinate (EC), base64url.
    pub x: String,
    /// The y coordinate (EC only), base64url.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
    /// Key id (RFC 7638 thumbprint).
    pub kid: String,
    /// The algorithm the key is used with.
    pub alg: &'static str,
    /// Public key use: always `sig`.
    #[serde(rename = "use")]
    pub use_: &'static str,
}

impl PublicJwk {
    fn okp(x: String) -> Self {
        Self {
            kty: "OKP",
            crv: "Ed25519",
            x,
            y: None,
            kid: String::new(),
            alg: "EdDSA",
            use_: "sig",
        }
    }

    fn ec(x: String, y: String) -> Self {
        Self {
            kty: "EC",
            crv: "P-256",
            x,
            y: Some(y),
            kid: String::new(),
            alg: "ES256",
            use_: "sig",
        }
    }

    /// The RFC 7638 thumbprint: SHA-256 over the required members in
    /// lexicographic order with no whitespace, base64url.
    pub fn thumbprint(&self) -> String {
        // The member values are base64url or fixed names: nothing to escape.
        let canonical = match &self.y {
            Some(y) => format!(
                r#"{{"crv":"{}","kty":"{}","x":"{}","y":"{}"}}"#,
                self.crv, self.kty, self.x, y
            ),
            None => format!(
                r#"{{"crv":"{}","kty":"{}","x":"{}"}}"#,
                self.crv, self.kty, self.x
            ),
        };
        URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
    }
}

/// The keys in force: the one that signs and all that are published.
#[derive(Debug)]
pub struct KeySet {
    /// Every key, in file name order; the last one signs.
    keys: Vec<Arc<SigningKey>>,
    /// The JWKS document (`{"keys":[...]}`), serialised once and shared,
    /// not copied, by every response.
    jwks_json: axum::body::Bytes,
}

impl KeySet {
    /// A set of `keys` (in signing order: the last one signs).
    pub fn new(keys: Vec<Arc<SigningKey>>) -> Self {
        #[derive(Serialize)]
        struct Jwks<'a> {
            keys: Vec<&'a PublicJwk>,
        }
        // Serialising plain strings into a Vec cannot fail.
        let json = serde_json::to_vec(&Jwks {
            keys: keys.iter().map(|k| k.public_jwk()).collect(),
        })
        .unwrap_or_default();
        Self {
            keys,
            jwks_json: json.into(),
        }
    }

    /// The key that signs new tokens; `None` when the directory is empty.
    pub fn signing(&self) -> Option<&Arc<SigningKey>> {
        self.keys.last()
    }

    /// Every published key.
    pub fn keys(&self) -> &[Arc<SigningKey>] {
        &self.keys
    }

    /// The JWKS document.
    pub fn jwks_json(&self) -> &axum::body::Bytes {
        &self.jwks_json
    }
}

/// The key files of `dir` (`*.pem`, not hidden), sorted by name.
fn key_files(dir: &Path) -> Result<Fingerprint, KeyError> {
    let is_key = |name: &str| !name.starts_with('.') && name.ends_with(".pem");
    crate::keydir::key_files(dir, is_key).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Loads every key of `dir` (see the module docs). An empty directory gives
/// an empty set; a bad key file is an error naming it.
pub fn load_dir(dir: &Path) -> Result<KeySet, KeyError> {
    Ok(load_dir_with_fingerprint(dir)?.0)
}

fn load_dir_with_fingerprint(dir: &Path) -> Result<(KeySet, Fingerprint), KeyError> {
    let files = key_files(dir)?;
    let mut keys = Vec::with_capacity(files.len());
    for (name, _, _) in &files {
        let path = dir.join(name);
        let pem = fs::read_to_string(&path).map_err(|source| KeyError::Io {
            path: path.clone(),
            source,
        })?;
        keys.push(Arc::new(SigningKey::from_pem(&pem, &path)?));
    }
    Ok((KeySet::new(keys), files))
}

/// Where the keys come from.
#[derive(Debug)]
enum Origin {
    /// A key directory, rescanned by [`KeyRing::rescan`].
    Dir {
        dir: PathBuf,
        /// The fingerprint of the set in force, and of the last bad state
        /// seen (so a bad file is reported once, not every second).
        seen: Mutex<(Fingerprint, Option<Fingerprint>)>,
    },
    /// One ephemeral key, never changes.
    Ephemeral,
}

/// The key set in force, swapped atomically when the key directory changes.
#[derive(Debug)]
pub struct KeyRing {
    current: ArcSwap<KeySet>,
    origin: Origin,
}

impl KeyRing {
    /// Loads `dir`. Fails when a key file is bad or the directory holds no key.
    pub fn from_dir(dir: &Path) -> Result<Self, KeyError> {
        let (set, fp) = load_dir_with_fingerprint(dir)?;
        if set.signing().is_none() {
            return Err(KeyError::Empty {
                dir: dir.to_owned(),
            });
        }
        Ok(Self {
            current: ArcSwap::from_pointee(set),
            origin: Origin::Dir {
                dir: dir.to_owned(),
                seen: Mutex::new((fp, None)),
            },
        })
    }

    /// One fresh key that lives as long as the process (development mode).
    pub fn ephemeral(alg: Alg) -> Self {
        Self {
            current: ArcSwap::from_pointee(KeySet::new(vec![Arc::new(SigningKey::generate(alg))])),
            origin: Origin::Ephemeral,
        }
    }

    /// A ring of fixed keys (tests, benchmarks, embedding).
    pub fn fixed(keys: Vec<Arc<SigningKey>>) -> Self {
        Self {
            current: ArcSwap::from_pointee(KeySet::new(keys)),
            origin: Origin::Ephemeral,
        }
    }

    /// The key set in force. Lock-free.
    #[inline]
    pub fn load(&self) -> arc_swap::Guard<Arc<KeySet>> {
        self.current.load()
    }

    /// The key directory, if the keys come from one.
    pub fn dir(&self) -> Option<&Path> {
        match &self.origin {
            Origin::Dir { dir, .. } => Some(dir),
            Origin::Ephemeral => None,
        }
    }

    /// Re-reads the key directory if it changed; returns whether the set in
    /// force changed. Blocking file I/O: call it off the async workers.
    /// A bad state (unreadable directory, bad key file) keeps the last good
    /// set and is logged once.
    pub fn rescan(&self) -> bool {
        let Origin::Dir { dir, seen } = &self.origin else {
            return false;
        };
        let Ok(mut seen) = seen.lock() else {
            return false;
        };
        let files = match key_files(dir) {
            Ok(f) => f,
            Err(e) => {
                if seen.1.as_ref().is_none_or(|b| !b.is_empty()) {
                    tracing::error!(error = %e, "cannot read the signing key directory; keeping the keys in force");
                    seen.1 = Some(Vec::new());
                }
                return false;
            }
        };
        if files == seen.0 || seen.1.as_ref() == Some(&files) {
            return false;
        }
        match load_dir_with_fingerprint(dir) {
            Ok((set, fp)) => {
                let kids: Vec<&str> = set.keys().iter().map(|k| k.kid()).collect();
                match set.signing() {
                    Some(k) => tracing::info!(
                        dir = %dir.display(),
                        signing_kid = k.kid(),
                        signing_key = k.source(),
                        published = ?kids,
                        "signing keys changed"
                    ),
                    None => tracing::error!(
                        dir = %dir.display(),
                        "every signing key was removed: token requests fail with 503 until a key is added"
                    ),
                }
                self.current.store(Arc::new(set));
                *seen = (fp, None);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "bad signing key directory; keeping the keys in force");
                seen.1 = Some(files);
                false
            }
        }
    }
}

/// `cellns keygen`: writes a new key into `dir` (created, mode 0700, if
/// missing) as `key-<unix seconds>-<alg>.pem`, mode 0600, named to sort after
/// every key already there so it is the one that signs. Returns its path
/// and key id.
pub fn keygen(dir: &Path, alg: Alg) -> Result<(PathBuf, String), KeyError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| KeyError::Io { path, source }
    };
    if !dir.exists() {
        let mut b = fs::DirBuilder::new();
        b.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
        b.create(dir).map_err(io(dir))?;
    }
    let existing = key_files(dir)?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let key = SigningKey::generate(alg);
    let pem = key.to_pkcs8_pem()?;
    let last = existing.last().map(|(n, _, _)| n.clone());
    let mut stamp = now;
    loop {
        let name = format!("key-{stamp:010}-{}.pem", alg.file_word());
        let path = dir.join(&name);
        if last.as_ref().is_some_and(|l| *l >= name) {
            stamp += 1;
            continue;
        }
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        match opts.open(&path) {
            Ok(mut f) => {
                f.write_all(pem.as_bytes()).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                return Ok((path, key.kid().to_owned()));
            }
            // Another keygen won the race for this name: take the next one.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => stamp += 1,
            Err(e) => return Err(io(&path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip_keeps_kid() {
        for alg in [Alg::EdDSA, Alg::ES256] {
            let k = SigningKey::generate(alg);
            let pem = k.to_pkcs8_pem().unwrap();
            let back = SigningKey::from_pem(&pem, Path::new("mem")).unwrap();
            assert_eq!(back.kid(), k.kid());
            assert_eq!(back.alg(), alg);
        }
    }

    #[test]
    fn ed25519_keys_are_written_as_pkcs8_v1_and_v2_is_still_read() {
        use base64::engine::general_purpose::STANDARD;
        let k = SigningKey::generate(Alg::EdDSA);
        let pem = k.to_pkcs8_pem().unwrap();
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        // SEQUENCE { INTEGER 0 (v1), AlgorithmIdentifier, OCTET STRING }:
        // 48 bytes, and no [1] public key (v2 is INTEGER 1 and 83 bytes).
        assert_eq!(&der[2..5], &[0x02, 0x01, 0x00], "version v1");
        assert_eq!(der.len(), 48);
        let info = ed25519_dalek::pkcs8::PrivateKeyInfo::try_from(der.as_slice()).unwrap();
        assert!(info.public_key.is_none());
        // A v2 file (as keygen wrote before) still loads, same key.
        let Secret::Ed25519(secret) = &k.secret else {
            unreachable!()
        };
        let v2 = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        assert!(v2.len() > pem.len(), "v2 carries the public key too");
        let back = SigningKey::from_pem(&v2, Path::new("v2.pem")).unwrap();
        assert_eq!(back.kid(), k.kid());
    }

    #[test]
    fn es256_signatures_are_low_s_and_verify() {
        // ring returns a high S about half of the time; verifiers refuse
        // those (non_canonical_signature), so every one must be folded.
        let key = Arc::new(SigningKey::generate(Alg::ES256));
        let set = KeySet::new(vec![key.clone()]);
        let public = cellns_client::PublicKeySet::from_jwks(set.jwks_json()).unwrap();
        let expect = cellns_client::Expectations::new("cellns", "cells", "c.example").unwrap();
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        for i in 0..256 {
            let payload = serde_json::json!({
                "iss": "cellns", "aud": "cells", "sub": format!("user-{i}"), "iat": now,
                "nbf": now, "exp": now + 60, "jti": i.to_string(), "tenant": "acme",
                "cell": "c.example", "cell_id": "c", "region": "r", "map_version": "v"
            });
            let mut token = key.header_b64_dot().to_owned();
            token.push_str(&URL_SAFE_NO_PAD.encode(payload.to_string()));
            let sig = key.sign(token.as_bytes());
            let parsed = p256::ecdsa::Signature::from_slice(&sig).unwrap();
            assert!(parsed.normalize_s().is_none(), "token {i}: high S");
            token.push('.');
            token.push_str(&URL_SAFE_NO_PAD.encode(sig));
            public
                .verify(&token, &expect)
                .unwrap_or_else(|e| panic!("token {i}: {} ({e})", e.code()));
        }
    }

    #[test]
    fn rfc8037_thumbprint() {
        // RFC 8037 appendix A.3.
        let jwk = PublicJwk::okp("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into());
        assert_eq!(
            jwk.thumbprint(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
    }

    #[test]
    fn rejects_non_keys() {
        let e = SigningKey::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            Path::new("x.pem"),
        )
        .unwrap_err();
        assert!(matches!(e, KeyError::Unsupported { .. }), "{e}");
    }

    #[test]
    fn keygen_newest_signs_and_rescan_follows_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let (p1, kid1) = keygen(dir.path(), Alg::EdDSA).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(
                fs::metadata(&p1).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let ring = KeyRing::from_dir(dir.path()).unwrap();
        assert_eq!(ring.load().signing().unwrap().kid(), kid1);

        let (_p2, kid2) = keygen(dir.path(), Alg::ES256).unwrap();
        assert!(ring.rescan());
        let set = ring.load();
        assert_eq!(set.signing().unwrap().kid(), kid2, "the newest key signs");
        assert_eq!(set.keys().len(), 2, "both keys are published");
        assert!(!ring.rescan(), "nothing changed");

        // A bad file keeps the set in force.
        fs::write(dir.path().join("zz-bad.pem"), "not a key").unwrap();
        assert!(!ring.rescan());
        assert_eq!(ring.load().keys().len(), 2);
        fs::remove_file(dir.path().join("zz-bad.pem")).unwrap();

        fs::remove_file(&p1).unwrap();
        assert!(ring.rescan());
        let set = ring.load();
        assert_eq!(set.keys().len(), 1);
        assert_eq!(set.signing().unwrap().kid(), kid2);
    }

    #[test]
    fn empty_dir_is_an_error_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let e = KeyRing::from_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("cellns keygen"), "{e}");
    }
}
