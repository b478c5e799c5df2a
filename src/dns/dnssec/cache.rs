//! The signature cache: the RRSIGs of each signed RRset, so that a second
//! query for the same RRset costs a lookup, not a signature.
//!
//! Keyed by the RRset itself rather than by zone version: its owner in
//! canonical (lowercase) form, so 0x20-randomised queries share an entry;
//! its type; a 128-bit digest of its content (TTL and canonical RDATA);
//! and the identity of the keys that sign it. A map reload, a health
//! change or a key pre-publication makes a new zone version, but every
//! RRset it leaves as it was keeps its signatures: only what changed is
//! signed again (the SOA, with its new serial, always is).
//!
//! Bounded in entries and in bytes (both split over the shards), with
//! CLOCK eviction (second chance): a hit marks its entry, the sweep evicts
//! the first unmarked one. Shards are locked for a lookup or an insert,
//! never while signing; only signed queries (the DO bit) come here.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use hickory_proto::rr::RData;
use metrics::{Counter, Gauge};

/// Shards: enough that the workers of a busy server rarely meet on one.
const SHARDS: usize = 64;

/// What identifies a signed RRset (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// The owner name, lowercase, uncompressed wire format.
    pub(crate) owner: Box<[u8]>,
    /// The RRset's type.
    pub(crate) rtype: u16,
    /// Digest of its TTL and canonical RDATA.
    pub(crate) content: [u8; 16],
    /// Identity of the signing keys.
    pub(crate) signers: u64,
}

/// The signatures of one RRset.
#[derive(Debug)]
pub(crate) struct Signatures {
    /// One RRSIG RDATA per signing key.
    pub(crate) rrsigs: Vec<RData>,
    /// When they must be made again (half their validity), Unix seconds.
    pub(crate) refresh_at: u64,
}

/// What the cache holds and has done, for `/v1/dnssec`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct CacheStats {
    /// Entries held.
    pub entries: usize,
    /// Bytes held (estimated).
    pub bytes: usize,
    /// The most entries it holds.
    pub max_entries: usize,
    /// The most bytes it holds.
    pub max_bytes: usize,
    /// Lookups that found signatures.
    pub hits: u64,
    /// Lookups that did not (or found them due for re-signing).
    pub misses: u64,
    /// Entries evicted to make room.
    pub evictions: u64,
}

struct Slot {
    key: CacheKey,
    value: Arc<Signatures>,
    referenced: bool,
    bytes: usize,
}

#[derive(Default)]
struct Shard {
    map: HashMap<CacheKey, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    hand: usize,
    bytes: usize,
}

/// Metric handles, resolved once.
struct Metrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    entries: Gauge,
    bytes: Gauge,
}

/// The bounded signature cache.
pub(crate) struct SigCache {
    shards: Box<[Mutex<Shard>]>,
    hasher: std::hash::RandomState,
    shard_entries: usize,
    shard_bytes: usize,
    entries: AtomicI64,
    bytes: AtomicI64,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    metrics: Metrics,
}

impl std::fmt::Debug for SigCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigCache")
            .field("stats", &self.stats())
            .finish()
    }
}

impl SigCache {
    /// A cache of at most `max_entries` entries and `max_bytes` bytes.
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        use crate::metrics as m;
        Self {
            shards,
            hasher: std::hash::RandomState::new(),
            shard_entries: (max_entries / SHARDS).max(1),
            shard_bytes: (max_bytes / SHARDS).max(1),
            entries: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            metrics: Metrics {
                hits: metrics::counter!(m::DNSSEC_CACHE_HITS),
                misses: metrics::counter!(m::DNSSEC_CACHE_MISSES),
                evictions: metrics::counter!(m::DNSSEC_CACHE_EVICTIONS),
                entries: metrics::gauge!(m::DNSSEC_CACHE_ENTRIES),
                bytes: metrics::gauge!(m::DNSSEC_CACHE_BYTES),
            },
        }
    }

    fn shard(&self, key: &CacheKey) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        // A panic while holding a shard leaves it consistent (every change
        // is a few assignments): keep using it.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signatures of `key`, unless absent or due for re-signing at `now`.
    pub(crate) fn get(&self, key: &CacheKey, now: u64) -> Option<Arc<Signatures>> {
        let found = {
            let mut shard = self.shard(key);
            let idx = shard.map.get(key).copied();
            idx.and_then(|i| shard.slots.get_mut(i)?.as_mut())
                .filter(|slot| now < slot.value.refresh_at)
                .map(|slot| {
                    slot.referenced = true;
                    slot.value.clone()
                })
        };
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.metrics.hits.increment(1);
        } else {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.metrics.misses.increment(1);
        }
        found
    }

    /// Stores `value` for `key` (replacing what was there), evicting as
    /// needed to stay within the bounds.
    pub(crate) fn insert(&self, key: CacheKey, value: Arc<Signatures>) {
        let bytes = entry_bytes(&key, &value);
        let (mut added, mut freed, mut evicted, mut new) = (0usize, 0usize, 0u64, false);
        {
            let mut shard = self.shard(&key);
            if let Some(&i) = shard.map.get(&key) {
                if let Some(slot) = shard.slots[i].as_mut() {
                    freed = slot.bytes;
                    added = bytes;
                    slot.value = value;
                    slot.bytes = bytes;
                    slot.referenced = true;
                    shard.bytes = shard.bytes - freed + bytes;
                }
            } else {
                // An entry larger than the whole shard is not kept.
                if bytes > self.shard_bytes {
                    return;
                }
                while shard.map.len() + 1 > self.shard_entries
                    || shard.bytes + bytes > self.shard_bytes
                {
                    let Some(b) = shard.evict_one() else { break };
                    freed += b;
                    evicted += 1;
                }
                let slot = Slot {
                    key: key.clone(),
                    value,
                    referenced: false,
                    bytes,
                };
                let i = match shard.free.pop() {
                    Some(i) => {
                        shard.slots[i] = Some(slot);
                        i
                    }
                    None => {
                        shard.slots.push(Some(slot));
                        shard.slots.len() - 1
                    }
                };
                shard.map.insert(key, i);
                shard.bytes += bytes;
                added = bytes;
                new = true;
            }
        }
        // The totals are only read for metrics and views: relaxed, and
        // updated after the shard lock is released.
        // (Signed: another thread may account an eviction of this entry
        // before this insert is accounted.)
        self.bytes
            .fetch_add(added as i64 - freed as i64, Ordering::Relaxed);
        self.entries
            .fetch_add(i64::from(new) - evicted as i64, Ordering::Relaxed);
        if evicted > 0 {
            self.evictions.fetch_add(evicted, Ordering::Relaxed);
            self.metrics.evictions.increment(evicted);
        }
        let s = self.stats();
        self.metrics.bytes.set(s.bytes as f64);
        self.metrics.entries.set(s.entries as f64);
    }

    /// What it holds and has done.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            entries: self.entries.load(Ordering::Relaxed).max(0) as usize,
            bytes: self.bytes.load(Ordering::Relaxed).max(0) as usize,
            max_entries: self.shard_entries * self.shards.len(),
            max_bytes: self.shard_bytes * self.shards.len(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

impl Shard {
    /// Evicts the first unreferenced entry from the clock hand on (clearing
    /// the marks it passes); returns its bytes, `None` when empty.
    fn evict_one(&mut self) -> Option<usize> {
        if self.map.is_empty() {
            return None;
        }
        // Two turns at most: the first clears every mark.
        for _ in 0..2 * self.slots.len() + 1 {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            let slot = self.slots[i].take()?;
            self.map.remove(&slot.key);
            self.free.push(i);
            self.bytes -= slot.bytes;
            return Some(slot.bytes);
        }
        None
    }
}

/// Estimated bytes an entry costs: the slot, the key twice (map and slot),
/// and each RRSIG (signature, signer name, fixed fields, allocation).
fn entry_bytes(key: &CacheKey, value: &Signatures) -> usize {
    let rrsigs: usize = value
        .rrsigs
        .iter()
        .map(|r| match r {
            RData::DNSSEC(hickory_proto::dnssec::rdata::DNSSECRData::RRSIG(s)) => {
                s.sig().len() + s.input().signer_name.len() + 96
            }
            _ => 128,
        })
        .sum();
    std::mem::size_of::<Slot>()
        + std::mem::size_of::<(CacheKey, usize)>()
        + 2 * key.owner.len()
        + std::mem::size_of::<Signatures>()
        + rrsigs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> CacheKey {
        CacheKey {
            owner: format!("t{i}.example.").into_bytes().into_boxed_slice(),
            rtype: 1,
            content: [0; 16],
            signers: 7,
        }
    }

    fn value(refresh_at: u64) -> Arc<Signatures> {
        Arc::new(Signatures {
            rrsigs: Vec::new(),
            refresh_at,
        })
    }

    #[test]
    fn hit_miss_and_refresh() {
        let c = SigCache::new(1000, 1 << 20);
        assert!(c.get(&key(1), 0).is_none());
        c.insert(key(1), value(100));
        assert!(c.get(&key(1), 99).is_some());
        // Due for re-signing: a miss.
        assert!(c.get(&key(1), 100).is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses), (1, 2));
        assert_eq!(s.entries, 1);
    }

    #[test]
    fn bounded_in_entries_and_bytes() {
        let c = SigCache::new(SHARDS * 4, 1 << 30);
        for i in 0..10_000 {
            c.insert(key(i), value(u64::MAX));
        }
        let s = c.stats();
        assert!(s.entries <= SHARDS * 4, "{s:?}");
        assert!(s.evictions >= 10_000 - (SHARDS * 4) as u64, "{s:?}");
        let per = entry_bytes(&key(1), &value(0));
        let c = SigCache::new(1 << 30, SHARDS * per * 3);
        for i in 0..10_000 {
            c.insert(key(i), value(u64::MAX));
        }
        let s = c.stats();
        assert!(s.bytes <= SHARDS * per * 3 + SHARDS * 16, "{s:?}");
        assert!(s.entries <= SHARDS * 4, "{s:?}");
        assert!(s.entries > 0);
    }

    #[test]
    fn clock_keeps_what_is_used() {
        // One shard's worth: find keys that land in the same shard.
        let c = SigCache::new(SHARDS * 2, 1 << 30);
        let shard_of = |k: &CacheKey| (c.hasher.hash_one(k) as usize) % SHARDS;
        let same: Vec<CacheKey> = (0..10_000)
            .map(key)
            .filter(|k| shard_of(k) == shard_of(&key(0)))
            .take(3)
            .collect();
        c.insert(same[0].clone(), value(u64::MAX));
        c.insert(same[1].clone(), value(u64::MAX));
        // Used: it gets a second chance; the other one goes.
        assert!(c.get(&same[0], 0).is_some());
        c.insert(same[2].clone(), value(u64::MAX));
        assert!(c.get(&same[0], 0).is_some());
        assert!(c.get(&same[1], 0).is_none());
        assert!(c.get(&same[2], 0).is_some());
    }
}
