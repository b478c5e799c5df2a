//! Tenant lookup: an open-addressing hash table over one byte arena.
//!
//! A million tenants cost about 24 bytes each (name bytes, an 8-byte entry,
//! two 4-byte slots), and a lookup hashes the query's label case-insensitively
//! in place: no allocation, no lowercased copy.

use super::snapshot::CellId;

const EMPTY: u32 = u32::MAX;

/// Listed tenants → assigned cell.
#[derive(Debug, Clone, Default)]
pub struct TenantIndex {
    /// Lowercased tenant names, back to back.
    arena: Box<[u8]>,
    entries: Box<[Entry]>,
    /// Indexes into `entries`, `EMPTY` where free; length a power of two.
    slots: Box<[u32]>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: u32,
    len: u8,
    cell: CellId,
}

impl TenantIndex {
    /// Builds the index from valid DNS labels (≤ 63 bytes; validation
    /// guarantees it), each with an id of the caller's choosing. A name
    /// equal, case-insensitively, to an earlier one is left out; the ids of
    /// those duplicates are returned. `count` and `bytes` size the table
    /// and name arena (upper bounds are fine).
    pub(crate) fn build<'a>(
        count: usize,
        bytes: usize,
        tenants: impl Iterator<Item = (usize, &'a str, CellId)>,
    ) -> (Self, Vec<usize>) {
        Self::build_copying(count, bytes, tenants)
    }

    /// Builds the index over `source`, the byte arena the names already
    /// live in (the parsed tenant list's), without copying them: each
    /// tenant is `(id, offset, length, cell)` into `source`. The index has
    /// no arena of its own until [`Self::adopt_arena`] hands it `source`
    /// (which it then lowercases in place). Why: at a reload the parsed
    /// list, the index being built and the snapshot in force are alive
    /// together; not copying the names keeps the peak a few megabytes
    /// lower for a million tenants. Duplicates as in [`Self::build`].
    pub(crate) fn build_over(
        source: &[u8],
        count: usize,
        tenants: impl Iterator<Item = (usize, u32, u8, CellId)>,
    ) -> (Self, Vec<usize>) {
        let cap = (count * 2).next_power_of_two().max(8);
        let mut slots = vec![EMPTY; cap].into_boxed_slice();
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        let mut duplicates = Vec::new();
        let name = |offset: u32, len: u8| &source[offset as usize..offset as usize + len as usize];
        for (id, offset, len, cell) in tenants {
            let Some(s) = free_slot(&slots, &entries, source, name(offset, len)) else {
                duplicates.push(id);
                continue;
            };
            slots[s] = entries.len() as u32;
            entries.push(Entry { offset, len, cell });
        }
        entries.shrink_to_fit();
        let index = Self {
            arena: Box::default(),
            entries: entries.into_boxed_slice(),
            slots,
        };
        (index, duplicates)
    }

    /// Gives an index made by [`Self::build_over`] the arena it was built
    /// over, lowercased in place.
    pub(crate) fn adopt_arena(&mut self, source: String) {
        let mut bytes = source.into_bytes();
        bytes.make_ascii_lowercase();
        self.arena = bytes.into_boxed_slice();
    }

    fn build_copying<'a>(
        count: usize,
        bytes: usize,
        tenants: impl Iterator<Item = (usize, &'a str, CellId)>,
    ) -> (Self, Vec<usize>) {
        // Load factor ≤ 0.5 keeps linear probes short.
        let cap = (count * 2).next_power_of_two().max(8);
        let mut slots = vec![EMPTY; cap].into_boxed_slice();
        let mut arena = Vec::with_capacity(bytes);
        let mut entries: Vec<Entry> = Vec::with_capacity(count);
        let mut duplicates = Vec::new();
        for (id, name, cell) in tenants {
            debug_assert!(name.len() <= 63);
            let Some(s) = free_slot(&slots, &entries, &arena, name.as_bytes()) else {
                duplicates.push(id);
                continue;
            };
            slots[s] = entries.len() as u32;
            let offset = arena.len() as u32;
            arena.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
            entries.push(Entry {
                offset,
                len: name.len() as u8,
                cell,
            });
        }
        arena.shrink_to_fit();
        entries.shrink_to_fit();
        let index = Self {
            arena: arena.into_boxed_slice(),
            entries: entries.into_boxed_slice(),
            slots,
        };
        (index, duplicates)
    }

    /// The cell `label` is assigned to, compared case-insensitively.
    #[inline]
    pub fn get(&self, label: &[u8]) -> Option<CellId> {
        self.find(label).map(|(_, cell)| cell)
    }

    /// The position of `label` among the names kept (in build order,
    /// duplicates left out) and its cell, compared case-insensitively.
    #[inline]
    pub fn find(&self, label: &[u8]) -> Option<(usize, CellId)> {
        self.find_in(&self.arena, label)
    }

    /// The cell of `label` in an index made by [`Self::build_over`] that has
    /// not adopted its arena yet: `source` is the arena it was built over.
    pub(crate) fn get_over(&self, source: &[u8], label: &[u8]) -> Option<CellId> {
        self.find_in(source, label).map(|(_, cell)| cell)
    }

    #[inline]
    fn find_in(&self, arena: &[u8], label: &[u8]) -> Option<(usize, CellId)> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut s = label_hash(label) as usize & mask;
        loop {
            let i = self.slots[s];
            if i == EMPTY {
                return None;
            }
            let e = self.entries[i as usize];
            let name = arena.get(e.offset as usize..e.offset as usize + e.len as usize)?;
            if name.eq_ignore_ascii_case(label) {
                return Some((i as usize, e.cell));
            }
            s = (s + 1) & mask;
        }
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when no tenant is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Iterates `(lowercased tenant, cell)` in map order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, CellId)> + '_ {
        self.entries.iter().map(|e| {
            let name = &self.arena[e.offset as usize..e.offset as usize + e.len as usize];
            // Built from `&str` lowercased bytewise (ASCII only changes), so UTF-8.
            (std::str::from_utf8(name).unwrap_or_default(), e.cell)
        })
    }

    /// Heap bytes held by the index.
    pub fn heap_bytes(&self) -> usize {
        self.arena.len() + self.entries.len() * size_of::<Entry>() + self.slots.len() * 4
    }
}

/// The free slot where `name` goes, or `None` when an entry of the same
/// name (compared case-insensitively, names in `arena`) is already there.
/// `slots` is never full (load factor ≤ 0.5).
#[inline]
fn free_slot(slots: &[u32], entries: &[Entry], arena: &[u8], name: &[u8]) -> Option<usize> {
    let mask = slots.len() - 1;
    let mut s = label_hash(name) as usize & mask;
    while slots[s] != EMPTY {
        let e = entries[slots[s] as usize];
        if arena[e.offset as usize..e.offset as usize + e.len as usize].eq_ignore_ascii_case(name) {
            return None;
        }
        s = (s + 1) & mask;
    }
    Some(s)
}

/// A stable 64-bit hash of a label, case-insensitive (ASCII). FNV-1a with a
/// final avalanche (from splitmix64): fast on short labels, and the same on
/// every platform and Rust version, which rendezvous placement relies on.
#[inline]
pub(crate) fn label_hash(label: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in label {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix64(h)
}

/// splitmix64's finaliser.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_exact() {
        let names = ["acme", "Globex", "a-1"];
        let (idx, dups) = TenantIndex::build(
            3,
            16,
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i, *n, CellId(i as u16))),
        );
        assert!(dups.is_empty());
        assert_eq!(idx.get(b"ACME"), Some(CellId(0)));
        assert_eq!(idx.get(b"globex"), Some(CellId(1)));
        assert_eq!(idx.get(b"a-1"), Some(CellId(2)));
        assert_eq!(idx.get(b"acm"), None);
        assert_eq!(idx.get(b"acmee"), None);
        assert_eq!(idx.get(b""), None);
    }

    #[test]
    fn many_tenants() {
        let names: Vec<String> = (0..10_000).map(|i| format!("t{i:07}")).collect();
        let (idx, _) = TenantIndex::build(
            names.len(),
            80_000,
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (i, n.as_str(), CellId((n.len() % 3) as u16))),
        );
        for n in &names {
            assert!(idx.get(n.to_uppercase().as_bytes()).is_some(), "{n}");
        }
        assert_eq!(idx.get(b"t9999999"), None);
        assert_eq!(idx.len(), 10_000);
    }

    #[test]
    fn empty_index() {
        let (idx, _) = TenantIndex::build(0, 0, std::iter::empty::<(usize, &str, CellId)>());
        assert_eq!(idx.get(b"x"), None);
    }

    #[test]
    fn duplicates_are_reported_case_insensitively() {
        let names = ["acme", "b", "ACME", "Acme"];
        let (idx, dups) = TenantIndex::build(
            4,
            16,
            names.iter().enumerate().map(|(i, n)| (i, *n, CellId(0))),
        );
        assert_eq!(dups, vec![2, 3]);
        assert_eq!(idx.len(), 2);
    }

    #[test]
    fn hash_is_stable() {
        // Rendezvous placement depends on these exact values never changing;
        // tests/placement/placement.py computes them independently from
        // docs/placement.md, and the e2e test `placement` compares.
        assert_eq!(label_hash(b"acme"), 0x130a_7622_2d44_27ef);
        assert_eq!(label_hash(b"ACME"), 0x130a_7622_2d44_27ef);
        assert_eq!(label_hash(b""), 0xf52a_15e9_a9b5_e89b);
    }

    #[test]
    fn an_index_built_over_the_parsed_names_answers_as_a_copying_one() {
        let names = ["Acme", "globex", "ACME", "initech", "bad name"];
        let mut arena = String::new();
        let mut at = Vec::new();
        for n in names {
            at.push((arena.len() as u32, n.len() as u8));
            arena.push_str(n);
        }
        // "bad name" is left out (as validation leaves invalid names out).
        let tenants = at
            .iter()
            .enumerate()
            .take(4)
            .map(|(i, &(o, l))| (i, o, l, CellId(i as u16)));
        let (mut over, dups) = TenantIndex::build_over(arena.as_bytes(), 4, tenants);
        assert_eq!(dups, vec![2]);
        over.adopt_arena(arena);
        let (copy, _) = TenantIndex::build(
            4,
            32,
            names
                .iter()
                .take(4)
                .enumerate()
                .map(|(i, n)| (i, *n, CellId(i as u16))),
        );
        for q in ["acme", "ACME", "Globex", "initech", "bad name", "nobody"] {
            assert_eq!(over.get(q.as_bytes()), copy.get(q.as_bytes()), "{q}");
        }
        assert_eq!(
            over.iter().collect::<Vec<_>>(),
            copy.iter().collect::<Vec<_>>()
        );
    }

    /// `names` back to back in one arena (as the parsed list keeps them),
    /// with each name's `(offset, length)`.
    fn arena_of(names: &[&str]) -> (String, Vec<(u32, u8)>) {
        let mut arena = String::new();
        let mut at = Vec::new();
        for n in names {
            at.push((arena.len() as u32, n.len() as u8));
            arena.push_str(n);
        }
        (arena, at)
    }

    #[test]
    fn over_the_arena_the_first_of_case_insensitive_duplicates_wins() {
        let names = ["Acme", "ACME", "globex", "acme", "GloBex", "initech"];
        let (arena, at) = arena_of(&names);
        let tenants = at
            .iter()
            .enumerate()
            .map(|(i, &(o, l))| (i, o, l, CellId(i as u16)));
        let (mut idx, dups) = TenantIndex::build_over(arena.as_bytes(), names.len(), tenants);
        assert_eq!(dups, vec![1, 3, 4]);
        idx.adopt_arena(arena);
        assert_eq!(idx.len(), 3);
        for (q, cell) in [
            ("acme", 0),
            ("ACME", 0),
            ("aCmE", 0),
            ("GLOBEX", 2),
            ("globex", 2),
            ("Initech", 5),
        ] {
            assert_eq!(idx.get(q.as_bytes()), Some(CellId(cell)), "{q}");
        }
        for q in ["acm", "acmee", "", "globe", "initech-"] {
            assert_eq!(idx.get(q.as_bytes()), None, "{q}");
        }
        // Names come back lowercased, in map order, duplicates left out.
        assert_eq!(
            idx.iter().collect::<Vec<_>>(),
            vec![
                ("acme", CellId(0)),
                ("globex", CellId(2)),
                ("initech", CellId(5))
            ]
        );
    }

    #[test]
    fn over_the_arena_names_left_out_do_not_shift_the_others() {
        // Validation leaves out invalid names; their bytes stay in the
        // arena, and the names after them must still be found.
        let names = ["-bad-", "zeta", "a.b", "Omega", "x y"];
        let (arena, at) = arena_of(&names);
        let tenants = [1usize, 3]
            .into_iter()
            .map(|i| (i, at[i].0, at[i].1, CellId(i as u16)));
        let (mut idx, dups) = TenantIndex::build_over(arena.as_bytes(), names.len(), tenants);
        assert!(dups.is_empty());
        idx.adopt_arena(arena);
        assert_eq!(idx.len(), 2);
        assert_eq!(idx.get(b"ZETA"), Some(CellId(1)));
        assert_eq!(idx.get(b"omega"), Some(CellId(3)));
        for q in ["-bad-", "a.b", "x y", "bad"] {
            assert_eq!(idx.get(q.as_bytes()), None, "{q}");
        }
    }

    #[test]
    fn over_the_arena_many_mixed_case_tenants_match_a_copying_index() {
        // Enough tenants for long probe chains; every other name in capitals
        // and every 97th repeated in another case.
        let mut names: Vec<String> = (0..20_000)
            .map(|i| {
                let n = format!("t{i:07}x");
                if i % 2 == 0 {
                    n.to_ascii_uppercase()
                } else {
                    n
                }
            })
            .collect();
        for i in (0..20_000).step_by(97) {
            names.push(format!("T{i:07}X").to_ascii_lowercase());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let (arena, at) = arena_of(&refs);
        let tenants = at
            .iter()
            .enumerate()
            .map(|(i, &(o, l))| (i, o, l, CellId((i % 1000) as u16)));
        let (mut over, dups_over) = TenantIndex::build_over(arena.as_bytes(), refs.len(), tenants);
        over.adopt_arena(arena);
        let (copy, dups_copy) = TenantIndex::build(
            refs.len(),
            refs.iter().map(|n| n.len()).sum(),
            refs.iter()
                .enumerate()
                .map(|(i, n)| (i, *n, CellId((i % 1000) as u16))),
        );
        assert_eq!(dups_over, dups_copy);
        assert_eq!(dups_over.len(), 20_000usize.div_ceil(97));
        assert_eq!(over.len(), 20_000);
        for (i, n) in refs.iter().enumerate() {
            let want = copy.get(n.as_bytes());
            assert!(want.is_some(), "{n}");
            assert_eq!(over.get(n.as_bytes()), want, "{i} {n}");
            assert_eq!(over.get(n.to_ascii_lowercase().as_bytes()), want, "{n}");
        }
        assert_eq!(
            over.iter().collect::<Vec<_>>(),
            copy.iter().collect::<Vec<_>>()
        );
        assert_eq!(over.get(b"t0020000x"), None);
    }
}
