//! DNSSEC: online signing of the tenant zone (`serve --dnssec-keys DIR`).
//!
//! Answers change with the map, health, overrides and planned moves, so
//! they cannot be signed ahead of time: like Knot's `mod-onlinesign`,
//! PowerDNS's live signing and CoreDNS's `dnssec` plugin, cellns signs
//! each authoritative answer to a query with the DO bit when it is made,
//! and caches the signatures. Queries without the DO bit never come here:
//! the UDP fast path answers them as before.
//!
//! - [`keys`]: the key files (role, algorithm, timing above a PKCS#8 PEM
//!   key), `cellns dnssec keygen`/`settime`, and a key's state at a time.
//! - [`keyset`]: the keys at one moment: the DNSKEY set, who signs what,
//!   which keys should have a DS.
//! - `cache`: the bounded signature cache.
//! - `sign`: the signing of one zone version (RRSIGs, the apex key
//!   RRsets, the NSEC of compact denial).
//! - this module: [`Dnssec`], what the server shares: the key directory
//!   (rescanned each second; a change of what is published or signs is a
//!   new zone version), the cache, and the `/v1/dnssec` view.
//!
//! Denial of existence is RFC 9824's compact form: a name that does not
//! exist gets NOERROR and one NSEC owned by the query name whose next name
//! is `\000.<qname>` and whose bitmap is RRSIG NSEC NXNAME; NODATA gets
//! the same NSEC with the name's real types. No NSEC ever names another
//! name of the zone, so walking it reveals no tenant. Which answer a
//! question gets is decided by the answer table (`super::answer`); this
//! module only signs.
//!
//! Imports go one way: `super::answer` and `super::prepared` use this
//! module; it uses neither.

pub(crate) mod cache;
pub mod keys;
pub mod keyset;
pub(crate) mod sign;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use metrics::Counter;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use hickory_proto::rr::Name;

pub use cache::CacheStats;
pub(crate) use sign::Signing;

use keys::{Fingerprint, Key, KeyError, KeyState, Role};
use keyset::KeySet;

/// How often the key directory is rescanned and the key states evaluated.
pub const KEY_TICK: Duration = Duration::from_secs(1);

/// Default signature validity: two weeks, re-signed after one.
pub const DEFAULT_VALIDITY: Duration = Duration::from_secs(14 * 86_400);

/// DNSSEC settings (built by the serve wiring from the flags).
#[derive(Debug, Clone)]
pub struct DnssecConfig {
    /// The key directory.
    pub keys: PathBuf,
    /// Most signature cache entries.
    pub cache_entries: usize,
    /// Most signature cache bytes.
    pub cache_bytes: usize,
    /// How long a signature is valid (from its inception, an hour before
    /// it is made); it is made again after half of it.
    pub validity: Duration,
}

/// Why DNSSEC could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnssecError {
    /// The key directory or a key in it.
    #[error("DNSSEC keys: {0}")]
    Keys(#[from] KeyError),
    /// A setting is out of range.
    #[error("{0}")]
    Config(String),
}

/// What the last rescan found, behind a lock only the ticker takes.
struct Scan {
    /// Fingerprint of the key set in force.
    good: Fingerprint,
    /// Fingerprint of the last bad state seen (reported once).
    bad: Option<Fingerprint>,
    keys: Vec<Arc<Key>>,
}

/// What the server shares for DNSSEC: the keys in force, the signature
/// cache, and the counters.
pub struct Dnssec {
    dir: PathBuf,
    validity: u64,
    current: ArcSwap<KeySet>,
    scan: Mutex<Scan>,
    pub(crate) cache: cache::SigCache,
    signed: Counter,
    failed: Counter,
}

impl std::fmt::Debug for Dnssec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dnssec")
            .field("dir", &self.dir)
            .field("keys", &self.current.load().keys.len())
            .finish_non_exhaustive()
    }
}

impl Dnssec {
    /// Loads the key directory: an error when it cannot be read, holds a
    /// bad key file, or holds no key. No key active now is only a warning
    /// (the zone is served unsigned until one is).
    pub fn open(cfg: &DnssecConfig) -> Result<Arc<Self>, DnssecError> {
        if cfg.validity < Duration::from_secs(2 * 86_400) {
            return Err(DnssecError::Config(
                "the signature validity must be at least two days".into(),
            ));
        }
        let (keys, fp) = keys::load_dir(&cfg.keys)?;
        if keys.is_empty() {
            return Err(KeyError::Empty {
                dir: cfg.keys.clone(),
            }
            .into());
        }
        let keys: Vec<Arc<Key>> = keys.into_iter().map(Arc::new).collect();
        let set = KeySet::evaluate(&keys, keys::now());
        let me = Arc::new(Self {
            dir: cfg.keys.clone(),
            validity: cfg.validity.as_secs(),
            scan: Mutex::new(Scan {
                good: fp,
                bad: None,
                keys,
            }),
            cache: cache::SigCache::new(cfg.cache_entries, cfg.cache_bytes),
            signed: metrics::counter!(crate::metrics::DNSSEC_SIGNATURES, "result" => "ok"),
            failed: metrics::counter!(crate::metrics::DNSSEC_SIGNATURES, "result" => "error"),
            current: ArcSwap::from_pointee(set),
        });
        let set = me.key_set();
        log_keys(&me.dir, &set, None);
        publish_metrics(&set);
        Ok(me)
    }

    /// The key directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keys in force. Lock-free.
    pub fn key_set(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// Signature validity, seconds.
    pub(crate) fn validity(&self) -> u64 {
        self.validity
    }

    pub(crate) fn count_signature(&self, ok: bool) {
        if ok {
            self.signed.increment(1);
        } else {
            self.failed.increment(1);
        }
    }

    /// Rescans the directory (when it changed) and evaluates the states at
    /// `now`; returns whether what the zone serves changed (then a new zone
    /// version must be published). Blocking file I/O. A directory that
    /// turns unreadable or gains a bad key file keeps the last good keys,
    /// reported once.
    pub fn tick(&self, now: u64) -> bool {
        let Ok(mut scan) = self.scan.lock() else {
            return false;
        };
        match keys::key_files(&self.dir) {
            Ok(files) if files != scan.good && scan.bad.as_ref() != Some(&files) => {
                match keys::load_dir(&self.dir) {
                    Ok((keys, fp)) => {
                        if keys.is_empty() {
                            tracing::error!(dir = %self.dir.display(), "every DNSSEC key file was removed: keeping the keys in force (a signed zone cannot lose its keys); add a key");
                            scan.bad = Some(files);
                        } else {
                            scan.keys = keys.into_iter().map(Arc::new).collect();
                            scan.good = fp;
                            scan.bad = None;
                            tracing::info!(dir = %self.dir.display(), keys = scan.keys.len(), "DNSSEC key directory changed");
                        }
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "bad DNSSEC key directory; keeping the keys in force");
                        scan.bad = Some(files);
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                if scan.bad.as_ref().is_none_or(|b| !b.is_empty()) {
                    tracing::error!(error = %e, "cannot read the DNSSEC key directory; keeping the keys in force");
                    scan.bad = Some(Vec::new());
                }
            }
        }
        let old = self.current.load_full();
        let new = KeySet::evaluate(&scan.keys, now);
        let zone_changed = !new.same_zone(&old);
        if zone_changed || !new.same_states(&old) {
            log_keys(&self.dir, &new, Some(&old));
            publish_metrics(&new);
            self.current.store(Arc::new(new));
        }
        zone_changed
    }

    /// Rescans and evaluates every [`KEY_TICK`] until `cancel` fires;
    /// `changed` publishes a new zone version (it runs on a blocking
    /// thread: preparing a large zone takes time).
    pub async fn watch(
        self: Arc<Self>,
        cancel: CancellationToken,
        changed: impl Fn() + Send + Sync + 'static,
    ) {
        let changed = Arc::new(changed);
        let mut tick = tokio::time::interval(KEY_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {
                    let me = self.clone();
                    let changed = changed.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        if me.tick(keys::now()) {
                            changed();
                        }
                    })
                    .await;
                }
            }
        }
    }

    /// What `/v1/dnssec` shows; `origin` (the zone in force) gives the DS
    /// records.
    pub fn status(&self, origin: &Name) -> Status {
        let set = self.key_set();
        let origin = origin.to_lowercase();
        Status {
            signing: set.signing(),
            directory: self.dir.display().to_string(),
            evaluated_at: keys::rfc3339(set.at),
            next_event: set.next_event.map(keys::rfc3339),
            signature_validity_seconds: self.validity,
            keys: set
                .keys
                .iter()
                .map(|(k, state)| {
                    let t = k.timing();
                    let when = |v: Option<u64>| v.map(keys::rfc3339);
                    KeyView {
                        tag: k.tag(),
                        role: k.role().name(),
                        algorithm: k.algorithm().name(),
                        state: state.name(),
                        signs: if set.zone_signers.iter().any(|s| Arc::ptr_eq(s, k)) {
                            if set.key_signers.iter().any(|s| Arc::ptr_eq(s, k)) {
                                "zone and keys"
                            } else {
                                "zone"
                            }
                        } else if set.key_signers.iter().any(|s| Arc::ptr_eq(s, k)) {
                            "keys"
                        } else {
                            "nothing"
                        },
                        file: k.file().display().to_string(),
                        created: keys::rfc3339(t.created),
                        publish: when(t.publish),
                        activate: when(t.activate),
                        inactive: when(t.inactive),
                        delete: when(t.delete),
                        dnskey: format!("{origin} IN DNSKEY {}", k.dnskey()),
                        ds: set
                            .ds
                            .iter()
                            .any(|d| Arc::ptr_eq(d, k))
                            .then(|| k.ds(&origin).map(|ds| format!("{origin} IN DS {ds}")))
                            .flatten(),
                    }
                })
                .collect(),
            cache: self.cache.stats(),
        }
    }
}

/// `/v1/dnssec`: the keys, their states, and the signature cache.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Whether a key is active (otherwise answers are not signed).
    pub signing: bool,
    /// The key directory.
    pub directory: String,
    /// When the states were evaluated.
    pub evaluated_at: String,
    /// The next key event, if any.
    pub next_event: Option<String>,
    /// Signature validity, seconds.
    pub signature_validity_seconds: u64,
    /// Every key of the directory.
    pub keys: Vec<KeyView>,
    /// The signature cache.
    pub cache: CacheStats,
}

/// One key in `/v1/dnssec`.
#[derive(Debug, Serialize)]
pub struct KeyView {
    /// Key tag.
    pub tag: u16,
    /// csk, ksk or zsk.
    pub role: &'static str,
    /// Algorithm name.
    pub algorithm: &'static str,
    /// pending, published, active, retired or removed.
    pub state: &'static str,
    /// What it signs now: zone, keys, zone and keys, nothing.
    pub signs: &'static str,
    /// Its file.
    pub file: String,
    /// Timing (RFC 3339; null: never).
    pub created: String,
    /// Timing.
    pub publish: Option<String>,
    /// Timing.
    pub activate: Option<String>,
    /// Timing.
    pub inactive: Option<String>,
    /// Timing.
    pub delete: Option<String>,
    /// Its DNSKEY record.
    pub dnskey: String,
    /// Its DS record, when it should have one at the parent.
    pub ds: Option<String>,
}

/// Logs the keys: all of them at start, the ones whose state changed after.
fn log_keys(dir: &Path, set: &KeySet, old: Option<&KeySet>) {
    let before = |k: &Arc<Key>| -> Option<KeyState> {
        old?.keys
            .iter()
            .find(|(o, _)| o.file() == k.file() && o.dnskey() == k.dnskey())
            .map(|(_, s)| *s)
    };
    for (k, state) in &set.keys {
        let prev = before(k);
        if old.is_some() && prev == Some(*state) {
            continue;
        }
        tracing::info!(
            dir = %dir.display(),
            tag = k.tag(),
            role = k.role().name(),
            algorithm = k.algorithm().name(),
            state = state.name(),
            was = prev.map_or("-", KeyState::name),
            file = %k.file().display(),
            "DNSSEC key"
        );
    }
    if !set.signing() {
        tracing::error!(dir = %dir.display(), "no DNSSEC key is active: answers are NOT signed (validators that have our DS will fail them)");
    }
}

/// The key gauges.
fn publish_metrics(set: &KeySet) {
    use crate::metrics as m;
    for role in Role::ALL {
        for state in KeyState::ALL {
            let n = set
                .keys
                .iter()
                .filter(|(k, s)| k.role() == role && *s == state)
                .count();
            metrics::gauge!(m::DNSSEC_KEYS, "role" => role.name(), "state" => state.name())
                .set(n as f64);
        }
    }
    metrics::gauge!(m::DNSSEC_NEXT_KEY_EVENT).set(set.next_event.map_or(0.0, |t| t as f64));
}
