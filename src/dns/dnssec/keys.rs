//! DNSSEC keys: the key file, `cellns dnssec keygen` and `settime`, the
//! key directory, and what each key is doing at a given moment.
//!
//! # The key file
//!
//! One file a key, `dnssec-<created>-<tag>.pem`, mode 0600: a few TOML
//! lines (role, algorithm, key tag, and the timing that drives rollover)
//! above the PKCS#8 private key in PEM (RFC 7468 allows text before the
//! PEM block; OpenSSL skips it). Keeping the timing in the key's own file,
//! as BIND's `.private` files do, means a key and its schedule can never
//! be separated or half-written.
//!
//! ```text
//! role = "csk"
//! algorithm = "ecdsap256sha256"
//! key_tag = 40731
//! created = "2026-03-01T10:00:00Z"
//! publish = "2026-03-01T10:00:00Z"
//! activate = "2026-03-01T10:00:00Z"
//! # inactive = "..."   (absent: never)
//! # delete = "..."     (absent: never)
//! -----BEGIN PRIVATE KEY-----
//! ...
//! ```
//!
//! # States
//!
//! A key's state at time `t` follows from its timing alone
//! ([`Timing::state`]): `pending` before `publish`, `published` (its DNSKEY
//! is in the zone, it signs nothing) until `activate`, `active` (it signs)
//! until `inactive`, `retired` (still in the DNSKEY set, signs nothing)
//! until `delete`, then `removed`. An unset time never comes. The server
//! evaluates the states once a second, so a schedule written in the files
//! runs by itself; see docs/dnssec.md for the roll schedules.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hickory_proto::dnssec::rdata::{DNSKEY, DS};
use hickory_proto::dnssec::{Algorithm as HAlgorithm, DigestType, PublicKeyBuf};
use hickory_proto::rr::Name;
use ring::rand::SystemRandom;
use ring::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
};
use serde::Deserialize;

pub(crate) use crate::keydir::Fingerprint;

/// A DNSSEC signing algorithm cellns signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// ECDSA over P-256 with SHA-256, algorithm 13 (RFC 6605): the default.
    EcdsaP256Sha256,
    /// Ed25519, algorithm 15 (RFC 8080).
    Ed25519,
}

impl Algorithm {
    /// The IANA algorithm number.
    pub fn number(self) -> u8 {
        match self {
            Self::EcdsaP256Sha256 => 13,
            Self::Ed25519 => 15,
        }
    }

    /// The name in key files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::EcdsaP256Sha256 => "ecdsap256sha256",
            Self::Ed25519 => "ed25519",
        }
    }

    /// Parses [`Algorithm::name`] (or the number), case-insensitively.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "ecdsap256sha256" | "13" => Some(Self::EcdsaP256Sha256),
            "ed25519" | "15" => Some(Self::Ed25519),
            _ => None,
        }
    }

    pub(crate) fn hickory(self) -> HAlgorithm {
        match self {
            Self::EcdsaP256Sha256 => HAlgorithm::ECDSAP256SHA256,
            Self::Ed25519 => HAlgorithm::ED25519,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a key signs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Combined signing key: signs everything, has a DS at the parent.
    Csk,
    /// Key signing key: signs the apex key RRsets (DNSKEY, CDS, CDNSKEY),
    /// has a DS at the parent.
    Ksk,
    /// Zone signing key: signs everything else.
    Zsk,
}

impl Role {
    /// Every role, for metrics.
    pub const ALL: [Role; 3] = [Role::Csk, Role::Ksk, Role::Zsk];

    /// The name in key files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Csk => "csk",
            Self::Ksk => "ksk",
            Self::Zsk => "zsk",
        }
    }

    /// Parses [`Role::name`], case-insensitively.
    pub fn from_name(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "csk" => Some(Self::Csk),
            "ksk" => Some(Self::Ksk),
            "zsk" => Some(Self::Zsk),
            _ => None,
        }
    }

    /// DNSKEY flags: zone key, plus the secure entry point (SEP) bit for
    /// keys with a DS at the parent (RFC 4034 §2.1.1).
    pub fn flags(self) -> u16 {
        match self {
            Self::Csk | Self::Ksk => 257,
            Self::Zsk => 256,
        }
    }

    /// Whether it signs the apex key RRsets (DNSKEY, CDS, CDNSKEY).
    pub fn signs_keys(self) -> bool {
        matches!(self, Self::Csk | Self::Ksk)
    }

    /// Whether it signs the rest of the zone.
    pub fn signs_zone(self) -> bool {
        matches!(self, Self::Csk | Self::Zsk)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a key is in its life, at some moment (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeyState {
    /// Before `publish`: not in the zone.
    Pending,
    /// In the DNSKEY set, signs nothing.
    Published,
    /// In the DNSKEY set, signs.
    Active,
    /// In the DNSKEY set again signing nothing, until `delete`.
    Retired,
    /// After `delete`: gone from the zone (the file may be deleted).
    Removed,
}

impl KeyState {
    /// Every state, for metrics.
    pub const ALL: [KeyState; 5] = [
        KeyState::Pending,
        KeyState::Published,
        KeyState::Active,
        KeyState::Retired,
        KeyState::Removed,
    ];

    /// The name in views, logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Published => "published",
            Self::Active => "active",
            Self::Retired => "retired",
            Self::Removed => "removed",
        }
    }

    /// Whether its DNSKEY is in the zone.
    pub fn in_zone(self) -> bool {
        matches!(self, Self::Published | Self::Active | Self::Retired)
    }
}

impl fmt::Display for KeyState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key's timing, in Unix seconds; `None` never comes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// When the key was made (informational).
    pub created: u64,
    /// Its DNSKEY enters the zone.
    pub publish: Option<u64>,
    /// It starts signing.
    pub activate: Option<u64>,
    /// It stops signing (its DNSKEY stays).
    pub inactive: Option<u64>,
    /// Its DNSKEY leaves the zone.
    pub delete: Option<u64>,
}

impl Timing {
    /// The state at `now`.
    pub fn state(&self, now: u64) -> KeyState {
        let reached = |t: Option<u64>| t.is_some_and(|t| t <= now);
        if reached(self.delete) {
            KeyState::Removed
        } else if reached(self.inactive) {
            KeyState::Retired
        } else if reached(self.activate) {
            KeyState::Active
        } else if reached(self.publish) {
            KeyState::Published
        } else {
            KeyState::Pending
        }
    }

    /// The first timing event after `now`, if any.
    pub fn next_event(&self, now: u64) -> Option<u64> {
        [self.publish, self.activate, self.inactive, self.delete]
            .into_iter()
            .flatten()
            .filter(|&t| t > now)
            .min()
    }

    /// The order the events must come in: publish ≤ activate ≤ inactive ≤
    /// delete (for those set), and nothing active that is never published.
    pub fn check(&self) -> Result<(), String> {
        if self.activate.is_some() && self.publish.is_none() {
            return Err("activate is set but publish is not: a key cannot sign before its DNSKEY is in the zone".into());
        }
        let named = [
            ("publish", self.publish),
            ("activate", self.activate),
            ("inactive", self.inactive),
            ("delete", self.delete),
        ];
        for (i, (a, ta)) in named.iter().enumerate() {
            for (b, tb) in &named[i + 1..] {
                if let (Some(ta), Some(tb)) = (ta, tb)
                    && tb < ta
                {
                    return Err(format!(
                        "{b} ({}) is before {a} ({})",
                        rfc3339(*tb),
                        rfc3339(*ta)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Why a key file, directory or timing could not be used.
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
    /// A key file is malformed.
    #[error("{path}:{line}: {message}")]
    Bad {
        /// The file.
        path: PathBuf,
        /// The line (1-based) the problem is on.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The directory holds no key file.
    #[error(
        "{dir}: no DNSSEC keys (dnssec-*.pem); create one with `cellns dnssec keygen --out {dir}`"
    )]
    Empty {
        /// The directory.
        dir: PathBuf,
    },
    /// No key in the directory has the tag asked for, or several do.
    #[error("{dir}: {message}")]
    Select {
        /// The directory.
        dir: PathBuf,
        /// Which tag, and what was found.
        message: String,
    },
    /// A time or timing given on the command line is not usable.
    #[error("{0}")]
    Timing(String),
    /// The system could not make a key.
    #[error("cannot generate a key: {0}")]
    Generate(String),
}

/// The private half: a `ring` key pair, parsed once.
enum Pair {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

/// One DNSSEC key from the key directory.
pub struct Key {
    file: PathBuf,
    role: Role,
    algorithm: Algorithm,
    tag: u16,
    timing: Timing,
    dnskey: DNSKEY,
    pair: Pair,
}

impl fmt::Debug for Key {
    // Never the private half.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("file", &self.file)
            .field("role", &self.role)
            .field("algorithm", &self.algorithm)
            .field("tag", &self.tag)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// The file it was read from.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Its role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Its algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Its key tag (RFC 4034 appendix B).
    pub fn tag(&self) -> u16 {
        self.tag
    }

    /// Its timing.
    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    /// Its DNSKEY RDATA.
    pub fn dnskey(&self) -> &DNSKEY {
        &self.dnskey
    }

    /// Its DS RDATA for zone `origin`: SHA-256 (digest type 2, RFC 4509).
    pub fn ds(&self, origin: &Name) -> Option<DS> {
        let digest = self.dnskey.to_digest(origin, DigestType::SHA256).ok()?;
        Some(DS::new(
            self.tag,
            self.algorithm.hickory(),
            DigestType::SHA256,
            digest.as_ref().to_vec(),
        ))
    }

    /// Signs `data`: the raw signature as RRSIG carries it (r‖s for ECDSA,
    /// RFC 6605 §4; the 64-byte signature for Ed25519, RFC 8080 §4). Fails
    /// only when the OS random source does (ECDSA nonces).
    pub(crate) fn sign(&self, data: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
        match &self.pair {
            Pair::Ecdsa(k) => Ok(k.sign(&SystemRandom::new(), data)?.as_ref().to_vec()),
            Pair::Ed25519(k) => Ok(k.sign(data).as_ref().to_vec()),
        }
    }

    /// Whether two values are the same key with the same schedule.
    pub(crate) fn same(&self, other: &Key) -> bool {
        self.file == other.file
            && self.role == other.role
            && self.timing == other.timing
            && self.dnskey == other.dnskey
    }
}

/// The header lines of a key file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Header {
    role: String,
    algorithm: String,
    key_tag: u16,
    created: String,
    publish: Option<String>,
    activate: Option<String>,
    inactive: Option<String>,
    delete: Option<String>,
}

const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";

/// The name of the header field on `line` (1-based) of `text`, if any.
fn line_of(text: &str, field: &str) -> usize {
    text.lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(field)
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map_or(1, |i| i + 1)
}

/// Parses a key file's text; `path` names it in errors.
pub fn parse(text: &str, path: &Path) -> Result<Key, KeyError> {
    let bad = |line: usize, message: String| KeyError::Bad {
        path: path.to_owned(),
        line,
        message,
    };
    let Some(begin) = text.find(PEM_BEGIN) else {
        return Err(bad(
            text.lines().count().max(1),
            format!("no `{PEM_BEGIN}` block: not a cellns DNSSEC key file"),
        ));
    };
    let (head, pem) = text.split_at(begin);
    let pem_line = head.lines().count() + 1;
    let header: Header = toml::from_str(head).map_err(|e| {
        let line = e.span().map_or(1, |s| {
            head[..s.start.min(head.len())].lines().count().max(1)
        });
        bad(line, e.message().trim().to_owned())
    })?;
    let role = Role::from_name(&header.role).ok_or_else(|| {
        bad(
            line_of(head, "role"),
            format!("role: `{}` is not csk, ksk or zsk", header.role),
        )
    })?;
    let algorithm = Algorithm::from_name(&header.algorithm).ok_or_else(|| {
        bad(
            line_of(head, "algorithm"),
            format!(
                "algorithm: `{}` is not ecdsap256sha256 or ed25519",
                header.algorithm
            ),
        )
    })?;
    let time = |field: &str, v: &Option<String>| -> Result<Option<u64>, KeyError> {
        v.as_deref()
            .map(|s| {
                parse_rfc3339(s).ok_or_else(|| {
                    bad(
                        line_of(head, field),
                        format!("{field}: `{s}` is not an RFC 3339 time (2026-03-01T10:00:00Z)"),
                    )
                })
            })
            .transpose()
    };
    let timing = Timing {
        created: time("created", &Some(header.created.clone()))?.unwrap_or(0),
        publish: time("publish", &header.publish)?,
        activate: time("activate", &header.activate)?,
        inactive: time("inactive", &header.inactive)?,
        delete: time("delete", &header.delete)?,
    };
    timing
        .check()
        .map_err(|m| bad(line_of(head, "publish"), format!("timing: {m}")))?;
    let body: String = pem
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with(PEM_END))
        .map(str::trim)
        .collect();
    let der = STANDARD
        .decode(body)
        .map_err(|e| bad(pem_line, format!("the PEM block is not base64: {e}")))?;
    let pair = match algorithm {
        Algorithm::EcdsaP256Sha256 => {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der, &SystemRandom::new())
                .map(Pair::Ecdsa)
        }
        Algorithm::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&der).map(Pair::Ed25519),
    }
    .map_err(|e| {
        bad(
            pem_line,
            format!("not a PKCS#8 {algorithm} private key ({e})"),
        )
    })?;
    let key = Key::assemble(path.to_owned(), role, algorithm, timing, pair);
    if key.tag != header.key_tag {
        return Err(bad(
            line_of(head, "key_tag"),
            format!(
                "key_tag: {} does not match the key (its tag as a {role} is {}); the role and the key decide the tag, so a file whose role was changed needs a new key",
                header.key_tag, key.tag
            ),
        ));
    }
    Ok(key)
}

impl Key {
    fn assemble(
        file: PathBuf,
        role: Role,
        algorithm: Algorithm,
        timing: Timing,
        pair: Pair,
    ) -> Self {
        let public = match &pair {
            // ring gives the uncompressed point 0x04 ‖ x ‖ y; DNSKEY carries
            // x ‖ y (RFC 6605 §4).
            Pair::Ecdsa(k) => k.public_key().as_ref()[1..].to_vec(),
            Pair::Ed25519(k) => k.public_key().as_ref().to_vec(),
        };
        let dnskey =
            DNSKEY::with_flags(role.flags(), PublicKeyBuf::new(public, algorithm.hickory()));
        let tag = key_tag(&dnskey);
        Self {
            file,
            role,
            algorithm,
            tag,
            timing,
            dnskey,
            pair,
        }
    }
}

/// The key tag of `dnskey` (RFC 4034 appendix B), computed over its RDATA.
pub fn key_tag(dnskey: &DNSKEY) -> u16 {
    // Encoding a DNSKEY into a vector cannot fail.
    dnskey.calculate_key_tag().unwrap_or(0)
}

/// Reads and parses the key file `path`.
pub fn load_file(path: &Path) -> Result<Key, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Whether `name` is a key file name (`dnssec-*.pem`, not hidden).
fn is_key_file(name: &str) -> bool {
    name.starts_with("dnssec-") && name.ends_with(".pem")
}

/// The key files of `dir` (`dnssec-*.pem`), sorted by name.
pub(crate) fn key_files(dir: &Path) -> Result<Fingerprint, KeyError> {
    crate::keydir::key_files(dir, is_key_file).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Loads every key of `dir`, in file name order (`cellns dnssec ds`). A bad
/// key file is an error naming it.
pub fn load_dir_keys(dir: &Path) -> Result<Vec<Key>, KeyError> {
    Ok(load_dir(dir)?.0)
}

/// Loads every key of `dir`, in file name order, with the fingerprint of
/// what was read. A bad key file is an error naming it.
pub(crate) fn load_dir(dir: &Path) -> Result<(Vec<Key>, Fingerprint), KeyError> {
    let files = key_files(dir)?;
    let keys = files
        .iter()
        .map(|(name, _, _)| load_file(&dir.join(name)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((keys, files))
}

/// The Unix time now.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `t` as RFC 3339 UTC (`2026-03-01T10:00:00Z`).
pub fn rfc3339(t: u64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t as i64)
        .ok()
        .and_then(|d| {
            d.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| t.to_string())
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let t = time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .ok()?;
    u64::try_from(t.unix_timestamp()).ok()
}

/// Parses a time given on the command line, relative to `now`: `now`,
/// `now+DURATION` or `+DURATION` (`90s`, `30m`, `12h`, `7d`, `2w`; bare
/// digits after `+` are seconds), Unix seconds, or RFC 3339. `none` (for
/// `settime`) unsets it: `Ok(None)`.
pub fn parse_time(s: &str, now: u64) -> Result<Option<u64>, KeyError> {
    let s = s.trim();
    let bad = || {
        KeyError::Timing(format!(
            "`{s}` is not a time: use now, now+DURATION or +DURATION (90s, 30m, 12h, 7d, 2w), Unix seconds, RFC 3339 (2026-03-01T10:00:00Z), or none"
        ))
    };
    if s.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if s.eq_ignore_ascii_case("now") {
        return Ok(Some(now));
    }
    let rel = s
        .strip_prefix("now")
        .or(Some(s))
        .and_then(|r| r.strip_prefix('+'));
    if let Some(d) = rel {
        return parse_duration(d).map(|d| Some(now + d)).ok_or_else(bad);
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse().map(Some).map_err(|_| bad());
    }
    parse_rfc3339(s).map(Some).ok_or_else(bad)
}

/// `90s`, `30m`, `12h`, `7d`, `2w`, or bare seconds.
fn parse_duration(s: &str) -> Option<u64> {
    let (n, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// The text of a key file.
fn file_text(role: Role, algorithm: Algorithm, tag: u16, t: &Timing, pkcs8: &[u8]) -> String {
    let mut s = String::new();
    s.push_str(
        "# cellns DNSSEC key (private: keep it secret, mode 0600).\n\
         # Timing (RFC 3339, UTC): publish = the DNSKEY enters the zone, activate = it\n\
         # signs, inactive = it stops signing, delete = the DNSKEY leaves the zone; a\n\
         # time left out never comes. Change it with `cellns dnssec settime`; a running\n\
         # server follows within a second. See docs/dnssec.md for roll schedules.\n",
    );
    s.push_str(&format!(
        "role = \"{role}\"\nalgorithm = \"{algorithm}\"\nkey_tag = {tag}\ncreated = \"{}\"\n",
        rfc3339(t.created)
    ));
    for (name, v) in [
        ("publish", t.publish),
        ("activate", t.activate),
        ("inactive", t.inactive),
        ("delete", t.delete),
    ] {
        match v {
            Some(v) => s.push_str(&format!("{name} = \"{}\"\n", rfc3339(v))),
            None => s.push_str(&format!("# {name} = (never)\n")),
        }
    }
    s.push_str(PEM_BEGIN);
    s.push('\n');
    let b64 = STANDARD.encode(pkcs8);
    for chunk in b64.as_bytes().chunks(64) {
        s.push_str(&String::from_utf8_lossy(chunk));
        s.push('\n');
    }
    s.push_str(PEM_END);
    s.push('\n');
    s
}

/// What `cellns dnssec keygen` makes.
#[derive(Debug, Clone)]
pub struct KeygenSpec {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The role.
    pub role: Role,
    /// The timing; `created` is set by keygen.
    pub timing: Timing,
}

/// Writes `text` to a new file `path`, mode 0600; `Ok(false)` when a file
/// of that name exists.
fn write_new(path: &Path, text: &str) -> Result<bool, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io(e)),
    }
}

/// Replaces `path` with `text` atomically (a temporary file, mode 0600,
/// renamed over it), so a server rescanning never reads half a file.
fn replace(path: &Path, text: &str) -> Result<(), KeyError> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, text)?;
    fs::rename(&tmp, path).map_err(|source| KeyError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Creates `dir` (mode 0700) if missing.
fn ensure_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.exists() {
        return Ok(());
    }
    let mut b = fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(|source| KeyError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// `cellns dnssec keygen`: a new key in `dir` (created, mode 0700, if
/// missing) as `dnssec-<created>-<tag>.pem`, mode 0600. Returns it.
pub fn keygen(dir: &Path, spec: &KeygenSpec) -> Result<Key, KeyError> {
    spec.timing.check().map_err(KeyError::Timing)?;
    ensure_dir(dir)?;
    let rng = SystemRandom::new();
    let generate = |e: String| KeyError::Generate(e);
    let pkcs8 = match spec.algorithm {
        Algorithm::EcdsaP256Sha256 => {
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                .map_err(|e| generate(e.to_string()))?
                .as_ref()
                .to_vec()
        }
        // PKCS#8 v1 (RFC 5208, the seed alone), which OpenSSL 3 reads;
        // ring writes v2 (RFC 5958, with the public key), which it refuses.
        Algorithm::Ed25519 => {
            use ed25519_dalek::pkcs8::EncodePrivateKey as _;
            let seed = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
            ed25519_dalek::pkcs8::KeypairBytes {
                secret_key: seed.to_bytes(),
                public_key: None,
            }
            .to_pkcs8_der()
            .map_err(|e| generate(e.to_string()))?
            .as_bytes()
            .to_vec()
        }
    };
    let pair = match spec.algorithm {
        Algorithm::EcdsaP256Sha256 => {
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8, &rng)
                .map(Pair::Ecdsa)
        }
        Algorithm::Ed25519 => Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8).map(Pair::Ed25519),
    }
    .map_err(|e| generate(e.to_string()))?;
    let created = spec.timing.created;
    let mut key = Key::assemble(PathBuf::new(), spec.role, spec.algorithm, spec.timing, pair);
    let text = file_text(spec.role, spec.algorithm, key.tag, &spec.timing, &pkcs8);
    let mut stamp = created;
    loop {
        let path = dir.join(format!("dnssec-{stamp:010}-{:05}.pem", key.tag));
        if write_new(&path, &text)? {
            key.file = path;
            return Ok(key);
        }
        // Another key took this name (same second, same tag): next second.
        stamp += 1;
    }
}

/// Changes to a key's timing (`cellns dnssec settime`): `Some(None)` unsets.
#[derive(Debug, Clone, Copy, Default)]
pub struct TimingChange {
    /// New publish time.
    pub publish: Option<Option<u64>>,
    /// New activate time.
    pub activate: Option<Option<u64>>,
    /// New inactive time.
    pub inactive: Option<Option<u64>>,
    /// New delete time.
    pub delete: Option<Option<u64>>,
}

/// `cellns dnssec settime`: changes the timing of the key with tag `tag`
/// in `dir` (refused when no key, or several, have that tag, or when the
/// new timing is out of order). Returns the key as now written.
pub fn settime(dir: &Path, tag: u16, change: &TimingChange) -> Result<Key, KeyError> {
    let files = key_files(dir)?;
    let mut matches = Vec::new();
    for (name, _, _) in &files {
        let path = dir.join(name);
        let key = load_file(&path)?;
        if key.tag == tag {
            matches.push((path, key));
        }
    }
    let (path, key) = match matches.len() {
        1 => matches.remove(0),
        0 => {
            return Err(KeyError::Select {
                dir: dir.to_owned(),
                message: format!("no key has tag {tag}"),
            });
        }
        n => {
            return Err(KeyError::Select {
                dir: dir.to_owned(),
                message: format!(
                    "{n} keys have tag {tag} ({}); edit the one you mean by hand",
                    matches
                        .iter()
                        .map(|(p, _)| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    };
    let mut t = key.timing;
    if let Some(v) = change.publish {
        t.publish = v;
    }
    if let Some(v) = change.activate {
        t.activate = v;
    }
    if let Some(v) = change.inactive {
        t.inactive = v;
    }
    if let Some(v) = change.delete {
        t.delete = v;
    }
    t.check()
        .map_err(|m| KeyError::Timing(format!("{}: {m}", path.display())))?;
    // Rewrite the header, keep the private key block as it is.
    let text = fs::read_to_string(&path).map_err(|source| KeyError::Io {
        path: path.clone(),
        source,
    })?;
    let pem = text.find(PEM_BEGIN).map_or("", |i| &text[i..]);
    let der_b64: String = pem
        .lines()
        .skip(1)
        .take_while(|l| !l.starts_with(PEM_END))
        .map(str::trim)
        .collect();
    let der = STANDARD.decode(der_b64).map_err(|e| KeyError::Bad {
        path: path.clone(),
        line: 1,
        message: format!("the PEM block is not base64: {e}"),
    })?;
    replace(
        &path,
        &file_text(key.role, key.algorithm, key.tag, &t, &der),
    )?;
    load_file(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(algorithm: Algorithm, role: Role) -> KeygenSpec {
        let now = now();
        KeygenSpec {
            algorithm,
            role,
            timing: Timing {
                created: now,
                publish: Some(now),
                activate: Some(now),
                inactive: None,
                delete: None,
            },
        }
    }

    #[test]
    fn keygen_writes_a_private_file_that_reads_back_as_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        for alg in [Algorithm::EcdsaP256Sha256, Algorithm::Ed25519] {
            for role in Role::ALL {
                let k = keygen(dir.path(), &spec(alg, role)).unwrap();
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt as _;
                    let mode = fs::metadata(k.file()).unwrap().permissions().mode();
                    assert_eq!(mode & 0o777, 0o600, "{}", k.file().display());
                }
                let back = load_file(k.file()).unwrap();
                assert!(back.same(&k), "{alg} {role}");
                assert_eq!(back.tag(), k.tag());
                assert_eq!(back.dnskey().flags(), role.flags());
                // A signature verifies with the published key.
                let sig = back.sign(b"data").unwrap();
                let public = back.dnskey().public_key();
                use hickory_proto::dnssec::PublicKey as _;
                public
                    .verify(b"data", &sig)
                    .unwrap_or_else(|e| panic!("{alg}: {e}"));
            }
        }
        assert_eq!(key_files(dir.path()).unwrap().len(), 6);
    }

    #[test]
    fn rfc6605_key_tag_and_ds() {
        // RFC 6605 §6.1: the P-256 example key and its SHA-256 DS.
        let public = STANDARD
            .decode("GojIhhXUN/u4v54ZQqGSnyhWJwaubCvTmeexv7bR6edbkrSqQpF64cYbcB7wNcP+e+MAnLr+Wi9xMWyQLc8NAA==")
            .unwrap();
        let dnskey =
            DNSKEY::with_flags(257, PublicKeyBuf::new(public, HAlgorithm::ECDSAP256SHA256));
        assert_eq!(key_tag(&dnskey), 55648);
        let digest = dnskey
            .to_digest(
                &Name::from_ascii("example.net.").unwrap(),
                DigestType::SHA256,
            )
            .unwrap();
        assert_eq!(
            hex::encode(digest.as_ref()),
            "b4c8c1fe2e7477127b27115656ad6256f424625bf5c1e2770ce6d6e37df61d17"
        );
    }

    #[test]
    fn states_follow_the_timing() {
        let t = Timing {
            created: 0,
            publish: Some(10),
            activate: Some(20),
            inactive: Some(30),
            delete: Some(40),
        };
        let at = |n| t.state(n);
        assert_eq!(at(9), KeyState::Pending);
        assert_eq!(at(10), KeyState::Published);
        assert_eq!(at(20), KeyState::Active);
        assert_eq!(at(29), KeyState::Active);
        assert_eq!(at(30), KeyState::Retired);
        assert_eq!(at(40), KeyState::Removed);
        assert_eq!(t.next_event(0), Some(10));
        assert_eq!(t.next_event(25), Some(30));
        assert_eq!(t.next_event(40), None);
        // Unset times never come.
        let never = Timing {
            publish: Some(1),
            activate: Some(1),
            ..Timing::default()
        };
        assert_eq!(never.state(u64::MAX), KeyState::Active);
        assert_eq!(never.next_event(5), None);
    }

    #[test]
    fn timing_out_of_order_is_refused() {
        let t = Timing {
            publish: Some(10),
            activate: Some(5),
            ..Timing::default()
        };
        assert!(t.check().unwrap_err().contains("activate"), "{t:?}");
        let t = Timing {
            activate: Some(5),
            ..Timing::default()
        };
        assert!(t.check().unwrap_err().contains("publish is not"));
        let t = Timing {
            created: 0,
            publish: Some(1),
            activate: Some(2),
            inactive: Some(9),
            delete: Some(3),
        };
        assert!(t.check().unwrap_err().contains("delete"));
    }

    #[test]
    fn times_on_the_command_line() {
        let now = 1_000_000;
        assert_eq!(parse_time("now", now).unwrap(), Some(now));
        assert_eq!(parse_time("now+90s", now).unwrap(), Some(now + 90));
        assert_eq!(parse_time("+2h", now).unwrap(), Some(now + 7200));
        assert_eq!(parse_time("+7d", now).unwrap(), Some(now + 7 * 86_400));
        assert_eq!(parse_time("+1w", now).unwrap(), Some(now + 604_800));
        assert_eq!(parse_time("+15", now).unwrap(), Some(now + 15));
        assert_eq!(parse_time("1700000000", now).unwrap(), Some(1_700_000_000));
        assert_eq!(
            parse_time("2026-03-01T10:00:00Z", now).unwrap(),
            Some(1_772_359_200)
        );
        assert_eq!(parse_time("none", now).unwrap(), None);
        for bad in ["", "soon", "+3y", "2026-13-01", "now+", "-5"] {
            assert!(parse_time(bad, now).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_key_files_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let k = keygen(dir.path(), &spec(Algorithm::EcdsaP256Sha256, Role::Csk)).unwrap();
        let text = fs::read_to_string(k.file()).unwrap();
        let cases = [
            (text.replace("role = \"csk\"", "role = \"boss\""), "role"),
            (
                text.replace("role = \"csk\"", "role = \"zsk\""),
                "does not match",
            ),
            (
                text.replace("algorithm = \"ecdsap256sha256\"", "algorithm = \"rsa\""),
                "algorithm",
            ),
            (
                text.replace("key_tag", "colour = 1\nkey_tag"),
                "unknown field",
            ),
            (text.replace(PEM_BEGIN, "nothing here"), "no `-----BEGIN"),
            (
                text.replacen("publish = \"", "publish = \"x", 1),
                "RFC 3339",
            ),
        ];
        for (t, want) in cases {
            let e = parse(&t, Path::new("k.pem")).unwrap_err().to_string();
            assert!(e.starts_with("k.pem:"), "{e}");
            assert!(e.contains(want), "want {want}: {e}");
        }
        // The role's line is named.
        let e = parse(&cases_role(&text), Path::new("k.pem"))
            .unwrap_err()
            .to_string();
        let line = text.lines().position(|l| l.starts_with("role")).unwrap() + 1;
        assert!(e.starts_with(&format!("k.pem:{line}:")), "{e}");
    }

    fn cases_role(text: &str) -> String {
        text.replace("role = \"csk\"", "role = \"boss\"")
    }

    #[test]
    fn settime_rewrites_the_timing_and_keeps_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let k = keygen(dir.path(), &spec(Algorithm::Ed25519, Role::Zsk)).unwrap();
        let now = now();
        let changed = settime(
            dir.path(),
            k.tag(),
            &TimingChange {
                inactive: Some(Some(now + 100)),
                delete: Some(Some(now + 200)),
                ..TimingChange::default()
            },
        )
        .unwrap();
        assert_eq!(changed.dnskey(), k.dnskey());
        assert_eq!(changed.timing().inactive, Some(now + 100));
        assert_eq!(changed.timing().delete, Some(now + 200));
        assert_eq!(
            load_file(k.file()).unwrap().timing().delete,
            Some(now + 200)
        );
        // Out of order: refused, file unchanged.
        let e = settime(
            dir.path(),
            k.tag(),
            &TimingChange {
                delete: Some(Some(now + 50)),
                ..TimingChange::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("before inactive"), "{e}");
        assert_eq!(
            load_file(k.file()).unwrap().timing().delete,
            Some(now + 200)
        );
        // Unknown tag.
        let other = k.tag().wrapping_add(1);
        let e = settime(dir.path(), other, &TimingChange::default()).unwrap_err();
        assert!(e.to_string().contains("no key has tag"), "{e}");
        // Only the key file is left (no temporary file).
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
