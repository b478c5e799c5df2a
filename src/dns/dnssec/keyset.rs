//! The keys at one moment: which DNSKEYs are in the zone, which keys sign
//! what, which should have a DS at the parent. A pure function of the key
//! files and the time ([`KeySet::evaluate`]); the server evaluates it once
//! a second and publishes a new zone version when the result changes
//! ([`KeySet::same_zone`]).

use std::hash::{Hash as _, Hasher as _};
use std::sync::Arc;

use hickory_proto::dnssec::PublicKey as _;

use super::keys::{Key, KeyState, Role};

/// The keys in force at one moment.
#[derive(Debug)]
pub struct KeySet {
    /// When it was evaluated (Unix seconds).
    pub at: u64,
    /// Every key of the directory with its state, in file name order.
    pub keys: Vec<(Arc<Key>, KeyState)>,
    /// Keys whose DNSKEY is in the zone (published, active, retired).
    pub published: Vec<Arc<Key>>,
    /// Keys that sign the zone's data (active ZSKs and CSKs; active KSKs
    /// when no other key is active).
    pub zone_signers: Vec<Arc<Key>>,
    /// Keys that sign the apex key RRsets (active KSKs and CSKs; active
    /// ZSKs when no other key is active).
    pub key_signers: Vec<Arc<Key>>,
    /// Keys that should have a DS at the parent: KSKs and CSKs that are
    /// published or active (CDS/CDNSKEY, `cellns dnssec ds`).
    pub ds: Vec<Arc<Key>>,
    /// Identifies [`KeySet::zone_signers`] (part of the signature cache key).
    pub zone_signers_id: u64,
    /// Identifies [`KeySet::key_signers`].
    pub key_signers_id: u64,
    /// The next moment a key changes state, if any.
    pub next_event: Option<u64>,
}

impl KeySet {
    /// The keys as they stand at `now`.
    pub fn evaluate(keys: &[Arc<Key>], now: u64) -> Self {
        let keys: Vec<(Arc<Key>, KeyState)> = keys
            .iter()
            .map(|k| (k.clone(), k.timing().state(now)))
            .collect();
        let with = |f: &dyn Fn(&Key, KeyState) -> bool| -> Vec<Arc<Key>> {
            keys.iter()
                .filter(|(k, s)| f(k, *s))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let published = with(&|_, s| s.in_zone());
        let active = |r: fn(Role) -> bool| with(&|k, s| s == KeyState::Active && r(k.role()));
        // A zone with only KSKs (or only ZSKs) active still gets every
        // RRset signed: validators check the key, not its SEP flag.
        let mut zone_signers = active(Role::signs_zone);
        if zone_signers.is_empty() {
            zone_signers = active(Role::signs_keys);
        }
        let mut key_signers = active(Role::signs_keys);
        if key_signers.is_empty() {
            key_signers = active(Role::signs_zone);
        }
        let ds = with(&|k, s| {
            k.role().signs_keys() && matches!(s, KeyState::Published | KeyState::Active)
        });
        let next_event = keys
            .iter()
            .filter_map(|(k, _)| k.timing().next_event(now))
            .min();
        Self {
            at: now,
            zone_signers_id: id_of(&zone_signers),
            key_signers_id: id_of(&key_signers),
            keys,
            published,
            zone_signers,
            key_signers,
            ds,
            next_event,
        }
    }

    /// Whether anything signs: without an active key the zone is served
    /// unsigned.
    pub fn signing(&self) -> bool {
        !self.zone_signers.is_empty()
    }

    /// Whether serving `other` instead changes no answer: the same DNSKEY
    /// set, signers and DS set. (A key that changes state between pending
    /// and removed only, or a file rewritten with the same schedule, does
    /// not.)
    pub fn same_zone(&self, other: &KeySet) -> bool {
        id_of(&self.published) == id_of(&other.published)
            && self.zone_signers_id == other.zone_signers_id
            && self.key_signers_id == other.key_signers_id
            && id_of(&self.ds) == id_of(&other.ds)
    }

    /// Whether every key has the same state and schedule as in `other`
    /// (the views and metrics need refreshing otherwise).
    pub fn same_states(&self, other: &KeySet) -> bool {
        self.keys.len() == other.keys.len()
            && self
                .keys
                .iter()
                .zip(&other.keys)
                .all(|((a, sa), (b, sb))| sa == sb && a.same(b))
            && self.next_event == other.next_event
    }
}

/// An identity of a list of keys: their public keys and flags (the DNSKEY
/// RDATA), in order.
fn id_of(keys: &[Arc<Key>]) -> u64 {
    // SipHash with fixed keys: stable within the process, which is all the
    // signature cache needs.
    let mut h = std::hash::DefaultHasher::new();
    keys.len().hash(&mut h);
    for k in keys {
        k.dnskey().flags().hash(&mut h);
        k.dnskey().public_key().public_bytes().hash(&mut h);
        u8::from(k.dnskey().public_key().algorithm()).hash(&mut h);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::super::keys::{Algorithm, KeygenSpec, Timing, keygen};
    use super::*;

    fn key(dir: &std::path::Path, role: Role, t: Timing) -> Arc<Key> {
        Arc::new(
            keygen(
                dir,
                &KeygenSpec {
                    algorithm: Algorithm::EcdsaP256Sha256,
                    role,
                    timing: t,
                },
            )
            .unwrap(),
        )
    }

    fn t(p: u64, a: u64, i: Option<u64>, d: Option<u64>) -> Timing {
        Timing {
            created: 0,
            publish: Some(p),
            activate: Some(a),
            inactive: i,
            delete: d,
        }
    }

    fn tags(v: &[Arc<Key>]) -> Vec<u16> {
        v.iter().map(|k| k.tag()).collect()
    }

    #[test]
    fn zsk_pre_publish_roll() {
        let dir = tempfile::tempdir().unwrap();
        let ksk = key(dir.path(), Role::Ksk, t(0, 0, None, None));
        let old = key(dir.path(), Role::Zsk, t(0, 0, Some(200), Some(300)));
        let new = key(dir.path(), Role::Zsk, t(100, 200, None, None));
        let keys = [ksk.clone(), old.clone(), new.clone()];
        let at = |n| KeySet::evaluate(&keys, n);

        let s = at(50);
        assert_eq!(tags(&s.published), tags(&[ksk.clone(), old.clone()]));
        assert_eq!(tags(&s.zone_signers), [old.tag()]);
        assert_eq!(tags(&s.key_signers), [ksk.tag()]);
        assert_eq!(tags(&s.ds), [ksk.tag()]);
        assert_eq!(s.next_event, Some(100));

        // Pre-published: in the DNSKEY set, signs nothing.
        let s = at(100);
        assert_eq!(s.published.len(), 3);
        assert_eq!(tags(&s.zone_signers), [old.tag()]);
        assert!(!s.same_zone(&at(50)));

        // The switch: the new one signs, the old one is retired.
        let s = at(200);
        assert_eq!(tags(&s.zone_signers), [new.tag()]);
        assert_eq!(s.published.len(), 3);
        assert_eq!(s.keys[1].1, KeyState::Retired);

        let s = at(300);
        assert_eq!(tags(&s.published), tags(&[ksk.clone(), new.clone()]));
        assert_eq!(s.next_event, None);
        assert!(s.same_zone(&at(1000)));
    }

    #[test]
    fn csk_roll_wants_both_ds_until_the_switch() {
        let dir = tempfile::tempdir().unwrap();
        let old = key(dir.path(), Role::Csk, t(0, 0, Some(200), Some(300)));
        let new = key(dir.path(), Role::Csk, t(100, 200, None, None));
        let keys = [old.clone(), new.clone()];
        let s = KeySet::evaluate(&keys, 150);
        assert_eq!(tags(&s.ds), tags(&[old.clone(), new.clone()]));
        assert_eq!(tags(&s.zone_signers), [old.tag()]);
        assert_eq!(tags(&s.key_signers), [old.tag()]);
        let s = KeySet::evaluate(&keys, 200);
        assert_eq!(tags(&s.ds), [new.tag()]);
        assert_eq!(tags(&s.key_signers), [new.tag()]);
        assert_eq!(s.published.len(), 2);
    }

    #[test]
    fn a_lone_role_signs_for_the_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let ksk = key(dir.path(), Role::Ksk, t(0, 0, None, None));
        let s = KeySet::evaluate(std::slice::from_ref(&ksk), 1);
        assert_eq!(tags(&s.zone_signers), [ksk.tag()]);
        assert!(s.signing());
        let pending = key(dir.path(), Role::Csk, t(100, 100, None, None));
        let s = KeySet::evaluate(&[pending], 1);
        assert!(!s.signing());
        assert!(s.published.is_empty());
    }
}
